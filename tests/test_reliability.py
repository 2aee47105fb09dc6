"""Real runs interrupted by real signals, killed with SIGKILL, resumed, and run twice at
once: what was measured stays, nothing is left behind, the second run is refused."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import store
from bench.metrics.cgroup import find_leftovers

ROOT = Path(__file__).parents[1]


def start(tmp_path, *args, lock=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ISOBENCH_LOCK": str(lock or tmp_path / "lock")}
    return subprocess.Popen(
        [sys.executable, "-m", "bench.cli", "run", "--results", str(tmp_path / "results"), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def isobench(tmp_path, *args, lock=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ISOBENCH_LOCK": str(lock or tmp_path / "lock")}
    return subprocess.run(
        [sys.executable, "-m", "bench.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


LONG = [
    "--env",
    "host",
    "--env",
    "namespaces",
    "--workload",
    "syscall",
    "--quick",
    "--rounds",
    "40",
    "--max-rounds",
    "40",
    "--seed",
    "11",
]


def wait_for_samples(tmp_path, n, proc, limit=120):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        runs = list((tmp_path / "results").glob("*/samples.jsonl"))
        if runs and len(runs[0].read_text().splitlines()) >= n:
            return runs[0].parent
        time.sleep(0.1)
    raise AssertionError("the run wrote no samples in time")


def our_leftovers(run_dir):
    return [p for p in find_leftovers() if run_dir.name in p.name]


def assert_intact(run_dir):
    lines = (run_dir / "samples.jsonl").read_text().splitlines()
    assert lines and all(json.loads(line) for line in lines)  # no torn line
    return len(lines)


@pytest.mark.requires("host", "namespaces")
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_stops_cleans_and_keeps_samples(tmp_path, sig, code):
    proc = start(tmp_path, *LONG)
    run_dir = wait_for_samples(tmp_path, 30, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "Traceback" not in err and "resume with" in err
    assert store.read_manifest(run_dir)["status"] == "interrupted"
    assert assert_intact(run_dir) >= 30
    assert our_leftovers(run_dir) == []
    assert not list(Path("/var/tmp").glob(f"isobench-{run_dir.name}-*"))


@pytest.mark.requires("host", "namespaces")
def test_second_ctrl_c_during_cleanup_leaves_nothing(tmp_path):
    proc = start(tmp_path, *LONG)
    run_dir = wait_for_samples(tmp_path, 30, proc)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert store.read_manifest(run_dir)["status"] == "interrupted"
    assert our_leftovers(run_dir) == []


@pytest.mark.requires("host", "namespaces")
def test_resume_completes_the_planned_rounds(tmp_path):
    # syscall launches take ~0.4 s: the run is still measuring when the signal comes
    args = [
        "--env",
        "host",
        "--env",
        "namespaces",
        "--workload",
        "syscall",
        "--quick",
        "--rounds",
        "12",
        "--max-rounds",
        "12",
        "--seed",
        "5",
    ]
    proc = start(tmp_path, *args)
    run_dir = wait_for_samples(tmp_path, 40, proc)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode == 130
    before = assert_intact(run_dir)
    seed = store.read_manifest(run_dir)["matrix"]["seed"]
    res = isobench(tmp_path, "run", "--resume", str(run_dir))
    assert res.returncode == 0, res.stderr
    manifest = store.read_manifest(run_dir)
    assert manifest["status"] == "complete" and manifest["matrix"]["seed"] == seed
    assert manifest["rounds_done"] == 12
    records = store.read_records(run_dir)
    assert len(records) > before
    launches = {(r["round"], r["cell"], r["launch"]) for r in records if r["round"] >= 1}
    per_cell = {}
    for rnd, cell, _ in launches:
        per_cell[(rnd, cell)] = per_cell.get((rnd, cell), 0) + 1
    assert set(per_cell.values()) == {1}  # every planned launch exactly once
    assert len(per_cell) == 12 * 2
    res = isobench(tmp_path, "run", "--resume", str(run_dir))
    assert res.returncode == 2 and "complete" in res.stderr


@pytest.mark.requires("host", "namespaces")
def test_second_run_is_refused_while_one_measures(tmp_path):
    proc = start(tmp_path, *LONG)
    run_dir = wait_for_samples(tmp_path, 5, proc)
    res = isobench(tmp_path, "run", "--env", "host", "--results", str(tmp_path / "other"))
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert res.returncode == 2
    line = res.stderr.strip()
    assert line.count("\n") == 0 and f"pid {proc.pid}" in line and str(run_dir) in line
    assert not (tmp_path / "other").exists()


@pytest.mark.requires("host")
def test_kill_9_leftovers_are_found_and_cleaned(tmp_path):
    proc = start(
        tmp_path,
        "--env",
        "host",
        "--workload",
        "io",
        "--rounds",
        "30",
        "--max-rounds",
        "30",
        "--warmup",
        "0",
    )
    deadline = time.monotonic() + 60
    run_dir = None
    while time.monotonic() < deadline:
        runs = list((tmp_path / "results").glob("*"))
        if runs and our_leftovers(runs[0]):
            run_dir = runs[0]
            break
        time.sleep(0.02)
    assert run_dir is not None, "no launch started"
    proc.kill()
    proc.communicate()
    left = our_leftovers(run_dir)
    scratch = list(Path("/var/tmp").glob(f"isobench-{run_dir.name}-*"))
    assert left and scratch  # a crash does leave things behind ...
    res = isobench(tmp_path, "clean", "--dry-run")
    assert res.returncode == 0
    assert all(str(p) in res.stdout for p in left + scratch)
    assert our_leftovers(run_dir) == left  # --dry-run removed nothing
    other = Path("/var/tmp/not-isobench-keep-me")
    other.mkdir(exist_ok=True)
    res = isobench(tmp_path, "clean")
    assert res.returncode == 0, res.stderr
    assert our_leftovers(run_dir) == [] and not any(p.exists() for p in scratch)
    assert other.is_dir()  # ... and clean touches nothing else
    other.rmdir()
    assert store.read_manifest(run_dir)["status"] == "running"  # a crash: resumable


@pytest.mark.requires("podman", "oci")
def test_ctrl_c_at_any_moment_of_a_podman_or_oci_run_leaves_nothing(tmp_path):
    """Eight runs, each interrupted at another moment of its launches (a teardown among
    them): no cgroup, container or scratch of the run may remain."""
    for i in range(8):
        d = tmp_path / str(i)
        d.mkdir()
        proc = start(
            d,
            "--env",
            "podman",
            "--env",
            "oci",
            "--workload",
            "startup",
            "--workload",
            "syscall",
            "--quick",
            "--seed",
            str(i),
        )
        run_dir = wait_for_samples(d, 1, proc)
        time.sleep(0.13 * i)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 130, err
        assert our_leftovers(run_dir) == [], f"interrupt {i}"
        label = f"label=isobench.run={run_dir.name}"
        ps = subprocess.run(
            ["podman", "ps", "-a", "-q", "--filter", label],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert ps.stdout.strip() == "", f"interrupt {i}: podman containers left"
        runc = subprocess.run(
            ["runc", "--root", "/run/isobench-oci/runc", "list", "-q"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run_dir.name not in runc.stdout, f"interrupt {i}: runc containers left"
        assert not list(Path("/var/tmp").glob(f"isobench-{run_dir.name}-*"))
