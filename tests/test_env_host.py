"""Real host and namespaces launches of every probe: records, phases, cgroup figures,
and nothing left behind."""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from bench import catalog
from bench.envs.base import Context, Invocation
from bench.envs.host import HostEnv
from bench.envs.namespaces import NamespacesEnv
from bench.metrics.cgroup import find_leftovers

SYSCALL_OPS = {
    "null",
    "read",
    "write",
    "open_close",
    "stat",
    "fstat",
    "clock_gettime",
    "page_fault",
    "fork",
    "fork_exec",
    "pipe_pingpong",
}
EXPECTED = {
    "syscall": SYSCALL_OPS,
    "cpu": {"compute", "mem_bw", "mem_lat"},
    "io": {"seq_write", "seq_read", "rand_read_4k", "fsync_lat", "create_unlink"},
    "startup": set(),
}


@pytest.fixture
def ctx(tmp_path):
    return Context(run_id=f"t{os.getpid()}", scratch=tmp_path, cache=tmp_path / "cache")


@pytest.mark.requires("host", "namespaces")
@pytest.mark.parametrize("cls", [HostEnv, NamespacesEnv])
@pytest.mark.parametrize("workload", sorted(EXPECTED))
def test_every_probe_runs(cls, workload, ctx, bundle):
    env = cls({}, ctx)
    env.prepare(bundle)
    inv = catalog.load()[workload].invocation(quick=True, emulated=False)
    launch = env.launch(inv, timeout=60)
    env.cleanup()
    assert launch.status == "ok", launch.reason
    assert {r["op"] for r in launch.records} == EXPECTED[workload]
    assert 0 < launch.phases["ready"] <= launch.phases["exit"] <= launch.phases["cleaned"]
    assert launch.cgroup["cpu_total_ms"] >= 0 and "mem_peak_mib" in launch.cgroup
    for r in launch.records:
        assert all(v > 0 for v in r["metrics"].values()), r
    assert not [p for p in find_leftovers() if ctx.run_id in p.name]
    assert list(ctx.scratch.iterdir()) == []  # the io work directory is gone


@pytest.mark.requires("namespaces")
def test_namespaces_really_isolate(ctx, bundle):
    """Inside, the probe is pid 1's child in a fresh pid namespace with no network."""
    env = NamespacesEnv({}, ctx)
    env.prepare(bundle)
    launch = env.launch(Invocation("syscall", "syscall", ("--op", "null")), timeout=30)
    assert launch.status == "ok"
    # getppid() inside a new pid namespace returns 0 (the parent is outside): checksum 0
    assert launch.records[0]["checksum"] == 0


@pytest.mark.requires("host")
def test_timeout_kills_and_cleans(ctx, bundle, tmp_path):
    """A probe that never finishes in time: killed at the timeout, cgroup removed."""
    env = HostEnv({}, ctx)
    env.prepare(bundle)
    inv = Invocation("syscall", "syscall", ("--op", "null", "--min-ms", "60000"))
    launch = env.launch(inv, timeout=1.5)
    assert launch.status == "timeout" and "within 1.5 s" in launch.reason
    assert not [p for p in find_leftovers() if ctx.run_id in p.name]
    out = subprocess.run(["pgrep", "-f", "--min-ms 60000"], capture_output=True, text=True)
    assert out.stdout.strip() == ""


@pytest.mark.requires("host")
def test_crashing_probe_is_a_failure_with_its_reason(ctx, bundle):
    env = HostEnv({}, ctx)
    env.prepare(bundle)
    launch = env.launch(Invocation("io", "io", ("--dir", "/nonexistent/dir")), timeout=30)
    assert launch.status == "failed" and "exited with status" in launch.reason


NS = "[bold]ns[/bold]<b>"


@pytest.mark.requires("host", "namespaces")
def test_cli_quick_run_and_summary(tmp_path):
    """The README's first steps, from a directory outside the checkout."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    cmd = [sys.executable, "-m", "bench.cli"]
    res = subprocess.run(
        [
            *cmd,
            "run",
            "--env",
            "host",
            "--env",
            f"namespaces:label={NS}",
            "--workload",
            "syscall",
            "--workload",
            "startup",
            "--quick",
            "--rounds",
            "3",
            "--max-rounds",
            "3",
            "--results",
            str(tmp_path / "results"),
            "--seed",
            "3",
        ],
        capture_output=True,
        text=True,
        cwd=tempfile.gettempdir(),
        env=env,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    (run_dir,) = (tmp_path / "results").iterdir()
    res = subprocess.run(
        [*cmd, "summary", str(run_dir), "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    import json

    rows = [json.loads(line) for line in res.stdout.splitlines()]
    keys = {"median", "ci_low", "ci_high", "n", "ratio", "ratio_ci_low", "ratio_ci_high"}
    assert all(keys <= set(r) for r in rows)
    ns_null = next(r for r in rows if r["env"] == NS and r["op"] == "null")
    assert ns_null["n"] == 3 and ns_null["ratio"] > 0
    startup = {r["metric"] for r in rows if r["workload"] == "startup"}
    assert {"ready_ms", "exit_ms", "cleaned_ms"} <= startup
    table = subprocess.run(
        [*cmd, "summary", str(run_dir)], capture_output=True, text=True, env=env, timeout=120
    )
    assert table.returncode == 0 and NS in table.stdout  # a label is text, never markup
