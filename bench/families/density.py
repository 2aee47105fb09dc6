"""Density: what N idle instances of an environment cost the host, and how the start of
one more grows with N (issue 14). The `density` strategy (Density) calls `run_round` once
per round of a cell (its warm-up holds one instance: `warm_up`); each level N becomes one
probe-style record (op `n08`: the level, zero-padded so the ops sort by N), a level that
cannot run becomes a failure entry. The pure arithmetic: bench/families/density_figures.py.

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
from bench.catalog import Workload
from bench.envs.base import HOLD, Environment, Instance, Launch
from bench.families.base import Family, Job, Round, Settings
from bench.families.density_figures import (
    MIB_KIB,
    SETTLE_INTERVAL_S,
    SETTLE_MAX_S,
    SETTLE_READINGS,
    accounted_per_instance_mib,
    busy_ticks,
    carriers_mib,
    carriers_note,
    drift_note,
    has_carriers,
    is_inside,
    level_need_mib,
    memory_note,
    op_name,
    parse_meminfo,
    parse_smaps_rollup,
    reserve_refusal,
    settle,
    system_per_instance_mib,
)
from bench.metrics.cgroup import CgroupError, CgroupReader

RESERVE = 0.25  # fraction of MemTotal a ramp never takes the host below
IDLE_WINDOW_S = 2.0  # idle CPU window: 200 /proc/stat ticks per CPU at USER_HZ 100

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


class Density(Family):
    """A ramp of held instances per round; its warm-up holds one instance (a whole ramp
    warms no more), and that warm-up's seconds estimate a round (round_seconds). A run
    that measures density records the disk footprint of one io launch (the footprint
    study, bench/footprint.py)."""

    name = "density"
    section = "density"
    holds = True
    footprint_workload = "io"

    def warm_up(self, s: Settings, job: Job) -> Round:
        return Round([warm_up(job.env, s.timeout)], ["warm-up: one instance held"])

    def round(self, s: Settings, job: Job) -> Round:
        levels = job.workloads[0].levels(quick=s.quick, guest=job.env.one_instance_per_round)
        launch = run_round(job.env, levels, s.timeout, s.memory_reserve, s.log)
        return Round([launch], ["levels=" + ",".join(map(str, levels))])

    def estimate(
        self, w: Workload, env: Environment, quick: bool, warm: list[float]
    ) -> float | None:
        levels = w.levels(quick=quick, guest=env.one_instance_per_round)
        return round_seconds(levels, sorted(warm)[len(warm) // 2])


FAMILY = Density()
