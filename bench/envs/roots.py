"""An environment's root from an isobench rootfs (issue 16): the `rootfs=NAME` option of
the kinds that run from one, what the manifest keeps of it, and how host and namespaces
run a probe chrooted into the tree.

Chroot without touching the cached tree: the bundle's `attach --root` (workloads/
attach.c) makes a private mount namespace for the launch, mounts an overlay (the tree
below, an upper directory in the launch's scratch), binds /proc, /dev, /sys, the
bundle's probes (read-only, at PROBE_DIR) and the io workload's directory (at WORKDIR)
into it, chroots there and execs the probe. The mounts live and die with the launch's
processes (kill -9 included: nothing to unmount); the scratch directory is removed by the
launch's teardown, or with the run's scratch by `isobench clean`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench import rootfs
from bench.envs.base import Option, OptionError, StartError

PROBE_DIR = "/isobench/probes"  # the bundle's probes inside the tree
WORKDIR = "/isobench/work"  # the io workload's directory inside the tree
HOST_BINDS = ("/proc", "/dev", "/sys")  # the kernel's views, as any chroot gets them
OVERLAY_UNSAFE = (",", ":", "\\")  # separators in overlay's mount options


class RootfsName(str):
    """The name of a rootfs in the cache (`isobench rootfs ls`); refused when none."""

    def __new__(cls, text: str):
        try:
            rootfs.load(text)
        except rootfs.RootfsError as e:
            raise OptionError(str(e)) from None
        return super().__new__(cls, text)


RootfsName.__name__ = "rootfs name"

ROOTFS_OPTION = Option(
    None,
    "run from this isobench rootfs (`isobench rootfs ls`): the probes run with its tree "
    "as their root, the same bytes in every environment",
    type=RootfsName,
)


def load(name: str | None, cache: Path) -> rootfs.Rootfs | None:
    """The rootfs an environment's options name (None: the kind's own root)."""
    return rootfs.load(str(name), cache) if name else None


def describe(r: rootfs.Rootfs | None) -> dict[str, Any] | None:
    """What the manifest keeps: the key, the package count and size up front, and the
    rootfs's own record (package list, source, recipe)."""
    if r is None:
        return None
    return {
        "key": r.key,
        "package_count": len(r.record.get("packages") or []),
        "size_bytes": r.record["size"]["allocated"],
        **r.describe(),
    }


def probe_path(name: str) -> str:
    """Where probe `name` is inside a rootfs an environment runs from."""
    return f"{PROBE_DIR}/{name}"


def attach_options(r: rootfs.Rootfs, bundle, launch_dir: Path, workdir: Path | None) -> list[str]:
    """The arguments of `attach` (before its cgroup files) that run the probe chrooted
    into `r`'s tree through an overlay in `launch_dir` (made here: upper and work)."""
    paths = [str(r.tree), str(launch_dir)]
    if bad := [p for p in paths if any(c in p for c in OVERLAY_UNSAFE)]:
        raise StartError(f"overlay cannot take the path {bad[0]} (it has , : or \\)")
    for sub in ("upper", "work"):
        (launch_dir / sub).mkdir(parents=True)
    out = ["--root", str(r.tree), "--scratch", str(launch_dir)]
    for path in HOST_BINDS:
        out += ["--bind", f"{path}:{path}"]
    out += ["--bind-ro", f"{Path(bundle.probes['attach']).parent}:{PROBE_DIR}"]
    if workdir is not None:
        out += ["--bind", f"{workdir}:{WORKDIR}"]
    return out
