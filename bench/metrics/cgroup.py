"""cgroup v1 and v2 behind one set of logical metric names.

Layers, from pure to live:

- `parse_v2` / `parse_v1` / `parse_proc_cgroup` (cgroup_parse.py): text in, numbers
  out. Tested on files recorded from real kernels (tests/data/cgroup/).
- `CgroupReader`: a read-only view of an existing cgroup (a docker container's, found
  from its pid). `read()` reads whatever files exist and hands them to the parser.
- `Cgroup`: a cgroup isobench creates, fills (`preexec_attach`), empties and removes.

Layouts (`detect_layout`): "v2" (unified hierarchy at the root), "hybrid" (v1
controllers plus a controller-less v2 tree at <root>/unified), "v1", "none".

Units: milliseconds for times, MiB (2**20 bytes) for memory and io bytes, plain counts
for the rest.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from bench.metrics.cgroup_parse import parse_proc_cgroup, parse_v1, parse_v2, single_number

log = logging.getLogger(__name__)

ROOT = Path("/sys/fs/cgroup")
PREFIX = "isobench-"
CFS_PERIOD_US = 100_000
KILL_TIMEOUT_S = 2.0
RMDIR_RETRY_S = 1.0

V2_FILES = ("cpu.stat", "memory.peak", "memory.current", "io.stat", "pids.peak", "pids.current")
V1_FILES = {
    "cpuacct": ("cpuacct.stat", "cpuacct.usage"),
    "cpu": ("cpu.stat",),
    "memory": ("memory.max_usage_in_bytes", "memory.usage_in_bytes"),
    # _recursive: a parent and its live children in one scope (the plain files count a
    # cgroup's own tasks only, so a launch parent minus a child it holds went negative).
    # v1 keeps no counts of a child once it is removed: a container's cgroup, which the
    # runtime removes at exit, leaves 0 in its parent (bench/checks.py flags that).
    "blkio": ("blkio.throttle.io_service_bytes_recursive", "blkio.throttle.io_serviced_recursive"),
    "pids": ("pids.peak", "pids.current"),
}
# v1 hierarchies a created cgroup gets a directory in (cpuset last: it needs setup).
V1_CONTROLLERS = ("cpu", "cpuacct", "memory", "pids", "blkio", "cpuset")
V2_CONTROLLERS = ("cpu", "memory", "io", "pids", "cpuset")
UNIFIED = "unified"  # key of the v2 directory in a hybrid layout's paths


class CgroupError(RuntimeError):
    """A cgroup could not be created or removed; the message says why."""


# ---------------------------------------------------------------- layout


def detect_layout(root: Path = ROOT) -> str:
    """ "v2" | "hybrid" | "v1" | "none" for the cgroup mount(s) under `root`."""
    root = Path(root)
    if (root / "cgroup.controllers").exists():
        return "v2"
    has_v1 = any((root / c / "tasks").exists() for c in V1_CONTROLLERS)
    if has_v1:
        return "hybrid" if (root / UNIFIED / "cgroup.controllers").exists() else "v1"
    return "none"


@dataclass(frozen=True)
class Layout:
    """The cgroup layout of a host, and everything that depends on it: where a cgroup's
    directories are, what a runtime refuses, what v1 does not count. Code outside
    metrics/ asks this object, never compares layout names itself."""

    name: str  # "v2" | "hybrid" | "v1" | "none"
    root: Path = ROOT

    @classmethod
    def detect(cls, root: Path = ROOT) -> Layout:
        return cls(detect_layout(root), Path(root))

    @property
    def usable(self) -> bool:
        return self.name != "none"

    @property
    def keeps_removed_child_io(self) -> bool:
        """Does a parent keep the I/O counts of a child cgroup once it is removed (and
        charge buffered writeback to it)? v2 does; v1 blkio does neither."""
        return self.name == "v2"

    def runtime_problem(self, runtime: str) -> str:
        """Why an OCI runtime cannot run under this layout ("" when no known reason)."""
        if runtime == "crun" and self.name == "hybrid":
            return "crun: refuses the hybrid cgroup layout"
        return ""

    def paths(self, rel: str) -> dict[str, Path]:
        """A cgroup's directories (relative path `rel`) in the hierarchies isobench reads:
        CgroupReader's paths."""
        if self.name == "v2":
            return {"": self.root / rel}
        paths = {c: self.root / c / rel for c in V1_CONTROLLERS if (self.root / c).is_dir()}
        if self.name == "hybrid":
            paths[UNIFIED] = self.root / UNIFIED / rel
        return paths

    def every_dir(self, rel: str) -> dict[str, Path]:
        """Its existing directories in every hierarchy, those isobench does not read too
        (a runtime makes the path in devices, freezer, name=systemd...): to remove it."""
        found = {k: p for k, p in self.paths(rel).items() if p.is_dir()}
        if self.name not in ("v2", "none"):
            for hierarchy in self.root.iterdir():
                path = hierarchy / rel
                if not hierarchy.is_symlink() and path.is_dir():
                    found.setdefault(hierarchy.name, path)
        return found

    def reader(self, rel: str) -> CgroupReader | None:
        """A reader of the cgroup at `rel` over the directories that exist (None: none)."""
        existing = {k: p for k, p in self.paths(rel).items() if p.is_dir()}
        return CgroupReader(self.name, existing) if existing else None

    def remove(self, rel: str) -> None:
        """Kill what is inside the cgroup at `rel` and remove it from every hierarchy."""
        existing = self.every_dir(rel)
        if existing:
            with contextlib.suppress(CgroupError):
                Cgroup(self.name, existing).remove()


