"""The between-hosts test: does an environment cost the same on two hosts?

Each host's ratio to *its own* baseline is the run's own verdict (analysis.summarize_run:
the paired trimmed t on the per-round log ratios d_r = log(E_r / B_r), the round's median
block ratio in the burst design). What two hosts share is that quantity, not their
absolute speeds, so the fleet compares the d's: host H against the reference host R.

**The test: Yuen's two-sample trimmed t on the per-round log ratios** (Welch's degrees
of freedom; ``stats.log_ratio_test(paired=False)`` on exp(d), which takes the logs back).
The ratio of ratios is exp(trimmed mean d_H − trimmed mean d_R) = ratio_H / ratio_R
exactly, since each host's own ratio is exp(trimmed mean of its d); its CI is the
trimmed-t interval, so a CI that excludes 1 is exactly a test that rejects.

Why this one:
- it is the project's own test where samples do not pair (``compare`` of two runs), on
  the project's own unit (a round), with the same trimming (20%) that keeps a round in a
  slow episode from hiding a consistent effect;
- hosts' rounds do not pair (they ran at other times, often on other machines), and
  their spreads differ (a cloud VM is noisier than bare metal): Welch's degrees of
  freedom, not a pooled variance;
- it yields a ratio with a CI, which a reader can hold against the per-host columns
  ("×1.16 [1.10, 1.22] higher on B"); a one-way test across k hosts (Welch's ANOVA)
  gives a p and no size;
- with k > 2 hosts each host is tested against the reference host (the first usable one
  in fleet.json, or the one asked for): k − 1 tests per figure instead of k(k − 1)/2,
  each one the question "is it different from our reference machine?".
Multiplicity: every between-hosts p of the fleet (all figures, all hosts) goes through
one Benjamini–Hochberg adjustment, as every verdict of a run does across its matrix;
``stats.significant`` decides (adjusted p < 0.05 and the CI excludes 1).

What it proves (``tests/test_fleet_report.py`` and the same simulation at 2,000
repetitions: per-round log ratios of 8 or 4 rounds a host, per-round spreads of 2% and
2-5% on the two hosts, normal, heavy-tailed (t, 3 degrees of freedom) or with slow
episodes (a round 5-50% off, 15% of rounds)): the 95% CI of a known ratio of ratios
covers 94.8-96.2% (normal and heavy tails) and 96-98.5% under the episodes (trimming
makes it conservative there); equal isolation costs on two hosts are called different
in 3.7-5.2% of figures before the adjustment (1.5-3.9% under the episodes); a 10%
difference at 2% spread is found in 97-100% of figures at 8 rounds a host, 88-90% at 4,
and 70-76% under the episodes at 8. After Benjamini-Hochberg over a fleet of 20 such
differences among 30 equal figures, >= 90% are found and <= 5% of the calls are false.

The test needs at least 2 rounds a side; below 5 rounds nothing is trimmed (Welch's t).
"""

from __future__ import annotations

import math

import numpy as np

from bench import analysis, stats

MIN_ROUNDS = 2  # per host: fewer, and the two-sample t has no spread to use


def ratio_of_ratios(d_host, d_ref, *, confidence: float = 0.95) -> stats.RatioTest:
    """ratio_host / ratio_ref from the two hosts' per-round log ratios (each host against
    its own baseline), with Yuen's two-sample trimmed-t CI and p; an untested RatioTest
    (method "") below MIN_ROUNDS finite rounds on either side."""
    a, b = _finite(d_host), _finite(d_ref)
    if a.size < MIN_ROUNDS or b.size < MIN_ROUNDS:
        nan = math.nan
        return stats.RatioTest(nan, nan, nan, nan, int(min(a.size, b.size)), "")
    return stats.log_ratio_test(np.exp(a), np.exp(b), paired=False, confidence=confidence)


def detectable(d_host, d_ref, *, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest ratio of ratios (> 1) this pair of hosts' rounds would have called
    with probability `power` (before the adjustment): exp((t[1−α/2] + t[power]) · se)
    with the two-sample trimmed t's standard error and Welch's degrees of freedom from
    their own spreads; nan below MIN_ROUNDS a side or with no spread."""
    from scipy.stats import t as student

    a, b = _finite(d_host), _finite(d_ref)
    if a.size < MIN_ROUNDS or b.size < MIN_ROUNDS:
        return math.nan
    (_, va, ha), (_, vb, hb) = stats.trimmed(a, stats.TRIM), stats.trimmed(b, stats.TRIM)
    se = math.sqrt(va + vb)
    if not se:
        return math.nan
    df = (va + vb) ** 2 / (va**2 / (ha - 1) + vb**2 / (hb - 1))
    return float(math.exp((student.ppf(1 - alpha / 2, df) + student.ppf(power, df)) * se))


def host_log_ratios(df, manifest, baseline: str, scope: str = analysis.MAIN) -> dict:
    """Per figure (env, workload, op, metric) of one host's run: its per-round log ratios
    to that host's baseline, as the run's own verdict pairs them: the burst design's
    (analysis.paired_log_ratios: each round's median block ratio), else the rounds paired
    by number (where at least 3 rounds have both, as analysis.compare_rounds)."""
    out = analysis.paired_log_ratios(df, baseline) if scope == analysis.MAIN else {}
    data = analysis.measured(df, scope, analysis.phase_workloads(manifest))
    rounds = analysis.per_round(data)
    for key, values in rounds.items():
        base = rounds.get((baseline, *key[1:]))
        if key in out or key[0] == baseline or not base:
            continue
        common = sorted(set(values) & set(base))
        if len(common) < 3:
            continue
        v = np.array([values[r] for r in common], dtype=float)
        b = np.array([base[r] for r in common], dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            d = np.log(v / b)
        d = d[np.isfinite(d)]
        if d.size >= MIN_ROUNDS:
            out[key] = d
    return out


def _finite(x) -> np.ndarray:
    a = np.asarray(x, dtype=float).ravel()
    return a[np.isfinite(a)]
