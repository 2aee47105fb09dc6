"""The guest side of the VM environments (libvirt, qemu): kernel, initramfs, io disk.

- Kernel discovery (`find_kernel`): an explicit path (option / --kernel), then
  $ISOBENCH_GUEST_KERNEL, then the host's own /boot/vmlinuz-$(uname -r), then a kernel
  package unpacked into the cache (<cache>/guest-kernel/boot/vmlinuz-*, which
  .ci/setup-libvirt.sh puts there on hosts without /boot); modules from
  <package root>/lib/modules/<version>, $ISOBENCH_GUEST_MODULES or /lib/modules/<version>.
- `bzimage_version`: the version string in a bzImage's setup header (pure).
- `write_newc` / `read_newc`: the initramfs format, a "newc" cpio archive (pure).
- `module_load_order`: the kernel modules a guest needs, dependencies first, from
  modules.dep or (in an unpacked package, which has none) from each module's .modinfo.
- `build_initramfs`: static busybox as /init's shell, the bundle's static probes under
  /probes, the modules; gzip, cached under ctx.cache by (bundle, kernel, init script);
  `trial_initramfs` the same without probes, for the KVM trial.
- `cmdline`: how the host tells the guest what to run: a list of probes, each with its
  arguments, every argument base64-encoded as its own `isobench.arg=` word on the kernel
  command line; init (RUN_SCRIPT) decodes each into one positional parameter and runs
  "$probe" "$@", one probe after the other, so no shell string is ever built from user
  input. One boot runs all the workloads of a round (`run_order`: startup first).
- `disk_template` / `new_disk`: the io disk, a raw file with an ext4 filesystem made on
  the host by mkfs.ext4 (lazy init off, so no background ext4lazyinit in the guest),
  copied sparsely per boot and mounted at /mnt/io by the guest when a probe needs it.

What the guest says on its console (serial ttyS0), parsed by `parse_console`:
`isobench-uptime <s>` (the guest kernel's /proc/uptime right before the first probe
starts), then for each probe `isobench-begin <n> <probe>`, the probe's own `ready` and
JSON lines (and its stderr), `isobench-timeout <n> <s>` if it outlived the time limit and
was killed, `isobench-exit <n> <status>`; then it powers off (`poweroff -f`).
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import json
import lzma
import math
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.bundle import find_busybox
from bench.resources import cache_dir

KERNEL_ENV = "ISOBENCH_GUEST_KERNEL"
MODULES_ENV = "ISOBENCH_GUEST_MODULES"
KERNEL_HINT = (
    "no guest kernel found: pass --kernel PATH (a vmlinuz), set ISOBENCH_GUEST_KERNEL, "
    "or unpack a kernel package into the cache: apt-get download linux-image-amd64's "
    "dependency and dpkg -x it into ~/.cache/isobench/guest-kernel (.ci/setup-libvirt.sh)"
)
GUEST_WORKDIR = "/mnt/io"
UPTIME_PREFIX = "isobench-uptime "
BEGIN_PREFIX = "isobench-begin "  # <n> <probe>
EXIT_PREFIX = "isobench-exit "  # <n> <status>
TIMEOUT_PREFIX = "isobench-timeout "  # <n> <limit s>: killed
ERROR_PREFIX = "isobench-error "
READY = "ready"
KERNEL_LINE = re.compile(r"^\[\s*\d+\.\d+\]")  # a kernel message on the console
CMDLINE_MAX = 2048  # x86 COMMAND_LINE_SIZE, the terminating NUL included
BASE_MODULES = ("virtio_pci", "virtio_mmio", "virtio_console")
DISK_MODULES = ("virtio_blk", "crc32c_generic", "ext4")  # ext4 soft-depends on crc32c
DISK_FS = "ext4"
DISK_MIB = 1024
CACHE_MODES = ("none", "writeback", "unsafe")
# quiet console (errors only), never wait after a panic, reboot = QEMU exits (-no-reboot)
BASE_CMDLINE = ("console=ttyS0", "loglevel=3", "panic=-1", "reboot=t")
NO_BUSYBOX = "no static busybox for the guest's init: apt-get install busybox-static"
PROBE_NAME = re.compile(r"^[A-Za-z0-9_.+-]+$")


class GuestError(RuntimeError):
    """The guest image cannot be made; the message says what to provide."""


# ---------------------------------------------------------------- kernel


@dataclass(frozen=True)
class GuestKernel:
    path: Path
    version: str
    sha256: str
    modules: Path | None  # lib/modules/<version> or None (everything must be built in)
    source: str  # "option" | "env" | "host"

    def describe(self) -> dict:
        return {
            "path": str(self.path),
            "version": self.version,
            "sha256": self.sha256,
            "modules": str(self.modules) if self.modules else None,
            "source": self.source,
        }


def bzimage_version(header: bytes) -> str | None:
    """Pure: the kernel release ("6.1.0-56-amd64") from a bzImage's first bytes.

    x86 boot protocol: "HdrS" at 0x202, protocol >= 0x200, a 16-bit pointer at 0x20E to
    a NUL-terminated version string at (pointer + 0x200).
    """
    if len(header) < 0x210 or header[0x202:0x206] != b"HdrS":
        return None
    proto = int.from_bytes(header[0x206:0x208], "little")
    ptr = int.from_bytes(header[0x20E:0x210], "little")
    if proto < 0x200 or ptr == 0:
        return None
    start = ptr + 0x200
    end = header.find(b"\0", start, start + 256)
    if start >= len(header) or end < 0:
        return None
    text = header[start:end].decode("ascii", errors="replace").strip()
    return text.split()[0] if text else None


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _modules_for(kernel: Path, version: str, env: Mapping[str, str], system: Path) -> Path | None:
    candidates = []
    if env.get(MODULES_ENV):
        candidates.append(Path(env[MODULES_ENV]))
    # an unpacked package: <root>/boot/vmlinuz-X next to <root>/lib/modules/X
    candidates.append(kernel.resolve().parent.parent / "lib" / "modules" / version)
    candidates.append(system / version)
    return next((c for c in candidates if c.is_dir()), None)


def find_kernel(
    path: str | os.PathLike | None = None,
    *,
    env: Mapping[str, str] | None = None,
    boot: Path = Path("/boot"),
    modules: Path = Path("/lib/modules"),
    release: str | None = None,
) -> GuestKernel:
    """The guest kernel to use, in the documented order; GuestError says how to get one."""
    env = os.environ if env is None else env
    release = release or os.uname().release
    if path:
        chosen, source = Path(path), "option"
    elif env.get(KERNEL_ENV):
        chosen, source = Path(env[KERNEL_ENV]), "env"
    else:
        chosen, source = boot / f"vmlinuz-{release}", "host"
        if not chosen.is_file():
            unpacked = sorted((cache_dir() / "guest-kernel" / "boot").glob("vmlinuz-*"))
            if not unpacked:
                raise GuestError(f"{KERNEL_HINT} (no {chosen} on this host)")
            chosen, source = unpacked[-1], "cache"
    if not chosen.is_file():
        raise GuestError(f"guest kernel {chosen} ({source}) does not exist: {KERNEL_HINT}")
    try:
        with open(chosen, "rb") as f:
            head = f.read(0x8000)
    except OSError as e:
        raise GuestError(f"cannot read guest kernel {chosen}: {e.strerror}") from None
    version = bzimage_version(head)
    if version is None:
        raise GuestError(f"{chosen} is not a bzImage (no HdrS setup header)")
    mods = _modules_for(chosen, version, env, modules)
    return GuestKernel(chosen, version, _sha256_file(chosen), mods, source)


# ---------------------------------------------------------------- modules


def parse_modules_dep(text: str) -> dict[str, tuple[str, list[str]]]:
    """Pure: modules.dep -> {module name: (relative path, [dependency names])}."""
    out: dict[str, tuple[str, list[str]]] = {}
    for line in text.splitlines():
        if ":" not in line:
            continue
        path, _, deps = line.partition(":")
        out[module_name(path)] = (path.strip(), [module_name(d) for d in deps.split()])
    return out


def module_name(path: str) -> str:
    base = path.strip().rsplit("/", 1)[-1]
    base = re.sub(r"\.ko(\.(xz|gz|zst))?$", "", base)
    return base.replace("-", "_")


def module_load_order(
    deps: Mapping[str, Sequence[str]], wanted: Iterable[str], builtin: Iterable[str] = ()
) -> list[str]:
    """Pure: wanted modules and their dependencies, each after everything it needs.

    Built-in modules are left out; a wanted module nobody knows is an error.
    """
    builtin = {b.replace("-", "_") for b in builtin}
    order: list[str] = []
    state: dict[str, str] = {}

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if name in builtin or state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            raise GuestError(f"module dependency cycle: {' -> '.join((*chain, name))}")
        if name not in deps:
            raise GuestError(f"kernel module {name} not found in the guest kernel's modules")
        state[name] = "visiting"
        for d in deps[name]:
            visit(d, (*chain, name))
        state[name] = "done"
        order.append(name)

    for w in wanted:
        visit(w.replace("-", "_"), ())
    return order


def read_module(path: Path) -> bytes:
    """A module's ELF bytes (decompressing .ko.xz / .ko.gz: busybox insmod may not)."""
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(data)
    if path.name.endswith(".gz"):
        return gzip.decompress(data)
    if path.name.endswith(".zst"):
        raise GuestError(f"{path}: zstd-compressed modules are not supported; use .ko or .ko.xz")
    return data


