"""Density (bench/families/density.py): the memory arithmetic on recorded /proc files, the ramp's
safety (it stops at the memory reserve, a failed level ends it, Ctrl-C at any point of a
level leaves nothing), real rounds on host, namespaces, docker, podman and oci, and a
real run killed with SIGKILL while it holds a level, then `isobench clean`."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bench import catalog
from bench.clean import find_all
from bench.envs import REGISTRY
from bench.envs.base import Context, Environment, StartError
from bench.families import density
from bench.families import density_figures as figures
from bench.metrics.cgroup import find_leftovers

DATA = Path(__file__).parent / "data" / "density"
# a short idle window and settle: the tests check that the figures exist, not their
# precision (settle itself is tested on a fake clock)
PACE = density.Pace(window=0.5, settle_max=1.5)
READY_S = 60


def _text(name: str) -> str:
    return (DATA / name).read_text()


# ---------------------------------------------------------------- pure, recorded files


def test_meminfo_and_smaps_rollup_parse_to_kib():
    """Recorded on this VM: MemAvailable before and with 8 idle hold probes in their
    cgroups (host kind), one hold probe's smaps_rollup."""
    before = figures.parse_meminfo(_text("meminfo.before"))
    held = figures.parse_meminfo(_text("meminfo.held8"))
    assert before["MemTotal"] == held["MemTotal"] == 24684092
    assert (before["MemAvailable"], held["MemAvailable"]) == (24052648, 24052508)
    assert before["HugePages_Total"] == 0  # a count without "kB" is kept as is
    hold = figures.parse_smaps_rollup(_text("smaps_rollup.hold"))
    assert (hold["Rss"], hold["Pss"], hold["Pss_Anon"], hold["Anonymous"]) == (688, 124, 44, 44)
    assert "[rollup]" not in " ".join(hold)  # the header line is not a field
    harness = figures.parse_smaps_rollup(_text("smaps_rollup.harness"))
    assert harness["Anonymous"] > 1000 * hold["Anonymous"] // 44  # a Python process


def test_system_view_per_instance_from_the_recorded_meminfo():
    before = figures.parse_meminfo(_text("meminfo.before"))["MemAvailable"]
    held = figures.parse_meminfo(_text("meminfo.held8"))["MemAvailable"]
    # 140 kB less available with 8 held: 17.5 kB each
    assert figures.system_per_instance_mib(before, held, 8) == pytest.approx(17.5 / 1024)
    # the harness's own growth is not the instances'
    assert figures.system_per_instance_mib(before, held, 8, harness_growth_kib=60) == (
        pytest.approx(10 / 1024)
    )
    assert figures.system_per_instance_mib(1_000_000, 1_000_000 - 8 * 2048, 8) == 2.0


def test_accounted_view_adds_only_the_carriers_outside_the_cgroup():
    docker_runc = {"shim_pss_mib": 3.5, "shim_cpu_ms": 12.0, "pss_mib": 3.5}
    docker_runsc = {"shim_pss_mib": 3.0, "sandbox_pss_mib": 20.0, "gofer_pss_mib": 5.0}
    host = {"sampler_cpu_ms": 4.0}
    assert figures.carriers_mib(docker_runc) == 3.5
    assert figures.carriers_mib(docker_runsc) == 3.0  # sandbox, gofer: inside the cgroup
    assert figures.carriers_mib(host) == 0.0 and not figures.has_carriers(host)
    assert figures.has_carriers(docker_runsc)
    assert figures.accounted_per_instance_mib([1.0, 3.0], [3.5, 3.0]) == pytest.approx(5.25)
    with pytest.raises(ValueError):
        figures.accounted_per_instance_mib([], [])


def test_a_carrier_counts_only_outside_the_instances_memory_cgroup():
    """Membership by the memory controller's directory (v1 `memory`, v2 the one tree):
    the instance's own cgroup and those below it are inside, a sibling with a common
    prefix is not."""
    v1 = Path("/sys/fs/cgroup/memory")
    inst = {"memory": v1 / "isobench-r-e1-1", "pids": v1.parent / "pids/isobench-r-e1-1"}
    assert figures.is_inside({"memory": v1 / "isobench-r-e1-1/conmon"}, inst)
    assert figures.is_inside({"memory": v1 / "isobench-r-e1-1"}, inst)
    assert not figures.is_inside({"memory": v1 / "isobench-r-e1-10"}, inst)  # a neighbour
    assert not figures.is_inside({"memory": v1 / "process_api/abc"}, inst)  # the harness
    assert not figures.is_inside({"pids": v1.parent / "pids/isobench-r-e1-1"}, inst)
    v2 = Path("/sys/fs/cgroup")
    assert figures.is_inside({"": v2 / "a.slice/a-b.slice/x"}, {"": v2 / "a.slice/a-b.slice"})
    assert not figures.is_inside({"": v2 / "system.slice/containerd.service"}, {"": v2 / "x"})


