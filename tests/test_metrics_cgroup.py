"""cgroup parsers on recorded files, and live cgroups (marker `cgroup`).

tests/data/cgroup/v1 was recorded on a Debian 12 VM (kernel 6.18, hybrid layout) with
Cgroup.create("isobench-test-record", cpus=0.5) around a python loop touching 64 MiB and
`dd` 16 MiB written (O_DIRECT + fsync) then read back (O_DIRECT), then the file unlinked.
tests/data/cgroup/v2 is in the kernel's documented format (cgroup-v2.rst); "old-kernel"
has no memory.peak / pids.peak and a cpu.stat without the cpu controller's fields.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.metrics.cgroup import (
    Cgroup,
    CgroupReader,
    detect_layout,
    find_leftovers,
    preexec_attach,
    warm_migration_lock,
)
from bench.metrics.cgroup_parse import LOGICAL, delta, parse_proc_cgroup, parse_v1, parse_v2

DATA = Path(__file__).parent / "data"
MIB = 2**20


def load(base: Path) -> dict[str, str]:
    """Every file under base, keyed by its path relative to base."""
    return {str(p.relative_to(base)): p.read_text() for p in base.rglob("*") if p.is_file()}


# ---------------------------------------------------------------- pure parsers


def test_parse_v1_recorded():
    got = parse_v1(load(DATA / "cgroup/v1"), clk_tck=100)
    assert got == {
        "cpu_user_ms": 370.0,
        "cpu_system_ms": 60.0,
        "cpu_total_ms": 441.959572,
        "throttled_ms": 342.43834,
        "nr_throttled": 7.0,
        "mem_peak_mib": 76382208 / MIB,
        "mem_current_mib": 356352 / MIB,
        "io_read_mib": 16.0,
        "io_write_mib": 16785408 / MIB,  # Discard / Sync / Total ignored
        "io_read_ops": 256.0,
        "io_write_ops": 19.0,
        "pids_peak": 2.0,
        "pids_current": 0.0,
    }


def test_parse_v1_ticks_follow_clk_tck():
    files = {"cpuacct/cpuacct.stat": "user 37\nsystem 6\n"}
    assert parse_v1(files, clk_tck=250) == {"cpu_user_ms": 148.0, "cpu_system_ms": 24.0}


def test_parse_v1_sums_devices_and_skips_total():
    files = {
        "blkio/blkio.throttle.io_service_bytes_recursive": (
            "8:0 Read 1048576\n8:0 Write 2097152\n8:0 Total 3145728\n"
            "8:16 Read 1048576\n8:16 Write 0\n8:16 Total 1048576\nTotal 4194304\n"
        )
    }
    assert parse_v1(files) == {"io_read_mib": 2.0, "io_write_mib": 2.0}


def test_parse_v1_without_io_accounting_reads_zero():
    # what a kernel that counts nothing prints: zero, not missing
    files = {"blkio/blkio.throttle.io_serviced_recursive": "Total 0\n"}
    assert parse_v1(files) == {"io_read_ops": 0.0, "io_write_ops": 0.0}


def test_parse_v2_full():
    got = parse_v2(load(DATA / "cgroup/v2/full"))
    assert got == {
        "cpu_total_ms": 1841.257,
        "cpu_user_ms": 1529.103,
        "cpu_system_ms": 312.154,
        "throttled_ms": 6934.021,
        "nr_throttled": 187.0,
        "io_read_mib": (1459200 + 90430464) / MIB,
        "io_write_mib": (314773504 + 299008000) / MIB,
        "io_read_ops": 192.0 + 8950,
        "io_write_ops": 353.0 + 1252,
        "mem_peak_mib": 52379648 / MIB,
        "mem_current_mib": 48234496 / MIB,
        "pids_peak": 7.0,
        "pids_current": 1.0,
    }


def test_parse_v2_old_kernel_is_partial():
    got = parse_v2(load(DATA / "cgroup/v2/old-kernel"))
    assert got == {
        "cpu_total_ms": 7502.311,
        "cpu_user_ms": 6120.45,
        "cpu_system_ms": 1381.861,
        "io_read_mib": 4096000 / MIB,
        "io_write_mib": 1.0,
        "io_read_ops": 125.0,
        "io_write_ops": 16.0,
        "mem_current_mib": 100.0,
        "pids_current": 3.0,
    }
    assert "mem_peak_mib" not in got and "pids_peak" not in got and "throttled_ms" not in got


def test_parsers_skip_garbage():
    assert parse_v2({"memory.peak": "max\n", "pids.peak": ""}) == {}
    assert parse_v1({"memory/memory.usage_in_bytes": "\n"}) == {}


def test_parsers_return_only_logical_names():
    for got in (parse_v2(load(DATA / "cgroup/v2/full")), parse_v1(load(DATA / "cgroup/v1"))):
        assert set(got) <= set(LOGICAL)


def test_delta_counters_subtract_gauges_take_after():
    before = {
        "cpu_total_ms": 100.0,
        "io_read_ops": 5.0,
        "mem_peak_mib": 10.0,
        "mem_current_mib": 9.0,
        "pids_peak": 1.0,
        "throttled_ms": 1.0,
    }
    after = {
        "cpu_total_ms": 350.0,
        "io_read_ops": 5.0,
        "mem_peak_mib": 80.0,
        "mem_current_mib": 2.0,
        "pids_peak": 3.0,
        "nr_throttled": 4.0,
    }
    assert delta(before, after) == {
        "cpu_total_ms": 250.0,
        "io_read_ops": 0.0,  # counters in both
        "mem_peak_mib": 80.0,
        "mem_current_mib": 2.0,
        "pids_peak": 3.0,  # gauges: after
    }  # nr_throttled only after, throttled_ms only before: dropped


def test_delta_gauge_only_in_after():
    assert delta({}, {"pids_current": 2.0, "cpu_user_ms": 1.0}) == {"pids_current": 2.0}


def test_parse_proc_cgroup_v2():
    got = parse_proc_cgroup((DATA / "proc/cgroup.v2").read_text())
    scope = "docker-3f5a1c0e9b8d7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f.scope"
    assert got == {"": f"/system.slice/{scope}"}


def test_parse_proc_cgroup_v1_comounted():
    got = parse_proc_cgroup((DATA / "proc/cgroup.v1").read_text())
    path = "/docker/3f5a1c0e9b8d7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f"
    assert got["cpu"] == got["cpuacct"] == got["memory"] == got["name=systemd"] == path
    assert got["net_cls"] == got["net_prio"] == path
    assert "" not in got


def test_parse_proc_cgroup_hybrid():
    got = parse_proc_cgroup((DATA / "proc/cgroup.hybrid").read_text())
    assert got["memory"] == "/process_api/b84e061974f7abaca5b08a104fe20257"
    assert got["cpu"] == "/" and got[""] == "/" and got["name=systemd"] == "/"


# ---------------------------------------------------------------- readers on fake trees


def test_reader_reads_recorded_v1_tree():
    base = DATA / "cgroup/v1"
    ctrls = ("cpu", "cpuacct", "memory", "pids", "blkio", "cpuset")
    reader = CgroupReader("v1", {c: base / c for c in ctrls})
    assert reader.read() == parse_v1(load(base))  # cpuset dir missing: no error


def test_reader_reads_partial_v2_and_missing_dir():
    assert CgroupReader("v2", {"": DATA / "cgroup/v2/old-kernel"}).read()["pids_current"] == 3.0
    assert CgroupReader("v2", {"": DATA / "nonexistent"}).read() == {}


def test_detect_layout(tmp_path):
    assert detect_layout(tmp_path) == "none"
    (tmp_path / "memory").mkdir()
    (tmp_path / "memory/tasks").write_text("")
    assert detect_layout(tmp_path) == "v1"
    (tmp_path / "unified").mkdir()
    (tmp_path / "unified/cgroup.controllers").write_text("")
    assert detect_layout(tmp_path) == "hybrid"
    (tmp_path / "cgroup.controllers").write_text("cpu io memory pids\n")
    assert detect_layout(tmp_path) == "v2"


def test_create_on_fake_v2_tree(tmp_path):
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory hugetlb pids\n")
    (tmp_path / "cgroup.subtree_control").write_text("")
    c = Cgroup.create("isobench-fake", cpus=1.5, cpuset="1", root=tmp_path)
    assert c.layout == "v2" and c.paths == {"": tmp_path / "isobench-fake"}
    assert (tmp_path / "isobench-fake/cpu.max").read_text() == "150000 100000"
    assert (tmp_path / "isobench-fake/cpuset.cpus").read_text() == "1"
    # one write per controller; a regular file keeps the last one
    assert (tmp_path / "cgroup.subtree_control").read_text() == "+cpuset"
    assert c.procs_files == [str(tmp_path / "isobench-fake/cgroup.procs")]


def test_create_on_fake_v1_comounted_tree(tmp_path):
    for d in ("cpu,cpuacct", "memory", "cpuset", "unified"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "cgroup.procs").write_text("")
        (tmp_path / d / "tasks").write_text("")
    (tmp_path / "unified/cgroup.controllers").write_text("")
    (tmp_path / "cpu").symlink_to("cpu,cpuacct")
    (tmp_path / "cpuacct").symlink_to("cpu,cpuacct")
    (tmp_path / "cpuset/cpuset.cpus").write_text("0-3\n")
    (tmp_path / "cpuset/cpuset.mems").write_text("0\n")
    c = Cgroup.create("isobench-fake", cpus=0.25, root=tmp_path)
    assert c.layout == "hybrid"
    assert c.paths["cpu"] == c.paths["cpuacct"] == tmp_path / "cpu/isobench-fake"
    assert len(c.procs_files) == 4  # cpu,cpuacct once + memory + cpuset + unified
    assert (c.paths["cpu"] / "cpu.cfs_quota_us").read_text() == "25000"
    assert (c.paths["cpu"] / "cpu.cfs_period_us").read_text() == "100000"
    assert (c.paths["cpuset"] / "cpuset.cpus").read_text() == "0-3"
    assert (c.paths["cpuset"] / "cpuset.mems").read_text() == "0"
    assert find_leftovers(tmp_path) == sorted(
        tmp_path / d / "isobench-fake" for d in ("cpu,cpuacct", "cpuset", "memory", "unified")
    )


def test_create_refuses_foreign_names(tmp_path):
    for bad in ("docker-1", "isobench-a/b", "isobench"):
        with pytest.raises(ValueError):
            Cgroup.create(bad, root=tmp_path)


def test_preexec_attach_writes_zero(tmp_path):
    files = [str(tmp_path / "a"), str(tmp_path / "b")]
    for f in files:
        Path(f).write_text("")
    subprocess.run(["true"], preexec_fn=preexec_attach(files), check=True)
    assert [Path(f).read_bytes() for f in files] == [b"0", b"0"]


def test_preexec_attach_failure_is_reported(tmp_path):
    with pytest.raises(subprocess.SubprocessError):
        missing = str(tmp_path / "missing/cgroup.procs")
        subprocess.run(["true"], preexec_fn=preexec_attach([missing]))


def test_find_leftovers_depth(tmp_path):
    (tmp_path / "isobench-1").mkdir()
    (tmp_path / "memory/isobench-2").mkdir(parents=True)
    (tmp_path / "memory/a/isobench-3").mkdir(parents=True)
    (tmp_path / "memory/a/b/isobench-4").mkdir(parents=True)  # depth 4: not searched
    (tmp_path / "memory/isobench-file").write_text("")
    assert find_leftovers(tmp_path) == [
        tmp_path / "isobench-1",
        tmp_path / "memory/a/isobench-3",
        tmp_path / "memory/isobench-2",
    ]


# ---------------------------------------------------------------- live (root + cgroupfs)


def _missing_capability() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create cgroups"
    if detect_layout() == "none":
        return "no cgroup hierarchy mounted at /sys/fs/cgroup"
    return None


@pytest.fixture
def cgroups():
    """Creates live cgroups with names unique to this test run; removes them all after."""
    reason = _missing_capability()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"cgroup capability missing in CI: {reason}")
        pytest.skip(reason)
    made: list[Cgroup] = []
    prefix = f"isobench-test-{os.getpid()}-"

    def create(**kw) -> Cgroup:
        c = Cgroup.create(f"{prefix}{len(made)}", **kw)
        made.append(c)
        return c

    yield create
    for c in made:
        c.remove()
    assert [p for p in find_leftovers() if p.name.startswith(prefix)] == []


BUSY_1S = "import time\nt = time.monotonic()\nwhile time.monotonic() - t < 1.0: pass\n"


@pytest.mark.requires("cgroup")
def test_live_cpu_quota_is_enforced_and_measured(cgroups):
    c = cgroups(cpus=0.5)
    before = c.read()
    child = subprocess.Popen(
        [sys.executable, "-c", BUSY_1S], preexec_fn=preexec_attach(c.procs_files)
    )
    time.sleep(0.1)
    assert child.pid in c.pids()
    assert child.wait(timeout=10) == 0
    d = delta(before, c.read())
    assert 350 <= d["cpu_total_ms"] <= 650, d
    assert d["throttled_ms"] > 0 and d["nr_throttled"] > 0, d
    assert d["cpu_user_ms"] > d["cpu_system_ms"], d
    assert d["mem_peak_mib"] > 1, d


@pytest.mark.requires("cgroup")
def test_live_reader_for_pid_sees_the_same_cgroup(cgroups):
    c = cgroups()
    child = subprocess.Popen(["sleep", "30"], preexec_fn=preexec_attach(c.procs_files))
    try:
        reader = CgroupReader.for_pid(child.pid)
        assert reader.layout == c.layout
        for key, path in reader.paths.items():
            assert os.path.realpath(path) == os.path.realpath(c.paths[key])
        assert reader.read().get("pids_current") in (None, 1.0)
    finally:
        c.kill_all()
        child.wait(timeout=5)


@pytest.mark.requires("cgroup")
def test_live_kill_all_kills_sleeper_and_its_children(cgroups):
    c = cgroups()
    child = subprocess.Popen(
        ["sh", "-c", "sleep 30 & sleep 30 & wait"], preexec_fn=preexec_attach(c.procs_files)
    )
    deadline = time.monotonic() + 2
    while len(c.pids()) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(c.pids()) == 3
    t = time.monotonic()
    c.kill_all()
    assert time.monotonic() - t < 2.5
    assert child.wait(timeout=5) == -9
    assert c.pids() == set()


@pytest.mark.requires("cgroup")
def test_live_remove_is_idempotent(cgroups):
    c = cgroups(cpus=1.0)
    c.remove()
    assert not any(Path(f).parent.exists() for f in c.procs_files)
    c.remove()  # already gone: no error
    assert c.read() == {}


def test_warm_migration_lock_rewrites_our_pid_where_we_are(tmp_path):
    """v1 and hybrid lines: the first hierarchy whose directory exists gets our pid."""
    (tmp_path / "pids" / "user.slice").mkdir(parents=True)
    procs = tmp_path / "pids" / "user.slice" / "cgroup.procs"
    procs.write_text("")
    me = tmp_path / "self-cgroup"
    me.write_text("12:cpuset:/gone\n5:pids:/user.slice\n0::/user.slice\n")
    warm_migration_lock(root=tmp_path, proc_self=me)
    assert procs.read_text() == str(os.getpid())
    v2 = tmp_path / "v2"
    (v2 / "a").mkdir(parents=True)
    (v2 / "a" / "cgroup.procs").write_text("")
    me.write_text("0::/a\n")
    warm_migration_lock(root=v2, proc_self=me)
    assert (v2 / "a" / "cgroup.procs").read_text() == str(os.getpid())
    warm_migration_lock(root=tmp_path, proc_self=tmp_path / "missing")  # never raises
