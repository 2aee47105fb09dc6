"""The guest kernel: an explicit path (option / --kernel), then $ISOBENCH_GUEST_KERNEL,
then the host's own /boot/vmlinuz-$(uname -r), then a kernel package unpacked into the
cache (<cache>/guest-kernel/boot/vmlinuz-*, which .ci/setup-libvirt.sh puts there on
hosts without /boot); its modules from <package root>/lib/modules/<version>,
$ISOBENCH_GUEST_MODULES or /lib/modules/<version>. `bzimage_version` reads the version
string in a bzImage's setup header (pure)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from bench.envs.guest import GuestError
from bench.resources import cache_dir

KERNEL_ENV = "ISOBENCH_GUEST_KERNEL"
MODULES_ENV = "ISOBENCH_GUEST_MODULES"
KERNEL_HINT = (
    "no guest kernel found: pass --kernel PATH (a vmlinuz), set ISOBENCH_GUEST_KERNEL, "
    "or unpack a kernel package into the cache: apt-get download linux-image-amd64's "
    "dependency and dpkg -x it into ~/.cache/isobench/guest-kernel (.ci/setup-libvirt.sh)"
)


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


def sha256_file(path: Path) -> str:
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
    return GuestKernel(chosen, version, sha256_file(chosen), mods, source)
