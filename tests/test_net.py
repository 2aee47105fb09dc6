"""The network path (issue 15): the net probe against itself on loopback, a peer that
vanishes, real rounds on host, namespaces (veth made and removed) and docker (bridge,
host, none), and an interrupted round that leaves nothing behind."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time

import pytest

from bench import netbench
from bench.envs import REGISTRY
from bench.envs.base import Context, Invocation
from bench.envs.containers import net_path_problem, network_of, served_port
from bench.envs.namespaces import VETH_PREFIX, free_slash30, veth_names

QUICK = ["--min-ms", "100"]


# ---------------------------------------------------------------- pure


def test_client_plan_splits_ops_and_reps_from_the_rest():
    ops, reps, rest = netbench.client_plan(
        ["--op", "tcp_rr,tcp_crr", "--reps", "3", "--min-ms", "300"]
    )
    assert (ops, reps, rest) == (["tcp_rr", "tcp_crr"], 3, ["--min-ms", "300"])
    assert netbench.client_plan([])[0] == list(netbench.OPS)
    with pytest.raises(ValueError, match="unknown net op"):
        netbench.client_plan(["--op", "udp_rr"])
    with pytest.raises(ValueError):
        netbench.client_plan(["--reps", "0"])


def test_client_timeout_covers_the_window_and_the_reply_timeouts():
    assert netbench.client_timeout(["--min-ms", "300"]) == pytest.approx(0.3 + 20 + 5)
    assert netbench.client_timeout(["--timeout-s", "2"]) == pytest.approx(1 + 4 + 5)


def test_cgroup_figure_is_scaled_to_the_window_per_transaction_or_per_mb():
    rr = {"op": "tcp_rr", "iterations": 1000, "elapsed_ns": 500_000_000}
    # 10 ms of cgroup CPU over a 1 s client run, of which the window is 0.5 s: 5 ms
    assert netbench.cgroup_figure(rr, 10.0, 1.0) == ("server_cgroup_cpu_us_per_trans", 5.0, "us")
    st = {"op": "tcp_stream_c2s", "iterations": 2_000_000, "elapsed_ns": 1_000_000_000}
    assert netbench.cgroup_figure(st, 4.0, 1.0) == ("server_cgroup_cpu_ms_per_mb", 2.0, "ms")
    assert netbench.cgroup_figure({"op": "tcp_rr", "iterations": 0, "elapsed_ns": 1}, 1, 1) is None


def test_served_port_and_paths():
    assert served_port(Invocation("net", "net", ("--server", "--port", "4321"))) == 4321
    assert served_port(Invocation("net", "net", ("--client", "1.2.3.4:5", "--port", "1"))) is None
    assert served_port(Invocation("hold", "hold")) is None
    assert "network=none" in net_path_problem("none")
    assert net_path_problem("bridge") is None and net_path_problem("host") is None
    server = Invocation("net", "net", ("--server", "--port", "4321"))
    assert network_of({"network": "none"}, {}, server) == "bridge"  # docker run's default
    assert network_of({"network": "none"}, {}, Invocation("hold", "hold")) == "none"
    assert network_of({"network": "none"}, {"network": "none"}, server) == "none"


def test_veth_names_fit_the_kernel_limit_and_the_slash30_avoids_taken_networks():
    host_end, ns_end = veth_names("isobench-abcdef-e12-345")
    assert len(host_end) <= 15 and len(ns_end) <= 15
    assert host_end.startswith(VETH_PREFIX) and host_end != ns_end
    first = free_slash30([], "seed", "10.201.0.0/28")
    again = free_slash30([str(first)], "seed", "10.201.0.0/28")
    assert first.prefixlen == 30 and again != first and not again.overlaps(first)
    with pytest.raises(ValueError):
        free_slash30(["10.201.0.0/28"], "seed", "10.201.0.0/28")


# ---------------------------------------------------------------- the probe on loopback


def _free_port() -> int:
    return netbench.free_port()


def _lines(text: str) -> list[dict]:
    return [json.loads(x) for x in text.splitlines() if x.startswith("{")]


@pytest.fixture
def server(bundle):
    port = _free_port()
    proc = subprocess.Popen([str(bundle.probes["net"]), "--server", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout.readline().strip() == "ready"
    yield proc, port
    if proc.poll() is None:
        proc.kill()
    proc.wait(5)


def test_probe_against_itself_on_loopback(bundle, server):
    proc, port = server
    res = subprocess.run(
        [str(bundle.probes["net"]), "--client", f"127.0.0.1:{port}", *QUICK],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[0] == "ready"
    recs = {r["op"]: r for r in _lines(res.stdout)}
    assert set(recs) == set(netbench.OPS), res.stdout
    rr = recs["tcp_rr"]["metrics"]
    assert 0 < rr["p50_us"] <= rr["p99_us"]
    rate = recs["tcp_rr"]["iterations"] / (recs["tcp_rr"]["elapsed_ns"] / 1e9)
    assert rr["trans_per_s"] == pytest.approx(rate, rel=1e-3)
    assert recs["tcp_rr"]["elapsed_ns"] >= 100e6
    assert rr["client_cpu_us_per_trans"] > 0 and rr["server_cpu_us_per_trans"] > 0
    assert recs["tcp_crr"]["metrics"]["conn_per_s"] > 0
    for op in netbench.STREAMS:
        m = recs[op]["metrics"]
        assert m["mb_per_s"] > 10 and m["server_cpu_ms_per_mb"] > 0
    # SIGTERM: exit 0 with the server's own line
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0
    served = [r for r in _lines(out) if r["op"] == "server"]
    assert served and served[0]["metrics"]["connections"] > 10


def test_client_without_a_server_fails_the_op_with_the_reason(bundle):
    port = _free_port()  # nothing listens there
    res = subprocess.run(
        [str(bundle.probes["net"]), "--client", f"127.0.0.1:{port}", "--op", "tcp_rr", *QUICK],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    errors = [r for r in _lines(res.stdout) if "error" in r]
    assert errors and "Connection refused" in errors[0]["error"]


def test_a_peer_that_never_answers_is_a_timeout_not_a_hang(bundle):
    with socket.socket() as lsock:  # listens (the kernel accepts) but never reads or writes
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(8)
        port = lsock.getsockname()[1]
        t0 = time.monotonic()
        res = subprocess.run(
            [str(bundle.probes["net"]), "--client", f"127.0.0.1:{port}", "--op", "tcp_rr",
             "--timeout-s", "1", *QUICK],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    assert time.monotonic() - t0 < 10
    errors = [r for r in _lines(res.stdout) if "error" in r]
    assert errors and "no answer within 1 s" in errors[0]["error"]


def test_a_server_killed_mid_stream_fails_the_op_quickly(bundle, server):
    proc, port = server
    client = subprocess.Popen(
        [str(bundle.probes["net"]), "--client", f"127.0.0.1:{port}", "--op", "tcp_stream_s2c",
         "--min-ms", "5000", "--timeout-s", "2"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(0.5)
    proc.kill()
    out, _ = client.communicate(timeout=20)
    errors = [r for r in _lines(out) if "error" in r]
    assert errors and errors[0]["op"] == "tcp_stream_s2c", out


# ---------------------------------------------------------------- real rounds


def _veths() -> set[str]:
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()
            if f" {VETH_PREFIX}" in line}  # fmt: skip


def _env(kind: str, tmp_path, config=None):
    ctx = Context(f"n{os.getpid() % 10000}", tmp_path / kind, tmp_path / "cache")
    return REGISTRY[kind](config or {}, ctx)


def _round(env, bundle, **kw):
    env.prepare(bundle)
    try:
        return netbench.run_round(env, bundle, ["--op", "tcp_rr,tcp_stream_c2s", *QUICK], 60, **kw)
    finally:
        env.cleanup()


def _check_records(launch):
    assert launch.status == "ok", (launch.reason, launch.extra.get("probe_errors"))
    ops = {r["op"] for r in launch.records}
    assert ops == {"tcp_rr", "tcp_stream_c2s"}
    rr = next(r for r in launch.records if r["op"] == "tcp_rr")
    assert rr["metrics"]["p50_us"] > 0 and rr["units"]["p50_us"] == "us"
    assert rr["metrics"]["server_cgroup_cpu_us_per_trans"] > 0


@pytest.mark.requires("host")
def test_host_round_is_loopback(bundle, tmp_path):
    launch = _round(_env("host", tmp_path), bundle)
    _check_records(launch)
    assert launch.extra["net_path"].startswith("loopback 127.0.0.1:")


@pytest.mark.requires("namespaces")
def test_namespaces_round_goes_over_a_veth_made_and_removed(bundle, tmp_path):
    before = _veths()
    seen: list[set[str]] = []
    launch = _round(_env("namespaces", tmp_path), bundle, log=lambda s: seen.append(_veths()))
    _check_records(launch)
    assert launch.extra["net_path"].startswith("veth ")
    assert launch.extra["target"].startswith("10.201.")
    assert any(s - before for s in seen), "no veth while the round ran"
    assert _veths() == before


def _docker_leftovers() -> list[str]:
    """This test process's containers (names isobench-n<pid%10000>-p<pid>-N)."""
    import docker

    mine = f"isobench-n{os.getpid() % 10000}-p{os.getpid()}-"
    cl = docker.DockerClient(base_url="unix:///var/run/docker.sock")
    listed = cl.containers.list(all=True, filters={"label": "isobench"})
    return [c.name for c in listed if c.name.startswith(mine)]


