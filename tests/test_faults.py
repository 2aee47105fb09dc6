"""Faults during a real run: the engine going away and coming back, a results disk that
fills up. The cell is recorded as failed with its reason, the rest of the matrix goes
on, and nothing already written is lost or corrupted."""

import json
import shutil
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from test_reliability import start, wait_for_samples


def docker_up() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except subprocess.TimeoutExpired:  # a daemon shutting down may hold the socket unanswered
        return False


def dockerd_pid() -> int:
    return int(Path("/var/run/docker.pid").read_text())


def wait(pred, limit: float) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.5)
    return False


@pytest.mark.requires("docker", "host")
def test_dockerd_stopped_and_restarted_mid_run(tmp_path):
    # rounds go on until the budget (the run's wall clock) is spent: an unreachable
    # precision keeps them going, and the host's syscall launches (~0.5 s) keep a round
    # long while docker's fail at once, so the run outlasts the outage
    args = ["--env", "host", "--env", "docker", "--workload", "syscall", "--quick"]
    proc = start(
        tmp_path,
        *args,
        "--max-rounds",
        "400",
        "--budget",
        "40",
        "--precision",
        "0.0001",
        "--warmup",
        "0",
        "--seed",
        "2",
    )
    run_dir = wait_for_samples(tmp_path, 20, proc, limit=180)
    daemon = psutil.Process(dockerd_pid())
    daemon.terminate()
    try:
        assert wait(lambda: not docker_up(), 60), "dockerd did not stop"
        time.sleep(3)  # launches fail while it is away
    finally:
        # its API goes before the daemon does (it still stops containerd and removes its
        # pid file): a second dockerd started meanwhile finds that file and exits
        daemon.wait(120)
        with open(tmp_path / "dockerd.log", "w") as log:
            subprocess.Popen(
                [shutil.which("dockerd")],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        came_back = wait(docker_up, 90)
        assert came_back, (tmp_path / "dockerd.log").read_text()[-2000:]
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    records = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    rounds = {r["round"] for r in records}
    host = {r["round"] for r in records if r["env"] == "host" and r["status"] == "ok"}
    assert host == rounds  # the host cells went on through the outage
    failed = [r for r in records if r["env"] == "docker" and r["status"] != "ok"]
    assert failed and all(r["reason"] for r in failed)
    ok_after = [
        r
        for r in records
        if r["env"] == "docker"
        and r["status"] == "ok"
        and r["launch"] > max(f["launch"] for f in failed)
    ]
    assert ok_after, "docker cells did not recover once dockerd was back"
    left = subprocess.run(
        ["docker", "ps", "-aq", "--filter", "label=isobench"], capture_output=True, text=True
    ).stdout
    assert left.strip() == ""


@pytest.mark.requires("root", "host")
def test_results_disk_fills_up_mid_run(tmp_path):
    """Results on a 128 KiB tmpfs: the run measures on, says what could not be saved,
    exits 1, and every line on disk is whole."""
    results = tmp_path / "results"
    results.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128k", "tmpfs", str(results)], check=True)
    try:
        proc = start(
            tmp_path,
            "--env",
            "host",
            "--workload",
            "syscall",
            "--quick",
            "--rounds",
            "20",
            "--max-rounds",
            "20",
            "--warmup",
            "0",
        )
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 1, err
        assert "No space left on device" in err and "Traceback" not in err
        assert "could not be written" in err.strip().splitlines()[-1]
        (run_dir,) = results.iterdir()
        lines = (run_dir / "samples.jsonl").read_text().splitlines()
        assert len(lines) > 100 and all(json.loads(line) for line in lines)
        assert json.loads((run_dir / "manifest.json").read_text())["run_id"] == run_dir.name
    finally:
        subprocess.run(["umount", "-l", str(results)], check=True)


def virsh_names() -> list[str]:
    out = subprocess.run(
        ["virsh", "-c", "qemu:///system", "list", "--all", "--name"],
        capture_output=True,
        text=True,
        timeout=20,
    )
    return (
        [n for n in out.stdout.split() if n.startswith("isobench")] if out.returncode == 0 else []
    )


def libvirtd_up() -> bool:
    res = subprocess.run(["virsh", "-c", "qemu:///system", "list"], capture_output=True, timeout=20)
    return res.returncode == 0


@pytest.mark.requires("libvirt", "host")
def test_libvirtd_stopped_mid_launch_and_restarted(tmp_path):
    # rounds go on until the budget (the run's wall clock, guest preparation included) is
    # spent, so the run outlasts the outage (launches fail at once while libvirtd is away)
    args = ["--env", "host", "--env", "libvirt", "--workload", "startup", "--rounds", "3"]
    proc = start(
        tmp_path,
        *args,
        "--max-rounds",
        "400",
        "--budget",
        "75",
        "--precision",
        "0.0001",
        "--warmup",
        "0",
        "--timeout",
        "120",
    )
    assert wait(lambda: bool(virsh_names()) or proc.poll() is not None, 120), "no guest started"
    subprocess.run(["pkill", "-TERM", "-x", "libvirtd"], check=True)
    try:
        gone = lambda: subprocess.run(["pgrep", "-x", "libvirtd"]).returncode == 1  # noqa: E731
        assert wait(gone, 30), "libvirtd did not stop"
    finally:
        subprocess.run([shutil.which("libvirtd"), "-d"], check=True)
        assert wait(libvirtd_up, 60), "libvirtd did not come back"
    back = time.time()
    _, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err
    (run_dir,) = (tmp_path / "results").iterdir()
    records = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    rounds = {r["round"] for r in records}
    host = {r["round"] for r in records if r["env"] == "host" and r["status"] == "ok"}
    assert host == rounds  # the host cells went on through the outage
    failed = [r for r in records if r["env"] == "libvirt" and r["status"] != "ok"]
    assert failed and all("libvirt" in r["reason"] for r in failed)
    later = [r for r in records if r["env"] == "libvirt" and r["t"] > back]
    assert any(r["status"] == "ok" for r in later), "no reconnect once libvirtd was back"
    assert wait(lambda: not virsh_names(), 60), virsh_names()
