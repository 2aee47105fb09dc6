"""Density's pure parts (bench/families/density.py measures): reading /proc's tables, the
level's op name, the two memory views per instance and their cross-check, the notes on
drift and on carriers, the reserve arithmetic and the settling of MemAvailable."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

DISAGREE = 0.20  # the two memory sources may differ by this much without a note
HEADROOM = 1.25  # margin on a level's estimated need
SETTLE_INTERVAL_S = 0.25
SETTLE_READINGS = 4  # settled: this many readings in a row within SETTLE_SPAN_KIB
SETTLE_SPAN_KIB = 2048
SETTLE_MAX_S = 5.0  # then read anyway, with a note: other load keeps it from settling
MIB_KIB = 1024
DRIFT_MIN_KIB = 4 * MIB_KIB  # baselines that differ by less are not worth a note
DRIFT_CPU_MS_PER_S = 50.0  # a twentieth of a CPU
# host-side carrier roles that live outside the instance's own cgroup: their PSS is added
# to the cgroup figure (the others are inside it: bench/families/density.py)
OUTSIDE_CARRIERS = ("shim",)


# ---------------------------------------------------------------- pure: parsing


def parse_kib_table(text: str) -> dict[str, int]:
    """/proc/meminfo or /proc/PID/smaps_rollup -> {field: kB}; other lines skipped."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, sep, rest = line.partition(":")
        parts = rest.split()
        if sep and parts and parts[0].isdigit() and (len(parts) == 1 or parts[1] == "kB"):
            out[key.strip()] = int(parts[0])
    return out


def parse_meminfo(text: str) -> dict[str, int]:
    """/proc/meminfo -> {field: kB} (MemTotal, MemAvailable, ...)."""
    return parse_kib_table(text)


def parse_smaps_rollup(text: str) -> dict[str, int]:
    """/proc/PID/smaps_rollup -> {field: kB} (Rss, Pss, Pss_Anon, Anonymous, ...)."""
    return parse_kib_table(text)


def busy_ticks(proc_stat: str) -> int:
    """/proc/stat -> the host's busy CPU time in USER_HZ ticks, all CPUs: user + nice +
    system + irq + softirq. Not idle or iowait (nothing ran), not steal (the hypervisor
    ran someone else), not guest/guest_nice (already counted in user/nice)."""
    for line in proc_stat.splitlines():
        parts = line.split()
        if parts and parts[0] == "cpu":
            v = [int(x) for x in parts[1:]] + [0] * 10
            user, nice, system, _idle, _iowait, irq, softirq = v[:7]
            return user + nice + system + irq + softirq
    raise ValueError("no aggregate cpu line in /proc/stat")


# ---------------------------------------------------------------- pure: arithmetic


def op_name(n: int, levels: Sequence[int]) -> str:
    """The op of level n: n01, n08, n32 (zero-padded to the widest level, at least two
    digits, so the ops of one ramp sort by N as text)."""
    width = max(2, len(str(max(levels, default=n))))
    return f"n{n:0{width}d}"


def system_per_instance_mib(
    avail_before_kib: int, avail_after_kib: int, n: int, harness_growth_kib: int = 0
) -> float:
    """The system-wide view: what MemAvailable lost while N instances were held, less what
    the harness itself grew by, per instance, in MiB."""
    return (avail_before_kib - avail_after_kib - harness_growth_kib) / n / MIB_KIB


def carriers_mib(host_side: dict[str, float], outside: Sequence[str] = OUTSIDE_CARRIERS) -> float:
    """PSS (MiB) of one instance's host-side carriers that live outside its cgroup."""
    return sum(host_side.get(f"{role}_pss_mib", 0.0) for role in outside)


def has_carriers(host_side: dict[str, float], outside: Sequence[str] = OUTSIDE_CARRIERS) -> bool:
    """Did the kind report a carrier outside the instance's cgroup (else no such figure)?"""
    return any(f"{role}_pss_mib" in host_side for role in outside)


def memory_dir(paths: dict[str, Path]) -> Path | None:
    """The memory controller's directory of a cgroup's paths (v1 "memory", v2 "")."""
    return paths.get("memory") or paths.get("")


def is_inside(carrier: dict[str, Path], instance: dict[str, Path]) -> bool:
    """Is a carrier's memory cgroup the instance's own or one below it? Its memory is then
    in the instance's cgroup figure already (v1 with use_hierarchy, v2: hierarchical)."""
    c, i = memory_dir(carrier), memory_dir(instance)
    return c is not None and i is not None and (c == i or i in c.parents)


