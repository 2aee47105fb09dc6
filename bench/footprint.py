"""Disk footprint of a prepared environment, measured once per run: what its artefacts
take on disk (an image, an unpacked rootfs, a guest's kernel + initramfs + disk
template, the probe bundle itself) and what one instance adds after one io launch (a
container's writable layer, a guest's io disk, an OCI bundle directory).

Every figure says what it counts, in words: allocated blocks (st_blocks * 512, what the
filesystem gives up) or apparent size (st_size), and where the number comes from (an
engine's API, a walk of a directory). A figure that cannot be had honestly has
``bytes: None`` and a ``reason``; nothing is estimated.

    disk_footprint(env, bundle, io=<the io Invocation>) -> {"figures": [...]}

Each kind measures its own (``Environment.disk_footprint``, in the kind's module) with
the kind-neutral pieces here: the parsers, ``du``, the figure helpers and ``after_io``.
The per-instance figure starts one io launch through the environment's own
``start()``; the instance is waited for, or aborted on any error (Ctrl-C included), so
nothing is left behind.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.envs.base import Environment, Instance, Invocation

CALL_TIMEOUT_S = 60  # one engine call (inspect --size walks the layer: not instant)
IO_TIMEOUT_S = 600  # the io launch (a TCG guest boots for a while)
BLOCK = 512  # st_blocks unit (POSIX)


# ---------------------------------------------------------------- pure helpers


@dataclass(frozen=True)
class Usage:
    """A tree's size: allocated (st_blocks * 512) and apparent (st_size), each inode once."""

    allocated: int
    apparent: int
    inodes: int


def tally(entries: Iterable[tuple[int, int, int, int, int]]) -> Usage:
    """Pure: (st_dev, st_ino, st_nlink, st_blocks, st_size) per directory entry -> Usage,
    an inode with several links (a hard link) counted once, as du does."""
    seen: set[tuple[int, int]] = set()
    allocated = apparent = inodes = 0
    for dev, ino, nlink, blocks, size in entries:
        if nlink > 1:
            if (dev, ino) in seen:
                continue
            seen.add((dev, ino))
        allocated += blocks * BLOCK
        apparent += size
        inodes += 1
    return Usage(allocated, apparent, inodes)


def parse_find_listing(text: str) -> list[tuple[int, int, int, int, int]]:
    """Pure: lines of `find DIR -printf '%D %i %n %b %s %p\\n'` -> tally()'s entries
    (%b is in 512-byte blocks, as st_blocks)."""
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        dev, ino, nlink, blocks, size, _path = line.split(" ", 5)
        out.append((int(dev), int(ino), int(nlink), int(blocks), int(size)))
    return out


def _walk(root: Path):
    """lstat of root and of every entry below it; symlinks are not followed, other
    filesystems are not entered (du -x)."""
    top = os.lstat(root)
    yield top
    if not os.path.isdir(root) or os.path.islink(root):
        return
    for dirpath, dirnames, filenames in os.walk(root):
        keep = []
        for name in dirnames:
            st = os.lstat(os.path.join(dirpath, name))
            yield st
            if st.st_dev == top.st_dev and not os.path.islink(os.path.join(dirpath, name)):
                keep.append(name)
        dirnames[:] = keep
        for name in filenames:
            yield os.lstat(os.path.join(dirpath, name))


def du(root: Path) -> Usage:
    """What `root` (a file or a tree) takes on disk: du -x with hard links counted once
    (a symlink given as `root` is followed, as du -D does; none below it is)."""
    root = Path(root).resolve()
    return tally((s.st_dev, s.st_ino, s.st_nlink, s.st_blocks, s.st_size) for s in _walk(root))


def parse_size(text: str, what: str) -> int:
    """Pure: an engine's one-number answer (`podman image inspect --format {{.Size}}`,
    `podman container inspect --size --format {{.SizeRw}}`) -> bytes; ValueError with
    what was asked when it is not one number."""
    words = text.split()
    if len(words) != 1 or not words[0].isdigit():
        raise ValueError(f"{what}: expected one number of bytes, got {text.strip()[:80]!r}")
    return int(words[0])


