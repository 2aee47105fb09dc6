"""Scratch directories a run owns: disk-backed, named isobench-<run>-…, and marked.

The marker file names the run and the process that made the directory, so that
`isobench clean` removes only directories it can prove a run made and whose process is
gone; a user's directory that merely shares the prefix has no marker and is never
touched."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

PREFIX = "isobench-"
MARKER = ".isobench-scratch"


def scratch_root() -> str:
    """Disk-backed temp space (io probes must not land on tmpfs by accident)."""
    for d in ("/var/tmp", tempfile.gettempdir()):
        if Path(d).is_dir():
            return d
    return tempfile.gettempdir()


def new_scratch(run_id: str) -> Path:
    """A fresh directory for this run, with its owner marker written first."""
    path = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{run_id}-", dir=scratch_root()))
    mark(path, run_id=run_id)
    return path


def mark(path: Path, **fields: str) -> None:
    """Write the owner marker into `path`: `fields`, then this process and this boot."""
    owner = {**fields, "pid": os.getpid(), "boot_id": _boot_id()}
    (path / MARKER).write_text(json.dumps(owner) + "\n")


def owner(path: Path) -> dict | None:
    """The marker's content, or None when the directory is not one isobench made."""
    try:
        data = json.loads((path / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "pid" in data else None


def owner_alive(data: dict) -> bool:
    """Whether the process that made the directory still runs (same boot, same pid)."""
    if data.get("boot_id") != _boot_id():
        return False
    try:
        os.kill(int(data["pid"]), 0)
    except (ProcessLookupError, ValueError, TypeError):
        return False
    except PermissionError:
        return True
    return True


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""