def modinfo(elf: bytes) -> dict[str, list[str]]:
    """Pure: the key=value strings of an ELF module's .modinfo section."""
    if elf[:4] != b"\x7fELF" or elf[4] != 2:
        raise GuestError("not a 64-bit ELF module")
    shoff = int.from_bytes(elf[0x28:0x30], "little")
    shentsize = int.from_bytes(elf[0x3A:0x3C], "little")
    shnum = int.from_bytes(elf[0x3C:0x3E], "little")
    shstrndx = int.from_bytes(elf[0x3E:0x40], "little")

    def section(i: int) -> tuple[int, int, int]:
        base = shoff + i * shentsize
        name = int.from_bytes(elf[base : base + 4], "little")
        off = int.from_bytes(elf[base + 0x18 : base + 0x20], "little")
        size = int.from_bytes(elf[base + 0x20 : base + 0x28], "little")
        return name, off, size

    _, stroff, _ = section(shstrndx)
    out: dict[str, list[str]] = {}
    for i in range(shnum):
        name, off, size = section(i)
        end = elf.index(b"\0", stroff + name)
        if elf[stroff + name : end] != b".modinfo":
            continue
        for item in elf[off : off + size].split(b"\0"):
            key, sep, value = item.decode(errors="replace").partition("=")
            if sep:
                out.setdefault(key, []).append(value)
    return out


