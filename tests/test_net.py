"""The network path (issue 15): the net probe against itself on loopback, a peer that
vanishes, real rounds on host, namespaces (veth made and removed) and docker (bridge,
host, none), and an interrupted round that leaves nothing behind."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bench.envs import REGISTRY
from bench.envs.base import Context, Invocation
from bench.envs.containers import net_path_problem, network_of, served_port
from bench.envs.guest.tap import TAP_PREFIX
from bench.envs.namespaces import VETH_PREFIX, free_slash30, owned_links, veth_names
from bench.families import common, net

QUICK = ["--min-ms", "100"]
ROOT = Path(__file__).parents[1]


# ---------------------------------------------------------------- pure


def test_client_plan_splits_ops_and_reps_from_the_rest():
    ops, reps, rest = net.client_plan(["--op", "tcp_rr,tcp_crr", "--reps", "3", "--min-ms", "300"])
    assert (ops, reps, rest) == (["tcp_rr", "tcp_crr"], 3, ["--min-ms", "300"])
    assert net.client_plan([])[0] == list(net.OPS)
    with pytest.raises(ValueError, match="unknown net op"):
        net.client_plan(["--op", "udp_rr"])
    with pytest.raises(ValueError):
        net.client_plan(["--reps", "0"])


def test_client_timeout_covers_the_window_and_the_reply_timeouts():
    assert net.client_timeout(["--min-ms", "300"]) == pytest.approx(0.3 + 20 + 5)
    assert net.client_timeout(["--timeout-s", "2"]) == pytest.approx(1 + 4 + 5)


def test_cgroup_figure_is_scaled_to_the_window_per_transaction_or_per_mb():
    rr = {"op": "tcp_rr", "iterations": 1000, "elapsed_ns": 500_000_000}
    # 10 ms of cgroup CPU over a 1 s client run, of which the window is 0.5 s: 5 ms
    assert net.cgroup_figure(rr, 10.0, 1.0) == ("server_cgroup_cpu_us_per_trans", 5.0, "us")
    st = {"op": "tcp_stream_c2s", "iterations": 2_000_000, "elapsed_ns": 1_000_000_000}
    assert net.cgroup_figure(st, 4.0, 1.0) == ("server_cgroup_cpu_ms_per_mb", 2.0, "ms")
    assert net.cgroup_figure({"op": "tcp_rr", "iterations": 0, "elapsed_ns": 1}, 1, 1) is None


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


def test_wait_for_path_returns_once_the_address_accepts_or_says_why_it_never_did():
    """A ready server whose path is not up yet (a TCG guest's NIC answering ARP late) is
    waited for; one that never accepts fails with the last error, after the limit."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # free now, nobody listening yet
    t0 = time.monotonic()
    why = common.wait_for_path("127.0.0.1", port, limit=0.5)
    assert "refused" in why.lower() and time.monotonic() - t0 >= 0.5
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    late = threading.Timer(0.4, lambda: (srv.bind(("127.0.0.1", port)), srv.listen()))
    late.start()
    try:
        t0 = time.monotonic()
        assert common.wait_for_path("127.0.0.1", port, limit=5.0) == ""
        assert 0.3 < time.monotonic() - t0 < 3.0
    finally:
        late.join()
        srv.close()


def test_veth_names_fit_the_kernel_limit_and_the_slash30_avoids_taken_networks():
    host_end, ns_end = veth_names("isobench-abcdef-e12-345")
    assert len(host_end) <= 15 and len(ns_end) <= 15
    assert host_end.startswith(VETH_PREFIX) and host_end != ns_end
    first = free_slash30([], "seed", "10.201.0.0/28")
    again = free_slash30([str(first)], "seed", "10.201.0.0/28")
    assert first.prefixlen == 30 and again != first and not again.overlaps(first)
    with pytest.raises(ValueError):
        free_slash30(["10.201.0.0/28"], "seed", "10.201.0.0/28")


def test_only_links_with_isobench_s_prefix_and_alias_are_its_own():
    links = [  # as `ip -j link` gives them
        {"ifname": "ibv1a2b3c4dh", "ifalias": "isobench isobench-20260101-000000-ab12-e1-3"},
        {"ifname": "ibt0badf00d", "ifalias": "isobench isobench-t-qemu-p4242-1"},
        {"ifname": "ibt0badf00e"},  # a look-alike without the alias
        {"ifname": "ibv99999999h", "ifalias": "someone else's"},
        {"ifname": "eth0", "ifalias": "isobench isobench-x-1"},  # not a name isobench gives
    ]
    assert owned_links(links, (VETH_PREFIX, TAP_PREFIX)) == [
        ("ibv1a2b3c4dh", "isobench-20260101-000000-ab12-e1-3"),
        ("ibt0badf00d", "isobench-t-qemu-p4242-1"),
    ]
    assert owned_links(links, (VETH_PREFIX,)) == [owned_links(links, (VETH_PREFIX,))[0]]


def test_a_taps_path_says_where_and_whether_emulated():
    import ipaddress

    from bench.envs.guest.tap import Tap

    t = Tap(
        "ibt0badf00d",
        ipaddress.IPv4Interface("10.201.3.5/30"),
        ipaddress.IPv4Interface("10.201.3.6/30"),
        "52:54:00:aa:bb:cc",
    )
    assert t.path(True) == (
        "virtio-net on tap ibt0badf00d 10.201.3.5/30 <-> guest eth0 10.201.3.6/30 (emulated: TCG)"
    )
    assert t.path(False).endswith("10.201.3.6/30")


# ---------------------------------------------------------------- the probe on loopback


def _free_port() -> int:
    return common.free_port()


def _lines(text: str) -> list[dict]:
    return [json.loads(x) for x in text.splitlines() if x.startswith("{")]


@pytest.fixture
def server(bundle):
    port = _free_port()
    proc = subprocess.Popen(
        [str(bundle.probes["net"]), "--server", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "ready"
    yield proc, port
    if proc.poll() is None:
        proc.kill()
    proc.wait(5)


def test_probe_against_itself_on_loopback(bundle, server):
    proc, port = server
    res = subprocess.run(
        [str(bundle.probes["net"]), "--client", f"127.0.0.1:{port}", *QUICK],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[0] == "ready"
    recs = {r["op"]: r for r in _lines(res.stdout)}
    assert set(recs) == set(net.OPS), res.stdout
    rr = recs["tcp_rr"]["metrics"]
    assert 0 < rr["p50_us"] <= rr["p99_us"]
    rate = recs["tcp_rr"]["iterations"] / (recs["tcp_rr"]["elapsed_ns"] / 1e9)
    assert rr["trans_per_s"] == pytest.approx(rate, rel=1e-3)
    assert recs["tcp_rr"]["elapsed_ns"] >= 100e6
    assert rr["client_cpu_us_per_trans"] > 0 and rr["server_cpu_us_per_trans"] > 0
    assert recs["tcp_crr"]["metrics"]["conn_per_s"] > 0
    for op in net.STREAMS:
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
        capture_output=True,
        text=True,
        timeout=30,
    )
    errors = [r for r in _lines(res.stdout) if "error" in r]
    assert errors and "Connection refused" in errors[0]["error"]


def test_a_peer_that_never_answers_is_a_timeout_not_a_hang(bundle):
    with socket.socket() as lsock:  # listens (the kernel accepts) but never reads or writes
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(8)
        port = lsock.getsockname()[1]
        t0 = time.monotonic()
        res = subprocess.run(
            [
                str(bundle.probes["net"]),
                "--client",
                f"127.0.0.1:{port}",
                "--op",
                "tcp_rr",
                "--timeout-s",
                "1",
                *QUICK,
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert time.monotonic() - t0 < 10
    errors = [r for r in _lines(res.stdout) if "error" in r]
    assert errors and "no answer within 1 s" in errors[0]["error"]


def test_a_server_killed_mid_stream_fails_the_op_quickly(bundle, server):
    proc, port = server
    client = subprocess.Popen(
        [
            str(bundle.probes["net"]),
            "--client",
            f"127.0.0.1:{port}",
            "--op",
            "tcp_stream_s2c",
            "--min-ms",
            "5000",
            "--timeout-s",
            "2",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.5)
    proc.kill()
    out, _ = client.communicate(timeout=20)
    errors = [r for r in _lines(out) if "error" in r]
    assert errors and errors[0]["op"] == "tcp_stream_s2c", out


# ---------------------------------------------------------------- real rounds


def _links(prefix: str = "isobench-") -> dict[str, str]:
    """`ip -o link`: isobench's veths and taps (name prefix, and the alias naming an
    instance whose name starts with `prefix`) -> their line."""
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    found = {}
    for line in out.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        if name.startswith((VETH_PREFIX, TAP_PREFIX)) and f"alias isobench {prefix}" in line:
            found[name] = line
    return found


def _veths(prefix: str = "isobench-") -> set[str]:
    return {n for n in _links(prefix) if n.startswith(VETH_PREFIX)}


def _iptables() -> list[str]:
    """iptables-save's rules (no counters) that could be isobench's: naming its links,
    its veth/tap block or isobench itself."""
    out = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout
    marks = (VETH_PREFIX, TAP_PREFIX, "10.201.", "isobench")
    return sorted(
        x for x in out.splitlines() if not x.startswith(("#", ":")) and any(m in x for m in marks)
    )


def _netns() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


@pytest.fixture
def host_net():
    """The host's network as isobench could touch it, before and after the test: no
    link, iptables rule or named network namespace of isobench's is added."""
    before = (_links(), _iptables(), _netns())
    yield before
    assert _links() == before[0], "isobench links left behind"
    assert _iptables() == before[1], "iptables rules changed"
    assert {n for n in _netns() - before[2] if "isobench" in n} == set()


def _env(kind: str, tmp_path, config=None, cache=None):
    ctx = Context(f"n{os.getpid() % 10000}", tmp_path / kind, cache or tmp_path / "cache")
    return REGISTRY[kind](config or {}, ctx)


def _round(env, bundle, **kw):
    env.prepare(bundle)
    try:
        return net.run_round(env, bundle, ["--op", "tcp_rr,tcp_stream_c2s", *QUICK], 60, **kw)
    finally:
        env.cleanup()


def _check_records(launch, cgroup=True):
    assert launch.status == "ok", (launch.reason, launch.probe_errors)
    ops = {r["op"] for r in launch.records}
    assert ops == {"tcp_rr", "tcp_stream_c2s"}
    rr = next(r for r in launch.records if r["op"] == "tcp_rr")
    assert rr["metrics"]["p50_us"] > 0 and rr["units"]["p50_us"] == "us"
    assert rr["metrics"]["server_cpu_us_per_trans"] > 0
    if cgroup:
        assert rr["metrics"]["server_cgroup_cpu_us_per_trans"] > 0


@pytest.mark.requires("host")
def test_host_round_is_loopback(bundle, tmp_path):
    launch = _round(_env("host", tmp_path), bundle)
    _check_records(launch)
    assert launch.net_path.startswith("loopback 127.0.0.1:")


@pytest.mark.requires("namespaces")
def test_namespaces_round_goes_over_a_veth_made_and_removed(bundle, tmp_path, host_net):
    env = _env("namespaces", tmp_path)
    seen: list[set[str]] = []
    launch = _round(env, bundle, log=lambda s: seen.append(_veths(env.ctx.prefix)))
    _check_records(launch)
    assert launch.net_path.startswith("veth ")
    assert launch.extra["target"].startswith("10.201.")
    assert any(seen), "no veth while the round ran"
    assert not _veths(env.ctx.prefix)


def _docker_leftovers() -> list[str]:
    """This test process's containers (names isobench-n<pid%10000>-p<pid>-N)."""
    import docker

    mine = f"isobench-n{os.getpid() % 10000}-p{os.getpid()}-"
    cl = docker.DockerClient(base_url="unix:///var/run/docker.sock")
    listed = cl.containers.list(all=True, filters={"label": "isobench"})
    return [c.name for c in listed if c.name.startswith(mine)]


def _dport_rules(port: str) -> list[str]:
    out = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout
    return [x for x in out.splitlines() if f"--dport {port} " in f"{x} "]


@pytest.mark.requires("docker")
def test_docker_bridge_goes_through_a_published_port(bundle, tmp_path):
    during: list[list[str]] = []
    launch = _round(
        _env("docker", tmp_path, {"network": "bridge"}),
        bundle,
        log=lambda s: during.append(_dport_rules(s.rsplit(":", 1)[-1])),
    )
    _check_records(launch)
    assert "published port 127.0.0.1:" in launch.net_path
    assert not _docker_leftovers()
    port = launch.extra["target"].rsplit(":", 1)[1]
    assert any(during), "docker's DNAT rule for the published port while the round ran"
    assert _dport_rules(port) == [], "the published port's iptables rules are gone"


@pytest.mark.requires("docker")
def test_docker_host_network_is_loopback(bundle, tmp_path):
    launch = _round(_env("docker", tmp_path, {"network": "host"}), bundle)
    _check_records(launch)
    assert launch.net_path.startswith("host network: loopback")


@pytest.mark.requires("docker")
def test_docker_without_a_network_is_a_failed_round_with_its_reason(bundle, tmp_path):
    launch = _round(_env("docker", tmp_path, {"network": "none"}), bundle)
    assert launch.status == "failed" and not launch.records
    assert "network=none" in launch.reason
    assert not _docker_leftovers()


@pytest.mark.requires("namespaces")
def test_an_interrupted_namespaces_round_leaves_no_veth_or_cgroup(bundle, tmp_path, host_net):
    from bench.metrics.cgroup import find_leftovers

    env = _env("namespaces", tmp_path)
    env.prepare(bundle)
    calls = []

    def interrupt_second(_msg):
        calls.append(_veths(env.ctx.prefix))
        if len(calls) == 2:
            raise KeyboardInterrupt

    try:
        with pytest.raises(KeyboardInterrupt):
            net.run_round(env, bundle, ["--op", "tcp_rr,tcp_crr", *QUICK], 60, log=interrupt_second)
    finally:
        env.cleanup()
    assert calls[1], "the veth existed when the round was interrupted"
    assert not _veths(env.ctx.prefix)
    assert not [c for c in find_leftovers() if env.ctx.prefix in str(c)]


@pytest.mark.requires("docker")
def test_an_interrupted_docker_round_leaves_no_container(bundle, tmp_path):
    env = _env("docker", tmp_path, {"network": "bridge"})
    env.prepare(bundle)

    def interrupt_now(_msg):
        raise KeyboardInterrupt

    try:
        with pytest.raises(KeyboardInterrupt):
            net.run_round(env, bundle, ["--op", "tcp_rr", *QUICK], 60, log=interrupt_now)
    finally:
        env.cleanup()
    assert not _docker_leftovers()


# ---------------------------------------------------------------- guests (TCG: few boots)


def _guest_env(kind: str, tmp_path, bundle):
    return _env(kind, tmp_path, {"accel": "tcg"}, cache=bundle.root.parent.parent)


def _guest_round_checks(launch, env, seen, cgroup=True):
    _check_records(launch, cgroup)
    path = launch.net_path
    assert path.startswith("virtio-net on tap ibt") and path.endswith("(emulated: TCG)"), path
    assert launch.extra["target"].startswith("10.201.")
    assert launch.extra["emulated"] is True
    assert any(seen), "no tap while the round ran"
    assert not _links(env.ctx.prefix)


@pytest.mark.requires("libvirt")
def test_qemu_round_goes_over_virtio_net_on_a_tap_made_and_removed(bundle, tmp_path, host_net):
    env = _guest_env("qemu", tmp_path, bundle)
    seen: list[dict[str, str]] = []
    launch = _round(env, bundle, log=lambda s: seen.append(_links(env.ctx.prefix)))
    _guest_round_checks(launch, env, seen)
    (line,) = seen[0].values()  # one tap, with the alias naming its instance
    assert f"alias isobench {env.ctx.prefix}-" in line
    assert not [x for x in REGISTRY["qemu"].leftovers() if env.ctx.prefix in x.what]


@pytest.mark.requires("libvirt")
def test_libvirt_round_goes_over_virtio_net_on_a_tap_made_and_removed(bundle, tmp_path, host_net):
    env = _guest_env("libvirt", tmp_path, bundle)
    seen: list[dict[str, str]] = []
    launch = _round(env, bundle, log=lambda s: seen.append(_links(env.ctx.prefix)))
    _guest_round_checks(launch, env, seen, cgroup=False)  # the domain's scope is libvirt's
    assert not [x for x in REGISTRY["libvirt"].leftovers() if env.ctx.prefix in x.what]


@pytest.mark.requires("libvirt")
def test_an_interrupted_guest_round_leaves_no_tap_qemu_or_cgroup(bundle, tmp_path, host_net):
    from bench.metrics.cgroup import find_leftovers

    env = _guest_env("qemu", tmp_path, bundle)
    env.prepare(bundle)
    seen = []

    def interrupt_now(_msg):
        seen.append(_links(env.ctx.prefix))
        raise KeyboardInterrupt

    try:
        with pytest.raises(KeyboardInterrupt):
            net.run_round(env, bundle, ["--op", "tcp_rr", *QUICK], 60, log=interrupt_now)
    finally:
        env.cleanup()
    assert seen and seen[0], "the tap existed when the round was interrupted"
    assert not _links(env.ctx.prefix)
    assert not [x for x in REGISTRY["qemu"].leftovers() if env.ctx.prefix in x.what]
    assert not [c for c in find_leftovers() if env.ctx.prefix in str(c)]


@pytest.mark.requires("libvirt")
def test_a_guest_server_not_ready_in_time_is_a_failed_round_without_its_tap(
    bundle, tmp_path, host_net
):
    env = _guest_env("qemu", tmp_path, bundle)
    env.prepare(bundle)
    try:  # no TCG guest says `ready` within half a second
        launch = net.run_round(env, bundle, ["--op", "tcp_rr", *QUICK], 0.5)
    finally:
        env.cleanup()
    assert launch.status == "failed" and not launch.records
    assert launch.reason.startswith("the server was not ready"), launch.reason
    assert launch.net_path.startswith("virtio-net on tap ibt")  # it had one
    assert not _links(env.ctx.prefix)
    assert not [x for x in REGISTRY["qemu"].leftovers() if env.ctx.prefix in x.what]


# ---------------------------------------------------------------- cri


@pytest.mark.requires("cri")
def test_cri_pod_network_round_reaches_the_pod_ip(bundle, tmp_path, host_net):
    env = _env("cri", tmp_path, {"network": "pod"}, cache=bundle.root.parent.parent)
    launch = _round(env, bundle)
    _check_records(launch, cgroup=False)  # the pod's cgroup is a parent of the server's
    assert launch.net_path.startswith("pod network (CNI ptp, routed, no NAT): pod IP ")
    host = launch.extra["target"].rsplit(":", 1)[0]
    assert not host.startswith("127.") and host in launch.net_path


@pytest.mark.requires("cri")
def test_cri_node_network_round_is_loopback(bundle, tmp_path, host_net):
    env = _env("cri", tmp_path, {"network": "host"}, cache=bundle.root.parent.parent)
    launch = _round(env, bundle)
    _check_records(launch, cgroup=False)
    path = launch.net_path
    assert path.startswith("node network (hostNetwork pod): loopback 127.0.0.1:"), path


# ---------------------------------------------------------------- kill -9, then clean

HOLDER = """
import sys, time
from pathlib import Path
from bench import bundle as B
from bench.envs import REGISTRY
from bench.envs.base import Context, Invocation
bundle = B.build()
scratch, tag, port = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
server = Invocation("net", "net", ("--server", "--port", port))
for kind, config in (("namespaces", {}), ("qemu", {"accel": "tcg"})):
    env = REGISTRY[kind](config, Context(tag + kind[0], scratch / kind, bundle.root.parent.parent))
    env.prepare(bundle)
    inst = env.start(server, 120)
    assert inst.wait_ready(), kind
    print(kind, env.ctx.prefix, *inst.address(int(port)), flush=True)
time.sleep(600)
"""


def _clean_dry_run(tmp_path) -> list[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ISOBENCH_LOCK": str(tmp_path / "lock")}
    res = subprocess.run(
        [sys.executable, "-m", "bench.cli", "clean", "--dry-run"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    return res.stdout.splitlines()


@pytest.mark.requires("namespaces", "libvirt")
def test_links_left_by_kill_9_are_found_and_removed_by_clean(bundle, tmp_path, host_net):
    """A process holding a namespaces server (veth) and a guest server (tap) is killed
    with -9: its veth, tap, QEMU and cgroups stay; `clean` keeps them while the process
    lives, lists them once it is dead, and removing them leaves nothing."""
    from bench import clean

    tag = f"k{os.getpid() % 10000}"
    port = str(common.free_port())
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path), tag, port],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    watchdog = threading.Timer(240, holder.kill)  # a holder that never says it is up
    watchdog.start()
    try:
        held = {}
        for _ in range(2):
            kind, prefix, host, _port = holder.stdout.readline().split()
            held[kind] = (prefix, host)
        links = {k: _links(prefix) for k, (prefix, _) in held.items()}
        assert len(links["namespaces"]) == 1 and len(links["qemu"]) == 1, links
        assert held["namespaces"][1].startswith("10.201.") and held["qemu"][1].startswith("10.201.")
        names = [n for found in links.values() for n in found]
        lines = _clean_dry_run(tmp_path)
        for name in names:  # the process that made them runs: kept
            assert any(
                x.startswith(f"keeping network interface {name} (") and f"(pid {holder.pid})" in x
                for x in lines
            ), lines
    finally:
        watchdog.cancel()
        holder.kill()  # kill -9
        holder.wait(10)
    assert set(_links(held["namespaces"][0])) | set(_links(held["qemu"][0])) == set(names)
    lines = _clean_dry_run(tmp_path)
    for name in names:
        assert any(
            x.startswith(f"would remove network interface {name} (isobench-{tag}") for x in lines
        ), lines
    prefixes = [prefix for prefix, _ in held.values()]
    assert any(x.startswith("would remove QEMU process") and prefixes[1] in x for x in lines)
    live = clean.live_runs()
    for item in clean.find_all():  # what `clean` removes, of ours only
        if any(f"{p}-" in item.what for p in prefixes):
            assert clean.still_in_use(item.what, live) == ""
            item.remove()
    assert not _links(prefixes[0]) and not _links(prefixes[1])
    assert not [x.what for x in clean.find_all() if any(f"{p}-" in x.what for p in prefixes)]


# ---------------------------------------------------------------- a real run, whole or Ctrl-C

RUN = [
    "--env",
    "namespaces",
    "--env",
    "qemu:accel=tcg",
    "--workload",
    "net",
    "--quick",
    "--rounds",
    "1",
    "--max-rounds",
    "1",
    "--warmup",
    "0",
]


def _run(tmp_path, *args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ISOBENCH_LOCK": str(tmp_path / "lock")}
    argv = [sys.executable, "-m", "bench.cli", "run", *RUN, "--results", str(tmp_path / "r")]
    return subprocess.Popen(
        [*argv, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw
    )


def _run_prefix(tmp_path, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        made = [p.name for p in (tmp_path / "r").glob("*") if p.is_dir()]
        if made:
            return f"isobench-{made[0]}-"
        time.sleep(0.1)
    raise AssertionError("the run made no run directory")


@pytest.mark.requires("namespaces", "libvirt")
def test_a_real_run_records_each_path_and_leaves_no_link_or_rule(tmp_path, host_net):
    run = _run(tmp_path)
    out, _ = run.communicate(timeout=600)
    assert run.returncode == 0, out
    (manifest,) = (tmp_path / "r").glob("*/manifest.json")
    envs = json.loads(manifest.read_text())["environments"]
    assert envs["namespaces"]["net_path"].startswith("veth ibv"), envs["namespaces"]
    assert envs["qemu:accel=tcg"]["net_path"].startswith("virtio-net on tap ibt")
    assert "net · tcp_rr p50_us" in out
    assert not _links(f"isobench-{manifest.parent.name}-")


@pytest.mark.requires("namespaces", "libvirt")
def test_a_real_run_interrupted_with_ctrl_c_leaves_no_link_or_rule(tmp_path, host_net):
    run = _run(tmp_path)
    try:
        prefix = _run_prefix(tmp_path)
        deadline = time.monotonic() + 120
        while not any(n.startswith(TAP_PREFIX) for n in _links(prefix)):
            assert time.monotonic() < deadline and run.poll() is None, "no tap while it ran"
            time.sleep(0.05)
        run.send_signal(signal.SIGINT)
        out, _ = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait(10)
    assert "interrupted (SIGINT): cleaned up" in out, out
    assert not _links(prefix)
    assert not [x for x in REGISTRY["qemu"].leftovers() if prefix in x.what]