def accounted_per_instance_mib(cgroup_mib: Sequence[float], carrier_mib: Sequence[float]) -> float:
    """The accounted view: the mean over the instances of cgroup memory + carriers' PSS."""
    if not cgroup_mib:
        raise ValueError("no instance figures")
    return (sum(cgroup_mib) + sum(carrier_mib)) / len(cgroup_mib)


def carriers_note(outside: Sequence[dict[str, float]], named: Sequence[dict[int, str]]) -> str:
    """Which carriers the accounted view added (PSS per instance, by role) and which it
    left to the cgroup figure (inside the instance's cgroup)."""
    n = len(outside) or 1
    added: dict[str, float] = {}
    for roles in outside:
        for role, mib in roles.items():
            added[role] = added.get(role, 0.0) + mib / n
    inside = sorted({r for c in named for r in c.values()} - set(added))
    parts = [f"{role} {mib:.2f} MiB" for role, mib in sorted(added.items())]
    text = "carriers outside the cgroup, PSS per instance: " + (", ".join(parts) or "none")
    return text + (f" (inside it: {', '.join(inside)})" if inside else "")


def disagreement(a: float, b: float) -> float:
    """|a - b| relative to the larger magnitude (0 when both are 0)."""
    big = max(abs(a), abs(b))
    return abs(a - b) / big if big else 0.0


def memory_note(system_mib: float, accounted_mib: float, limit: float = DISAGREE) -> str:
    """The warning when the two memory sources disagree by more than `limit`."""
    d = disagreement(system_mib, accounted_mib)
    if d <= limit:
        return ""
    return (
        f"memory sources disagree by {d:.0%}: MemAvailable says {system_mib:.2f} MiB per "
        f"instance, cgroups + carriers {accounted_mib:.2f} MiB (kernel memory outside the "
        "cgroups, page cache and other load on the host count only in the first)"
    )


def drift_note(
    avail_before_kib: int,
    avail_after_kib: int,
    held_drop_kib: int,
    rate_before: float,
    rate_after: float,
) -> str:
    """A note when the baselines before and after a level differ by more than a fifth of
    what the level itself took (memory, at least DRIFT_MIN_KIB) or by more than
    DRIFT_CPU_MS_PER_S of busy CPU: other load moved under the measurement."""
    out = []
    mem = abs(avail_after_kib - avail_before_kib)
    if mem > max(DRIFT_MIN_KIB, DISAGREE * abs(held_drop_kib)):
        out.append(f"MemAvailable moved by {mem / MIB_KIB:.1f} MiB between the baselines")
    cpu = abs(rate_after - rate_before)
    if cpu > DRIFT_CPU_MS_PER_S:
        out.append(f"busy CPU moved by {cpu:.0f} ms/s between the baselines")
    if not out:
        return ""
    return "other load on the host: " + ", ".join(out) + " (the figures bracket it)"


def level_need_mib(per_instance_mib: float, n: int, headroom: float = HEADROOM) -> float:
    """What level n is expected to take: N held plus the one started on top, with margin."""
    return max(per_instance_mib, 0.0) * (n + 1) * headroom


def reserve_refusal(
    available_kib: int, total_kib: int, need_mib: float, reserve: float
) -> str | None:
    """None when `need_mib` fits above the reserve; else the reason, for the record."""
    floor_kib = reserve * total_kib
    left_kib = available_kib - need_mib * MIB_KIB
    if left_kib >= floor_kib:
        return None
    return (
        f"would leave {left_kib / MIB_KIB / 1024:.2f} GiB available (estimated need "
        f"{need_mib:.0f} MiB of {available_kib / MIB_KIB / 1024:.2f} GiB available), below the "
        f"reserve of {reserve:.0%} of MemTotal ({floor_kib / MIB_KIB / 1024:.2f} GiB)"
    )


def settle(
    read: Callable[[], int],
    *,
    interval: float = SETTLE_INTERVAL_S,
    readings: int = SETTLE_READINGS,
    span_kib: int = SETTLE_SPAN_KIB,
    max_s: float = SETTLE_MAX_S,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[int, bool]:
    """Read a memory figure (kB) until `readings` in a row lie within `span_kib` (the
    page cache and the instances' last allocations have settled) or `max_s` passed.
    Returns (the median of the last readings, settled?)."""
    start = clock()
    seen: list[int] = []
    while True:
        seen.append(read())
        last = seen[-readings:]
        if len(last) == readings and max(last) - min(last) <= span_kib:
            return sorted(last)[len(last) // 2], True
        if clock() - start >= max_s:
            return sorted(last)[len(last) // 2], False
        sleep(interval)
