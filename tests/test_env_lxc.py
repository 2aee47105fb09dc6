"""lxc environment: the config each option writes (pure), then real LXC containers:
LXC's seccomp denylist is on by default and off with seccomp=unconfined (the kernel's
view of the probe says so), the limits land in the container's cgroup, the three
network modes give the namespaces they say (veth: a host-side client reaches a server),
the monitor is the carrier outside the container's cgroup, and what a harness killed
with -9 left is found by `clean`, while a look-alike container is not."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bench.clean import find_all, live_runs, still_in_use
from bench.envs import lxc_config as lc
from bench.envs.base import HOLD, Context, Invocation, OptionError
from bench.envs.lxc import LxcEnv, running
from bench.families import density, net
from bench.metrics.cgroup import Layout, find_leftovers
from bench.probeio import parse_lines
from tests.conftest import MARKER_DIR, MARKER_ROOTFS, ROOT, missing
from tests.test_density import PACE
from tests.test_density import READY_S as DENSITY_READY_S
from tests.test_density import _check_round as check_density_round
from tests.test_net import QUICK as NET_QUICK
from tests.test_net import _check_records as check_net_records

ROOTFS = Path("/r")


def _config(**kw) -> str:
    args = dict(env=("PATH=/probes",), cwd="/work", net=lc.Net("none"), seccomp="default")
    args.update(apparmor=None, limits=[])
    args.update(kw)
    return lc.config_text("isobench-x-p1-1", ROOTFS, **args)


# ---------------------------------------------------------------- pure


def test_the_config_of_each_option():
    base = _config()
    assert base.splitlines()[0] == f"{lc.MARKER} isobench-x-p1-1"
    assert f"lxc.include = {lc.COMMON_CONF}" in base  # LXC's defaults, its seccomp with them
    assert "lxc.seccomp.profile" not in base and "lxc.net.0.type = empty" in base
    assert "lxc.cgroup.dir.container = isobench-x-p1-1/payload" in base
    assert "lxc.cgroup.dir.monitor = isobench-x-p1-1.monitor" in base
    assert "lxc.seccomp.profile =\n" in _config(seccomp="unconfined")  # cleared
    assert "lxc.apparmor.profile = generated" in _config(apparmor="generated")
    assert "lxc.net.0.type = none" in _config(net=lc.Net("host"))
    veth = _config(net=lc.Net("veth", "ibv12345678h", "10.201.0.2/30"))
    assert "lxc.net.0.veth.pair = ibv12345678h" in veth
    assert "lxc.net.0.ipv4.address = 10.201.0.2/30" in veth
    with pytest.raises(ValueError):
        _config(cwd="/work\nlxc.include = /etc/evil")


def test_limits_by_cgroup_layout():
    assert lc.limit_lines("hybrid", 0.5, "0", 2**28) == [
        ("lxc.cgroup.cpu.cfs_period_us", "100000"),
        ("lxc.cgroup.cpu.cfs_quota_us", "50000"),
        ("lxc.cgroup.cpuset.cpus", "0"),
        ("lxc.cgroup.memory.limit_in_bytes", str(2**28)),
    ]
    assert lc.limit_lines("v2", 1.5, None, 2**20) == [
        ("lxc.cgroup2.cpu.max", "150000 100000"),
        ("lxc.cgroup2.memory.max", str(2**20)),
    ]
    assert lc.limit_lines("v1", None, None, None) == []


def test_what_clean_recognises():
    argv = [
        "lxc-execute",
        "-P",
        "/s/e1/isobench-lxc",
        "-n",
        "isobench-r-e1-3",
        "--",
        "/probes/hold",
    ]
    assert lc.monitor_of(argv) == ("/s/e1/isobench-lxc", "isobench-r-e1-3")
    assert lc.monitor_of(["/usr/bin/lxc-execute", "--lxcpath=/p", "--name=isobench-a"]) == (
        "/p",
        "isobench-a",
    )
    assert lc.monitor_of(["lxc-execute", "-P", "/p", "-n", "web", "--", "x"]) is None
    assert lc.monitor_of(["lxc-start", "-P", "/p", "-n", "isobench-a"]) is None
    assert lc.monitor_of(["sh", "-c", "lxc-execute -n isobench-a"]) is None
    assert lc.is_ours(_config(), "isobench-x-p1-1")
    assert not lc.is_ours(_config(), "isobench-x-p1-2")  # the marker names the container
    assert not lc.is_ours(_config().split("\n", 1)[1], "isobench-x-p1-1")  # no marker


def test_lock_files(tmp_path):
    root = tmp_path / "lock"
    lock = lc.lock_of(Path("/tmp/isobench-r/e1/isobench-lxc"), "isobench-r-e1-1", root)
    other = lc.lock_of(Path("/var/lib/lxc"), "isobench-web", root)  # a user's lxcpath
    for path in (lock, other):
        path.parent.mkdir(parents=True)
        path.write_text("")
    assert lc.lock_leftovers(root) == [
        (lock, Path("/tmp/isobench-r/e1/isobench-lxc"), "isobench-r-e1-1"),
    ]
    lc.remove_lock(lock, root)
    assert not (root / "tmp").exists() and other.exists() and root.is_dir()


def test_options_refused(tmp_path):
    ctx = Context("t", tmp_path, tmp_path)
    with pytest.raises(OptionError):
        LxcEnv({"network": "bridge"}, ctx)
    with pytest.raises(OptionError):
        LxcEnv({"apparmor": "a profile"}, ctx)
    if not Path("/sys/module/apparmor").exists():  # this VM: said before anything runs
        why = LxcEnv.refusal(LxcEnv.parse({"apparmor": "generated"}))
        assert why and "no AppArmor" in why
        assert not LxcEnv.probe({"apparmor": "generated"}).ok


# ---------------------------------------------------------------- real containers


@pytest.fixture
def make_env(env_factory):
    av = LxcEnv.probe()
    if not av.ok:
        missing(f"lxc is not available here: {av.reason}")
    yield lambda config=None, cache=None: env_factory(LxcEnv, config or {}, cache=cache)
    made = env_factory.cleanup()
    for env in made:
        assert not any(env.ctx.scratch.iterdir())
        assert not lc.lock_dir(env.lxcpath).exists()
        assert [p for p in find_leftovers() if p.name.startswith(env.ctx.prefix)] == []


def _probe_pid(instance, probe: str) -> int:
    """The host pid of the probe inside a held container (init.lxc's child)."""
    for pid in instance.live_cgroup().pids():
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].endswith(probe.encode()):
                return pid
        except OSError:
            continue
    raise AssertionError(f"no {probe} in {instance.name}'s cgroup")


