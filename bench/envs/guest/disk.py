"""The io disk: a raw file with an ext4 filesystem made on the host by mkfs.ext4 (lazy
init off, so no background ext4lazyinit in the guest), kept in the cache, copied sparsely
per boot and mounted at /mnt/io by the guest when a probe needs it."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from bench.envs.guest import GuestError

DISK_FS = "ext4"
DISK_MIB = 1024


def disk_template(cache: Path, size_mib: int = DISK_MIB) -> Path:
    """An empty ext4 image (sparse), made once by mkfs.ext4 and kept in the cache."""
    target = Path(cache) / "guest" / f"disk-{DISK_FS}-{size_mib}M.raw"
    if target.is_file():
        return target
    mkfs = shutil.which("mkfs.ext4") or shutil.which("mkfs.ext4", path="/sbin:/usr/sbin")
    if not mkfs:
        raise GuestError("mkfs.ext4 not found: apt-get install e2fsprogs")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".disk-", dir=target.parent)
    os.close(fd)
    try:
        os.truncate(tmp, size_mib * 2**20)
        res = subprocess.run(
            [
                mkfs,
                "-F",
                "-q",
                "-L",
                "isobench-io",
                "-E",
                "lazy_itable_init=0,lazy_journal_init=0,nodiscard",
                tmp,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if res.returncode != 0:
            raise GuestError(f"mkfs.ext4 failed: {res.stderr.strip()[:300]}")
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return target


def new_disk(template: Path, dest: Path) -> Path:
    """A private copy of the template for one launch (sparse where cp can)."""
    res = subprocess.run(
        ["cp", "--sparse=always", "--reflink=auto", str(template), str(dest)],
        capture_output=True,
        text=True,
        check=False,
    )
    if res.returncode != 0:
        raise GuestError(f"copying the io disk failed: {res.stderr.strip()[:300]}")
    return dest
