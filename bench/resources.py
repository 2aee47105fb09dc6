"""Where the files that ship with isobench live: probe sources, the catalog, report assets.

In a wheel they are inside the package (bench/_data/...); in a source checkout they are
the top-level workloads/ and reports/ folders.
"""

from __future__ import annotations

import os
from pathlib import Path

_PKG = Path(__file__).resolve().parent


def _data(name: str) -> Path:
    installed = _PKG / "_data" / name
    return installed if installed.is_dir() else _PKG.parent / name


def workloads_dir() -> Path:
    return _data("workloads")


def reports_dir() -> Path:
    return _data("reports")


def cache_dir() -> Path:
    """Artifacts kept between runs: bundles, images, guest initramfs."""
    if env := os.environ.get("ISOBENCH_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "isobench"
