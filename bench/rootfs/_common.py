"""The store, the records and the outputs of the rootfs package (bench/rootfs/): a rootfs
is made by builder.py (a Debian tree from mmdebstrap) or importer.py (a docker/podman
image's filesystem), and kept in the cache as <cache>/rootfs/<key>/ with

    tree/        the root filesystem (owned by root, as it would be inside a container)
    rootfs.json  the record: key, source, recipe or image, packages (dpkg inside), pip
                 freeze, size (allocated bytes), content hash of the tree
    rootfs.tar / rootfs-<headroom>M.ext4   derived outputs, made on first use

and <cache>/rootfs/names/<NAME> is a symlink to ../<key>. Everything is made in a
`.building-*` directory beside the store and renamed into place when complete; a
`.building-*` directory whose process is gone is removed by the next build or listing.
The helpers the builder and the importer share (make_or_reuse, run...) are the
package's own: nothing outside bench/rootfs/ but its tests imports this module.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench import interrupt, scratch
from bench.resources import cache_dir

NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
BUILD_TIMEOUT_S = 1800
CALL_TIMEOUT_S = 120
STOP_GRACE_S = 30
UNMARKED_GRACE_S = 600
CLEAN_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
}


class RootfsError(RuntimeError):
    """Bad input or a failed step; the message is one line a user can act on."""


# ---------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Rootfs:
    """One stored root filesystem: its directory in the cache and its record."""

    name: str
    root: Path  # <cache>/rootfs/<key>
    record: dict

    @property
    def key(self) -> str:
        return self.record["key"]

    @property
    def tree(self) -> Path:
        return self.root / "tree"

    def describe(self) -> dict:
        """What a run's manifest keeps about the rootfs it ran from."""
        r = self.record
        return {
            "name": self.name,
            "hash": r["key"],
            "source": r["source"],
            "content": r["content"],
            "size": r["size"],
            "packages": r["packages"],
            "pip": r.get("pip_freeze", []),
            "recipe": r.get("recipe") or r.get("image"),
        }

    def tar_file(self) -> Path:
        """The tree as an uncompressed tar (numeric owners, xattrs): what `docker import`
        and `podman import` take. Made once, then kept beside the tree."""
        out = self.root / "rootfs.tar"
        if not out.is_file():
            _make_file(out, lambda tmp: _write_tar(self.tree, tmp))
        return out

    @contextlib.contextmanager
    def tar_stream(self) -> Iterator:
        """A readable binary stream of the same tar, made on the fly (nothing kept)."""
        proc = subprocess.Popen(
            tar_argv(self.tree, "-"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            yield proc.stdout
            proc.stdout.close()
            if proc.wait(CALL_TIMEOUT_S) != 0:
                raise RootfsError(f"tar of {self.tree}: {last_line(proc.stderr.read().decode())}")
        finally:
            if proc.poll() is None:  # the reader stopped early: tar has nothing to clean
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            proc.stdout.close()
            proc.stderr.close()

    def ext4_image(self, headroom_mib: int = 256) -> Path:
        """An ext4 image of the tree (mke2fs -d) with `headroom_mib` free, for a guest's
        root disk; a template: a guest should boot from a copy. Made once per size."""
        if headroom_mib < 0:
            raise RootfsError(f"ext4 headroom must be >= 0 MiB, not {headroom_mib}")
        out = self.root / f"rootfs-{headroom_mib}M.ext4"
        if not out.is_file():
            usage = self.record["size"]
            _make_file(out, lambda tmp: _write_ext4(self.tree, tmp, usage, headroom_mib, self.key))
        return out


def store_dir(cache: Path | None = None) -> Path:
    return (cache or cache_dir()) / "rootfs"


def load(name: str, cache: Path | None = None) -> Rootfs:
    """The rootfs called `name`; RootfsError when there is none."""
    check_name(name)
    link = store_dir(cache) / "names" / name
    if not link.is_symlink():
        raise RootfsError(f"no rootfs named {name}: `isobench rootfs ls` lists them")
    root = link.parent / os.readlink(link)
    try:
        record = json.loads((root / "rootfs.json").read_text())
    except (OSError, ValueError) as e:
        raise RootfsError(
            f"rootfs {name}: its record {root / 'rootfs.json'} is unreadable "
            f"({e}); `isobench rootfs rm {name}` and build it again"
        ) from None
    return Rootfs(name, root.resolve(), record)


def names(cache: Path | None = None) -> list[Rootfs]:
    """Every named rootfs, by name; stale `.building-*` directories are swept first."""
    store = store_dir(cache)
    sweep(store)
    out = []
    d = store / "names"
    for link in sorted(d.iterdir()) if d.is_dir() else ():
        with contextlib.suppress(RootfsError):
            out.append(load(link.name, cache))
    return out


def remove(name: str, cache: Path | None = None) -> bool:
    """Remove the name; the tree too when no other name points to it. Returns whether
    the tree was removed."""
    rfs = load(name, cache)
    store = store_dir(cache)
    (store / "names" / name).unlink()
    others = [n for n in names(cache) if n.key == rfs.key]
    if others:
        return False
    with interrupt.shielded():
        doomed = store / f".removing-{secrets.token_hex(4)}"
        os.rename(rfs.root, doomed)
        shutil.rmtree(doomed, ignore_errors=True)  # a concurrent sweep may help
    return True


def check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise RootfsError(
            f"rootfs name {name!r}: lower-case letters, digits, '.', '_' and "
            "'-', starting with a letter or digit, at most 63 characters"
        )
    return name


# ---------------------------------------------------------------------------- the tree


def tree_hash(root: Path, owners: bool = True) -> str:
    """sha256 over every entry below `root` (or the file itself): path, type, mode,
    owner (unless `owners` is false: a copy into a rootfs is root's whoever owned the
    source), content / link target / device; mtimes are not content."""
    h = hashlib.sha256()
    root = Path(root)

    def entry(path: Path, rel: str) -> None:
        st = os.lstat(path)
        owner = f"{st.st_uid}\0{st.st_gid}" if owners else ""
        h.update(f"{rel}\0{st.st_mode:o}\0{owner}\0".encode())
        if stat.S_ISLNK(st.st_mode):
            h.update(os.readlink(path).encode(errors="surrogateescape"))
        elif stat.S_ISREG(st.st_mode):
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            h.update(f"{st.st_rdev}".encode())
        h.update(b"\n")

    if root.is_symlink() or not root.is_dir():
        entry(root, ".")
        return h.hexdigest()
    entry(root, ".")
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for n in sorted(dirnames + filenames):
            p = Path(dirpath) / n
            entry(p, str(p.relative_to(root)))
    return h.hexdigest()


def tree_usage(root: Path) -> tuple[int, int, int]:
    """(allocated bytes, apparent bytes, inodes) of a tree, as `du -x` counts: st_blocks
    * 512, each inode once (hard links), symlinks not followed, other filesystems not
    entered. (bench/footprint.du does the same; importing it would tie this module to
    the environments through footprint's imports: an import cycle.)"""
    top = os.lstat(root)
    seen: set[int] = set()
    allocated = apparent = inodes = 0

    def add(st: os.stat_result) -> None:
        nonlocal allocated, apparent, inodes
        if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
            if st.st_ino in seen:
                return
            seen.add(st.st_ino)
        allocated += st.st_blocks * 512
        apparent += st.st_size
        inodes += 1

    add(top)
    for dirpath, dirnames, filenames in os.walk(root):
        keep = []
        for n in dirnames:
            st = os.lstat(os.path.join(dirpath, n))
            add(st)
            if st.st_dev == top.st_dev and stat.S_ISDIR(st.st_mode):
                keep.append(n)
        dirnames[:] = keep
        for n in filenames:
            add(os.lstat(os.path.join(dirpath, n)))
    return allocated, apparent, inodes


def parse_dpkg_query(text: str) -> list[list[str]]:
    """Pure: dpkg-query -W -f '${db:Status-Abbrev}\\t${Package}\\t${Version}\\t
    ${Architecture}\\n' -> [[package, version, arch]] of installed ones ("ii"), sorted."""
    out = []
    for line in text.splitlines():
        fields = line.split("\t")
        if len(fields) == 4 and fields[0].strip() == "ii":
            out.append(fields[1:])
    return sorted(out)


def inspect_tree(tree: Path, python: bool) -> dict:
    usage = tree_usage(tree)
    info = {
        "content": tree_hash(tree),
        "size": {
            "allocated": usage[0],
            "apparent": usage[1],
            "inodes": usage[2],
        },
        "packages": [],
        "made": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    admin = tree / "var/lib/dpkg"
    if (admin / "status").is_file():
        r = run(
            [
                "dpkg-query",
                f"--admindir={admin}",
                "-W",
                "-f",
                "${db:Status-Abbrev}\t${Package}\t${Version}\t${Architecture}\n",
            ],
            CALL_TIMEOUT_S,
        )
        info["packages"] = parse_dpkg_query(r.stdout)
    else:
        info["packages_note"] = "no dpkg database in the tree"
    if python:
        r = run(
            [
                "chroot",
                str(tree),
                "python3",
                "-m",
                "pip",
                "freeze",
                "--isolated",
                "--disable-pip-version-check",
            ],
            CALL_TIMEOUT_S,
            env=CLEAN_ENV,
        )
        info["pip_freeze"] = r.stdout.split() if r.returncode == 0 else []
    return info


# ---------------------------------------------------------------------------- outputs


def tar_argv(tree: Path, dest: str) -> list[str]:
    return [
        "tar",
        "--create",
        "--file",
        dest,
        "--directory",
        str(tree),
        "--numeric-owner",
        "--xattrs",
        "--xattrs-include=*",
        "--sort=name",
        ".",
    ]


def _write_tar(tree: Path, dest: Path) -> None:
    r = run(tar_argv(tree, str(dest)), BUILD_TIMEOUT_S)
    if r.returncode != 0:
        raise RootfsError(f"tar of {tree}: {last_line(r.stderr)}")


def ext4_geometry(usage: dict, headroom_mib: int) -> tuple[int, int]:
    """Pure: (size in KiB, inode count) for an ext4 image holding a tree of `usage`
    (allocated bytes, inodes) with `headroom_mib` free: a quarter more than the tree for
    metadata and block rounding, plus the headroom; inodes with room for as many again."""
    kib = (usage["allocated"] * 5 // 4) // 1024 + 16 * 1024 + headroom_mib * 1024
    inodes = usage["inodes"] * 2 + 4096
    return kib, inodes


def mke2fs_argv(
    tree: Path,
    dest: Path,
    usage: dict,
    headroom_mib: int,
    label: str,
    *,
    uuid: str | None = None,
    extended: str = "root_owner=0:0",
    mke2fs: str = "mke2fs",
) -> list[str]:
    """Pure: the `mke2fs -d` that makes `dest` an ext4 image of `tree` (its `usage`) with
    `headroom_mib` free (ext4_geometry), labelled `label`, with `extended` options."""
    kib, inodes = ext4_geometry(usage, headroom_mib)
    return [
        mke2fs,
        "-q",
        "-F",
        "-t",
        "ext4",
        "-d",
        str(tree),
        "-L",
        label,
        *(["-U", uuid] if uuid else []),
        "-N",
        str(inodes),
        "-m",
        "0",
        "-E",
        extended,
        str(dest),
        f"{kib}k",
    ]


def _write_ext4(tree: Path, dest: Path, usage: dict, headroom_mib: int, key: str) -> None:
    uuid = f"{key[:8]}-{key[8:12]}-4{key[13:16]}-8{key[1:4]}-{key[4:16]}"
    argv = mke2fs_argv(tree, dest, usage, headroom_mib, "isobench-root", uuid=uuid)
    r = run(argv, BUILD_TIMEOUT_S)
    if r.returncode != 0:
        raise RootfsError(f"mke2fs -d {tree}: {last_line(r.stderr)}")


def _make_file(out: Path, write) -> None:
    tmp = out.with_name(f".{out.name}.{secrets.token_hex(4)}")
    try:
        write(tmp)
        os.rename(tmp, out)
    finally:
        with interrupt.shielded():
            tmp.unlink(missing_ok=True)


# ---------------------------------------------------------------------------- store


@contextlib.contextmanager
def building(store: Path) -> Iterator[Path]:
    """A marked `.building-*` directory in the store, removed whatever happens (after a
    successful commit there is nothing left to remove)."""
    store.mkdir(parents=True, exist_ok=True)
    sweep(store)
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=store))
    scratch.mark(tmp)
    try:
        yield tmp
    finally:
        with interrupt.shielded():
            shutil.rmtree(tmp, ignore_errors=True)


def sweep(store: Path) -> list[Path]:
    """Remove `.building-*` / `.removing-*` directories whose process is gone (one
    without its owner marker yet only when older than UNMARKED_GRACE_S: it may be a
    build that has just begun)."""
    removed = []
    for d in store.glob(".building-*") if store.is_dir() else ():
        data = scratch.owner(d)
        if data is None:
            with contextlib.suppress(OSError):
                if time.time() - d.stat().st_mtime > UNMARKED_GRACE_S:
                    shutil.rmtree(d, ignore_errors=True)
                    removed.append(d)
        elif not scratch.owner_alive(data):
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    for d in store.glob(".removing-*") if store.is_dir() else ():
        shutil.rmtree(d, ignore_errors=True)
        removed.append(d)
    return removed


def commit(store: Path, tmp: Path, record: dict) -> None:
    """Rename the finished tree into <store>/<key> (unless those bytes are there)."""
    final = store / record["key"]
    (tmp / "rootfs.json").write_text(json.dumps(record, indent=1) + "\n")
    (tmp / "mmdebstrap.log").unlink(missing_ok=True)
    if final.is_dir():
        return  # the same key: the same recipe or the same content, already stored
    tmp.chmod(0o755)  # mkdtemp's 0700 would hide the images from a guest's VMM user
    with interrupt.shielded():
        os.rename(tmp, final)
        tmp.mkdir()  # building's cleanup removes this empty stand-in
        (final / scratch.MARKER).unlink()  # kept until here: a sweep leaves it alone


def make_or_reuse(name: str, cache: Path | None, log, make, same, made: str, other: str) -> Rootfs:
    """The rootfs `name`. One already called so is returned when same(its record) (logged:
    it exists, `made`) and refused when not (a RootfsError: it exists, `other`). Else it is
    made: make(tmp) fills tmp/tree in a building directory of the store and returns the
    record (with its "key"), which is committed and named."""
    found = find_named(name, cache)
    if found is not None:
        if same(found.record):
            log(f"rootfs {name} exists ({found.key}), {made}")
            return found
        raise RootfsError(f"rootfs {name} exists ({found.key}){other}")
    store = store_dir(cache)
    with building(store) as tmp:
        record = make(tmp)
        commit(store, tmp, record)
    return link_name(name, record["key"], cache)


def find_named(name: str, cache: Path | None) -> Rootfs | None:
    try:
        return load(name, cache)
    except RootfsError:
        if (store_dir(cache) / "names" / name).is_symlink():
            raise
        return None


def link_name(name: str, key: str, cache: Path | None) -> Rootfs:
    d = store_dir(cache) / "names"
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / f".{name}.{secrets.token_hex(4)}"
    os.symlink(f"../{key}", tmp)
    os.rename(tmp, d / name)
    return load(name, cache)


# ---------------------------------------------------------------------------- processes


def run(argv: list[str], timeout: float, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run argv (its own process group), capture text output; on timeout or a signal the
    group is stopped (TERM, then KILL) before the exception goes on."""
    try:
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            start_new_session=True,
        )
    except OSError as e:
        raise RootfsError(f"{argv[0]}: {e.strerror}") from None
    out, err = _finish(proc, argv, lambda: proc.communicate(timeout=timeout), timeout)
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def run_logged(argv: list[str], logf, timeout: float) -> int:
    proc = subprocess.Popen(
        argv,
        stdout=logf,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    return _finish(proc, argv, lambda: proc.wait(timeout), timeout)


def _finish(proc: subprocess.Popen, argv: list[str], wait, timeout: float):
    """wait()'s answer; on its timeout or a signal the group is stopped first."""
    try:
        return wait()
    except subprocess.TimeoutExpired:
        stop_group(proc)
        raise RootfsError(f"{argv[0]} did not finish in {timeout:.0f} s") from None
    except BaseException:
        stop_group(proc)
        raise


def stop_group(proc: subprocess.Popen) -> None:
    """TERM the process group (mmdebstrap cleans up on it), KILL it after a grace."""
    with interrupt.shielded():
        for sig, grace in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, STOP_GRACE_S)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.communicate(timeout=grace)
                return
            except subprocess.TimeoutExpired:
                continue
            except ValueError:  # no pipes to read
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(grace)
                    return


def need_root(what: str) -> None:
    if os.geteuid() != 0:
        raise RootfsError(f"{what} needs root (files owned by root, chroot, mounts)")


def read_or_empty(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def last_line(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1] if lines else "no output"
