"""`isobench clean`: find and remove what crashed runs left behind, by label or name
prefix only: containers, images no bundle needs, guests, cgroups, scratch directories
and half-built bundles. It refuses while a run is measuring."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from bench.envs import REGISTRY
from bench.envs.base import Leftover
from bench.lock import RunLock
from bench.metrics.cgroup import Cgroup
from bench.metrics.cgroup import find_leftovers as cgroup_leftovers
from bench.resources import cache_dir
from bench.scratch import scratch_root

SCRATCH_PREFIX = "isobench-"


def _rmtree(path: Path):
    return lambda: shutil.rmtree(path, ignore_errors=True)


def _rmdir_cgroup(path: Path):
    """One leftover directory in one hierarchy: kill what is in it, then rmdir it."""
    return Cgroup("v2" if (path / "cgroup.kill").exists() else "v1", {"": path}).remove


def find_all() -> list[Leftover]:
    found: list[Leftover] = []
    for cls in REGISTRY.values():
        try:
            found.extend(cls.leftovers())
        except Exception as e:  # an engine that is down cannot have its leftovers listed
            found.append(Leftover(f"{cls.kind}: could not look for leftovers ({e})", lambda: None))
    for path in cgroup_leftovers():
        found.append(Leftover(f"cgroup {path}", _rmdir_cgroup(path)))
    for root in {scratch_root(), tempfile.gettempdir()}:
        for path in sorted(Path(root).glob(SCRATCH_PREFIX + "*")):
            if path.is_dir():
                found.append(Leftover(f"scratch directory {path}", _rmtree(path)))
    bundles = cache_dir() / "bundles"
    if bundles.is_dir():
        for path in sorted(bundles.glob(".building-*")):
            found.append(Leftover(f"half-built bundle {path}", _rmtree(path)))
    return found


def clean(dry_run: bool, log=print) -> int:
    """Remove (or with dry_run list) every leftover; returns how many were found."""
    with RunLock(Path("(isobench clean)")):
        found = find_all()
        for item in found:
            log(("would remove " if dry_run else "removing ") + item.what)
            if not dry_run:
                item.remove()
    if not found:
        log("nothing to clean")
    return len(found)
