"""Each run's points: for every figure of an environment other than the baseline, its
ratio to the baseline with its CI (the run's own analysis: bench.analysis.summarize_run)
and its per-round log ratios; for every baseline figure, its median with its CI and its
per-round values. The per-round data is what a change point is confirmed on
(bench/history/changes.py); nothing here re-derives a statistic the run's report has.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench import analysis, store

Key = tuple[str, str, str, str]  # env, workload, op, metric
BaseKey = tuple[str, str, str]  # workload, op, metric


@dataclass
class Point:
    """One run's value of one series: the level (a ratio, or the baseline's median), its
    95% CI, and the per-round values behind it (log ratios, or the baseline's values)."""

    value: float | None
    low: float | None
    high: float | None
    rounds: np.ndarray = field(default_factory=lambda: np.zeros(0))  # logs


@dataclass
class RunPoints:
    baseline: str
    ratios: dict[Key, Point]
    base: dict[BaseKey, Point]
    units: dict[BaseKey, str]
    better: dict[BaseKey, str]
    burst_ms: dict[str, str]  # "workload op" -> the burst lengths, as text


def of_run(manifest: dict[str, Any], df, *, n_boot: int = 1000) -> RunPoints:
    baseline = (manifest.get("matrix") or {}).get("baseline") or "host"
    rows = analysis.summarize_run(df, manifest, baseline=baseline, n_boot=n_boot)
    paired = analysis.paired_log_ratios(df, baseline)
    rounds = analysis.per_round(
        analysis.measured(df, analysis.MAIN, analysis.phase_workloads(manifest))
    )
    ratios: dict[Key, Point] = {}
    base: dict[BaseKey, Point] = {}
    units: dict[BaseKey, str] = {}
    better: dict[BaseKey, str] = {}
    for r in rows:
        key = (r["env"], r["workload"], r["op"], r["metric"])
        bkey = key[1:]
        units.setdefault(bkey, r["unit"])
        better.setdefault(bkey, r["better"])
        if r["env"] == baseline:
            vals = np.array(list(rounds.get(key, {}).values()), dtype=float)
            with np.errstate(divide="ignore", invalid="ignore"):
                logs = np.log(vals)
            logs = logs[np.isfinite(logs)]
            base[bkey] = Point(r["median"], r["ci_low"], r["ci_high"], logs)
        elif r["ratio"] is not None:
            logs = paired.get(key)
            if logs is None:  # launched: the rounds both ran, paired by round
                logs = _round_logs(rounds.get(key, {}), rounds.get((baseline, *bkey), {}))
            ratios[key] = Point(r["ratio"], r["ratio_ci_low"], r["ratio_ci_high"], logs)
    return RunPoints(baseline, ratios, base, units, better, burst_lengths(df))


def _round_logs(values: dict[int, float], base: dict[int, float]) -> np.ndarray:
    common = sorted(set(values) & set(base))
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.log(np.array([values[r] / base[r] for r in common], dtype=float))
    return d[np.isfinite(d)]


def burst_lengths(df) -> dict[str, str]:
    """Per workload and op, the burst lengths (ms) its counted bursts ran at: a held set
    with a CPU quota runs every environment's bursts at the quota's length, so a change
    of quota can change how the baseline was timed too."""
    b = analysis.counted(df)
    b = b[(b["source"] == "burst") & b["ms"].notna()]
    out = {}
    for (workload, op), ms in b.groupby(["workload", "op"])["ms"]:
        lengths = sorted({float(x) for x in ms if not math.isnan(float(x))})
        out[f"{workload} {op}: burst ms"] = ",".join(f"{x:g}" for x in lengths)
    return out


def load(run_dir, manifest: dict[str, Any], *, n_boot: int = 1000) -> RunPoints:
    return of_run(manifest, store.load_samples(run_dir), n_boot=n_boot)