# ---------------------------------------------------------------- live cgroups


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:  # missing file, vanished cgroup, unsupported read
        return None


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


class CgroupReader:
    """Read-only view of an existing cgroup.

    `paths`: v2 {"": dir}; v1/hybrid {"cpuacct": dir, "memory": dir, ...} (hybrid may
    add "unified": the controller-less v2 dir, used for membership and cgroup.kill).
    """

    def __init__(self, layout: str, paths: dict[str, Path]):
        self.layout = layout
        self.paths = {k: Path(v) for k, v in paths.items()}
        seen: dict[str, Path] = {}  # co-mounted controllers (cpu,cpuacct) share a dir
        for path in self.paths.values():
            seen.setdefault(os.path.realpath(path), path)
        self._distinct = list(seen.values())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.layout!r}, {self.paths!r})"

    @classmethod
    def for_pid(cls, pid: int, root: Path = ROOT) -> CgroupReader:
        root = Path(root)
        layout = detect_layout(root)
        text = _read_text(Path(f"/proc/{pid}/cgroup"))
        if text is None:
            raise CgroupError(f"cannot read /proc/{pid}/cgroup: no such process?")
        return cls(layout, _paths_for(layout, parse_proc_cgroup(text), root))

    def _dirs(self) -> list[Path]:
        """Distinct directories, in a stable order."""
        return self._distinct

    def files(self) -> dict[str, str]:
        """Raw contents of every metric file that exists (parser input)."""
        if self.layout == "v2":
            base = self.paths.get("")
            if base is None:
                return {}
            found = {name: _read_text(base / name) for name in V2_FILES}
        else:
            found = {}
            for ctrl, names in V1_FILES.items():
                if ctrl in self.paths:
                    for name in names:
                        found[f"{ctrl}/{name}"] = _read_text(self.paths[ctrl] / name)
        return {k: v for k, v in found.items() if v is not None}

    def read(self) -> dict[str, float]:
        files = self.files()
        return parse_v2(files) if self.layout == "v2" else parse_v1(files)

    def pids(self) -> set[int]:
        """Every pid in the cgroup, over all its hierarchies."""
        out: set[int] = set()
        for d in self._dirs():
            text = _read_text(d / "cgroup.procs") or ""
            out.update(int(x) for x in text.split() if x.isdigit())
        return out


def _paths_for(layout: str, entries: dict[str, str], root: Path) -> dict[str, Path]:
    def under(mount: Path, rel: str) -> Path:
        return mount.joinpath(*[p for p in rel.split("/") if p])

    if layout == "v2":
        return {"": under(root, entries.get("", "/"))}
    paths: dict[str, Path] = {}
    for ctrl in V1_CONTROLLERS:
        if ctrl in entries and (root / ctrl).exists():
            paths[ctrl] = under(root / ctrl, entries[ctrl])
    if layout == "hybrid" and "" in entries:
        paths[UNIFIED] = under(root / UNIFIED, entries[""])
    return paths


