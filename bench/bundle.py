"""The probe bundle: every workload probe compiled -O2 -static, plus a static busybox
where one is installed, in a content-hashed directory of the cache. The very same files
go into container images and guest initramfs, so results can be tied to them by hash."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.resources import cache_dir, workloads_dir

CFLAGS = ("-O2", "-static", "-Wall", "-Wextra")
BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")


class BuildError(RuntimeError):
    """The bundle could not be built; the message says what to install or fix."""


@dataclass(frozen=True)
class Bundle:
    root: Path
    hash: str
    probes: dict[str, Path]
    probe_hashes: dict[str, str]
    busybox: Path | None
    compiler: str

    def describe(self) -> dict:
        return {
            "hash": self.hash,
            "path": str(self.root),
            "probes": self.probe_hashes,
            "busybox": _sha256(self.busybox) if self.busybox else None,
            "compiler": self.compiler,
        }


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _is_static_elf(path: Path) -> bool:
    """True for an ELF executable with no PT_INTERP program header (no dynamic loader)."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2:  # 64-bit only
        return False
    phoff = int.from_bytes(data[0x20:0x28], "little")
    phentsize = int.from_bytes(data[0x36:0x38], "little")
    phnum = int.from_bytes(data[0x38:0x3A], "little")
    for i in range(phnum):
        off = phoff + i * phentsize
        if int.from_bytes(data[off : off + 4], "little") == 3:  # PT_INTERP
            return False
    return True


def find_busybox() -> Path | None:
    for cand in BUSYBOX_CANDIDATES:
        p = Path(cand)
        if p.is_file() and _is_static_elf(p.resolve()):
            return p.resolve()
    return None


def compiler_version(cc: str = "gcc") -> str:
    path = shutil.which(cc)
    if not path:
        raise BuildError(
            f"no C compiler '{cc}' found: install one "
            "(Debian/Ubuntu: apt-get install gcc libc6-dev)"
        )
    out = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
    return out.stdout.splitlines()[0] if out.stdout else cc


def sources(src: Path | None = None) -> list[Path]:
    src = src or workloads_dir()
    return sorted(p for p in src.iterdir() if p.suffix in (".c", ".h") or p.name == "catalog.toml")


def bundle_key(srcs: list[Path], compiler: str, busybox: Path | None) -> str:
    h = hashlib.sha256()
    for p in srcs:
        h.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
    h.update(compiler.encode() + b"\0" + " ".join(CFLAGS).encode())
    if busybox:
        h.update(b"busybox\0" + busybox.read_bytes())
    return h.hexdigest()[:16]


def build(cache: Path | None = None, cc: str = "gcc", src: Path | None = None) -> Bundle:
    """Compile the probes into cache/bundles/<hash>/ unless that bundle already exists."""
    compiler = compiler_version(cc)
    srcs = sources(src)
    busybox = find_busybox()
    key = bundle_key(srcs, compiler, busybox)
    root = (cache or cache_dir()) / "bundles" / key
    meta = root / "bundle.json"
    if not meta.is_file():
        _compile_into(root, srcs, cc, busybox)
    return load(root)


def _compile_into(root: Path, srcs: list[Path], cc: str, busybox: Path | None) -> None:
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=root.parent))
    try:
        (tmp / "bin").mkdir()
        include = srcs[0].parent
        for c in (p for p in srcs if p.suffix == ".c"):
            out = tmp / "bin" / c.stem
            argv = [cc, *CFLAGS, f"-I{include}", "-o", str(out), str(c), "-lm"]
            res = subprocess.run(argv, capture_output=True, text=True, check=False)
            if res.returncode != 0:
                first = (res.stderr.strip().splitlines() or ["(no output)"])[0]
                hint = " (static linking needs libc6-dev)" if "cannot find -l" in res.stderr else ""
                raise BuildError(f"compiling {c.name} failed: {first}{hint}")
        for p in srcs:
            if p.suffix != ".c":
                shutil.copy2(p, tmp / p.name)
        if busybox:
            shutil.copy2(busybox, tmp / "bin" / "busybox")
        probes = {p.name: _sha256(p) for p in sorted((tmp / "bin").iterdir())}
        busybox_hash = probes.pop("busybox", None)
        meta = {
            "compiler": compiler_version(cc),
            "cflags": list(CFLAGS),
            "probes": probes,
            "busybox": busybox_hash,
        }
        (tmp / "bundle.json").write_text(json.dumps(meta, indent=2) + "\n")
        try:
            tmp.rename(root)
        except OSError:  # a concurrent build won the race: its result is identical
            if not (root / "bundle.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load(root: Path) -> Bundle:
    meta = json.loads((root / "bundle.json").read_text())
    probes = {name: root / "bin" / name for name in meta["probes"]}
    busybox = root / "bin" / "busybox" if meta.get("busybox") else None
    return Bundle(root, root.name, probes, meta["probes"], busybox, meta["compiler"])