@dataclass
class ModuleTree:
    """The modules of one kernel: name -> file, and the dependency graph on demand."""

    root: Path
    files: dict[str, Path] = field(default_factory=dict)
    builtin: set[str] = field(default_factory=set)
    dep_file: dict[str, list[str]] | None = None

    @classmethod
    def open(cls, root: Path) -> ModuleTree:
        tree = cls(root)
        builtin = root / "modules.builtin"
        if builtin.is_file():
            tree.builtin = {module_name(x) for x in builtin.read_text().split()}
        dep = root / "modules.dep"
        if dep.is_file():
            parsed = parse_modules_dep(dep.read_text())
            tree.files = {n: root / p for n, (p, _) in parsed.items()}
            tree.dep_file = {n: d for n, (_, d) in parsed.items()}
        else:
            for p in (root / "kernel").rglob("*.ko*"):
                tree.files.setdefault(module_name(p.name), p)
        return tree

    def deps(self, names: Iterable[str]) -> dict[str, list[str]]:
        """Dependency lists for `names` and everything reachable from them."""
        if self.dep_file is not None:
            return self.dep_file
        graph: dict[str, list[str]] = {}
        todo = [n.replace("-", "_") for n in names]
        while todo:
            n = todo.pop()
            if n in graph or n in self.builtin or n not in self.files:
                continue
            info = modinfo(read_module(self.files[n]))
            graph[n] = [
                d.replace("-", "_") for v in info.get("depends", []) for d in v.split(",") if d
            ]
            todo.extend(graph[n])
        return graph

    def order(self, wanted: Sequence[str]) -> list[str]:
        return module_load_order(self.deps(wanted), wanted, self.builtin)


# ---------------------------------------------------------------- cpio (newc)


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


# ---------------------------------------------------------------- initramfs

DIR, REG, LNK = 0o040000, 0o100000, 0o120000