@pytest.mark.requires("docker")
def test_docker_bridge_goes_through_a_published_port(bundle, tmp_path):
    launch = _round(_env("docker", tmp_path, {"network": "bridge"}), bundle)
    _check_records(launch)
    assert "published port 127.0.0.1:" in launch.extra["net_path"]
    assert not _docker_leftovers()


@pytest.mark.requires("docker")
def test_docker_host_network_is_loopback(bundle, tmp_path):
    launch = _round(_env("docker", tmp_path, {"network": "host"}), bundle)
    _check_records(launch)
    assert launch.extra["net_path"].startswith("host network: loopback")


@pytest.mark.requires("docker")
def test_docker_without_a_network_is_a_failed_round_with_its_reason(bundle, tmp_path):
    launch = _round(_env("docker", tmp_path, {"network": "none"}), bundle)
    assert launch.status == "failed" and not launch.records
    assert "network=none" in launch.reason
    assert not _docker_leftovers()


@pytest.mark.requires("namespaces")
def test_an_interrupted_namespaces_round_leaves_no_veth_or_cgroup(bundle, tmp_path):
    from bench.metrics.cgroup import find_leftovers

    before = _veths()
    env = _env("namespaces", tmp_path)
    env.prepare(bundle)
    calls = []

    def interrupt_second(_msg):
        calls.append(_veths())
        if len(calls) == 2:
            raise KeyboardInterrupt

    try:
        with pytest.raises(KeyboardInterrupt):
            netbench.run_round(env, bundle, ["--op", "tcp_rr,tcp_crr", *QUICK], 60,
                               log=interrupt_second)  # fmt: skip
    finally:
        env.cleanup()
    assert calls[1] - before, "the veth existed when the round was interrupted"
    assert _veths() == before
    assert not [c for c in find_leftovers() if env.ctx.prefix in str(c)]


@pytest.mark.requires("docker")
def test_an_interrupted_docker_round_leaves_no_container(bundle, tmp_path):
    env = _env("docker", tmp_path, {"network": "bridge"})
    env.prepare(bundle)

    def interrupt_now(_msg):
        raise KeyboardInterrupt

    try:
        with pytest.raises(KeyboardInterrupt):
            netbench.run_round(env, bundle, ["--op", "tcp_rr", *QUICK], 60, log=interrupt_now)
    finally:
        env.cleanup()
    assert not _docker_leftovers()