def test_the_carriers_note_names_what_was_added_and_what_was_inside():
    outside = [{"podman": 30.0}, {"podman": 32.0}]
    named = [{11: "podman", 12: "conmon"}, {21: "podman", 22: "conmon"}]
    assert figures.carriers_note(outside, named) == (
        "carriers outside the cgroup, PSS per instance: podman 31.00 MiB (inside it: conmon)"
    )
    assert figures.carriers_note([{}], [{5: "sandbox"}]) == (
        "carriers outside the cgroup, PSS per instance: none (inside it: sandbox)"
    )


def test_the_two_sources_are_flagged_past_twenty_percent():
    assert figures.disagreement(10.0, 8.1) == pytest.approx(0.19)
    assert figures.memory_note(10.0, 8.1) == ""
    note = figures.memory_note(10.0, 7.9)
    assert "disagree by 21%" in note and "10.00" in note and "7.90" in note
    assert figures.memory_note(0.0, 0.0) == ""
    assert figures.memory_note(-1.0, 0.2)  # noise that made the system view negative


def test_drift_between_the_baselines_is_named():
    assert figures.drift_note(10_000_000, 10_000_000 - 1024, 8 * 1024, 100.0, 120.0) == ""
    note = figures.drift_note(10_000_000, 10_000_000 - 90 * 1024, 8 * 1024, 100.0, 400.0)
    assert "MemAvailable moved by 90.0 MiB" in note and "busy CPU moved by 300" in note


def test_busy_cpu_from_recorded_proc_stat():
    # user + nice + system + irq + softirq of the aggregate line; not idle, iowait, steal
    assert figures.busy_ticks(_text("stat.before")) == 820850 + 6702 + 252338 + 0 + 1563
    assert figures.busy_ticks(_text("stat.held8")) == 820853 + 6702 + 252419 + 0 + 1563
    with pytest.raises(ValueError):
        figures.busy_ticks("cpu0 1 2 3 4\n")


def test_the_reserve_arithmetic():
    total = 24 * 1024 * 1024  # kB
    # 10 GiB available, reserve 25% = 6 GiB: 4 GiB may go
    assert figures.reserve_refusal(10 * 1024 * 1024, total, 4000.0, 0.25) is None
    why = figures.reserve_refusal(10 * 1024 * 1024, total, 4200.0, 0.25)
    assert why and "below the reserve of 25%" in why and "4200 MiB" in why
    assert figures.level_need_mib(2.0, 8) == pytest.approx(2.0 * 9 * figures.HEADROOM)
    assert figures.level_need_mib(-3.0, 8) == 0.0  # a noisy negative estimate needs nothing


def test_settle_waits_for_steady_readings_and_gives_up_in_time():
    clock = [0.0]

    def sleep(s):
        clock[0] += s

    values = iter([1000_000, 990_000, 985_000, 984_900, 984_800, 984_700, 984_600])
    got, settled = figures.settle(lambda: next(values), sleep=sleep, clock=lambda: clock[0])
    assert settled and got == 984_900  # the last four lie within 2 MiB: their median
    drifting = iter(range(10**6, 0, -10_000))
    got, settled = figures.settle(
        lambda: next(drifting), sleep=sleep, clock=lambda: clock[0], max_s=2.0
    )
    assert not settled and got > 0


def test_op_names_sort_by_level():
    levels = [1, 8, 32, 64]
    names = [figures.op_name(n, levels) for n in levels]
    assert names == ["n01", "n08", "n32", "n64"] and sorted(names) == names
    assert figures.op_name(8, [1, 2, 4, 8]) == "n08"
    assert [figures.op_name(n, [1, 128]) for n in (1, 128)] == ["n001", "n128"]


# ---------------------------------------------------------------- the catalog


