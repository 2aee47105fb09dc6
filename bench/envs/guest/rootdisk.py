"""A guest's root disk from an isobench rootfs (issue 16): the rootfs's tree plus the
bundle's probes at roots.PROBE_DIR (and a static busybox for the guest's init at
BUSYBOX_PATH, an empty roots.WORKDIR), as a raw ext4 image.

Made without mounting anything: `mke2fs -d` copies the tree into a new filesystem, then
`debugfs -w` adds /isobench (its commands name only fixed paths and probe names, which
console.PROBE_NAME allows: no user text reaches its command parser). The image is kept
in <cache>/guest/rootdisk-<key>/ (key: the rootfs's key, the bundle's hash, busybox's
hash and RECIPE), made in a `.rootdisk-*` directory beside it and renamed into place, so
the same rootfs and bundle reuse it. It is a template: each boot gets a copy-on-write
overlay of its own in the instance's scratch directory (`overlay`: qcow2 whose backing
file is the image, QEMU opens that read-only; a sparse copy where qemu-img is missing).

The guest finds the disk by its virtio serial ROOT_SERIAL (the io disk, if any, is
IO_SERIAL) and its initramfs switches root into it (initramfs.ROOT_STAGE)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench import interrupt, scratch
from bench.envs.guest import GuestError
from bench.envs.guest.console import PROBE_NAME
from bench.envs.guest.disk import new_disk
from bench.envs.guest.kernel import sha256_file
from bench.envs.roots import PROBE_DIR, WORKDIR
from bench.rootfs import mke2fs_argv, store_dir

RECIPE = 1  # bump when what goes into the image changes
ROOT_SERIAL = "isobench-root"
IO_SERIAL = "isobench-io"
BUSYBOX_PATH = "/isobench/busybox"
HEADROOM_MIB = 1024  # free space in the guest's / (writes land in the boot's overlay)
BUILD_TIMEOUT_S = 1800
STALE_BUILD_S = 600  # an unmarked `.rootdisk-*` younger than this may be a build starting
PREFIX = "rootdisk-"
IMAGE = "root.ext4"
RECORD = "rootdisk.json"


@dataclass(frozen=True)
class RootDisk:
    """A made root disk: the image (never written once made) and what it holds."""

    path: Path
    key: str
    sha256: str  # of the image file
    rootfs_key: str
    bundle: str
    size_bytes: int  # apparent size (the filesystem's size)

    def describe(self) -> dict:
        return {
            "key": self.key,
            "image": str(self.path),
            "sha256": self.sha256,
            "rootfs": self.rootfs_key,
            "bundle": self.bundle,
            "size_bytes": self.size_bytes,
            "format": "raw ext4",
            "serial": ROOT_SERIAL,
            "per_boot": "qcow2 overlay" if qemu_img() else "sparse copy",
        }


def disk_key(rootfs_key: str, bundle_hash: str, busybox_sha256: str) -> str:
    """Pure: the content key of the image made from these inputs."""
    text = f"rootdisk {RECIPE}\0{rootfs_key}\0{bundle_hash}\0{busybox_sha256}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def debugfs_commands(probes: list[str]) -> str:
    """Pure: the debugfs script that adds /isobench (probes, busybox, the io directory)
    to a filesystem made from the tree; run with the staged files in its working
    directory (named `probes/<name>` and `busybox`)."""
    bad = [p for p in probes if not PROBE_NAME.match(p)]
    if bad:
        raise GuestError(f"probe name {bad[0]!r} is not a plain file name")
    top, pdir, work, bb = (p.lstrip("/") for p in ("/isobench", PROBE_DIR, WORKDIR, BUSYBOX_PATH))
    lines = [f"mkdir {top}", f"mkdir {pdir}", f"mkdir {work}", f"sif {work} mode 041777"]
    for name in sorted(probes):
        lines += [f"write probes/{name} {pdir}/{name}", f"sif {pdir}/{name} mode 0100755"]
    lines += [f"write busybox {bb}", f"sif {bb} mode 0100755"]
    return "".join(f"{line}\n" for line in lines)


def listed(debugfs_ls: str) -> dict[str, int]:
    """Pure: name -> size from `debugfs -R 'ls -p DIR'` (/inode/mode/uid/gid/name/size/)."""
    out = {}
    for line in debugfs_ls.splitlines():
        parts = line.strip().split("/")
        if len(parts) >= 7 and parts[5] not in (".", ".."):
            with contextlib.suppress(ValueError):
                out[parts[5]] = int(parts[6] or 0)
    return out


def _tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/sbin:/usr/sbin")
    if not path:
        raise GuestError(f"{name} not found: apt-get install e2fsprogs")
    return path


def qemu_img() -> str | None:
    return shutil.which("qemu-img")


def _call(argv: list[str], what: str, cwd: Path | None = None, stdin: str | None = None):
    try:
        res = subprocess.run(
            argv,
            input=stdin,
            capture_output=True,
            text=True,
            cwd=cwd,
            timeout=BUILD_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise GuestError(f"{what}: no result within {BUILD_TIMEOUT_S} s") from None
    if res.returncode != 0:
        raise GuestError(f"{what} failed: {(res.stderr or res.stdout).strip()[-300:]}")
    return res


def _write_image(tree: Path, usage: dict, staged: Path, probes: list[str], dest: Path) -> None:
    """mke2fs -d the tree into `dest`, then debugfs adds the staged files."""
    extra = sum(f.stat().st_size for f in staged.rglob("*") if f.is_file())
    grown = {**usage, "allocated": usage["allocated"] + extra, "inodes": usage["inodes"] + 64}
    extended = "root_owner=0:0,lazy_itable_init=0,lazy_journal_init=0,nodiscard"
    argv = mke2fs_argv(
        tree, dest, grown, HEADROOM_MIB, ROOT_SERIAL, extended=extended, mke2fs=_tool("mke2fs")
    )
    _call(argv, f"mke2fs -d {tree}")
    debugfs = _tool("debugfs")
    _call([debugfs, "-w", "-f", "-", str(dest)], "debugfs", staged, debugfs_commands(probes))
    # debugfs says its errors but exits 0: check what it made
    got = listed(_call([debugfs, "-R", f"ls -p {PROBE_DIR}", str(dest)], "debugfs ls").stdout)
    want = {n: (staged / "probes" / n).stat().st_size for n in probes}
    if got != want:
        raise GuestError(
            f"the root disk's {PROBE_DIR} is not the bundle's probes (has the rootfs its own "
            f"/isobench?): {sorted(got)} vs {sorted(want)}"
        )


def root_disk(rootfs, bundle, cache: Path) -> RootDisk:
    """The root disk of `rootfs` with `bundle`'s probes, made once into cache/guest/."""
    if bundle.busybox is None:
        raise GuestError("no static busybox for the guest's init: apt-get install busybox-static")
    key = disk_key(rootfs.key, bundle.hash, sha256_file(bundle.busybox))
    base = Path(cache) / "guest"
    target = base / f"{PREFIX}{key}"
    if not (target / RECORD).is_file():
        base.mkdir(parents=True, exist_ok=True)
        _build(target, rootfs, bundle, key)
    rec = json.loads((target / RECORD).read_text())
    return RootDisk(
        target / IMAGE, key, rec["sha256"], rec["rootfs"], rec["bundle"], rec["size_bytes"]
    )


