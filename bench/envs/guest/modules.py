"""The kernel modules a guest needs, dependencies first, from modules.dep or (in an
unpacked package, which has none) from each module's .modinfo section."""

from __future__ import annotations

import gzip
import lzma
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.envs.guest import GuestError

BASE_MODULES = ("virtio_pci", "virtio_mmio", "virtio_console")
DISK_MODULES = ("virtio_blk", "crc32c_generic", "ext4")  # ext4 soft-depends on crc32c
NET_MODULES = ("virtio_net",)  # with failover and net_failover (Debian builds it as a module)


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