def test_catalog_levels():
    w = catalog.load()["density"]
    assert w.probe == "hold" and w.strategy == "density" and w.group == "density"
    assert w.levels(quick=False, guest=False) == [1, 8, 32, 64]
    assert w.levels(quick=False, guest=True) == [1, 2, 4, 8]
    assert len(w.levels(quick=True, guest=False)) >= 2
    assert len(w.levels(quick=True, guest=True)) >= 2
    assert set(density.UNITS) == set(w.metrics)
    assert all(w.metrics[m].unit == u for m, u in density.UNITS.items())
    assert catalog.load()["cpu"].levels(quick=False, guest=False) == []


def test_catalog_level_lists_are_checked():
    assert catalog.parse_levels("d", {"full": [1, 4]})["quick_guests"] == (1, 4)
    assert catalog.parse_levels("d", {"full": [1, 4], "quick": [1]})["quick_guests"] == (1,)
    for bad in (
        {"full": [4, 1]},
        {"full": [0, 1]},
        {"full": []},
        {"full": [1, 1]},
        {"quick": [1]},
        {"full": [1], "huge": [2]},
        {"full": [True]},
    ):
        with pytest.raises(ValueError):
            catalog.parse_levels("d", bad)


# ---------------------------------------------------------------- real rounds


@pytest.fixture
def env_of(tmp_path, bundle):
    made = []

    def make(kind: str) -> Environment:
        ctx = Context(f"d{os.getpid() % 10000}", tmp_path / kind, tmp_path / "cache")
        ctx.scratch.mkdir(parents=True)
        env = REGISTRY[kind]({}, ctx)
        made.append(env)
        env.prepare(bundle)
        return env

    yield make
    for env in made:
        env.cleanup()


def _ours(env: Environment) -> list[str]:
    """What is left of this environment: instances it still holds, what `clean` finds
    with its prefix, cgroups with its prefix."""
    prefix = env.ctx.prefix
    held = [i.name for i in env._live if i.launch is None]
    found = [item.what for item in find_all() if prefix in item.what]
    return held + found + [str(p) for p in find_leftovers() if p.name.startswith(prefix)]


def _check_round(env: Environment, launch, levels: list[int]) -> None:
    assert launch.status == "ok", (launch.reason, launch.extra)
    assert not launch.probe_errors, launch.extra
    assert [r["op"] for r in launch.records] == [figures.op_name(n, levels) for n in levels]
    for r in launch.records:
        m = r["metrics"]
        assert set(m) <= set(density.UNITS) and r["units"] == {k: density.UNITS[k] for k in m}
        for key in (
            "mem_system_mib",
            "mem_accounted_mib",
            "mem_cgroup_mib",
            "start_ms",
            "stop_ms",
            "idle_cpu_ms_per_s",
        ):
            assert key in m, (key, r)
        assert 0 < m["mem_cgroup_mib"] < 64, r  # an idle static probe: well under 64 MiB
        assert m["mem_accounted_mib"] >= m["mem_cgroup_mib"]
        assert 0 < m["start_ms"] < READY_S * 1000 and 0 < m["stop_ms"] < READY_S * 1000
    assert _ours(env) == []


@pytest.mark.requires("host")
def test_a_host_round(env_of):
    env = env_of("host")
    launch = density.run_round(env, [1, 2], READY_S, 0.25, pace=PACE)
    _check_round(env, launch, [1, 2])
    for r in launch.records:  # host: the cgroups are found live, nothing carries it
        assert "cgroup_idle_cpu_ms_per_s" in r["metrics"] and "mem_carriers_mib" not in r["metrics"]
        assert "not found live" not in r["note"]


@pytest.mark.requires("namespaces")
def test_a_namespaces_round(env_of):
    env = env_of("namespaces")
    launch = density.run_round(env, [1, 2], READY_S, 0.25, pace=PACE)
    _check_round(env, launch, [1, 2])


@pytest.mark.requires("docker")
def test_a_docker_round(env_of):
    env = env_of("docker")
    launch = density.run_round(env, [1, 2], READY_S, 0.25, pace=PACE)
    _check_round(env, launch, [1, 2])
    for r in launch.records:  # the containerd shim lives outside the container's cgroup
        assert r["metrics"].get("mem_carriers_mib", 0) > 0, r


