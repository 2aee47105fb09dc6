"""QEMU itself: the binary, its version and machine types, and the command line of a
direct launch (no defaults, serial console on stdio, exit on reboot; a serving guest's
control port on a virtio-serial bus)."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.envs.guest.channel import PORT_NAME
from bench.envs.guest.initramfs import GuestImage
from bench.envs.guest.rootdisk import IO_SERIAL, ROOT_SERIAL

CACHE_MODES = ("none", "writeback", "unsafe")


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
    nic: tuple[str, str] | None = None  # (tap, MAC): a virtio-net NIC on a made tap
    root: tuple[Path, str] | None = None  # (file, format): the root disk's per-boot overlay
    ctl: Path | None = None  # the host's listening socket for the control port (channel.py)


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
    blk = "virtio-blk-device" if mmio else "virtio-blk-pci"
    if spec.root is not None:  # found by its serial, as the io disk then is
        path, fmt = spec.root
        argv += [
            "-drive",
            f"file={path},if=none,id=root,format={fmt},cache={spec.cache}",
            "-device",
            f"{blk},drive=root,serial={ROOT_SERIAL}",
        ]
    if spec.disk is not None:
        serial = f",serial={IO_SERIAL}" if spec.root is not None else ""
        argv += [
            "-drive",
            f"file={spec.disk},if=none,id=io,format=raw,cache={spec.cache}",
            "-device",
            f"{blk},drive=io{serial}",
        ]
    if spec.nic is not None:  # the tap exists: QEMU only attaches (no script, no ROM)
        tap, mac = spec.nic
        device = "virtio-net-device" if mmio else "virtio-net-pci,romfile="
        argv += [
            "-netdev",
            f"tap,id=net0,ifname={tap},script=no,downscript=no",
            "-device",
            f"{device},netdev=net0,mac={mac}",
        ]
    if spec.ctl is not None:  # QEMU connects to the host's socket (channel.py says why)
        bus = "virtio-serial-device" if mmio else "virtio-serial-pci"
        argv += [
            "-chardev",
            f"socket,id=ctl,path={str(spec.ctl).replace(',', ',,')},server=off",
            "-device",
            f"{bus},id=ser0",
            "-device",
            f"virtserialport,bus=ser0.0,chardev=ctl,name={PORT_NAME}",
        ]
    return argv
