"""Density: what N idle instances of an environment cost the host, and how the start of
one more grows with N (issue 14). The runner calls `run_round` once per round of a
`density` cell; each level N becomes one probe-style record (op `n08`: the level, zero-
padded so the ops sort by N), a level that cannot run becomes a failure entry.

Per level, from zero (the level before is fully stopped first):

1. a baseline: MemAvailable once the page cache has settled, and the host's busy CPU over
   the idle window, with none of this environment's instances held; a second one after
   the level is stopped: the held readings are compared with their mean, so drift from
   other load is corrected to first order (and named in the note when it is large). The
   baseline after a level is the next level's baseline before (nothing is held between);
2. hold N instances of the `hold` probe (start all, then wait for every `ready`); the
   memory reserve is checked before every start;
3. memory per instance, two sources, cross-checked (a note when they differ by > 20%):
   - `mem_system_mib`: the MemAvailable drop / N once settled, minus the harness's own
     anonymous-memory growth (its Popen objects, reader buffers, sampler threads);
   - `mem_accounted_mib`: the instances' cgroup memory, read live (`mem_current_mib`) where
     the cgroup is found under the instance's name (host, namespaces, containers with an
     isobench cgroup parent), else the peak the stopped instance reported; plus the PSS of
     the carriers that live outside that cgroup. A kind that names its carriers
     (Instance.carriers: podman's conmon, oci's foreground `run` process, runsc's sandbox
     and gofer) has them read live, each counted only when its memory cgroup is not the
     instance's or below it (is_inside); otherwise the peak PSS its stopped instances
     reported for roles outside the cgroup (OUTSIDE_CARRIERS: docker's containerd shim).
     Carriers inside (QEMU in a guest's scope) are in the cgroup figure already.
4. idle CPU of the N over a fixed window, two sources:
   - `idle_cpu_ms_per_s`: the host-wide busy CPU (/proc/stat: user, nice, system, irq,
     softirq) during the window minus what the harness process itself used in it (the
     per-instance samplers), minus the same with none held (the baselines' mean); per
     instance, in CPU-ms per second. The headline source, because it is the only one that
     sees everything the host pays for idle instances without help from the kinds: the
     carriers (shim, sandbox, QEMU), the daemons' housekeeping and the kernel. It also
     includes whatever else the host does, hence the bracketing baselines.
   - `cgroup_idle_cpu_ms_per_s`: the instances' own cgroups' CPU time over the same window
     (ns resolution, nothing else in it), where every cgroup is found live.
5. `start_ms`: the `ready` phase of one more instance started with N held (stopped at once);
6. `stop_ms`: stopping all N, one after another, as a harness does: request to the last
   one cleaned.

Safety: before a level, its need is estimated from the level before (per-instance memory
x (N + 1) x HEADROOM; the larger of the two figures, or the accounted one alone when
other load made the system-wide one untrustworthy: it did not settle or drifted). When
MemAvailable minus that would fall below `reserve` x MemTotal, that level and the rest
are skipped, each with the reason; the reserve is checked again before every start.
A level that fails (an instance that does not start or is not ready in time, the reserve
reached while starting) is recorded as failed and ends the ramp (a larger level needs
at least as much). Whatever a level started is stopped before the next one; on Ctrl-C
(any BaseException) every instance still held is aborted, and env.cleanup() is the
runner's last resort.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench import interrupt
from bench.envs.base import HOLD, Environment, Instance, Launch
from bench.metrics.cgroup import CgroupError, CgroupReader

RESERVE = 0.25  # fraction of MemTotal a ramp never takes the host below
DISAGREE = 0.20  # the two memory sources may differ by this much without a note
HEADROOM = 1.25  # margin on a level's estimated need
IDLE_WINDOW_S = 2.0  # idle CPU window: 200 /proc/stat ticks per CPU at USER_HZ 100
SETTLE_INTERVAL_S = 0.25
SETTLE_READINGS = 4  # settled: this many readings in a row within SETTLE_SPAN_KIB
SETTLE_SPAN_KIB = 2048
SETTLE_MAX_S = 5.0  # then read anyway, with a note: other load keeps it from settling
MIB_KIB = 1024
DRIFT_MIN_KIB = 4 * MIB_KIB  # baselines that differ by less are not worth a note
DRIFT_CPU_MS_PER_S = 50.0  # a twentieth of a CPU
# host-side carrier roles that live outside the instance's own cgroup: their PSS is added
# to the cgroup figure (the others are inside it, see the module doc)
OUTSIDE_CARRIERS = ("shim",)

UNITS = {
    "mem_system_mib": "MiB",
    "mem_accounted_mib": "MiB",
    "mem_cgroup_mib": "MiB",
    "mem_carriers_mib": "MiB",
    "start_ms": "ms",
    "stop_ms": "ms",
    "idle_cpu_ms_per_s": "ms/s",
    "cgroup_idle_cpu_ms_per_s": "ms/s",
}


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


# ---------------------------------------------------------------- live readings


@dataclass(frozen=True)
class HostProbe:
    """Where the live figures come from (files replaceable in tests)."""

    meminfo: Path = Path("/proc/meminfo")
    proc_stat: Path = Path("/proc/stat")
    self_smaps: Path = Path("/proc/self/smaps_rollup")

    def memory(self) -> dict[str, int]:
        return parse_meminfo(self.meminfo.read_text())

    def available_kib(self) -> int:
        return self.memory()["MemAvailable"]

    def harness_anon_kib(self) -> int:
        """The harness process's anonymous memory (what its growth takes from the host)."""
        try:
            return parse_smaps_rollup(self.self_smaps.read_text()).get("Anonymous", 0)
        except OSError:
            return 0

    def busy_ms(self) -> float:
        return busy_ticks(self.proc_stat.read_text()) * 1000 / os.sysconf("SC_CLK_TCK")