@pytest.mark.requires("podman")
def test_a_podman_round_counts_the_attached_cli_not_conmon_twice(env_of):
    """podman's carriers are read live: the attached `podman run` (outside the per-launch
    cgroup) is added, conmon (in <parent>/conmon, inside) is not added again."""
    env = env_of("podman")
    launch = density.run_round(env, [1, 2], READY_S, 0.25, pace=PACE)
    _check_round(env, launch, [1, 2])
    for r in launch.records:
        m = r["metrics"]
        assert m["mem_carriers_mib"] > 0, r
        assert m["mem_accounted_mib"] == pytest.approx(
            m["mem_cgroup_mib"] + m["mem_carriers_mib"], abs=0.002
        )
        assert "carriers outside the cgroup, PSS per instance: podman " in r["note"]
        assert "(inside it: conmon)" in r["note"]


@pytest.mark.requires("oci", "root")
def test_an_oci_round_counts_the_foreground_run_process(env_of):
    env = env_of("oci")
    launch = density.run_round(env, [1, 2], READY_S, 0.25, pace=PACE)
    _check_round(env, launch, [1, 2])
    for r in launch.records:
        assert r["metrics"]["mem_carriers_mib"] > 0, r
        assert "carriers outside the cgroup, PSS per instance: runtime " in r["note"]


@pytest.mark.requires("host")
def test_the_ramp_stops_at_the_memory_reserve(env_of):
    """Level 1 fits with 3 GiB to spare above the reserve; level 100000 would need
    100001 x (per-instance memory, at least the ~0.2 MiB of an idle cgroup) x headroom:
    skipped with the reason, before anything of it is started."""
    env = env_of("host")
    mem = density.HostProbe().memory()
    reserve = (mem["MemAvailable"] - 3 * 1024 * 1024) / mem["MemTotal"]
    levels = [1, 100_000]
    log: list[str] = []
    launch = density.run_round(env, levels, READY_S, reserve, log.append, pace=PACE)
    assert launch.status == "ok"
    assert [r["op"] for r in launch.records] == ["n000001"]
    (err,) = launch.probe_errors
    assert err.startswith("n100000: skipped: would leave") and "below the reserve" in err
    assert not any(line.startswith("n100000: baseline") for line in log)
    assert _ours(env) == []


@pytest.mark.requires("host")
def test_no_level_runs_when_the_host_is_already_below_the_reserve(env_of):
    env = env_of("host")
    mem = density.HostProbe().memory()
    reserve = min(0.99, mem["MemAvailable"] / mem["MemTotal"] + 0.01)
    launch = density.run_round(env, [1, 2], READY_S, reserve, pace=PACE)
    assert launch.status == "failed" and "no density level" in launch.reason
    assert [e.split(":")[0] for e in launch.probe_errors] == ["n01", "n02"]
    assert launch.records == [] and env._live == []  # nothing was started


@pytest.mark.requires("host")
def test_a_level_that_cannot_start_fails_and_ends_the_ramp(env_of, monkeypatch):
    """The 4th start of level 4 is refused (as a pids or engine limit would): the level
    is recorded as failed with the reason, the 3 it started are stopped, 8 is skipped."""
    env = env_of("host")
    real_start, calls = env.start, []

    def start(inv, timeout):
        calls.append(1)
        if len(calls) == 1 + 1 + 4:  # level 1 (+1 more), then the 4th of level 4
            raise StartError("could not set up isobench-x: no more pids")
        return real_start(inv, timeout)

    monkeypatch.setattr(env, "start", start)
    launch = density.run_round(env, [1, 4, 8], READY_S, 0.25, pace=PACE)
    assert [r["op"] for r in launch.records] == ["n01"]
    failed, skipped = launch.probe_errors
    assert failed == "n04: instance 4 of 4 did not start: could not set up isobench-x: no more pids"
    assert skipped == "n08: skipped: level 4 failed"
    assert _ours(env) == []


# the log lines of level 3's steps, in order (each is where a Ctrl-C is raised)
INTERRUPT_AT = [
    "3 started, waiting for ready",
    "3 held, settling",
    "idle window",
    "one more with 3 held",
    "stopping 3",
]


@pytest.mark.requires("host")
@pytest.mark.parametrize("moment", INTERRUPT_AT)
def test_ctrl_c_anywhere_in_a_level_leaves_nothing(env_of, moment):
    """KeyboardInterrupt from the log callback at each step of level 3 (after its
    baseline): run_round re-raises it, and before that every instance it held is gone
    (no env.cleanup())."""
    env = env_of("host")
    seen: list[str] = []

    def log(line: str) -> None:
        seen.append(line)
        if line == f"n03: {moment}":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        density.run_round(env, [3], READY_S, 0.25, log, pace=PACE)
    assert seen[-1] == f"n03: {moment}"
    assert len(env._live) >= 3, "the interrupt came after the level's instances were started"
    assert all(i.launch is not None for i in env._live)
    assert _ours(env) == []


