"""One run at a time per host: two runs at once would measure each other."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK = Path(
    os.environ.get(
        "ISOBENCH_LOCK",
        "/run/isobench.lock" if os.geteuid() == 0 else f"/tmp/isobench-{os.getuid()}.lock",
    )
)


class LockError(RuntimeError):
    """Another run holds the lock; the message names its pid and directory."""


class RunLock:
    def __init__(self, run_dir: Path, path: Path = LOCK):
        self.path = path
        self.run_dir = run_dir
        self.fd = -1

    def __enter__(self) -> RunLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            pid, _, where = holder.partition(" ")
            raise LockError(
                f"another isobench run is measuring on this host (pid {pid}, {where or '?'}): "
                "wait for it, or stop it first"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {self.run_dir}\n".encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd >= 0:
            os.ftruncate(self.fd, 0)
            os.close(self.fd)  # closing releases the flock
            self.fd = -1