class Cgroup(CgroupReader):
    """A cgroup isobench creates and owns (name starts with "isobench-")."""

    def __init__(self, layout: str, paths: dict[str, Path]):
        super().__init__(layout, paths)
        self.procs_files = [str(d / "cgroup.procs") for d in self._dirs()]

    @classmethod
    def create(
        cls, name: str, cpus: float | None = None, cpuset: str | None = None, root: Path = ROOT
    ) -> Cgroup:
        if not name.startswith(PREFIX) or "/" in name or name in (".", ".."):
            raise ValueError(
                f"cgroup name must start with {PREFIX!r} and be one path part: {name!r}"
            )
        root = Path(root)
        layout = detect_layout(root)
        if layout == "none":
            raise CgroupError(f"no cgroup hierarchy mounted at {root}")
        made: list[Path] = []
        try:
            if layout == "v2":
                _enable_v2_controllers(root)
                paths = {"": _mkdir(root / name, made)}
                _limit_v2(paths[""], cpus, cpuset)
            else:
                paths = _make_v1(root, name, made)
                _limit_v1(paths, cpus, cpuset)
        except BaseException:
            Cgroup(layout, {str(i): p for i, p in enumerate(made)}).remove()
            raise
        return cls(layout, paths)

    def set_weight(self, weight: int) -> None:
        """CPU weight over its siblings, 1024 = one plain process (v1 cpu.shares; v2
        cpu.weight = weight/1024*100)."""
        if self.layout == "v2":
            value = max(1, min(10000, round(weight * 100 / 1024)))
            _write(self.paths[""] / "cpu.weight", str(value))
        else:
            _write(self.paths["cpu"] / "cpu.shares", str(max(2, min(262144, weight))))

    def attach(self, pid: int) -> None:
        for f in self.procs_files:
            _write(Path(f), str(pid))

    def _kill_file(self) -> Path | None:
        base = self.paths.get("") if self.layout == "v2" else self.paths.get(UNIFIED)
        if base is not None and (base / "cgroup.kill").exists():
            return base / "cgroup.kill"
        return None

    @classmethod
    def at(cls, path: Path) -> Cgroup:
        """An existing directory in one hierarchy (what a crash or a signal left), to remove."""
        return cls("v2" if (path / "cgroup.kill").exists() else "v1", {"": path})

    def kill_all(self) -> None:
        """SIGKILL everything inside and wait (at most KILL_TIMEOUT_S) until it is empty."""
        kill_file = self._kill_file()
        if kill_file is not None:
            try:
                _write(kill_file, "1")
            except OSError as e:
                log.debug("cgroup.kill on %s: %s", kill_file, e)
        deadline = time.monotonic() + KILL_TIMEOUT_S
        while True:
            pids = self.pids()
            if not pids:
                return
            if time.monotonic() > deadline:
                log.warning(
                    "cgroup %s still has processes after SIGKILL: %s", self.paths, sorted(pids)
                )
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.01)

    def remove(self) -> None:
        """Kill what is left, then rmdir every directory (children first). Idempotent.

        Raises CgroupError naming what could not be removed (after removing the rest).
        """
        self.kill_all()
        failed: list[str] = []
        for d in self._dirs():
            if not d.exists():
                continue
            for sub, _, _ in os.walk(d, topdown=False):  # children first
                err = _rmdir_retry(Path(sub))
                if err is not None:
                    failed.append(f"{sub}: {err.strerror}")
        if failed:
            raise CgroupError("could not remove cgroup(s): " + "; ".join(failed))


def _rmdir_retry(path: Path) -> OSError | None:
    deadline = time.monotonic() + RMDIR_RETRY_S
    while True:
        try:
            os.rmdir(path)
            return None
        except FileNotFoundError:
            return None
        except OSError as e:
            if e.errno != errno.EBUSY or time.monotonic() > deadline:
                return e
            time.sleep(0.02)


def _mkdir(path: Path, made: list[Path]) -> Path:
    try:
        path.mkdir()
    except FileExistsError:
        raise CgroupError(
            f"{path} already exists (left over from a crash? run `isobench clean`)"
        ) from None
    made.append(path)
    return path


def _enable_v2_controllers(root: Path) -> None:
    available = set((_read_text(root / "cgroup.controllers") or "").split())
    enabled = set((_read_text(root / "cgroup.subtree_control") or "").split())
    for ctrl in V2_CONTROLLERS:
        if ctrl in available and ctrl not in enabled:
            try:  # one at a time: one refusal must not block the others
                _write(root / "cgroup.subtree_control", f"+{ctrl}")
            except OSError as e:
                log.warning("cannot enable cgroup controller %s in %s: %s", ctrl, root, e)


def _limit_v2(path: Path, cpus: float | None, cpuset: str | None) -> None:
    if cpus is not None:
        _write(path / "cpu.max", f"{_quota_us(cpus)} {CFS_PERIOD_US}")
    if cpuset is not None:
        _write(path / "cpuset.cpus", cpuset)


def _make_v1(root: Path, name: str, made: list[Path]) -> dict[str, Path]:
    paths: dict[str, Path] = {}
    by_mount: dict[str, Path] = {}  # realpath of a hierarchy -> our dir in it
    for ctrl in V1_CONTROLLERS:
        mount = root / ctrl
        if not (mount / "cgroup.procs").exists():
            continue
        real = os.path.realpath(mount)
        if real not in by_mount:  # "cpu" and "cpuacct" may be one co-mounted hierarchy
            by_mount[real] = _mkdir(mount / name, made)
            if ctrl == "cpuset":  # no task may join before cpus and mems are set
                for f in ("cpuset.cpus", "cpuset.mems"):
                    _write(by_mount[real] / f, (_read_text(mount / f) or "").strip())
        paths[ctrl] = by_mount[real]
    if "blkio" in paths:
        _activate_blkio_stats(paths["blkio"])
    if (root / UNIFIED / "cgroup.procs").exists():
        paths[UNIFIED] = _mkdir(root / UNIFIED / name, made)
    return paths