# What init does once its modules are loaded: read the words of the kernel command line
# ($words), mount the io disk if asked (mount_io), then run each probe in sequence, every
# one delimited on the console and killed when it outlives the time limit. Kept apart
# from the rest of init so the tests run it under the host's busybox sh on fake probes.
RUN_SCRIPT = r"""
disk=0; limit=0
for w in $words; do
  case "$w" in
    isobench.disk=1) disk=1 ;;
    isobench.timeout=*) limit="${w#isobench.timeout=}" ;;
  esac
done
[ "$disk" = 1 ] && mount_io
read up idle < /proc/uptime
echo "isobench-uptime $up"
n=0; probe=""
run() {  # the pending $probe with "$@" in a session of its own, watched by a dog that
  # kills the session (the probe and its children) once it outlives $limit seconds
  n=$((n + 1))
  echo "isobench-begin $n $probe"
  $bb setsid "$probes/$probe" "$@" &
  pid=$!
  (
    t=0
    while [ "$t" -lt "$limit" ]; do
      $bb sleep 1
      $bb kill -0 "$pid" 2>/dev/null || exit 0
      t=$((t + 1))
    done
    echo "isobench-timeout $n $limit"
    $bb kill -9 "-$pid"
  ) &
  wait "$pid"
  rc=$?
  echo "isobench-exit $n $rc"
}
set --
for w in $words; do
  case "$w" in
    isobench.run=*)
      [ -n "$probe" ] && run "$@"
      probe="${w#isobench.run=}"
      set --
      ;;
    isobench.arg=*) set -- "$@" "$(echo "${w#isobench.arg=}" | $bb base64 -d)" ;;
  esac
done
[ -n "$probe" ] && run "$@"
[ "$n" = 0 ] && echo ready
"""

INIT_SCRIPT = (
    r"""#!/bin/sh
# isobench guest init: mount, load modules, run the probes on the command line, power off.
bb=/bin/busybox
$bb mount -t proc proc /proc
$bb mount -t sysfs sysfs /sys
$bb mount -t devtmpfs devtmpfs /dev
fail() { echo "isobench-error $*"; $bb poweroff -f; }
load() { for m in $($bb cat "$1"); do $bb insmod "/lib/modules/$m.ko" || fail "insmod $m"; done; }
mount_io() {
  load /etc/isobench/modules.disk
  i=0
  while [ ! -b /dev/vda ] && [ "$i" -lt 500 ]; do $bb usleep 10000; i=$((i + 1)); done
  $bb mount -t ext4 /dev/vda /mnt/io || fail "mount /dev/vda"
}
load /etc/isobench/modules.base
words=$($bb cat /proc/cmdline)
probes=/probes
"""
    + RUN_SCRIPT
    + r"""[ "$disk" = 1 ] && $bb umount /mnt/io
$bb poweroff -f
"""
)


@dataclass(frozen=True)
class GuestImage:
    kernel: GuestKernel
    initramfs: Path
    initramfs_sha256: str
    modules: dict[str, list[str]]  # "base"/"disk" -> load order

    def describe(self) -> dict:
        return {
            "kernel": self.kernel.describe(),
            "initramfs": str(self.initramfs),
            "initramfs_sha256": self.initramfs_sha256,
            "modules": self.modules,
        }


def initramfs_entries(
    probes: Mapping[str, Path],
    busybox: Path,
    modules: Mapping[str, bytes],
    order: Mapping[str, list[str]],
) -> list[CpioEntry]:
    """The initramfs contents, in archive order (directories before their files)."""
    entries = [
        CpioEntry(d, DIR | 0o755)
        for d in (
            "bin",
            "dev",
            "etc",
            "etc/isobench",
            "lib",
            "lib/modules",
            "mnt",
            "mnt/io",
            "probes",
            "proc",
            "sys",
            "tmp",
        )
    ]
    entries.append(CpioEntry("bin/busybox", REG | 0o755, busybox.read_bytes()))
    entries.append(CpioEntry("bin/sh", LNK | 0o777, b"busybox"))
    entries.append(CpioEntry("init", REG | 0o755, INIT_SCRIPT.encode()))
    for group, names in order.items():
        entries.append(
            CpioEntry(
                f"etc/isobench/modules.{group}",
                REG | 0o644,
                "".join(f"{n}\n" for n in names).encode(),
            )
        )
    for name in sorted(modules):
        entries.append(CpioEntry(f"lib/modules/{name}.ko", REG | 0o644, modules[name]))
    for name in sorted(probes):
        entries.append(CpioEntry(f"probes/{name}", REG | 0o755, probes[name].read_bytes()))
    return entries


def build_initramfs(bundle, kernel: GuestKernel, cache: Path) -> GuestImage:
    """The bundle's guest initramfs for this kernel, built once into cache/guest/."""
    if bundle.busybox is None:
        raise GuestError(NO_BUSYBOX)
    probes = {n: p for n, p in bundle.probes.items() if n != "busybox"}
    return _initramfs(bundle.hash, probes, bundle.busybox, kernel, cache)