# ---------------------------------------------------------------- kill -9, then clean

ROOT = Path(__file__).parents[1]
HELD_AT = "n04: 4 held, settling"  # the quick ramp's second level, all four ready


def _held_by_run(kind: str, run_id: str) -> list[str]:
    """The containers of a run as their engine (docker, podman) or runc lists them."""
    label = f"label=isobench.run={run_id}"
    argv = [kind, "ps", "-a", "-q", "--filter", label]
    if kind == "oci":
        argv = ["runc", "--root", "/run/isobench-oci/runc", "list", "-q"]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr  # a listing that failed would say "none left"
    return [x for x in res.stdout.split() if kind != "oci" or run_id in x]


def _run_until(proc: subprocess.Popen, line: str, limit: float) -> list[str]:
    """The run's output lines up to `line` (AssertionError when it ends or takes longer).
    A thread reads them as they come, so the line is seen while the level still holds."""
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        for got in proc.stdout:
            lines.put(got.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + limit
    while (left := deadline - time.monotonic()) > 0:
        try:
            got = lines.get(timeout=left)
        except queue.Empty:
            break
        assert got is not None, "the run ended before the level was held: " + " | ".join(seen[-5:])
        seen.append(got)
        if got == line:
            return seen
    raise AssertionError(f"no '{line}' within {limit:g} s: " + " | ".join(seen[-5:]))


@pytest.mark.requires("docker", "podman", "oci", "root")
@pytest.mark.parametrize("kind", ["docker", "podman", "oci"])
def test_kill_9_while_a_level_is_held_then_clean_removes_every_instance(tmp_path, kind):
    """A real `isobench run --workload density` killed with SIGKILL while it holds four
    containers: they outlive it (in the engine, or runc's state for oci; their cgroups;
    podman's attached CLIs and oci's `run` processes), `isobench clean` lists and removes
    every one, and nothing of the run remains. (The host kind's instances are processes
    in cgroups: test_reliability kills a host run and cleans its cgroups.)"""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
        "ISOBENCH_LOCK": str(tmp_path / "lock"),
    }
    cli = [sys.executable, "-m", "bench.cli"]
    proc = subprocess.Popen(
        [
            *cli,
            "run",
            "--env",
            kind,
            "--workload",
            "density",
            "--quick",
            "--warmup",
            "0",
            "--results",
            str(tmp_path / "results"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        _run_until(proc, HELD_AT, 240)
    finally:
        proc.kill()
        proc.wait(60)
    (run_dir,) = (tmp_path / "results").iterdir()
    run_id = run_dir.name
    cgroups = [p for p in find_leftovers() if run_id in p.name]
    pids = {int(x) for p in cgroups for f in p.rglob("cgroup.procs") for x in f.read_text().split()}
    held = _held_by_run(kind, run_id)
    assert len({p.name for p in cgroups}) >= 4 and len(pids) >= 4, (cgroups, pids)
    assert len(held) >= 4, held

    dry = subprocess.run(
        [*cli, "clean", "--dry-run"], capture_output=True, text=True, env=env, timeout=300
    )
    assert dry.returncode == 0, dry.stderr
    for name in {p.name for p in cgroups}:
        assert f"would remove cgroup /sys/fs/cgroup/memory/{name}" in dry.stdout, name
    engine = "runc" if kind == "oci" else kind
    named = [cid if kind == "oci" else cid[:12] for cid in held]  # oci: the names runc lists
    assert all(f"would remove {engine} container {x}" in dry.stdout for x in named), dry.stdout
    res = subprocess.run([*cli, "clean"], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    for name in {p.name for p in cgroups}:
        assert f"removing cgroup /sys/fs/cgroup/memory/{name}" in res.stdout, res.stdout
    assert all(f"removing {engine} container {x}" in res.stdout for x in named), res.stdout

    assert [p for p in find_leftovers() if run_id in p.name] == []
    assert _held_by_run(kind, run_id) == []
    deadline = time.monotonic() + 10  # an attached CLI may take a moment to see its end
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.1)
    assert not [pid for pid in pids if _alive(pid)]
    assert subprocess.run(["pgrep", "-f", run_id], capture_output=True).stdout == b""
    assert not list(Path("/var/tmp").glob(f"isobench-{run_id}-*"))


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False