def _build(target: Path, rootfs, bundle, key: str) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=f".{PREFIX}", dir=target.parent))
    try:
        scratch.mark(tmp)
        staged = tmp / "staged"
        (staged / "probes").mkdir(parents=True)
        for name, path in bundle.probes.items():
            shutil.copyfile(path, staged / "probes" / name)
        shutil.copyfile(bundle.busybox, staged / "busybox")
        image = tmp / IMAGE
        _write_image(rootfs.tree, rootfs.record["size"], staged, sorted(bundle.probes), image)
        shutil.rmtree(staged)
        record = {
            "key": key,
            "recipe": RECIPE,
            "sha256": sha256_file(image),
            "rootfs": rootfs.key,
            "rootfs_name": rootfs.name,
            "bundle": bundle.hash,
            "size_bytes": image.stat().st_size,
            "made": time.time(),
        }
        (tmp / RECORD).write_text(json.dumps(record, indent=2) + "\n")
        with contextlib.suppress(OSError):  # a concurrent build won: keep its image
            tmp.rename(target)
        if not (target / RECORD).is_file():
            raise GuestError(f"could not put the root disk in place at {target}")
    finally:
        with interrupt.shielded():
            shutil.rmtree(tmp, ignore_errors=True)


def overlay(disk: RootDisk, dest_dir: Path) -> tuple[Path, str]:
    """A boot's own writable root disk in `dest_dir`: (path, QEMU format). A qcow2
    overlay backed by the image (read-only to QEMU), or a sparse copy without qemu-img."""
    tool = qemu_img()
    if tool is None:
        return new_disk(disk.path, dest_dir / "root.raw"), "raw"
    dest = dest_dir / "root.qcow2"
    _call(
        [tool, "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(disk.path), str(dest)],
        "qemu-img create (the root disk's overlay)",
    )
    return dest, "qcow2"


def leftovers(cache: Path) -> list[tuple[str, Path]]:
    """(why, path) of what root disks left in cache/guest: a build whose process is
    gone, an image whose rootfs or bundle is no longer in the cache."""
    base = Path(cache) / "guest"
    out = []
    for d in sorted(base.glob(f".{PREFIX}*")) if base.is_dir() else ():
        data = scratch.owner(d)
        with contextlib.suppress(OSError):
            young = time.time() - d.stat().st_mtime < STALE_BUILD_S
            if (data is None and not young) or (data is not None and not scratch.owner_alive(data)):
                out.append(("an interrupted root disk build", d))
    trees, bundles = store_dir(cache), Path(cache) / "bundles"
    for d in sorted(base.glob(f"{PREFIX}*")) if base.is_dir() else ():
        with contextlib.suppress(OSError, ValueError, KeyError):
            rec = json.loads((d / RECORD).read_text())
            if not (trees / rec["rootfs"]).is_dir():
                out.append((f"guest root disk: rootfs {rec['rootfs']} no longer in the cache", d))
            elif not (bundles / rec["bundle"]).is_dir():
                out.append((f"guest root disk: bundle {rec['bundle']} no longer in the cache", d))
    return out
