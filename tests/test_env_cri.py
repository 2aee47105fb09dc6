"""`cri`: pods through the CRI against a real containerd (isobench's own, or one a test
starts and names as a node's endpoint), and the pure parts (the CRI log, the daemon's
config, the pod network's subnet) on recorded text."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from bench.clean import find_all, live_runs, still_in_use
from bench.envs import cri_daemon as dmn
from bench.envs import cri_images as ci
from bench.envs.base import HOLD, ChannelError, Context, Invocation, OptionError, served
from bench.envs.cri import CriEnv
from bench.envs.cri_client import (
    Client,
    answers,
    handlers_of,
    parse_cri_log,
    parse_timestamp,
)
from bench.envs.wschannel import websocket_url, without
from bench.metrics.cgroup import Layout

SYSCALL = Invocation("syscall", "syscall", ("--op", "null", "--min-ms", "20", "--reps", "2"))
STARTUP = Invocation("startup", "startup")

# ---------------------------------------------------------------- pure


def test_cri_log_lines_join_partials_and_keep_their_stamps():
    text = (
        "2025-01-02T03:04:05.123456789Z stdout F ready\n"
        '2025-01-02T03:04:05.2Z stdout P {"a":\n'
        "2025-01-02T03:04:05.3+01:00 stderr F oops\n"
        "2025-01-02T03:04:05.4Z stdout F 1}\n"
        "2025-01-02T03:04:05.5Z stdout F torn"  # no newline yet: not a line
    )
    lines = parse_cri_log(text)
    assert [(s, line) for _, s, line in lines] == [
        ("stdout", "ready"),
        ("stderr", "oops"),
        ("stdout", '{"a":1}'),
    ]
    assert lines[0][0] == parse_timestamp("2025-01-02T03:04:05Z") + 123456789
    assert lines[1][0] == parse_timestamp("2025-01-02T02:04:05.3Z")
    with pytest.raises(ValueError):
        parse_timestamp("yesterday")


def test_answers_taken_over_the_channel_are_left_out_of_the_log_lines():
    log = ['{"burst":1}', '{"burst":2}', '{"op":"x"}', '{"burst":1}']
    assert without(log, ['{"burst":1}', '{"burst":2}']) == ['{"op":"x"}', '{"burst":1}']
    assert without(log, ["not there"]) == log
    assert websocket_url("http://127.0.0.1:4/attach/t") == "ws://127.0.0.1:4/attach/t"
    assert websocket_url("https://h/a") == "wss://h/a"


def test_daemon_config_keeps_everything_in_its_own_directories(tmp_path):
    lay = dmn.DaemonPaths("isobench-t-e1", tmp_path / "root")
    text = dmn.config_toml(lay, "isobench.local/pause:x", [dmn.Handler("runc", binary="/r")])
    assert dmn.config_prefix(text) == "isobench-t-e1"
    assert dmn.config_root(text) == tmp_path / "root"
    for needed in (
        "restrict_oom_score_adj = true",
        "netns_mounts_under_state_dir = true",
        'stream_server_port = "0"',
        "SystemdCgroup = false",
        f'address = "{lay.socket}"',
        f'Root = "{lay.state}/runtimes/runc"',
    ):
        assert needed in text
    assert "/run/containerd" not in text and "/var/lib/containerd" not in text
    assert dmn.config_prefix("version = 2\n") is None  # not one isobench wrote


def test_pod_subnet_avoids_every_route_and_address():
    assert dmn.free_subnet([]) == "10.240.0.0/24"
    assert dmn.free_subnet(["0.0.0.0/0", "10.240.0.7/24", "10.240.1.0/24"]) == "10.240.2.0/24"
    assert dmn.free_subnet(["10.0.0.0/8"]) == "172.30.0.0/24"
    assert dmn.free_subnet(["10.0.0.0/8", "172.16.0.0/12"]) is None


def test_mounts_under_a_directory_deepest_first():
    info = (
        "1 0 8:1 / / rw - ext4 /dev/vda rw\n"
        "2 1 0:4 / /run/isobench-cri/p/netns/cni-1 rw - nsfs nsfs rw\n"
        "3 1 0:5 / /run/isobench-cri/p/state/x/rootfs rw - overlay overlay rw\n"
        "4 1 0:6 / /run/isobench-cri/p2/y rw - tmpfs tmpfs rw\n"
    )
    assert dmn.mounts_under(Path("/run/isobench-cri/p"), info) == [
        "/run/isobench-cri/p/state/x/rootfs",
        "/run/isobench-cri/p/netns/cni-1",
    ]


def test_handlers_from_a_containerd_status():
    assert handlers_of({"containerd": {"runtimes": {"runc": {}, "hang": {}}}}) == ["hang", "runc"]
    assert handlers_of({}) == []


@pytest.mark.parametrize(
    "config",
    [
        {"endpoint": "tcp://10.0.0.1:1234"},
        {"network": "bridge"},
        {"cpus": "abc"},
        {"memory": "lots"},
        {"cpus": "-1"},
        {"handler": "runc"},
    ],
)
def test_bad_options_are_refused_with_a_sentence(config, tmp_path):
    with pytest.raises(OptionError, match=r"option|no option"):
        CriEnv(config, Context("t", tmp_path, tmp_path))
    av = CriEnv.probe(config)
    assert not av.ok and av.reason


def test_unavailable_handlers_say_why():
    assert "no containerd-shim-runsc-v1" in CriEnv.probe({"runtime": "runsc"}).reason
    if Layout.detect().name == "hybrid":
        assert "hybrid" in CriEnv.probe({"runtime": "crun"}).reason
    assert "endpoint=unix://" in CriEnv.probe({"runtime": "gvisor"}).reason
    assert "no CRI socket" in CriEnv.probe({"endpoint": "unix:///nonexistent.sock"}).reason


# ---------------------------------------------------------------- real containerd


def _ours(prefix: str) -> list[str]:
    """Everything of this prefix that could outlive a run: the daemon, its state, its
    shims and whatever runs below them, its pod cgroups, its CNI state."""
    left = [f"daemon {f.lay.prefix}" for f in dmn.find_private() if f.lay.prefix == prefix]
    state = dmn.RUN_BASE / prefix
    if state.exists():
        left.append(f"state {state}")
    left += [f"shim {p.pid}" for p in dmn.shims_of(state / "containerd.sock")]
    for proc in psutil.process_iter():
        argv = " ".join(_cmd(proc))
        if prefix in argv:
            left.append(f"process {proc.pid}: {argv[:80]}")
    left += [f"cgroup {p}" for p in Layout.detect().paths(prefix + "-1").values() if p.exists()]
    nets = dmn.CNI_STATE / "networks" / f"{prefix}-pods"
    if nets.exists():
        left.append(f"cni {nets}")
    left += [f"interface {i}" for i in dmn.cni_interfaces(f"{prefix}-pods")]
    return left


def _settled(look, within: float = 10.0) -> list:
    """What `look()` still finds after at most `within` s (empty as soon as it is)."""
    deadline = time.monotonic() + within
    while (found := look()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return found


def _cmd(proc: psutil.Process) -> list[str]:
    try:
        return proc.cmdline()
    except psutil.Error:
        return []


@pytest.fixture
def cri_env(env_factory):
    return lambda config: env_factory(CriEnv, config)


def _phases_in_order(launch) -> None:
    p = launch.phases
    assert 0 < p["sandbox"] < p["created"] < p["started"] < p["cleaned"], p
    assert 0 < p["ready"] <= p["exit"] < p["cleaned"], p


@pytest.mark.requires("cri")
@pytest.mark.parametrize("network", ["host", "pod"])
def test_syscall_and_startup_run_in_pods(cri_env, network):
    env = cri_env({"network": network})
    for inv in (STARTUP, SYSCALL):
        launch = env.launch(inv, 60)
        assert launch.status == "ok", launch.reason
        assert launch.exit_code == 0
        _phases_in_order(launch)
        assert launch.host_side["shim_cpu_ms"] >= 0 and launch.host_side["shim_rss_mib"] > 1
        assert launch.host_side["pause_rss_mib"] > 0, "the pause process is a carrier"
        assert launch.cgroup["pids_peak"] >= 2, "the pod cgroup holds pause and the probe"
    ops = {r.get("op") for r in launch.records}
    assert "null" in ops, launch.records
    failed = env.launch(Invocation("startup", "startup", ("--bad",)), 60)
    assert failed.status == "failed" and failed.exit_code == 2
    assert "takes no arguments" in failed.stderr_tail
    env.cleanup()
    assert _ours(env.ctx.prefix) == []
    assert not any(env.ctx.scratch.iterdir())


@pytest.mark.requires("cri")
def test_pod_network_and_limits_while_held(cri_env):
    env = cri_env({"network": "pod", "cpus": "0.5", "memory": "64m"})
    held = env.start(HOLD, 60)
    assert held.wait_ready()
    network = f"{env.ctx.prefix}-pods"
    ifaces = dmn.cni_interfaces(network)
    assert ifaces and all(Path("/sys/class/net", i).exists() for i in ifaces), ifaces
    paths = Layout.detect().paths(held.name)
    if "cpu" in paths:  # v1 / hybrid: the pod cgroup has the quota, as a kubelet's does
        assert (paths["cpu"] / "cpu.cfs_quota_us").read_text().strip() == "50000"
        container = paths["memory"] / held.pod.cid / "memory.limit_in_bytes"
        assert int(container.read_text()) == 64 * 2**20
    launch = held.stop()
    assert launch.status == "ok", launch.reason
    assert launch.phases["stop"] <= launch.phases["exit"]
    assert dmn.cni_interfaces(network) == {}
    assert not any(p.exists() for p in paths.values())


@pytest.mark.requires("cri")
def test_a_served_probe_answers_over_the_attach_stream(cri_env):
    """Serve mode through CRI Attach (a WebSocket to the streaming server): answers in
    order; the answers, also in the CRI log, are no records; a probe that quits ends the
    channel (ChannelError); a pod that does not serve has no channel."""
    env = cri_env({})
    instance = env.start(served("syscall", "syscall"), 60)
    assert instance.wait_ready()
    first = json.loads(instance.ask("null iters=100", 30))
    assert first["op"] == "null" and first["burst"] == 1 and first["iterations"] == 100
    times = []
    for _ in range(20):
        t0 = time.monotonic_ns()
        json.loads(instance.ask("null ms=5", 30))
        times.append((time.monotonic_ns() - t0) / 1e6)
    print(f"cri: ask('null ms=5') overhead {statistics.median(times) - 5:.2f} ms")
    with pytest.raises(ChannelError):
        instance.ask("quit", 10)  # no answer: the probe exits 0
    launch = instance.stop()
    assert launch.status == "ok" and launch.exit_code == 0, launch
    assert launch.records == [] and launch.stray_lines == []
    held = env.start(HOLD, 60)
    assert held.wait_ready()
    with pytest.raises(ChannelError, match="not serving"):
        held.ask("null iters=1", 5)
    assert held.stop().status == "ok"
    env.cleanup()
    assert _ours(env.ctx.prefix) == []


@pytest.fixture
def hang_daemon(tmp_path, bundle):
    """A containerd of the test's own (isobench's daemon code, started by hand) whose
    handler `hang` is runc except that `create` never returns: a node with a broken
    RuntimeClass. The environment uses it as a node's endpoint."""
    script = tmp_path / "hang-runtime"
    script.write_text(
        '#!/bin/sh\nfor a in "$@"; do [ "$a" = create ] && exec sleep 3600; done\n'
        f'exec {os.path.realpath("/usr/sbin/runc")} "$@"\n'
    )
    script.chmod(0o755)
    refs = ci.archives(bundle, tmp_path / "cache")
    pause = next(r for r in refs if "/pause:" in r)
    lay = dmn.DaemonPaths(f"isobench-t{os.getpid() % 10000}-hang", tmp_path / "hang-root")
    handlers = [
        dmn.Handler("runc", binary="/usr/sbin/runc"),
        dmn.Handler("hang", binary=str(script)),
    ]
    daemon = dmn.PrivateContainerd(lay, pause, handlers)

    daemon.start(lambda: answers(lay.endpoint))
    yield daemon, script
    daemon.stop()


