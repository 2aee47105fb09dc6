"""Record this machine's speed burst by burst, with the project's probes in serve mode
(not a test): the noise model of tests/data/noise/.

    python benchmarks/record_bursts.py record SECONDS OUT [--cpu N] [--burst-ms MS]
    python benchmarks/record_bursts.py summary FILE

`record` starts the bundle's syscall and cpu probes with `--serve`, both pinned to one
CPU (default: CPU 1 where there is one), and alternates a burst of `null` (getppid) and
a burst of `compute` (default 5 ms each) for SECONDS, after one untimed burst of each (a
warm-up: the probes calibrate their ops as they start): bench/canary.py's record(),
which `isobench doctor` runs too. It writes one line per pair, `t_s getppid_ns_per_op
compute_mops_per_s` (seconds since the start, the null burst's ns per getppid, the
compute burst's millions of kernel iterations per second), the format of
tests/data/noise/bursts-30s.txt, then prints the summary. `summary` prints it for a
file already recorded:

* p5/p50/p95 of both columns;
* the autocorrelation of log getppid burst time at lags of about 10 ms, 100 ms, 1 s and
  5 s: a lag is a whole number of pairs, round(lag / the median spacing of t_s), and is
  printed as that number of pairs times the spacing;
* the SD of the log ratio of adjacent null bursts, per burst (SD of the difference / sqrt 2),
  against the SD of log burst time (the per-burst SD of an unpaired ratio).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

import numpy as np

LAGS_S = (0.01, 0.1, 1.0, 5.0)


def record(seconds: float, out: Path, cpu: int, burst_ms: int) -> None:
    from bench import bundle, canary

    series = canary.record(bundle.build(), seconds, burst_ms, {cpu})
    rows = zip(series.t, series.null_ns, series.compute_ops, strict=True)
    out.write_text("".join(f"{t:.4f} {n:.1f} {c / 1e6:.1f}\n" for t, n, c in rows))


def load(path: Path) -> np.ndarray:
    try:
        data = np.loadtxt(path, ndmin=2)
    except (OSError, ValueError) as e:
        raise SystemExit(f"record_bursts: cannot read {path}: {e}") from None
    if data.shape[1] != 3 or len(data) < 3:
        raise SystemExit(f"record_bursts: {path} is not a series of >= 3 lines of 3 columns")
    return data


def autocorrelation(x: np.ndarray, k: int) -> float | None:
    """Pearson correlation of x with itself k places later; None if too short."""
    if k < 1 or len(x) - k < 3:
        return None
    return float(np.corrcoef(x[:-k], x[k:])[0, 1])


def summary(data: np.ndarray) -> dict:
    t, null, compute = data.T
    log_null = np.log(null)
    spacing = float(np.median(np.diff(t)))
    return {
        "pairs": len(t),
        "seconds": float(t[-1] - t[0] + spacing),
        "spacing_s": spacing,
        "null_pct": np.percentile(null, [5, 50, 95]).tolist(),
        "compute_pct": np.percentile(compute, [5, 50, 95]).tolist(),
        "autocorrelation": {  # lag -> (pairs, autocorrelation)
            lag: (k, autocorrelation(log_null, k))
            for lag, k in ((lag, max(1, round(lag / spacing))) for lag in LAGS_S)
        },
        "paired_sd": float(np.std(np.diff(log_null), ddof=1) / math.sqrt(2)),
        "unpaired_sd": float(np.std(log_null, ddof=1)),
    }


def _lag(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 0.9995 else f"{seconds:.1f} s"


def _ac(k: int, v: float | None, spacing: float) -> str:
    value = "n/a" if v is None else f"{v:.2f}"
    return f"{value} at {_lag(k * spacing)} ({k} pair{'s' * (k > 1)})"


def show(s: dict) -> str:
    ac = ", ".join(_ac(k, v, s["spacing_s"]) for k, v in s["autocorrelation"].values())
    return "\n".join(
        [
            f"{s['pairs']} pairs of bursts over {s['seconds']:.1f} s "
            f"(one pair every {s['spacing_s'] * 1000:.1f} ms)",
            "getppid ns/op p5/p50/p95 = {:.1f}/{:.1f}/{:.1f}".format(*s["null_pct"]),
            "3rd column (compute) Mops/s p5/p50/p95 = {:.1f}/{:.1f}/{:.1f}".format(
                *s["compute_pct"]
            ),
            f"autocorrelation of log getppid burst time: {ac}",
            f"log ratio SD per burst: {s['paired_sd']:.3f} adjacent (paired) "
            f"vs {s['unpaired_sd']:.3f} unpaired",
        ]
    )


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    rec = sub.add_parser("record", help="record a series, then print its summary")
    rec.add_argument("seconds", type=float)
    rec.add_argument("out", type=Path)
    rec.add_argument("--cpu", type=int, default=None, help="the CPU to pin to (default 1)")
    rec.add_argument("--burst-ms", type=int, default=5)
    summ = sub.add_parser("summary", help="print the summary of a recorded series")
    summ.add_argument("file", type=Path)
    args = ap.parse_args(argv)
    if args.cmd == "summary":
        print(show(summary(load(args.file))))
        return 0
    allowed = sorted(os.sched_getaffinity(0))
    cpu = args.cpu if args.cpu is not None else (1 if 1 in allowed else allowed[0])
    if cpu not in allowed:
        raise SystemExit(f"record_bursts: CPU {cpu} is not one of this process's {allowed}")
    if args.seconds <= 0 or args.burst_ms < 1:
        raise SystemExit("record_bursts: SECONDS must be > 0 and --burst-ms >= 1")
    try:
        record(args.seconds, args.out, cpu, args.burst_ms)
    except RuntimeError as e:  # CanaryError: a probe that failed or stopped answering
        raise SystemExit(f"record_bursts: {e}") from None
    print(show(summary(load(args.out))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
