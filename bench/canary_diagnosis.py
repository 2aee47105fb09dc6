"""What a canary series says about the machine: its speed range, its phases, its
burst-to-burst jitter, and a verdict with one sentence for the user. Pure: no probe, no
clock (bench/canary.py records the series).

A series is pairs of short bursts (a `null` burst of getppid, then a `compute` burst),
one pair every few ms, as in tests/data/noise/bursts-30s.txt. Each of the two columns is
read on the log scale (a speed's changes are ratios) and described by:

* **range**: p5, p50 and p95 of the raw figure (ns per getppid, ops/s);
* **jitter**: the SD of the log ratio of adjacent bursts, per burst (SD of the
  difference / sqrt 2): the noise a ratio of two bursts made 10 ms apart still carries
  (0.137 on the recorded noisy machine);
* **slow SD**: the part of the log figure's SD that adjacent bursts share,
  sqrt(total SD^2 - jitter^2) = total SD * sqrt(r1), r1 the lag-1 autocorrelation. It is
  what pairing in time removes and what a comparison made seconds apart keeps (0.164 on
  the recorded machine: its total 0.214 is mostly slow);
* **phases**: the speed "moves in phases" when the slow SD is at least PHASE_SD and r1
  is significant (above PHASE_Z / sqrt(n), its sampling SD for a series without any
  memory: on 1000 bursts of pure noise with a jitter of 14 %, sqrt(total^2 - jitter^2)
  alone reads 0.032 at its 95th percentile and 0.036 at its 99th);
* **phase length**: from a two-state classification, not from the autocorrelation.
  The log series is smoothed by a running median over SMOOTH_S (25 bursts at 10 ms: the
  median of 25 bursts with 14 % jitter has an SD of ~3 %, a tenth of the recorded gap of
  ~30 % between the phases), split at the midpoint of its two levels (1-D 2-means) with
  a hysteresis of a quarter of the gap, runs shorter than the smoothing window are
  merged into their neighbours (the smoother cannot resolve them: they are its noise),
  and the typical length is the length-weighted mean of the runs, sum(L^2)/sum(L): the
  mean length of the phase a burst finds itself in, which is what decides whether a
  burst and its partner 10-40 ms later share a phase. The runs cut by either end of the
  window count only when there is no whole one. A square wave of 2 s phases reads
  2.0 s; the recorded series reads 4.5 s over its 30 s and 1.7-3.5 s over each 10 s,
  where its running median over 0.5 s shows phases of 1-6 s near 520 and 720 ns.
  Why not "the lag where the autocorrelation falls below 0.2": that lag depends on how
  large the slow part is against the jitter, not only on its time scale. The recorded
  series crosses 0.2 at 0.5 s, though its phases last seconds; a square wave of 2 s
  phases and 30 % depth crosses it at 0.8 s without jitter, at 0.64 s with the recorded
  jitter of 14 % and at 0.44 s with 20 %.

The verdict is "noisy" when either column moves in phases (slow SD >= PHASE_SD) or
jumps from burst to burst by JITTER_NOISY or more; else "quiet". The thresholds come
from the precision isobench promises (a ratio's CI within +-3 %, the host's medians
within +-2 %, issue 22):

* PHASE_SD = 0.02: two measurements made in different phases then differ by
  sqrt(2) * 2 % = 2.8 % (SD), the whole precision target; below it, the speed's slow
  moves cannot carry a figure past the target, whatever the design.
* JITTER_NOISY = 0.05: a burst pair's ratio then has an SD of 7 %, more than the 5 %
  change `compare` must call, so no single block can be read alone and a figure needs
  tens of blocks per round. A 5 ms burst holds thousands of getppid calls: where nothing
  else runs, only a timer tick (a few us, under 0.1 % of 5 ms) or an interrupt differs
  from one burst to the next. The recorded noisy machine reads 13.7 %.

CPU steal (the hypervisor's share of the window's ticks, from /proc/stat) is folded into
the sentence where it is non-zero, and so is the load average per CPU before the check
(other work on this machine); neither decides the verdict, which the canary's own speed
decides: steal or load that does not show in the speed did not matter to it. They name
the likely cause of a noisy verdict: steal of STEAL_CAUSE or more, else a load per CPU
above LOAD_CAUSE (bench.metrics.noise's thresholds for its warnings), else "likely a busy
SMT sibling or CPU steal on the VM's host" (what the recorded machine showed with
nothing else running and no steal reported).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.metrics.noise import LOAD_PER_CPU_WARN as LOAD_CAUSE
from bench.metrics.noise import STEAL_WARN as STEAL_CAUSE

SMOOTH_S = 0.25  # running-median window of the two-state classification
PHASE_SD = 0.02  # slow SD (log) from which the speed moves in phases
PHASE_Z = 3.0  # r1 must exceed PHASE_Z / sqrt(n): not the sampling noise of a memoryless series
JITTER_NOISY = 0.05  # burst-to-burst jitter (log SD per burst) from which the host is noisy
HYSTERESIS = 0.25  # of the gap between the two levels
MIN_PAIRS = 20  # fewer pairs of bursts than this say nothing


@dataclass(frozen=True)
class Series:
    """Pairs of bursts: the pair's start (s since the first), the null burst's ns per
    getppid, the compute burst's ops/s; burst_ms each; the CPU steal over the window and
    the 1-min load average per CPU before it (None: unknown)."""

    t: tuple[float, ...]
    null_ns: tuple[float, ...]
    compute_ops: tuple[float, ...]
    burst_ms: float
    steal: float | None = None
    load_per_cpu: float | None = None


def load(path: Path, burst_ms: float = 5.0) -> Series:
    """A recorded series (tests/data/noise format: t_s, ns per getppid, Mops/s)."""
    data = np.loadtxt(path, ndmin=2)
    if data.ndim != 2 or data.shape[1] != 3:
        raise ValueError(f"{path}: not a series of lines of 3 columns")
    t, null, mops = data.T
    return Series(tuple(t), tuple(null), tuple(mops * 1e6), burst_ms)


def running_median(x: np.ndarray, w: int) -> np.ndarray:
    """The median of the w (odd) values centred on each one; the ends are padded with
    the first and last value."""
    h = w // 2
    padded = np.pad(x, h, mode="edge")
    return np.median(np.lib.stride_tricks.sliding_window_view(padded, w), axis=1)


def two_levels(x: np.ndarray) -> tuple[float, float]:
    """1-D 2-means: the means of the values below and above the midpoint of the two
    means, iterated from p10 and p90 to a fixed point."""
    lo, hi = (float(v) for v in np.percentile(x, [10, 90]))
    for _ in range(100):
        mid = (lo + hi) / 2
        below, above = x[x <= mid], x[x > mid]
        if not len(below) or not len(above):
            break
        new = float(below.mean()), float(above.mean())
        if new == (lo, hi):
            break
        lo, hi = new
    return lo, hi


def runs(states: np.ndarray, t: np.ndarray, spacing: float) -> list[float]:
    """The durations (s) of the runs of equal states; the last one ends a spacing after
    its last burst."""
    cuts = np.flatnonzero(states[1:] != states[:-1]) + 1
    starts = np.r_[0, cuts]
    ends = np.r_[t[cuts], t[-1] + spacing]
    return [float(e - t[s]) for s, e in zip(starts, ends, strict=True)]


def merge_short(lengths: list[float], shortest: float) -> list[float]:
    """Merge every run shorter than `shortest` (the shortest first) with its neighbours,
    which are of the other state and so of one state with each other."""
    out = list(lengths)
    while len(out) > 1:
        i = min(range(len(out)), key=out.__getitem__)
        if out[i] >= shortest:
            break
        lo, hi = max(i - 1, 0), min(i + 2, len(out))
        out[lo:hi] = [sum(out[lo:hi])]
    return out


def phase_length(log_x: np.ndarray, t: np.ndarray, spacing: float) -> tuple[float, int]:
    """(the length-weighted mean phase length in s, the number of phase changes) of a
    two-state classification of the smoothed log series (see the module docstring).
    The runs at either end are cut short by the window: they count only when there is
    no other (fewer than 2 changes: then the length is a lower bound)."""
    w = max(3, round(SMOOTH_S / spacing) | 1)
    smooth = running_median(log_x, w) if len(log_x) > w else log_x
    lo, hi = two_levels(smooth)
    mid, band = (lo + hi) / 2, HYSTERESIS * (hi - lo)
    state = bool(smooth[0] > mid)
    states = np.empty(len(smooth), dtype=bool)
    for i, v in enumerate(smooth):
        if state and v < mid - band or not state and v > mid + band:
            state = not state
        states[i] = state
    lengths = merge_short(runs(states, t, spacing), w * spacing)
    whole = lengths[1:-1] or lengths  # the first and last runs are cut by the window
    return sum(v * v for v in whole) / sum(whole), len(lengths) - 1


def column(values: np.ndarray, t: np.ndarray, spacing: float) -> dict:
    """One column's figures (see the module docstring); raw figures in its own unit."""
    x = np.log(values)
    total = float(np.std(x, ddof=1))
    jitter = float(np.std(np.diff(x), ddof=1) / math.sqrt(2))
    r1 = float(np.corrcoef(x[:-1], x[1:])[0, 1]) if total > 0 else 0.0
    slow = math.sqrt(max(total * total - jitter * jitter, 0.0))
    phases = slow >= PHASE_SD and r1 > PHASE_Z / math.sqrt(len(x))
    p5, p50, p95 = (float(v) for v in np.percentile(values, [5, 50, 95]))
    out = {
        "p5": p5,
        "p50": p50,
        "p95": p95,
        "jitter": jitter,
        "adjacent_correlation": r1,
        "slow_sd": slow,
        "phases": phases,
        "phase_s": None,
        "phase_changes": None,
    }
    if phases:
        out["phase_s"], out["phase_changes"] = phase_length(x, t, spacing)
    return out