def harness_cpu_ms() -> float:
    """CPU time of this process, all its threads (the samplers of held instances)."""
    t = os.times()
    return (t.user + t.system) * 1000


def pss_mib(pid: int) -> float | None:
    """A process's PSS now (MiB), None when it is gone or its smaps cannot be read."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    pss = parse_smaps_rollup(text).get("Pss")
    return None if pss is None else pss / MIB_KIB


def outside_carriers_mib(carriers: dict[int, str], reader: CgroupReader | None) -> dict[str, float]:
    """The PSS now (MiB, per role) of the carriers a held instance names (pid -> role, from
    Instance.carriers) that sit outside its live cgroup `reader`; those inside are in the
    cgroup figure already. With no live cgroup (None), every carrier named counts."""
    out: dict[str, float] = {}
    for pid, role in carriers.items():
        try:
            where = CgroupReader.for_pid(pid).paths
        except CgroupError:
            continue  # gone since it was named
        if reader is not None and is_inside(where, reader.paths):
            continue
        pss = pss_mib(pid)
        if pss is not None:
            out[role] = out.get(role, 0.0) + pss
    return out


def idle_cpu(
    host: HostProbe, window: float, readers: Sequence[CgroupReader] = ()
) -> tuple[float, float | None]:
    """Over `window` s: (host busy CPU minus the harness's, in ms per second; the summed
    CPU of `readers` in ms per second, None when one of them could not be read)."""
    cg_before = [r.read().get("cpu_total_ms") for r in readers]
    busy0, own0, t0 = host.busy_ms(), harness_cpu_ms(), time.monotonic()
    time.sleep(window)
    busy1, own1, t1 = host.busy_ms(), harness_cpu_ms(), time.monotonic()
    cg_after = [r.read().get("cpu_total_ms") for r in readers]
    wall = t1 - t0
    host_rate = ((busy1 - busy0) - (own1 - own0)) / wall
    pairs = list(zip(cg_before, cg_after, strict=True))
    if not readers or any(a is None or b is None for a, b in pairs):
        return host_rate, None
    return host_rate, sum(b - a for a, b in pairs) / wall


# ---------------------------------------------------------------- the ramp


class LevelFailed(Exception):
    """A level could not be held; the message is the reason recorded for it."""


def _release(instances: Sequence[Instance], graceful: bool) -> list[Launch]:
    """Stop (or, on the way out of an interrupt, abort) every instance not yet ended."""
    out = []
    for inst in instances:
        if inst.launch is not None:
            out.append(inst.launch)
        elif graceful:
            try:
                out.append(inst.stop())
            except Exception:
                inst.abort()
        else:
            inst.abort()
    return out


def _one_more(env: Environment, timeout: float, extra: list[Instance]) -> Launch:
    """Start one more instance (kept in `extra` until ended), wait for its `ready`, stop
    it: its Launch (a failure to start is a failed Launch, not an exception)."""
    try:
        extra.append(env.start(HOLD, timeout))
    except Exception as e:
        return Launch(status="failed", reason=f"{type(e).__name__}: {e}")
    extra[0].wait_ready()
    return extra[0].stop()


@dataclass
class Level:
    """One level's figures and what the next level's estimate needs."""

    record: dict
    per_instance_mib: float
    after: Baseline  # the next level's baseline before


def _hold(
    env: Environment,
    n: int,
    timeout: float,
    host: HostProbe,
    floor_kib: float,
    held: list[Instance],
    log: Callable[[str], None],
) -> None:
    """Start n instances into `held` (checking the reserve before each), then wait for
    every `ready`. LevelFailed with the reason when that cannot be done."""
    for i in range(n):
        interrupt.check()
        available = host.available_kib()
        if available < floor_kib:
            raise LevelFailed(
                f"memory reserve reached after {i} of {n} instances "
                f"({available / MIB_KIB:.0f} MiB available)"
            )
        try:
            held.append(env.start(HOLD, timeout))
        except Exception as e:
            raise LevelFailed(f"instance {i + 1} of {n} did not start: {e}") from None
    log(f"{n} started, waiting for ready")
    for i, inst in enumerate(held):
        try:
            ok = inst.wait_ready()
        except Exception as e:
            raise LevelFailed(f"instance {i + 1} of {n}: {type(e).__name__}: {e}") from None
        if not ok:
            launch = inst.stop()
            why = launch.reason or f"no `ready` within {timeout:g} s"
            raise LevelFailed(f"instance {i + 1} of {n} not ready: {why}")


@dataclass(frozen=True)
class Pace:
    """How long a level waits: the idle CPU window, and at most how long MemAvailable may
    take to settle before it is read anyway (with a note). Tests shorten both: they check
    that the figures exist, not how precise they are."""

    window: float = IDLE_WINDOW_S
    settle_max: float = SETTLE_MAX_S


@dataclass(frozen=True)
class Baseline:
    """The host with none of the environment's instances held: settled MemAvailable (kB),
    whether it settled, the host's busy CPU rate less the harness's (ms/s), and the
    harness's own anonymous memory (kB) at that moment."""

    avail_kib: int
    settled: bool
    rate: float
    anon_kib: int


