"""Host provenance: what makes results from this host comparable (or not) with others."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
from pathlib import Path

import bench
from bench.metrics.cgroup import Layout

COMPARABLE = ("cpu_model", "kernel", "cpu_count", "cgroup_layout")  # differ -> warn


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def cpu_model() -> str:
    for line in (_read("/proc/cpuinfo") or "").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def os_release() -> str:
    for line in (_read("/etc/os-release") or "").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip('"')
    return platform.system()


def mitigations() -> dict[str, str]:
    d = Path("/sys/devices/system/cpu/vulnerabilities")
    if not d.is_dir():
        return {}
    return {p.name: _read(str(p)) or "" for p in sorted(d.iterdir())}


def virtualization() -> str:
    """'none', or what systemd-detect-virt says this host itself runs under."""
    try:
        out = subprocess.run(["systemd-detect-virt"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "none"
    except (OSError, subprocess.TimeoutExpired):
        flags = _read("/proc/cpuinfo") or ""
        return "vm (hypervisor flag)" if " hypervisor" in flags else "unknown"


def host_facts() -> dict:
    u = os.uname()
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {
        "hostname": socket.gethostname(),
        "os": os_release(),
        "kernel": u.release,
        "kernel_build": u.version,
        "arch": u.machine,
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_gib": round(mem / 2**30, 1),
        "virtualization": virtualization(),
        "cgroup_layout": Layout.detect().name,
        "mitigations": mitigations(),
        "cmdline": _read("/proc/cmdline"),
        "python": platform.python_version(),
        "isobench": bench.__version__,
    }


def differences(a: dict, b: dict) -> list[str]:
    """Facts that make two hosts' results not directly comparable."""
    return [f"{k}: {a.get(k)!r} vs {b.get(k)!r}" for k in COMPARABLE if a.get(k) != b.get(k)]
