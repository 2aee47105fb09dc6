"""`isobench clean`: find and remove what crashed runs left behind: containers, images
no bundle needs, guests, the net workload's veths and taps, cgroups, scratch directories
and half-built bundles.

It touches only what it can prove isobench made (a label, a name an isobench run
gives, the owner marker of a scratch directory: a user's `/tmp/isobench-notes/` has
none and is never listed) and only when the run that made it is no longer alive: a run
is alive while the process named in its scratch marker runs (same boot), and a host
cgroup names the pid of the process that made it. It refuses while a run holds the
lock. A veth or tap is isobench's when its name has isobench's prefix and its alias
names the instance that made it ("isobench <instance>")."""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil

from bench.envs import REGISTRY
from bench.envs.base import Leftover
from bench.envs.guest.tap import TAP_PREFIX
from bench.envs.namespaces import VETH_PREFIX, link_leftovers
from bench.lock import RunLock
from bench.metrics.cgroup import Cgroup
from bench.metrics.cgroup import find_leftovers as cgroup_leftovers
from bench.resources import cache_dir
from bench.scratch import PREFIX, owner, owner_alive, scratch_root

BUILD_STALE_S = 600  # a `.building-*` bundle younger than this may be a build in progress
# what an environment makes outside a run (tests, the harness) names its maker's pid:
# isobench-<run id>-p<pid>-<n> (bench.envs.base.Context)
MADE_OUTSIDE_A_RUN = re.compile(rf"{PREFIX}[\w.-]*?-p\d+-\d+\b")


def _rmtree(path: Path):
    return lambda: shutil.rmtree(path, ignore_errors=True)


def scratch_dirs() -> list[Path]:
    """Every scratch directory with an owner marker (isobench made it), live or not."""
    found = []
    for root in sorted({scratch_root(), tempfile.gettempdir()}):
        for path in sorted(Path(root).glob(PREFIX + "*")):
            if path.is_dir() and not path.is_symlink() and owner(path) is not None:
                found.append(path)
    return found


def live_runs() -> dict[str, int]:
    """run id -> pid of every run whose scratch marker names a process that still runs."""
    live = {}
    for path in scratch_dirs():
        data = owner(path)
        if data and owner_alive(data):
            live[str(data.get("run_id"))] = int(data["pid"])
    return live


def _leftovers_of(cls) -> list[Leftover]:
    try:
        return list(cls.leftovers())
    except Exception as e:  # an engine that is down cannot have its leftovers listed
        return [Leftover(f"{cls.kind}: could not look for leftovers ({e})", lambda: None)]


def find_all() -> list[Leftover]:
    """Everything isobench can prove it made, whether its run is alive or not. The kinds
    are asked at once (each waits on its engine: dockerd, the podman CLI...), their
    answers kept in the registry's order."""
    with ThreadPoolExecutor(max_workers=len(REGISTRY)) as pool:
        found = [item for items in pool.map(_leftovers_of, REGISTRY.values()) for item in items]
    found.extend(link_leftovers((VETH_PREFIX, TAP_PREFIX)))  # after the guests that use them
    for path in cgroup_leftovers():
        found.append(Leftover(f"cgroup {path}", Cgroup.at(path).remove))
    for path in scratch_dirs():
        found.append(Leftover(f"scratch directory {path}", _rmtree(path)))
    bundles = cache_dir() / "bundles"
    if bundles.is_dir():
        for path in sorted(bundles.glob(".building-*")):
            found.append(Leftover(f"half-built bundle {path}", _rmtree(path)))
    return found


def still_in_use(what: str, live: dict[str, int], now: float | None = None) -> str:
    """Why a leftover must be kept ("" when it may go): its run, or the process that
    made it, is alive; a half-built bundle may still be building."""
    for run_id, pid in live.items():
        if f"{PREFIX}{run_id}-" in what:
            return f"run {run_id} is still running (pid {pid})"
    for name in MADE_OUTSIDE_A_RUN.findall(what):  # a cgroup, a guest, a container
        pid = int(name.rsplit("-p", 1)[1].split("-")[0])
        if psutil.pid_exists(pid):  # what it names does not outlive a boot
            return f"the process that made it (pid {pid}) is still running"
    if what.startswith("half-built bundle "):
        path = Path(what.removeprefix("half-built bundle "))
        try:
            age = (now or time.time()) - path.stat().st_mtime
        except OSError:
            return ""
        if age < BUILD_STALE_S:
            return f"it may still be building ({age:.0f} s old)"
    return ""


def clean(dry_run: bool, log=print) -> int:
    """Remove (or with dry_run list) every leftover whose run is gone; returns how many
    were (or would be) removed. What a live run still uses is named and kept."""
    with RunLock(Path("(isobench clean)")):
        live = live_runs()
        removed = 0
        for item in find_all():
            why = still_in_use(item.what, live)
            if why:
                log(f"keeping {item.what}: {why}")
                continue
            log(("would remove " if dry_run else "removing ") + item.what)
            removed += 1
            if not dry_run:
                item.remove()
    if not removed:
        log("nothing to clean")
    return removed
