"""The initramfs format: a "newc" cpio archive, written and read (pure)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

DIR, REG, LNK = 0o040000, 0o100000, 0o120000


@dataclass(frozen=True)
class CpioEntry:
    name: str  # without a leading "/"
    mode: int  # full st_mode: S_IFREG | 0o755 ...
    data: bytes = b""  # file contents, or the target of a symlink


def _pad4(n: int) -> bytes:
    return b"\0" * (-n % 4)


def write_newc(entries: Iterable[CpioEntry]) -> bytes:
    """Pure: a newc ("070701") cpio archive, uid/gid 0, mtime 0 (reproducible)."""
    out = bytearray()
    ino = 1
    for e in [*entries, CpioEntry("TRAILER!!!", 0)]:
        name = e.name.encode() + b"\0"
        fields = (
            ino,
            e.mode,
            0,
            0,
            1 if e.name != "TRAILER!!!" else 0,
            0,
            len(e.data),
            0,
            0,
            0,
            0,
            len(name),
            0,
        )
        header = b"070701" + b"".join(f"{v:08x}".encode() for v in fields)
        out += header + name + _pad4(len(header) + len(name))
        out += e.data + _pad4(len(e.data))
        ino += 1
    return bytes(out)


def read_newc(data: bytes) -> list[CpioEntry]:
    """Pure: the entries of a newc archive (for tests and inspection)."""
    entries, pos = [], 0
    while True:
        if data[pos : pos + 6] != b"070701":
            raise ValueError(f"bad cpio magic at offset {pos}")
        vals = [int(data[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = vals[1], vals[6], vals[11]
        name_start = pos + 110
        name = data[name_start : name_start + namesize - 1].decode()
        pos = name_start + namesize
        pos += -pos % 4
        body = data[pos : pos + size]
        pos += size
        pos += -pos % 4
        if name == "TRAILER!!!":
            return entries
        entries.append(CpioEntry(name, mode, body))