@pytest.mark.requires("cri")
def test_a_hung_handler_times_out_and_leaves_nothing(cri_env, hang_daemon):
    daemon, script = hang_daemon
    env = cri_env({"endpoint": daemon.endpoint, "runtime": "hang"})
    t0 = time.monotonic()
    launch = env.launch(STARTUP, 5)
    took = time.monotonic() - t0
    assert launch.status == "timeout", launch
    assert "RunPodSandbox did not return within 5 s" in launch.reason
    assert took < 5 + 30, f"the launch took {took:.0f} s"
    assert "cleaned" in launch.phases
    sleepers = [
        p
        for p in psutil.process_iter()
        if str(script) in " ".join(_cmd(p)) or _cmd(p)[:2] == ["sleep", "3600"]
    ]
    assert sleepers == [], "the hung runtime was killed"
    shims = _settled(lambda: [" ".join(_cmd(p)) for p in dmn.shims_of(daemon.lay.socket)])
    assert shims == [], "containerd's own `shim delete` of the killed shim ends by itself"
    cl = Client(daemon.endpoint)
    try:
        assert cl.pods({"isobench": "1"}) == []
    finally:
        cl.close()
    assert not any(p.exists() for p in Layout.detect().paths(env.ctx.prefix + "-1").values())
    # the node's own handler still works: only our pod was touched
    ok = cri_env({"endpoint": daemon.endpoint}).launch(STARTUP, 60)
    assert ok.status == "ok", ok.reason