def trial_initramfs(kernel: GuestKernel, cache: Path) -> GuestImage:
    """An initramfs without probes (init itself says `ready`): enough for the KVM
    trial, so doctor needs no compiled bundle."""
    busybox = find_busybox()
    if busybox is None:
        raise GuestError(NO_BUSYBOX)
    return _initramfs(f"trial-{_sha256_file(busybox)[:16]}", {}, busybox, kernel, cache)


def _initramfs(
    name: str, probes: Mapping[str, Path], busybox: Path, kernel: GuestKernel, cache: Path
) -> GuestImage:
    """Built once per (name, kernel, init script) into cache/guest/."""
    init = hashlib.sha256(INIT_SCRIPT.encode()).hexdigest()[:8]
    key = f"{name}-{kernel.sha256[:16]}-{init}"
    out_dir = Path(cache) / "guest"
    target = out_dir / f"initramfs-{key}.cpio.gz"
    meta_path = out_dir / f"initramfs-{key}.json"
    if target.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        return GuestImage(kernel, target, meta["sha256"], meta["modules"])
    order: dict[str, list[str]] = {"base": [], "disk": []}
    blobs: dict[str, bytes] = {}
    if kernel.modules is not None:
        tree = ModuleTree.open(kernel.modules)
        base = tree.order([m for m in BASE_MODULES if m in tree.files or m in tree.builtin])
        disk = [m for m in tree.order(DISK_MODULES) if m not in base]
        order = {"base": base, "disk": disk}
        blobs = {n: read_module(tree.files[n]) for n in base + disk}
    archive = gzip.compress(
        write_newc(initramfs_entries(probes, busybox, blobs, order)),
        compresslevel=6,
        mtime=0,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    _atomic_write(target, archive)
    digest = hashlib.sha256(archive).hexdigest()
    _atomic_write(
        meta_path,
        json.dumps(
            {"sha256": digest, "modules": order, "kernel": kernel.describe()}, indent=2
        ).encode(),
    )
    return GuestImage(kernel, target, digest, order)


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# ---------------------------------------------------------------- command line, console


@dataclass(frozen=True)
class GuestRun:
    """One probe for the guest to run: its name, its arguments as the guest sees them
    (the io directory is GUEST_WORKDIR) and whether it needs the io disk."""

    probe: str
    args: tuple[str, ...]
    disk: bool


def guest_run(inv) -> GuestRun:
    workdir = GUEST_WORKDIR if inv.needs_workdir else None
    return GuestRun(inv.probe, tuple(inv.argv(inv.probe, workdir)[1:]), inv.needs_workdir)


def run_order(invs: Sequence) -> list[int]:
    """Pure: the order in which one guest runs a round's invocations (indices into
    invs): `startup` first, so the boot's `ready` is the startup probe's, as when it ran
    alone; the others as given."""
    return sorted(range(len(invs)), key=lambda i: invs[i].workload != "startup")


def cmdline(runs: Sequence[GuestRun], limit_s: float) -> str:
    """The kernel command line for one boot: each probe as an `isobench.run=` word,
    followed by its arguments base64-encoded, one `isobench.arg=` word each (RUN_SCRIPT
    decodes each into one positional parameter: no shell string is built from them).
    Without runs, init itself says `ready` (the KVM trial)."""
    words = [*BASE_CMDLINE, f"isobench.timeout={math.ceil(limit_s)}"]
    if any(r.disk for r in runs):
        words.append("isobench.disk=1")
    for r in runs:
        if not PROBE_NAME.match(r.probe):
            raise GuestError(f"probe name {r.probe!r} is not a plain file name")
        words.append(f"isobench.run={r.probe}")
        words += [f"isobench.arg={base64.b64encode(a.encode()).decode()}" for a in r.args]
    text = " ".join(words)
    if len(text) >= CMDLINE_MAX:
        raise GuestError(
            f"the round's probe arguments are too long for the kernel command line "
            f"({len(text)} B, the limit is {CMDLINE_MAX - 1})"
        )
    return text


@dataclass
class ProbeRun:
    """Pure: what the console says about one probe of a boot."""

    probe: str
    ready: bool = False  # it printed `ready`
    lines: list[str] = field(default_factory=list)  # its other lines (JSON, stderr)
    exit_code: int | None = None
    limit_s: int | None = None  # it outlived the time limit and was killed


@dataclass
class Console:
    """Pure: a boot's console lines, split into init's, the kernel's and each probe's."""

    uptime_s: float | None = None  # the guest's uptime when the first probe started
    errors: list[str] = field(default_factory=list)  # init's own failures
    other: list[str] = field(default_factory=list)  # kernel and stray lines
    runs: list[ProbeRun] = field(default_factory=list)  # in the order they began


def parse_console(lines: Iterable[str]) -> Console:
    out = Console()
    run: ProbeRun | None = None
    for line in lines:
        text = line.strip("\r\n\0 ")
        if text.startswith(UPTIME_PREFIX):
            with contextlib.suppress(ValueError):
                out.uptime_s = float(text[len(UPTIME_PREFIX) :].split()[0])
        elif text.startswith(BEGIN_PREFIX):
            run = ProbeRun(text[len(BEGIN_PREFIX) :].partition(" ")[2])
            out.runs.append(run)
        elif text.startswith(EXIT_PREFIX) and run is not None:
            with contextlib.suppress(ValueError, IndexError):
                run.exit_code = int(text[len(EXIT_PREFIX) :].split()[1])
            run = None
        elif text.startswith(TIMEOUT_PREFIX) and run is not None:
            with contextlib.suppress(ValueError, IndexError):
                run.limit_s = int(text[len(TIMEOUT_PREFIX) :].split()[1])
        elif text.startswith(ERROR_PREFIX):
            out.errors.append(text[len(ERROR_PREFIX) :])
        elif KERNEL_LINE.match(text) or (run is None and text and text != READY):
            out.other.append(text)
        elif run is not None and text == READY and not run.ready:
            run.ready = True
        elif run is not None:
            run.lines.append(text)
    return out


# ---------------------------------------------------------------- io disk


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


# ---------------------------------------------------------------- QEMU and KVM


def qemu_binary() -> str | None:
    return shutil.which("qemu-system-x86_64")


def qemu_version(binary: str) -> str:
    try:
        res = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unknown ({e})"
    m = re.search(r"version (\S+)", res.stdout)
    return m.group(1) if m else res.stdout.strip()[:80]


def qemu_machines(binary: str) -> set[str]:
    try:
        res = subprocess.run(
            [binary, "-machine", "help"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return set()
    return {line.split()[0] for line in res.stdout.splitlines()[1:] if line.strip()}


def kvm_device_problem() -> str | None:
    """Why /dev/kvm cannot even be opened (None: it can)."""
    if not Path("/dev/kvm").exists():
        return "/dev/kvm does not exist (no hardware virtualisation, or kvm module not loaded)"
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        return f"/dev/kvm cannot be opened: {e.strerror}"
    os.close(fd)
    return None


@dataclass(frozen=True)
class QemuSpec:
    """One direct QEMU launch: everything that decides its command line."""

    binary: str
    image: GuestImage
    cmdline: str
    accel: str  # "kvm" | "tcg"
    machine: str  # "microvm" | "q35" | "pc"
    vcpus: int = 1
    memory_mib: int = 512
    cpu: str = "default"  # "host-passthrough" | "default"
    disk: Path | None = None
    cache: str = "none"


def qemu_cpu(cpu: str, accel: str) -> str:
    """-cpu value: host-passthrough is `host` under KVM and `max` under TCG (no host CPU)."""
    if cpu == "host-passthrough":
        return "host" if accel == "kvm" else "max"
    return "qemu64"


def qemu_command(spec: QemuSpec) -> list[str]:
    """argv for qemu-system-x86_64: no defaults, serial console on stdio, exit on reboot."""
    mmio = spec.machine == "microvm"
    machine = "microvm,isa-serial=on" if mmio else spec.machine
    argv = [
        spec.binary,
        "-machine",
        f"{machine},accel={spec.accel}",
        "-cpu",
        qemu_cpu(spec.cpu, spec.accel),
        "-smp",
        str(spec.vcpus),
        "-m",
        f"{spec.memory_mib}M",
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-chardev",
        "stdio,id=con,signal=off",
        "-serial",
        "chardev:con",
        "-no-reboot",
        "-kernel",
        str(spec.image.kernel.path),
        "-initrd",
        str(spec.image.initramfs),
        "-append",
        spec.cmdline,
    ]
    if spec.disk is not None:
        argv += [
            "-drive",
            f"file={spec.disk},if=none,id=io,format=raw,cache={spec.cache}",
            "-device",
            ("virtio-blk-device" if mmio else "virtio-blk-pci") + ",drive=io",
        ]
    return argv
