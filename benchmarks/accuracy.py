"""The accuracy of short bursts (issue 22, part 3), not a test: the host's `null`
(getppid) read by the syscall probe in serve mode in bursts of 1, 2, 5, 20, 100 and 500
ms, against `perf bench syscall basic`, interleaved:

    python benchmarks/accuracy.py [--seconds S] [--repeats N] [--lengths 1,2,5,20,100,500]

Order: perf, bursts of the first length, perf, bursts of the next length, ..., perf
(bench/validate_accuracy.py); the whole sequence `--repeats` times. Each segment of
bursts lasts S seconds (at least one burst), as each perf run does; its figure is its
bursts' pooled time per op (what a loop over the same time reads), their median (a
round's figure in a run) beside it, its ratio (pooled) against the geometric mean of the
two perf runs around it. Prints one line per segment, then each length's geometric
mean ratio over the repeats. Needs perf on PATH (Debian: linux-perf).
"""

from __future__ import annotations

import argparse
import collections
import math
import sys

LENGTHS = (1, 2, 5, 20, 100, 500)


def _lengths(text: str) -> list[int]:
    try:
        out = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of whole ms: {text!r}") from None
    if not out or not all(1 <= x <= 1000 for x in out):
        raise argparse.ArgumentTypeError("lengths are whole ms from 1 to 1000")
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=2.0, help="each segment and perf run")
    ap.add_argument("--repeats", type=int, default=3, help="times through the lengths")
    ap.add_argument("--lengths", type=_lengths, default=list(LENGTHS), help="burst ms, a,b,c")
    args = ap.parse_args(argv)
    if not args.seconds > 0 or args.repeats < 1:
        raise SystemExit("accuracy: --seconds must be > 0 and --repeats >= 1")
    from bench import bundle
    from bench import validate_accuracy as acc
    from bench.canary import CanaryError

    perf = acc.find_perf()
    if perf is None:
        raise SystemExit("accuracy: perf is not installed (Debian: apt-get install linux-perf)")
    b = bundle.build()
    by_ms = collections.defaultdict(list)
    print(f"{'burst ms':>8} {'bursts':>7} {'null ns':>9} {'median':>9} {'perf ns':>9} {'ratio':>7}")
    try:
        for _ in range(args.repeats):
            for s in acc.interleaved(perf, b.probes["syscall"], args.lengths, args.seconds):
                by_ms[s.ms].append(s.ratio)
                print(
                    f"{s.ms:>8} {len(s.bursts):>7} {s.burst_ns:>9.1f} {s.median_ns:>9.1f} "
                    f"{s.perf_ns:>9.1f} "
                    f"{s.ratio:>7.3f}",
                    flush=True,
                )
    except (acc.PerfError, CanaryError) as e:
        raise SystemExit(f"accuracy: {e}") from None
    for ms, ratios in by_ms.items():
        gm = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
        print(
            f"{ms} ms bursts / perf: x{gm:.3f} over {len(ratios)} (min {min(ratios):.3f}, "
            f"max {max(ratios):.3f})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