@pytest.mark.requires("cri")
def test_a_nodes_endpoint_lists_only_isobench_pods_as_leftovers(cri_env, hang_daemon):
    daemon, _ = hang_daemon
    env = cri_env({"endpoint": daemon.endpoint})
    held = env.start(HOLD, 60)
    assert held.wait_ready()
    found = CriEnv.leftovers({"endpoint": daemon.endpoint})
    pods = [f.what for f in found if f.what.startswith("cri pod ")]
    assert len(pods) == 1 and held.name in pods[0] and daemon.endpoint in pods[0], pods
    env.cleanup()  # Ctrl-C's path: the held pod is removed
    assert not [f for f in CriEnv.leftovers({"endpoint": daemon.endpoint}) if "cri pod" in f.what]
    assert daemon.pid() is not None, "a node's runtime is never stopped"


def _run(tmp_path: Path, *specs: str) -> subprocess.Popen:
    argv = [
        sys.executable,
        "-m",
        "bench.cli",
        "run",
        "--quick",
        "--workload",
        "startup",
        "--results",
        str(tmp_path / "results"),
        "--budget",
        "120",
    ]
    for spec in specs:
        argv += ["--env", spec]
    return subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )


def _wait_for_pod(before: set[str], timeout: float = 90) -> str:
    """The prefix of a new private daemon once one of its pods runs (a shim is up)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for found in dmn.find_private():
            if found.lay.prefix not in before and dmn.shims_of(found.lay.socket):
                return found.lay.prefix
        time.sleep(0.02)
    raise AssertionError("no pod started")


@pytest.mark.requires("cri")
def test_an_interrupted_run_leaves_nothing(tmp_path, bundle):
    before = {f.lay.prefix for f in dmn.find_private()}
    proc = _run(tmp_path, "cri:network=pod")
    try:
        prefix = _wait_for_pod(before)
        os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode != 0, out.decode(errors="replace")[-2000:]
    assert _ours(prefix) == []


@pytest.mark.requires("cri")
def test_clean_finds_what_a_killed_run_left(tmp_path, bundle):
    """kill -9 of the harness: its containerd and pods run on; `isobench clean`'s
    leftovers stop them and remove the shims, CNI state, netns mounts and pod cgroups."""
    before = {f.lay.prefix for f in dmn.find_private()}
    proc = _run(tmp_path, "cri:network=pod")
    try:
        prefix = _wait_for_pod(before)
        time.sleep(0.3)
        os.kill(proc.pid, signal.SIGKILL)  # the harness only: its daemon lives on
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert _ours(prefix), "the daemon outlived the harness"
    found = [f.what for f in CriEnv.leftovers() if prefix in f.what]
    assert found and found[0].startswith(f"cri private containerd {prefix} (pid "), found
    # what `isobench clean` does, for this run's leftovers only (others may be testing)
    run = prefix.rsplit("-", 1)[0] + "-"
    items = [item for item in find_all() if run in item.what]
    assert all(still_in_use(item.what, live_runs()) == "" for item in items)
    for item in items:
        item.remove()
    assert _ours(prefix) == []
    assert [item.what for item in find_all() if run in item.what] == []
