"""Change points in one series of per-run points, with Apache Otava (`apache-otava`, the
optional extra `isobench[history]`): e-divisive means over sliding windows, each
candidate kept by a t-test between the segments it splits (Fleming et al., "Hunter:
Using Change Point Detection to Hunt for Performance Regressions", ICPE 2023).

The detector runs on the log of each run's point (a ratio to the baseline, or the
baseline's median): a step from ×1.0 to ×2.0 and one from ×2.0 to ×1.0 are then the
same size, and a figure's run-to-run spread does not grow with its level.

Parameters (Otava's names):
- MAX_PVALUE = 0.001, Otava's default. Every figure of every environment, ratio and
  baseline, is a series, and a nightly job looks at all of them every night: at 0.01 a
  matrix of 30 series would raise a false alarm every few nights.
- WINDOW = 30 runs (Hunter's sliding window): a month of nightly runs. A change is found
  against up to 15 runs on each side; two changes further apart than that are each found
  in their own window.
- MIN_MAGNITUDE = 2%: at the quick budget one run's ratio is known to about ±3%; a
  step smaller than that cannot be placed at one run, whatever its p-value. Otava's own
  `min_magnitude` is 0 here because its magnitude is a relative change of the series'
  values, and the series are logs: the 2% is applied to the levels below.

Otava sees one number per run and ignores the run's own CI. The CIs enter in two ways:
1. Each candidate is confirmed on the rounds: the per-round values (log ratios, or the
   baseline's per-round figures) of the runs before and after it, pooled, go through the
   test `compare` uses for two runs (stats.log_ratio_test, Yuen's two-sample trimmed t
   on the logs) and the change must be significant by the project's rule
   (stats.significant: p < 0.05 and the CI excludes 1). A candidate that Otava's
   per-run t-test calls but the runs' own rounds cannot tell apart, as when two or three
   wide points sit on one side, is dropped.
2. A level from one run alone (a change at the newest run) carries that run's CI; a
   level over several runs carries the CI of their trimmed mean (stats.log_ratio_test
   against 1), the run being the unit there, since runs differ by more than their
   rounds say.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench import stats
from bench.history.points import Point
from bench.store import json_safe

MAX_PVALUE = 0.001
WINDOW = 30
MIN_MAGNITUDE = 0.02
INSTALL = "isobench history needs Apache Otava: pip install 'isobench[history]'"


class MissingExtra(Exception):
    """Otava is not installed; the message says what to install."""


def detector():
    """Otava's compute_change_points, or MissingExtra."""
    try:
        from otava.analysis import compute_change_points
    except ImportError:
        raise MissingExtra(INSTALL) from None
    return compute_change_points


@dataclass
class Level:
    value: float | None
    low: float | None
    high: float | None
    runs: int

    def to_dict(self) -> dict[str, Any]:
        return json_safe(
            {"value": self.value, "ci_low": self.low, "ci_high": self.high, "runs": self.runs}
        )


def level(points: list[Point]) -> Level:
    """A segment's level: one run's point with its CI, or the trimmed geometric mean of
    the runs' points with its CI (the run as the unit)."""
    if len(points) == 1:
        p = points[0]
        return Level(p.value, p.low, p.high, 1)
    t = stats.log_ratio_test([p.value for p in points], [1.0] * len(points), paired=True)
    return Level(t.ratio, t.low, t.high, len(points))


def find(points: list[Point | None]) -> list[dict[str, Any]]:
    """The confirmed change points of one series (a point per run, None where the run
    has no such figure): [{index, level_before, level_after, magnitude, p_value,
    p_rounds, change_ci}], index = the first run of the new level."""
    at = [i for i, p in enumerate(points) if p is not None and _positive(p.value)]
    if len(at) < 3:
        return []
    series = [math.log(points[i].value) for i in at]
    found, _ = detector()(series, window_len=WINDOW, max_pvalue=MAX_PVALUE, min_magnitude=0.0)
    cuts = [0, *(cp.index for cp in found), len(at)]
    out = []
    for k, cp in enumerate(found):
        before = [points[i] for i in at[cuts[k] : cp.index]]
        after = [points[i] for i in at[cp.index : cuts[k + 2]]]
        lb, la = level(before), level(after)
        t = stats.log_ratio_test(_rounds(after), _rounds(before), paired=False)
        if not (lb.value and la.value):
            continue
        magnitude = la.value / lb.value - 1.0
        confirmed = stats.significant(t.p_value, t.low, t.high)
        if not confirmed or abs(magnitude) < MIN_MAGNITUDE:
            continue
        out.append(
            json_safe(
                {
                    "index": at[cp.index],
                    "level_before": lb.to_dict(),
                    "level_after": la.to_dict(),
                    "magnitude": magnitude,
                    "change_ci": [t.low - 1.0, t.high - 1.0],
                    "p_value": float(cp.stats.pvalue),
                    "p_rounds": t.p_value,
                }
            )
        )
    return out


def _rounds(points: list[Point]) -> np.ndarray:
    """The runs' per-round values (logs), pooled, back on the ratio scale."""
    logs = [np.asarray(p.rounds, dtype=float) for p in points if len(p.rounds)]
    return np.exp(np.concatenate(logs)) if logs else np.zeros(0)


def _positive(x) -> bool:
    return x is not None and math.isfinite(x) and x > 0
