"""System-wide noise indicators: what else on this machine may perturb the numbers.

`snapshot()` gathers them (cheap, never raises); `warnings()` turns a snapshot into
one-line sentences for the report. Thresholds are the module constants below.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import psutil

LOAD_PER_CPU_WARN = 0.5  # 1-min load average per CPU above which we warn
STEAL_WARN = 0.01  # fraction of CPU ticks stolen by the hypervisor
SWAP_WARN_MIB = 16.0
BUSY_CPU_PERCENT = 10.0  # another process above this (over BUSY_SAMPLE_S) is named
BUSY_SAMPLE_S = 0.2

PROC_STAT_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
CPU = Path("/sys/devices/system/cpu")


def parse_proc_stat(text: str) -> dict[str, int]:
    """/proc/stat -> the aggregate "cpu" line's ticks (fields missing on old kernels: 0).

    guest and guest_nice are left out: the kernel already counts them in user and nice.
    """
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[0] == "cpu":
            values = [int(v) for v in parts[1 : 1 + len(PROC_STAT_FIELDS)]]
            values += [0] * (len(PROC_STAT_FIELDS) - len(values))
            return dict(zip(PROC_STAT_FIELDS, values, strict=True))
    return {}


def steal_fraction(before: dict, after: dict) -> float:
    """Stolen ticks / all ticks between two parse_proc_stat() results (0.0 if none)."""
    total = sum(after.get(f, 0) - before.get(f, 0) for f in PROC_STAT_FIELDS)
    if total <= 0:
        return 0.0
    return (after.get("steal", 0) - before.get("steal", 0)) / total


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _flag(path: Path) -> bool | None:
    value = _read(path)
    return None if value is None else value == "1"


def _turbo() -> bool | None:
    no_turbo = _flag(CPU / "intel_pstate" / "no_turbo")
    if no_turbo is not None:
        return not no_turbo
    return _flag(CPU / "cpufreq" / "boost")


def _mitigations() -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        for entry in sorted((CPU / "vulnerabilities").iterdir()):
            value = _read(entry)
            if value is not None:
                out[entry.name] = value
    except OSError:
        pass
    return out


def _swap_used_mib() -> float | None:
    try:
        return psutil.swap_memory().used / 2**20
    except Exception:  # psutil raises RuntimeError/OSError on odd /proc/meminfo
        return None


def _busy_processes(sample_s: float = BUSY_SAMPLE_S) -> list[dict]:
    """Other processes above BUSY_CPU_PERCENT over `sample_s` (not us, not our children)."""
    try:
        me = psutil.Process()
        ours = {me.pid} | {c.pid for c in me.children(recursive=True)}
        procs = [p for p in psutil.process_iter(["name"]) if p.pid not in ours]
    except psutil.Error:
        return []
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.cpu_percent(None)  # first call only sets the reference point
    time.sleep(sample_s)
    busy = []
    for p in procs:
        try:
            pct = p.cpu_percent(None)
        except psutil.Error:
            continue
        if pct > BUSY_CPU_PERCENT:
            busy.append({"pid": p.pid, "name": p.info.get("name") or "?", "cpu_percent": pct})
    return sorted(busy, key=lambda b: -b["cpu_percent"])


def _proc_stat() -> dict[str, int]:
    try:
        return parse_proc_stat(_read(Path("/proc/stat")) or "")
    except ValueError:
        return {}


def snapshot(busy_sample_s: float = BUSY_SAMPLE_S) -> dict:
    """What may perturb a run, right now. Cheap (about busy_sample_s), never raises."""
    try:
        loadavg = os.getloadavg()
    except OSError:
        loadavg = None
    smt = _flag(CPU / "smt" / "active")
    return {
        "t": time.time(),
        "loadavg": loadavg,
        "proc_stat": _proc_stat(),
        "governor": _read(CPU / "cpu0" / "cpufreq" / "scaling_governor"),
        "turbo": _turbo(),
        "smt": smt,
        "swap_used_mib": _swap_used_mib(),
        "cpu_count": os.cpu_count(),
        "busy_processes": _busy_processes(busy_sample_s) if busy_sample_s > 0 else [],
        "mitigations": _mitigations(),
    }


def warnings(snap: dict, *, steal: float | None = None) -> list[str]:
    """Human one-liners for the conditions in `snap` (and a measured steal fraction)."""
    out = []
    ncpu = snap.get("cpu_count") or 1
    load = snap.get("loadavg")
    if load and load[0] > LOAD_PER_CPU_WARN * ncpu:
        out.append(f"load average {load[0]:.1f} on {ncpu} CPUs: other work may perturb results")
    if steal is not None and steal > STEAL_WARN:
        out.append(f"CPU steal {steal * 100:.1f}% during the run: this is a VM whose host is busy")
    governor = snap.get("governor")
    if governor and governor != "performance":
        out.append(f"frequency governor is {governor!r}: set 'performance' for stable numbers")
    if snap.get("turbo"):
        out.append("turbo boost is on: clock speed follows temperature and load")
    if snap.get("smt"):
        out.append("SMT is on: sibling threads share cores")
    swap = snap.get("swap_used_mib")
    if swap is not None and swap > SWAP_WARN_MIB:
        out.append(f"swap in use: {swap:.0f} MiB")
    for b in snap.get("busy_processes") or []:
        out.append(f"busy process: pid {b['pid']} ({b['name']}) at {b['cpu_percent']:.0f}% CPU")
    return out