def _activate_blkio_stats(blkio: Path, sys_block: Path = Path("/sys/block")) -> None:
    """Make the kernel count v1 blkio.throttle.io_service* for every disk.

    Recent kernels only count them on a queue where blk-throttle has been activated,
    i.e. some cgroup once had a throttle rule for the device; without one every v1
    cgroup reads "Total 0". Setting a rule no workload reaches, then removing it
    (u64 max = no limit), activates it for good and leaves no rule behind.
    """
    try:
        disks = list(sys_block.iterdir())
    except OSError:
        return
    for disk in disks:
        dev = (_read_text(disk / "dev") or "").strip()
        if not dev or single_number(_read_text(disk / "size")) in (None, 0):
            continue
        try:
            _write(blkio / "blkio.throttle.read_bps_device", f"{dev} {2**62}")
            _write(blkio / "blkio.throttle.read_bps_device", f"{dev} {2**64 - 1}")
        except OSError as e:
            log.debug("blkio accounting for %s: %s", dev, e)


def _limit_v1(paths: dict[str, Path], cpus: float | None, cpuset: str | None) -> None:
    if cpus is not None:
        if "cpu" not in paths:
            raise CgroupError("cpus limit requested but the v1 cpu controller is not mounted")
        _write(paths["cpu"] / "cpu.cfs_period_us", str(CFS_PERIOD_US))
        _write(paths["cpu"] / "cpu.cfs_quota_us", str(_quota_us(cpus)))
    if cpuset is not None:
        if "cpuset" not in paths:
            raise CgroupError("cpuset requested but the v1 cpuset controller is not mounted")
        _write(paths["cpuset"] / "cpuset.cpus", cpuset)


def _quota_us(cpus: float) -> int:
    if cpus <= 0:
        raise ValueError(f"cpus must be > 0, got {cpus}")
    return max(1000, round(cpus * CFS_PERIOD_US))  # the kernel's minimum quota is 1 ms


def preexec_attach(procs_files: list[str]):
    """A subprocess preexec_fn that moves the child into every given cgroup.procs.

    Paths are encoded up front; the child only runs os.open/os.write/os.close.
    A failure raises in the child, which subprocess reports in the parent.
    """
    encoded = tuple(os.fsencode(p) for p in procs_files)
    flags = os.O_WRONLY | os.O_CLOEXEC

    def attach() -> None:
        for path in encoded:
            fd = os.open(path, flags)
            try:
                os.write(fd, b"0")
            finally:
                os.close(fd)

    return attach


def warm_migration_lock(root: Path = ROOT, proc_self: Path = Path("/proc/self/cgroup")) -> None:
    """Take the kernel's cgroup-migration lock once, before a launch moves its probe.

    Every write to a cgroup.procs file takes one global lock (cgroup_threadgroup_rwsem).
    When nothing has migrated for a while, taking it waits for an RCU grace period:
    moving a task cost 5-13 ms after 0.2 s of quiet here, 0.2 ms right after another
    move. Rewriting our own pid into the cgroup we are already in changes nothing but
    takes the lock, so the probe's own move that follows costs what a move costs, not
    a wait that depends on what else happened on the host lately. On cgroup v2 a
    process can be born in its cgroup (clone3 CLONE_INTO_CGROUP) and pays neither.
    Best effort: any failure leaves the launch as it was."""
    try:
        lines = proc_self.read_text().splitlines()
    except OSError:
        return
    for line in lines:
        _, ctrls, path = line.split(":", 2)
        mounts = [root / c for c in ctrls.split(",") if c] or [root / "unified", root]
        for mount in mounts:
            procs = mount / path.lstrip("/") / "cgroup.procs"
            if procs.exists():
                with contextlib.suppress(OSError):
                    procs.write_text(str(os.getpid()))
                    return


def find_leftovers(root: Path = ROOT) -> list[Path]:
    """Every directory named isobench-* at depth <= 3 under root (symlinks not followed)."""
    found: list[Path] = []

    def walk(d: Path, depth: int) -> None:
        try:
            entries = list(os.scandir(d))
        except OSError:
            return
        for e in entries:
            try:
                if not e.is_dir(follow_symlinks=False):
                    continue
            except OSError:
                continue
            if e.name.startswith(PREFIX):
                found.append(Path(e.path))
            if depth < 3:
                walk(Path(e.path), depth + 1)

    walk(Path(root), 1)
    return sorted(found)
