"""The accuracy of short bursts (issue 22, part 3): the host's `null` (getppid) read in the
burst design, against `perf bench syscall basic` (linux-perf: a tight loop of getppid
calls, its mean time per call), the two run interleaved so that both see the same speed
phases of the machine.

Order: perf, bursts, perf, bursts, ..., perf. Each segment of bursts is bracketed by two
perf runs, and its ratio is taken against their geometric mean (a triple): a machine
whose speed drifts across the triple moves both sides alike. A segment of bursts is the
syscall probe in serve mode on the host (bench.canary.ServedProbe: unpinned and
unweighted, as perf runs), one untimed burst and then `null ms=B` bursts back to back for
the segment's seconds; its figure is its bursts' pooled time per op (Segment.burst_ns:
what a loop over the same time reports), their median (a round's figure, bench.analysis.
per_round) beside it. A perf run's loop count is calibrated once so that it lasts
about as long as a segment of bursts.

`isobench validate` checks that bursts of the design's length (5 ms) read within 5% of
perf's; benchmarks/accuracy.py prints the same comparison for bursts of 1 to 500 ms.
perf is found on PATH (Debian installs it as /usr/bin/perf, package linux-perf); where it
is missing the check is not run and says so.
"""

from __future__ import annotations

import math
import re
import shutil
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bench import interrupt
from bench.canary import ServedProbe

PERF_ARGS = ("bench", "syscall", "basic")
CALIBRATION_LOOPS = 100_000
MIN_LOOPS = 10_000
PERF_TIMEOUT_S = 120.0
USECS = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s+usecs/op\s*$", re.MULTILINE)


class PerfError(RuntimeError):
    """perf could not measure; the message is one line for the user."""


def find_perf() -> str | None:
    """perf's path on PATH, or None when it is not installed."""
    return shutil.which("perf")


def parse_perf(text: str) -> float:
    """`perf bench syscall basic`'s output -> ns per getppid call (its `usecs/op`
    line); ValueError when there is none."""
    found = USECS.search(text)
    if not found:
        raise ValueError("no `usecs/op` line in perf's output")
    value = float(found.group(1)) * 1000.0
    if not value > 0:
        raise ValueError(f"perf read {value} ns per call")
    return value


def run_perf(perf: str, loops: int, timeout: float = PERF_TIMEOUT_S) -> float:
    """One `perf bench syscall basic --loop LOOPS` -> ns per call (PerfError on failure)."""
    argv = [perf, *PERF_ARGS, "--loop", str(int(loops))]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise PerfError(f"perf bench syscall basic took more than {timeout:g} s") from None
    except OSError as e:
        raise PerfError(f"cannot run {perf}: {e.strerror}") from None
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip().splitlines()
        raise PerfError(
            f"perf bench syscall basic exited {done.returncode}" + (f": {said[0]}" if said else "")
        )
    try:
        return parse_perf(done.stdout)
    except ValueError as e:
        raise PerfError(f"perf bench syscall basic: {e}") from None


def loops_for(ns_per_call: float, seconds: float) -> int:
    """The loop count that makes a perf run last about `seconds`."""
    return max(MIN_LOOPS, int(seconds * 1e9 / ns_per_call))


def burst_segment(probe: ServedProbe, ms: int, seconds: float) -> list[float]:
    """`null ms=MS` bursts back to back for `seconds` (at least one): their ns per call."""
    out: list[float] = []
    t0 = time.monotonic()
    while not out or time.monotonic() - t0 < seconds:
        interrupt.check()
        out.append(probe.burst("null", ms, "ns_per_op"))
    return out


@dataclass(frozen=True)
class Segment:
    """One segment of bursts and the two perf runs around it."""

    ms: int
    bursts: tuple[float, ...]
    perf_before: float
    perf_after: float

    @property
    def burst_ns(self) -> float:
        """The bursts' pooled time per op: their whole time over their whole count (each
        burst is a window of the same length, so the harmonic mean of their figures). A
        loop across the same phases of the machine reports that, its own time over its
        count; the median, a round's figure, leaves out the slow phases a loop sums in
        (this VM in its phases of ~165 and ~230 ns: medians 166-168 ns, perf 172-187)."""
        return len(self.bursts) / math.fsum(1.0 / b for b in self.bursts)

    @property
    def median_ns(self) -> float:
        return float(statistics.median(self.bursts))

    @property
    def perf_ns(self) -> float:
        return math.sqrt(self.perf_before * self.perf_after)

    @property
    def ratio(self) -> float:
        """bursts / perf: above 1, the bursts read slower than perf's loop."""
        return self.burst_ns / self.perf_ns

    def as_dict(self) -> dict:
        return {
            "ms": self.ms,
            "bursts": len(self.bursts),
            "burst_ns": self.burst_ns,
            "median_ns": self.median_ns,
            "perf_before_ns": self.perf_before,
            "perf_after_ns": self.perf_after,
            "ratio": self.ratio,
        }


def interleaved(
    perf: str, syscall_probe: Path, lengths: list[int], seconds: float, log=lambda s: None
) -> list[Segment]:
    """perf, bursts of lengths[0] ms, perf, bursts of lengths[1] ms, ..., perf: one
    Segment per length, each about `seconds` long, as are the perf runs. Raises PerfError
    or bench.canary.CanaryError; the probe is stopped either way."""
    loops = loops_for(run_perf(perf, CALIBRATION_LOOPS), seconds)  # also warms perf up
    probe = ServedProbe(syscall_probe)
    try:
        probe.burst("null", min(lengths), "ns_per_op")  # untimed: calibrates the op
        before = run_perf(perf, loops)
        out = []
        for ms in lengths:
            bursts = burst_segment(probe, ms, seconds)
            after = run_perf(perf, loops)
            out.append(Segment(ms, tuple(bursts), before, after))
            log(f"null in {ms} ms bursts: {out[-1].burst_ns:.1f} ns, perf {after:.1f} ns")
            before = after
        return out
    finally:
        with interrupt.shielded():
            probe.close()


def summary(segments: list[Segment]) -> float:
    """The geometric mean of the segments' ratios (nan without any)."""
    if not segments:
        return math.nan
    return math.exp(statistics.fmean(math.log(s.ratio) for s in segments))