def _status(pid: int, field: str) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return line.split(":", 1)[1].strip()
    return ""


def test_seccomp_default_is_lxcs_denylist_and_unconfined_has_none(make_env):
    """The kernel's own view of the probe: a filter with LXC's default, none without."""
    seen = {}
    for mode in ("default", "unconfined"):
        held = make_env({"seccomp": mode}).start(HOLD, 60)
        try:
            assert held.wait_ready(), held.name
            pid = _probe_pid(held, "hold")
            seen[mode] = (_status(pid, "Seccomp"), _status(pid, "Seccomp_filters"))
        finally:
            assert held.stop().exit_code == 0
    assert seen["default"][0] == "2" and int(seen["default"][1]) >= 1, seen
    assert seen["unconfined"] == ("0", "0"), seen


def test_limits_land_in_the_containers_cgroup(make_env):
    env = make_env({"cpus": "0.5", "memory": "256m", "cpuset": "0"})
    held = env.start(HOLD, 60)
    try:
        assert held.wait_ready()
        layout = Layout.detect()
        paths = layout.every_dir(lc.payload_rel(held.name))
        if layout.name == "v2":
            d = paths[""]
            assert (d / "memory.max").read_text().strip() == str(256 * 2**20)
            assert (d / "cpu.max").read_text().split() == ["50000", "100000"]
        else:
            mem = paths["memory"] / "memory.limit_in_bytes"
            assert mem.read_text().strip() == str(256 * 2**20)
            assert (paths["cpu"] / "cpu.cfs_quota_us").read_text().strip() == "50000"
            assert (paths["cpuset"] / "cpuset.cpus").read_text().strip() == "0"
    finally:
        held.stop()