def figure(what: str, nbytes: int | None, counts: str, reason: str = "") -> dict[str, Any]:
    """One line of the footprint: what it is, bytes (None: not measured) and what the
    number counts (or why there is none)."""
    out: dict[str, Any] = {"what": what, "bytes": nbytes, "counts": counts}
    if nbytes is None:
        out["reason"] = reason or "not measured"
    return out


def missing(what: str, reason: str) -> dict[str, Any]:
    return figure(what, None, "", reason)


def tree_figures(what: str, usage: Usage, where: str) -> list[dict[str, Any]]:
    """A directory or file as two figures: allocated first (what the disk gives up),
    apparent (what the files say they hold: sparse files and small files differ)."""
    return [
        figure(
            what,
            usage.allocated,
            f"allocated blocks (st_blocks x 512) of {where}, {usage.inodes} inodes, "
            "hard links once",
        ),
        figure(f"{what} (apparent)", usage.apparent, f"apparent size (st_size) of {where}"),
    ]


# ---------------------------------------------------------------- one io instance


def after_io(
    env: Environment,
    io: Invocation,
    timeout: float,
    measure: Callable[[Instance], list[dict[str, Any]]],
) -> list[dict[str, Any]]:
    """Start one io instance through the environment, let `measure(instance)` read what
    it took (it waits for the instance's end itself), then let the instance finish and
    clean up. A failed launch gives no figure, its reason instead; any error (Ctrl-C
    included) aborts the instance, which removes everything it made."""
    what = "per instance after io"
    try:
        instance = env.start(io, timeout)
    except Exception as e:  # noqa: BLE001 - StartError and the engine's own
        return [missing(what, f"the io instance did not start: {e}")]
    try:
        figures = measure(instance) if instance.wait_ready() else None
    except Exception as e:  # noqa: BLE001 - an engine call failed: say which, remove all
        instance.abort()
        return [missing(what, f"{type(e).__name__}: {str(e)[:300]}")]
    except BaseException:
        instance.abort()
        raise
    launch = instance.wait()
    if launch.status != "ok":
        return [missing(what, f"the io launch was not ok: {launch.status}: {launch.reason}")]
    if figures is None:
        return [missing(what, "the instance ended before it could be measured")]
    return figures


# ---------------------------------------------------------------- for every kind


def bundle_figures(bundle) -> list[dict[str, Any]]:
    """The probe bundle's directory (the same probes every kind runs) as two figures."""
    return tree_figures(
        "probe bundle",
        du(Path(bundle.root)),
        f"the bundle directory {bundle.root} (the same probes every kind runs)",
    )


def no_io() -> dict[str, Any]:
    """The per-instance figure of a run without the io launch."""
    return missing(
        "per instance after io", "measured in runs with the density workload (one io launch)"
    )


def engine_cli(*argv: str) -> str:
    """An engine CLI's stdout; RuntimeError with its first words and stderr on failure."""
    res = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=CALL_TIMEOUT_S, check=False
    )
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])}: {res.stderr.strip()[:200]}")
    return res.stdout


def disk_footprint(
    env: Environment, bundle, io: Invocation | None = None, timeout: float = IO_TIMEOUT_S
) -> dict[str, Any]:
    """The disk footprint of a prepared environment: {"figures": [figure...]}; with `io`
    (the run's io invocation), one io launch to measure what an instance adds. An engine
    error is the footprint's `error`, never an exception (Ctrl-C is re-raised)."""
    try:
        figures = env.disk_footprint(bundle, io, timeout)
    except Exception as e:  # noqa: BLE001 - one line in the manifest, the run goes on
        return {"figures": [], "error": f"{type(e).__name__}: {str(e)[:300]}"}
    if figures is None:
        return {"figures": [], "error": f"no disk footprint for kind {env.kind}"}
    return {"figures": figures}
