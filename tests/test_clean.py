"""`isobench clean` touches only what it can prove isobench made and whose run is gone:
real directories in the real scratch root, a real dead process and a live one."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import clean
from bench.scratch import PREFIX, new_scratch, owner, scratch_root

ROOT = Path(__file__).parents[1]


def dry_run(tmp_path) -> list[str]:
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


@pytest.fixture
def dirs():
    made: list[Path] = []
    yield made
    for path in made:
        shutil.rmtree(path, ignore_errors=True)


def dead_run_scratch(run_id: str) -> Path:
    """A scratch directory made by a real run process that has exited since."""
    code = f"from bench.scratch import new_scratch; print(new_scratch({run_id!r}))"
    res = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=True,
    )
    return Path(res.stdout.strip())


def test_only_marked_dirs_of_dead_runs_are_removed(tmp_path, dirs):
    tag = secrets.token_hex(3)
    user = Path(scratch_root()) / f"{PREFIX}workspace-{tag}"  # a user's look-alike
    user.mkdir()
    (user / "results.csv").write_text("mine\n")
    dirs.append(user)
    dead = dead_run_scratch(f"cleantest-dead-{tag}")
    dirs.append(dead)
    live = new_scratch(f"cleantest-live-{tag}")  # this process is its run: alive
    dirs.append(live)
    assert owner(dead) and owner(live) and owner(user) is None

    lines = dry_run(tmp_path)
    assert f"would remove scratch directory {dead}" in lines
    kept = f"keeping scratch directory {live}: run cleantest-live-{tag} is still running"
    assert f"{kept} (pid {os.getpid()})" in lines
    assert not [line for line in lines if str(user) in line]  # never even listed
    assert dead.is_dir() and live.is_dir() and user.is_dir()  # --dry-run removed nothing

    # what `clean` does with each of them (only ours: other runs' leftovers stay)
    found = {item.what: item for item in clean.find_all()}
    live_runs = clean.live_runs()
    for path in (dead, live):
        item = found[f"scratch directory {path}"]
        if not clean.still_in_use(item.what, live_runs):
            item.remove()
    assert not dead.exists()
    assert live.is_dir() and (user / "results.csv").read_text() == "mine\n"


def test_a_live_runs_other_leftovers_are_kept():
    live = {"20260101-000000-ab12": 4242}
    assert "still running (pid 4242)" in clean.still_in_use(
        "docker container 3f2a9c (isobench-20260101-000000-ab12-7)", live
    )
    assert "still running" in clean.still_in_use(
        "cgroup /sys/fs/cgroup/cpu/isobench-20260101-000000-ab12-3", live
    )
    assert (
        clean.still_in_use("docker container 3f2a9c (isobench-20260101-000000-ab13-7)", live) == ""
    )


def test_a_veth_or_tap_is_kept_while_its_run_or_maker_lives():
    live = {"20260101-000000-ab12": 4242}
    veth = "network interface ibv1a2b3c4dh (isobench-20260101-000000-ab12-e1-3)"
    assert "still running (pid 4242)" in clean.still_in_use(veth, live)
    assert clean.still_in_use(veth, {}) == ""
    tap = f"network interface ibt0badf00d (isobench-t-qemu-p{os.getpid()}-1)"
    assert f"pid {os.getpid()}" in clean.still_in_use(tap, {})


def test_what_is_made_outside_a_run_names_the_process_that_made_it():
    mine = f"cgroup /sys/fs/cgroup/memory/{PREFIX}harness-p{os.getpid()}-3"
    assert f"pid {os.getpid()}" in clean.still_in_use(mine, {})
    guest = f"QEMU process 55 ({PREFIX}t-qemu-p{os.getpid()}-1)"  # a test's live guest
    assert f"pid {os.getpid()}" in clean.still_in_use(guest, {})
    gone = subprocess.Popen(["true"])
    gone.wait()
    dead = f"cgroup /sys/fs/cgroup/memory/{PREFIX}harness-p{gone.pid}-3"
    assert clean.still_in_use(dead, {}) == ""


def test_a_fresh_half_built_bundle_may_still_be_building(tmp_path):
    path = tmp_path / ".building-x"
    path.mkdir()
    what = f"half-built bundle {path}"
    assert "may still be building" in clean.still_in_use(what, {})
    later = time.time() + clean.BUILD_STALE_S + 1
    assert clean.still_in_use(what, {}, now=later) == ""