def _net_links(pid: int) -> set[str]:
    lines = Path(f"/proc/{pid}/net/dev").read_text().splitlines()[2:]
    return {line.split(":")[0].strip() for line in lines}


def test_network_none_and_host(make_env):
    none_env, host_env = make_env({"network": "none"}), make_env({"network": "host"})
    assert none_env.net_path() and host_env.net_path() is None
    held = [env.start(HOLD, 60) for env in (none_env, host_env)]
    try:
        assert all(h.wait_ready() for h in held)
        pids = [_probe_pid(h, "hold") for h in held]
        assert _net_links(pids[0]) == {"lo"}
        host_ns = os.stat("/proc/self/ns/net").st_ino
        assert os.stat(f"/proc/{pids[0]}/ns/net").st_ino != host_ns
        assert os.stat(f"/proc/{pids[1]}/ns/net").st_ino == host_ns
    finally:
        for h in held:
            h.stop()


def test_veth_a_host_client_reaches_the_server(make_env, bundle):
    """A server with no network given gets LXC's veth; the net probe's client on the
    host measures over it; the pair goes with the container."""
    env = make_env()
    assert env.net_path() is None
    server = env.start(Invocation("net", "net", ("--server", "--port", "5301")), 60)
    try:
        assert server.wait_ready(), server.child.result().stderr
        host, port = server.address(5301)
        assert host.startswith("10.201.") and port == 5301
        client = [str(bundle.probes["net"]), "--client", f"{host}:{port}"]
        res = subprocess.run(
            [*client, "--op", "tcp_rr", "--min-ms", "50"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        out = parse_lines(res.stdout.splitlines()[1:])
        assert out.records and out.records[0]["op"] == "tcp_rr", res.stdout + res.stderr
        host_end = server.veth[0]
        assert subprocess.run(["ip", "link", "show", host_end], capture_output=True).returncode == 0
    finally:
        launch = server.stop()
    assert launch.status == "ok", launch.reason
    assert launch.net_path.startswith(f"LXC veth {host_end}")
    assert subprocess.run(["ip", "link", "show", host_end], capture_output=True).returncode != 0


def test_the_monitor_is_the_carrier_outside_the_containers_cgroup(make_env):
    env = make_env()
    held = env.start(HOLD, 60)
    try:
        assert held.wait_ready()
        carriers = held.carriers()
        assert carriers == {held.child.proc.pid: "monitor"}
        reader = held.live_cgroup()
        assert reader is not None and _probe_pid(held, "hold") in reader.pids()
        outside = density.outside_carriers_mib(carriers, reader)
        assert set(outside) == {"monitor"} and outside["monitor"] > 0
    finally:
        launch = held.stop()
    assert held.carriers() == {}
    assert launch.host_side.get("monitor_rss_mib", 0) > 0
    assert launch.cgroup.get("cpu_total_ms", 0) > 0 and launch.exit_code == 0


def test_a_run_from_an_isobench_rootfs(make_env, marker_rootfs, monkeypatch):
    """rootfs=NAME: the probe runs in that tree (its marker directory is there)."""
    cache = marker_rootfs.root.parent.parent
    monkeypatch.setenv("ISOBENCH_CACHE", str(cache))
    env = make_env({"rootfs": MARKER_ROOTFS}, cache)
    io = Invocation("io", "io", ("--dir", MARKER_DIR, "--op", "create_unlink"))
    launch = env.launch(io, 60)
    assert launch.status == "ok", launch.reason + launch.stderr_tail
    assert [r["op"] for r in launch.records] == ["create_unlink"]


KILLED = """
import os, signal, sys
from pathlib import Path
from bench import bundle
from bench.envs.base import HOLD, Context
from bench.envs.lxc import LxcEnv
ctx = Context("lxct", Path(sys.argv[1]), Path(sys.argv[1]) / "cache")
ctx.scratch.mkdir(parents=True, exist_ok=True)
env = LxcEnv({}, ctx)
env.prepare(bundle.build())
held = env.start(HOLD, 60)
assert held.wait_ready()
print(held.name, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_clean_finds_what_a_harness_killed_with_9_left(tmp_path):
    av = LxcEnv.probe()
    if not av.ok:
        missing(f"lxc is not available here: {av.reason}")
    res = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(KILLED), str(tmp_path / "s")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert res.returncode == -signal.SIGKILL, res.stderr
    name = res.stdout.strip()
    assert any(n == name for _, _, n in running()), "the container outlived its harness"
    found = [item for item in find_all() if name in item.what]
    whats = [item.what for item in found]
    assert any(w.startswith(f"lxc container {name} (monitor pid ") for w in whats), whats
    assert all(still_in_use(w, live_runs()) == "" for w in whats), whats
    for item in found:  # what `isobench clean` does, for this container only
        item.remove()
    assert [item.what for item in find_all() if name in item.what] == []
    assert not any(n == name for _, _, n in running())
    assert not list(lc.LOCK_ROOT.rglob(f".{name}"))


def test_a_look_alike_is_not_ours(tmp_path, bundle):
    """A container named isobench-* without isobench's marker in its config (a user's):
    not listed, while it runs or by its lock file."""
    if not LxcEnv.probe().ok:
        missing("lxc is not available here")
    from bench.envs import image as img

    rootfs = img.unpack_rootfs(bundle, tmp_path / "rootfs")
    name = f"isobench-lookalike-{os.getpid()}"
    lxcpath = tmp_path / "lxc"
    (lxcpath / name).mkdir(parents=True)
    config = _config().split("\n", 1)[1].replace("isobench-x-p1-1", name)
    config = config.replace(f"dir:{ROOTFS}", f"dir:{rootfs}")
    config = "".join(ln for ln in config.splitlines(True) if "cgroup.dir" not in ln)
    (lxcpath / name / "config").write_text(config)
    argv = ["lxc-execute", "-P", str(lxcpath), "-n", name, "--", "/probes/hold"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout.readline().strip() == b"ready"
        assert not any(n == name for _, _, n in running())
        assert not [item.what for item in LxcEnv.leftovers() if name in item.what]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    lc.remove_lock(lc.lock_of(lxcpath, name))


# ---------------------------------------------------------------- the families on lxc


def test_a_density_round_counts_the_monitor_outside_the_cgroup(make_env):
    env = make_env()
    launch = density.run_round(env, [1, 2], DENSITY_READY_S, 0.25, pace=PACE)
    check_density_round(env, launch, [1, 2])
    for r in launch.records:
        assert r["metrics"]["mem_carriers_mib"] > 0, r
        assert "carriers outside the cgroup, PSS per instance: monitor " in r["note"], r


def test_a_net_round_goes_over_lxcs_veth(make_env, bundle):
    """The net family with no network given: the server gets LXC's veth; the pair is
    gone after the round."""
    env = make_env()
    launch = net.run_round(env, bundle, ["--op", "tcp_rr,tcp_stream_c2s", *NET_QUICK], 60)
    check_net_records(launch)
    assert launch.net_path.startswith("LXC veth ibv"), launch.net_path
    assert launch.extra["target"].startswith("10.201.")
    links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout
    assert launch.net_path.split()[2] not in links