def diagnose(series: Series) -> dict:
    """The series' figures, verdict ("quiet" or "noisy") and sentence; JSON-able.
    Raises ValueError for a series too short or with a figure that is not positive."""
    t = np.asarray(series.t, dtype=float)
    null = np.asarray(series.null_ns, dtype=float)
    compute = np.asarray(series.compute_ops, dtype=float)
    if not len(t) == len(null) == len(compute):
        raise ValueError("the series' columns differ in length")
    if len(t) < MIN_PAIRS:
        raise ValueError(f"{len(t)} pairs of bursts: too few to say anything (>= {MIN_PAIRS})")
    if not (np.all(null > 0) and np.all(compute > 0) and np.all(np.diff(t) > 0)):
        raise ValueError("the series has a figure <= 0 or times out of order")
    spacing = float(np.median(np.diff(t)))
    out = {
        "pairs": len(t),
        "seconds": float(t[-1] - t[0] + spacing),
        "burst_ms": series.burst_ms,
        "spacing_ms": spacing * 1e3,
        "steal": series.steal,
        "load_per_cpu": series.load_per_cpu,
        "null_ns": column(null, t, spacing),
        "compute_ops_per_s": column(compute, t, spacing),
    }
    cols = (out["null_ns"], out["compute_ops_per_s"])
    noisy = any(c["phases"] or c["jitter"] >= JITTER_NOISY for c in cols)
    out["verdict"] = "noisy" if noisy else "quiet"
    out["sentence"] = sentence(out)
    return out