def _baseline(host: HostProbe, pace: Pace) -> Baseline:
    anon = host.harness_anon_kib()
    avail, settled = settle(host.available_kib, max_s=pace.settle_max)
    rate, _ = idle_cpu(host, pace.window)
    return Baseline(avail, settled, rate, anon)


def _level(
    env: Environment,
    n: int,
    op: str,
    timeout: float,
    reserve: float,
    pace: Pace,
    host: HostProbe,
    log: Callable[[str], None],
    before: Baseline,
) -> Level:
    """One level from the baseline `before` (the previous level's after, or the round's
    first): N held (memory, idle CPU), one more started, all stopped, a baseline after.
    The two baselines bracket the held readings, so a host whose memory or CPU use drifts
    for other reasons (other load) is corrected to first order."""
    total_kib = host.memory()["MemTotal"]
    anon_before = before.anon_kib
    avail_before, settled_before, rate_before = before.avail_kib, before.settled, before.rate
    held: list[Instance] = []
    extra: list[Instance] = []
    notes = []
    try:
        _hold(env, n, timeout, host, reserve * total_kib, held, lambda s: log(f"{op}: {s}"))
        log(f"{op}: {n} held, settling")
        avail_held, settled_held = settle(host.available_kib, max_s=pace.settle_max)
        anon_growth = max(0, host.harness_anon_kib() - anon_before)
        readers = [inst.live_cgroup() for inst in held]
        live = [r for r in readers if r is not None]
        live_mem = [r.read().get("mem_current_mib") for r in live]
        found = [inst.carriers() for inst in held]
        named = [outside_carriers_mib(c, r) for c, r in zip(found, readers, strict=True)]
        names_carriers = any(found)
        log(f"{op}: idle window")
        host_rate, cg_rate = idle_cpu(host, pace.window, live if len(live) == n else ())
        log(f"{op}: one more with {n} held")
        one_more = _one_more(env, timeout, extra)
        log(f"{op}: stopping {n}")
        t0 = time.monotonic_ns()
        launches = _release(held, graceful=True)
        stop_ms = (time.monotonic_ns() - t0) / 1e6
    except BaseException as e:
        # a failed level is stopped in order; an interrupt (a BaseException) kills
        graceful = isinstance(e, Exception)
        with interrupt.shielded():
            _release(held + extra, graceful=graceful)
        if isinstance(e, LevelFailed) or not graceful:
            raise
        raise LevelFailed(f"{type(e).__name__}: {e}") from None
    log(f"{op}: baseline after")
    after = _baseline(host, pace)
    avail_after, settled_after, rate_after = after.avail_kib, after.settled, after.rate

    avail_base = (avail_before + avail_after) // 2
    system = system_per_instance_mib(avail_base, avail_held, n, anon_growth)
    if len(live) == n and all(v is not None for v in live_mem):
        cg_mib = [float(v) for v in live_mem]
    else:
        cg_mib = [launch.cgroup.get("mem_peak_mib", 0.0) for launch in launches]
        notes.append("cgroup memory: the peak the stopped instances reported (not found live)")
    if names_carriers:  # read live, beside the cgroups (podman's CLI, oci's `run`)
        carrier = [sum(roles.values()) for roles in named]
        if note := carriers_note(named, found):
            notes.append(note)
    else:  # the peak its stopped instances reported (docker's shim)
        carrier = [carriers_mib(launch.host_side) for launch in launches]
    accounted = accounted_per_instance_mib(cg_mib, carrier)
    metrics = {
        "mem_system_mib": round(system, 3),
        "mem_accounted_mib": round(accounted, 3),
        "mem_cgroup_mib": round(sum(cg_mib) / n, 3),
        "idle_cpu_ms_per_s": round((host_rate - (rate_before + rate_after) / 2) / n, 3),
        "stop_ms": round(stop_ms, 3),
    }
    if names_carriers or any(has_carriers(launch.host_side) for launch in launches):
        metrics["mem_carriers_mib"] = round(sum(carrier) / n, 3)
    if cg_rate is not None:
        metrics["cgroup_idle_cpu_ms_per_s"] = round(cg_rate / n, 4)
    if one_more.status == "ok" and "ready" in one_more.phases:
        metrics["start_ms"] = round(one_more.phases["ready"] / 1e6, 3)
    else:  # the held ones are measured: the level stands, without start_ms
        notes.append(f"the instance started with {n} held failed: {one_more.reason}")
    if note := memory_note(system, accounted):
        notes.append(note)
    drift = drift_note(avail_before, avail_after, avail_base - avail_held, rate_before, rate_after)
    settled = settled_before and settled_held and settled_after
    if not settled:
        notes.append(f"MemAvailable did not settle within {pace.settle_max:g} s (other load?)")
    if drift:
        notes.append(drift)
    bad = [launch.reason for launch in launches if launch.status != "ok"]
    if bad:
        notes.append(f"{len(bad)} of {n} did not stop cleanly: {bad[0]}")
    if env.one_instance_per_round:
        notes.append(
            "guest: counts the guest RAM the host has backed (pages the guest touched), "
            "not the configured memory size"
        )
    record = {
        "probe": HOLD.probe,
        "op": op,
        "instances": n,
        "metrics": metrics,
        "units": {k: UNITS[k] for k in metrics},
        "note": "; ".join(notes),
    }
    # the next level's estimate: the system view only when it can be trusted
    trusted = settled and not drift
    return Level(record, max(system, accounted) if trusted else accounted, after)