def _ns(v: float) -> str:
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}"


def _mops(v: float) -> str:
    return f"{v / 1e6:.0f}M" if v >= 1e7 else f"{v / 1e6:.1f}M"


def _seconds(s: float) -> str:
    return f"{s:.1f} s" if s < 3 else f"{s:.0f} s"


def _percent(fraction: float) -> str:
    return f"{fraction * 100:.2g}%"


def _cause(steal: float | None, load: float | None) -> str:
    if steal and steal >= STEAL_CAUSE:
        return f"the VM's host stole {_percent(steal)} of CPU time"
    if load is not None and load > LOAD_CAUSE:
        said = f"other work on this machine: a load of {load:.1f} per CPU before the check"
    else:
        said = "likely a busy SMT sibling or CPU steal on the VM's host"
    if steal is None:
        return said
    return said + (f"; CPU steal {_percent(steal)}" if steal else "; no CPU steal was reported")


def sentence(d: dict) -> str:
    """What diagnose() found, for a user: one sentence in lower case (it follows a
    label), e.g. the host's speed moved between 483 and 817 ns per getppid ... ."""
    null, comp = d["null_ns"], d["compute_ops_per_s"]
    figures = (
        f"{_ns(null['p5'])} and {_ns(null['p95'])} ns per getppid "
        f"(p5–p95; compute {_mops(comp['p5'])}–{_mops(comp['p95'])} ops/s)"
    )
    steal, load = d["steal"], d["load_per_cpu"]
    if d["verdict"] == "quiet":
        said = (
            f"the host's speed held steady: getppid {_ns(null['p5'])}–{_ns(null['p95'])} ns, "
            f"compute {_mops(comp['p5'])}–{_mops(comp['p95'])} ops/s (p5–p95), no phases"
        )
        return said + (f"; CPU steal {_percent(steal)}" if steal else "")
    jitter = max(null["jitter"], comp["jitter"])
    step = f"by {jitter * 100:.0f}% from one {d['burst_ms']:g} ms burst to the next"
    phased = null if null["phases"] else comp if comp["phases"] else None
    if phased is None:
        return (
            f"the host's speed jumped {step}, between {figures}, with no phases "
            f"({_cause(steal, load)}); only many bursts average it out"
        )
    at_least = "≥ " if phased["phase_changes"] < 2 else "~"
    return (
        f"the host's speed moved between {figures} in phases of "
        f"{at_least}{_seconds(phased['phase_s'])}, and {step} ({_cause(steal, load)}); "
        "interleaved bursts pair measurements made within the same phase"
    )