def warm_up(env: Environment, timeout: float) -> Launch:
    """The warm-up of a density cell: one instance started, held until `ready`, stopped
    (the image, the probe's pages and the engine's caches warmed, as a probe's warm-up
    launch does; a whole ramp warms nothing more). A failure is a failed Launch."""
    try:
        inst = env.start(HOLD, timeout)
    except Exception as e:
        return Launch(status="failed", reason=f"{type(e).__name__}: {e}")
    try:
        inst.wait_ready()
        return inst.stop()
    except BaseException:
        inst.abort()
        raise


def round_seconds(levels: Sequence[int], one_s: float, window: float = IDLE_WINDOW_S) -> float:
    """What a round over `levels` is expected to take when one instance's start and stop
    took `one_s` (the warm-up's): per level N + 1 instances and an idle window with N
    held plus a baseline's window, each with its shortest settle, and the first baseline."""
    settle_s = (SETTLE_READINGS - 1) * SETTLE_INTERVAL_S
    per_level = [(n + 1) * one_s + 2 * (window + settle_s) for n in levels]
    return window + settle_s + sum(per_level)


def run_round(
    env: Environment,
    levels: list[int],
    timeout: float,
    reserve: float = RESERVE,
    log: Callable[[str], None] = lambda s: None,
    *,
    pace: Pace = Pace(),
    host: HostProbe | None = None,
) -> Launch:
    """One density round of `env` over `levels` (ascending N). Returns a Launch whose
    records are one per measured level (op `nNN`) and whose probe_errors holds
    `"nNN: reason"` for each level that failed or was skipped. Status "failed" only when
    no level was measured. Nothing this round started outlives it (Ctrl-C included)."""
    if not 0 <= reserve < 1:
        raise ValueError(f"reserve must be a fraction of MemTotal in [0, 1): {reserve}")
    host = host or HostProbe()
    launch = Launch()
    errors: list[str] = []
    per_instance: float | None = None
    before: Baseline | None = None
    for index, n in enumerate(levels):
        op = op_name(n, levels)
        interrupt.check()
        mem = host.memory()
        need = level_need_mib(per_instance, n) if per_instance is not None else 0.0
        refusal = reserve_refusal(mem["MemAvailable"], mem["MemTotal"], need, reserve)
        if refusal:
            errors.extend(f"{op_name(m, levels)}: skipped: {refusal}" for m in levels[index:])
            log(f"{op}: {refusal}; ramp stopped")
            break
        if before is None:
            log(f"{op}: baseline (settling, {pace.window:g} s idle window)")
            before = _baseline(host, pace)
        try:
            level = _level(env, n, op, timeout, reserve, pace, host, log, before)
        except LevelFailed as e:
            errors.append(f"{op}: {e}")
            errors.extend(
                f"{op_name(m, levels)}: skipped: level {n} failed" for m in levels[index + 1 :]
            )
            log(f"{op}: failed: {e}; ramp stopped")
            break
        launch.records.append(level.record)
        per_instance = level.per_instance_mib
        before = level.after
    if errors:
        launch.probe_errors = errors
    if not launch.records:
        launch.status = "failed"
        launch.reason = "no density level could be held: " + (errors[0] if errors else "no levels")
    return launch
