"""Statistics for isobench: pure functions on 1-D arrays.

Everything here takes array-likes, drops non-finite entries (NaN, inf) before
computing, and never raises on degenerate input (empty, one value, zeros, ties):
undefined quantities come back as ``nan`` (or ``inf`` where documented).
Functions that resample take ``rng`` (a ``numpy.random.Generator``, an int seed or
``None``); the default seed 0 makes reports reproducible.

Methods, and why (the coverage figures come from ``tests/test_stats.py`` and from
simulations of 2,000-3,000 samples per case, lognormal/normal/exponential data):

* Median CI (``median_ci``): distribution-free order-statistic interval.  The exact
  binomial interval ``[x(k), x(n-k+1)]`` with the largest ``k`` whose coverage is at
  least ``confidence`` is conservative because coverage moves in steps (97.9% at
  n=10 for a 95% request); by default it is interpolated towards the next narrower
  order-statistic interval (Hettmansperger & Sheather 1986), which gives 94.5-95.7%
  for n = 6..100.  Its coverage always lies between that of the two bracketing exact
  intervals.  When even ``[min, max]`` falls short of ``confidence`` (n <= 5 at 95%:
  [min, max] covers 1 - 2**(1-n), 93.75% at n=5) the interval is ``[min, max]``
  and ``median_ci_level`` reports the coverage actually attained, so a report can say
  so.  The percentile bootstrap of the median is available (``method="bootstrap"``)
  but it undercovers at small n (about 87% at n=7, 93% at n=10): it is not the default.
* Verdicts (``log_ratio_test``, ``benjamini_hochberg``): the unit is the round.  Each
  round runs every cell once, in a shuffled order, and each launch's figure is the
  median of its repetitions; so for a figure of environment E and the baseline B the
  per-round log ratios ``d = log(E_r / B_r)`` cancel whatever drifted between rounds
  (frequency, a neighbour's load) and leave the overhead plus launch noise.  The test
  is Yuen's trimmed t on ``d`` (Tukey & McLaughlin's one-sample form: the 20% trimmed
  mean, its standard error from the winsorized variance, n - 2g - 1 degrees of
  freedom, g = floor(0.2 n)); the ratio is ``exp(trimmed mean d)`` and its CI the
  trimmed t interval, so a ratio whose CI excludes 1 is exactly one whose test rejects.
  Why trimmed: this host's noise is not Gaussian but episodic (a neighbour's burst, a
  previous instance's teardown: a launch or a few repetitions read 10-50% slow), so
  one or two rounds' ratios lie far out; Student's t lets them inflate the variance and
  misses a consistent effect (docker's null on a quick run here: 9 of 13 rounds 4-18%
  slower, two rounds x1.4-1.5, two x0.9 where the host's launch was the slow one: t's
  p = 0.024, trimmed p = 0.002, see tests).  With g = 0 (n < 5) it is the paired t.
  The price is degrees of freedom at small n, which is why --quick runs 8 rounds, not
  6 (six kept, five degrees of freedom, as the paired t had at 6): in the simulations
  of ``tests/test_stats.py`` (150 null and 20 +10% figures, Benjamini-Hochberg) the
  trimmed test at 8 rounds finds >= 90% of the +10% figures under clean 2% noise and
  under the episodic noise measured here, where the paired t finds about 80% of them
  under the episodes (at 6 rounds the trimmed test finds about 60% under clean noise).
  Why not a rank test: their smallest two-sided p is bounded (Mann-Whitney with 5 a
  side 0.0079, Wilcoxon's signed rank 0.0625 at 5 pairs, 0.0078 at 8), so after any
  multiplicity correction over a ~170-figure matrix nothing can be significant, not
  even gVisor's x86; a t statistic's p shrinks with the effect.  Under the null, ``d`` of two
  identically distributed launches is symmetric, where the trimmed t holds its level
  (the simulations: 4.3-5.5% unadjusted).  Where rounds cannot be paired (two runs in
  ``compare``), Yuen's two-sample trimmed t on the logs (Welch's degrees of freedom).
  Multiplicity: Benjamini-Hochberg over every tested figure of the matrix (false
  discovery rate 5%) instead of Holm's family-wise control: a matrix is a screen of
  ~170 figures in which many effects are real, and Holm makes a small n hopeless.
  Under the global null BH is as strict as the family-wise 5%, and at most 5% of the
  figures called significant are expected to be false.
* ``min_detectable_ratio``: the power formula of that trimmed test, with t quantiles,
  from the per-round log ratios of two identical environments (``isobench validate``).
* The burst design (``burst_ratio_test``, ``round_log_ratios``): a round is one held
  set (every environment relaunched between rounds), and within it blocks of one burst
  per environment, in a fresh random order, each pairing E with B a few ms apart.  The
  test is the two-stage (summary statistic) test with the round as the cluster: stage 1,
  a round's log ratio is the median of its blocks' log(E_b / B_b); stage 2, the paired
  trimmed t above across rounds, so n and the degrees of freedom count rounds, never
  blocks.  With equal blocks per round this is what a random-intercept mixed model on
  the block ratios infers (the round means' t on R - 1 degrees of freedom), made robust
  at both stages; the launch, the unit a user would repeat, stays the resampling unit.
  Why the median: on the recorded noise of a noisy VM (``tests/data/noise``: phases of
  seconds under a fast jitter) block ratios are sharply peaked with heavy tails (kurtosis
  8-14: bursts in one phase agree, bursts astride a phase change do not), and across
  rounds the median of 75 blocks scatters least: for null about half as much as their
  20% trimmed mean and a fifth as much as their mean (compute: as the trimmed mean).
  Why not the alternatives (``tests/test_stats_bursts.py``: 8 rounds of 75 blocks,
  2% per launch): a test that takes the 600 blocks as independent covers 54%, because a
  round's blocks share their launches; a hierarchical bootstrap (rounds, then blocks)
  covers 90.5% there, and 99% with wider intervals when launches add nothing (it counts
  the blocks' noise twice); its p-value cannot go below 1/n_boot, which
  Benjamini-Hochberg over a matrix needs.  The two-stage test covers 93.8-95.0% (null
  and compute), calls 5.6% of A/A twins at p < 0.05 and 0.4% after BH over matrices of
  30 (a call in 10% of those matrices: the trimmed t's far tail at 8 rounds is about
  twice the nominal), and finds +10% always and +5% in 97% of figures (61% among 24
  twins after BH).  What a verdict needs: past ~25 blocks a round the launches decide.
  Without launch effects 8 rounds of 25 blocks detect 1.4% (null); with 1% per launch,
  8 rounds of 75 blocks detect 2.0%; with 2%, 3.9%, and 12 rounds 3.1%.
* ``detectable_ratio``: a row's minimum detectable ratio from its own rounds' spread,
  for a row that is not significant ("no detectable difference; this run could have
  detected >= x1.04"), in either design (``BurstTest.detectable`` carries it).  At the
  figure of the model's true spread (x1.039 at 8 rounds, 2% launch effects) the test
  finds the effect in 81% of runs; one run's figure scatters (p10-p90 x1.021-1.053), and
  at its median (x1.034) the test finds it in 74% (the spread of 8 rounds is uncertain).

scipy.stats is imported inside the functions that use it: it costs about 0.6 s, which
every command that imports this module (the summary, say) would otherwise pay at start.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

__all__ = [
    "FIELDS",
    "BurstTest",
    "RatioTest",
    "Summary",
    "benjamini_hochberg",
    "burst_ratio_test",
    "ci_halfwidth_rel",
    "detectable_ratio",
    "log_ratio_test",
    "median_ci",
    "median_ci_level",
    "min_detectable_ratio",
    "outliers",
    "round_log_ratios",
    "significant",
    "summarize",
]

FIELDS = ("n", "median", "mean", "stdev", "cv", "min", "max", "ci_low", "ci_high")

RngLike = np.random.Generator | int | None
CiMethod = Literal["interpolated", "exact", "bootstrap"]

_NAN = float("nan")
_MAD_TO_SIGMA = 1.4826  # sigma of a normal distribution per unit of MAD
_MEANAD_TO_SIGMA = 1.253314  # sqrt(pi/2): sigma per unit of mean absolute deviation


@dataclass(frozen=True)
class Summary:
    """Descriptive statistics of one sample; ``n`` counts the finite values.

    ``stdev`` uses ddof=1; ``cv`` is ``stdev / |mean|``; ``ci_low``/``ci_high`` is
    the confidence interval of the median (see ``median_ci``).
    """

    n: int
    median: float
    mean: float
    stdev: float
    cv: float
    min: float
    max: float
    ci_low: float
    ci_high: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def _finite(values) -> np.ndarray:
    a = np.asarray(values, dtype=float).ravel()
    return a[np.isfinite(a)]


def _boot_medians(x: np.ndarray, n_boot: int, rng: RngLike) -> np.ndarray:
    """Medians of ``n_boot`` resamples of ``x``, drawn as one index matrix.

    The resample draws indices into the sorted values, so the median of a resample is
    the value at the median index: sorting small integers is several times faster
    than sorting the values (or np.median's partition) for the same result.
    """
    gen = np.random.default_rng(rng)
    n = x.size
    xs = np.sort(x)
    dtype = np.int16 if n < 2**15 else np.int64
    idx = np.sort(gen.integers(0, n, size=(n_boot, n), dtype=dtype), axis=1)
    if n % 2:
        return xs[idx[:, n // 2]]
    return (xs[idx[:, n // 2 - 1]] + xs[idx[:, n // 2]]) / 2


@functools.cache
def _coverage(n: int, k: int) -> float:
    """Coverage of [x(k), x(n-k+1)] for the median of a continuous distribution."""
    from scipy.stats import binom

    return float(1.0 - 2.0 * binom.cdf(k - 1, n, 0.5))


@functools.cache
def _order_k(n: int, confidence: float) -> int | None:
    """Largest k whose exact interval covers >= confidence; None if k=1 falls short."""
    from scipy.stats import binom

    ks = np.arange(1, n // 2 + 1)
    cov = 1.0 - 2.0 * binom.cdf(ks - 1, n, 0.5)
    ok = ks[cov >= confidence]
    return int(ok.max()) if ok.size else None


def median_ci_level(
    n: int, *, confidence: float = 0.95, method: CiMethod = "interpolated"
) -> float:
    """Coverage that ``median_ci`` attains for ``n`` finite values (nan if n < 2).

    Equal to ``confidence`` for the interpolated method when attainable, the exact
    binomial coverage for ``method="exact"``, and the coverage of [min, max]
    (1 - 2**(1-n)) when ``confidence`` is out of reach.  For the bootstrap it is the
    nominal ``confidence`` (the bootstrap does not know better).
    """
    if n < 2:
        return _NAN
    if method == "bootstrap":
        return confidence
    k = _order_k(n, confidence)
    if k is None:
        return _coverage(n, 1)
    return confidence if method == "interpolated" else _coverage(n, k)


def _order_statistic_ci(x: np.ndarray, confidence: float, interpolate: bool) -> tuple[float, float]:
    s = np.sort(x)
    n = s.size
    k = _order_k(n, confidence)
    if k is None:  # not attainable: the widest interval there is, with its own level
        return float(s[0]), float(s[-1])
    lo, hi = float(s[k - 1]), float(s[n - k])
    if not interpolate or k + 1 > (n + 1) // 2:
        return lo, hi
    # Hettmansperger-Sheather: move towards [x(k+1), x(n-k)] (coverage < confidence).
    g_k, g_k1 = _coverage(n, k), _coverage(n, k + 1)
    frac = (g_k - confidence) / (g_k - g_k1)
    lam = (n - k) * frac / (k + (n - 2 * k) * frac)
    return (
        float((1 - lam) * s[k - 1] + lam * s[k]),
        float((1 - lam) * s[n - k] + lam * s[n - k - 1]),
    )


def median_ci(
    values,
    *,
    confidence: float = 0.95,
    n_boot: int = 2000,
    rng: RngLike = 0,
    method: CiMethod = "interpolated",
) -> tuple[float, float]:
    """Confidence interval of the median; (nan, nan) for fewer than 2 values.

    ``method``: "interpolated" (default; order statistics, Hettmansperger-Sheather),
    "exact" (binomial order-statistic interval, coverage >= confidence when
    attainable), or "bootstrap" (percentile; uses ``n_boot`` and ``rng``; undercovers
    for n < ~30).  The order-statistic methods fall back to [min, max] when the
    requested confidence is out of reach; see ``median_ci_level`` and the module
    docstring.
    """
    x = _finite(values)
    if x.size < 2:
        return _NAN, _NAN
    if method == "bootstrap":
        alpha = (1.0 - confidence) / 2
        lo, hi = np.quantile(_boot_medians(x, n_boot, rng), [alpha, 1.0 - alpha])
        return float(lo), float(hi)
    if method not in ("interpolated", "exact"):
        raise ValueError(f"unknown median CI method {method!r}")
    return _order_statistic_ci(x, confidence, interpolate=method == "interpolated")


def summarize(
    values,
    *,
    confidence: float = 0.95,
    n_boot: int = 2000,
    rng: RngLike = 0,
    method: CiMethod = "interpolated",
) -> Summary:
    """Summary of the finite values; nan wherever a statistic is undefined."""
    x = _finite(values)
    n = int(x.size)
    if n == 0:
        return Summary(0, *([_NAN] * 8))
    mean = float(np.mean(x))
    stdev = float(np.std(x, ddof=1)) if n >= 2 else _NAN
    cv = stdev / abs(mean) if mean != 0 else _NAN
    lo, hi = median_ci(x, confidence=confidence, n_boot=n_boot, rng=rng, method=method)
    return Summary(
        n=n,
        median=float(np.median(x)),
        mean=mean,
        stdev=stdev,
        cv=cv,
        min=float(x.min()),
        max=float(x.max()),
        ci_low=lo,
        ci_high=hi,
    )


@dataclass(frozen=True)
class RatioTest:
    """A ratio value / baseline with its CI and the test of "no change" behind it."""

    ratio: float
    low: float
    high: float
    p_value: float
    n: int  # pairs (paired) or the smaller side (Welch)
    method: str  # "paired" | "welch" | "" (not tested)


def _positive(values) -> np.ndarray:
    a = np.asarray(values, dtype=float).ravel()
    return a[np.isfinite(a) & (a > 0)]


TRIM = 0.2  # the share trimmed from each end of the log ratios (Wilcox's usual 20%)


def trimmed(x: np.ndarray, trim: float) -> tuple[float, float, int]:
    """(trimmed mean, its squared standard error, h) of ``x`` (Tukey & McLaughlin 1963).

    g = floor(trim * n) values are cut from each end; the standard error comes from the
    winsorized variance s_w**2 (those g values pulled in to the nearest kept one):
    se**2 = (n - 1) s_w**2 / (h (h - 1)) with h = n - 2g kept values, and the t
    statistic has h - 1 degrees of freedom.  With g = 0 (n < 5 at 20%) this is the
    mean with Student's standard error."""
    n = x.size
    g = int(math.floor(trim * n))
    s = np.sort(x)
    h = n - 2 * g
    w = np.clip(s, s[g], s[n - g - 1])
    return float(s[g : n - g].mean()), (n - 1) * float(w.var(ddof=1)) / (h * (h - 1)), h


def log_ratio_test(
    values, baseline, *, paired: bool, confidence: float = 0.95, trim: float = TRIM
) -> RatioTest:
    """Ratio of ``values`` to ``baseline`` on the log scale, with a trimmed-t interval
    and test (Yuen's; ``trim=0`` gives Student's and Welch's t).

    ``paired=True``: the two arrays are aligned (round r of each); pairs where either
    side is missing, non-finite or <= 0 are dropped; the test is the one-sample trimmed
    t on d = log(v/b) and ratio = exp(trimmed mean of d).  ``paired=False``: Yuen's
    two-sample trimmed t on log(v) vs log(b) (Welch's degrees of freedom); ratio of the
    trimmed geometric means.  Fewer than 2 usable pairs (or 2 values a side) gives nan
    CI and p; values that are all identical give p = 1 when the ratio is 1 and p = 0
    otherwise.  See the module docstring for why this test."""
    alpha = 1.0 - confidence
    if paired:
        v = np.asarray(values, dtype=float).ravel()
        b = np.asarray(baseline, dtype=float).ravel()
        if v.size != b.size:
            raise ValueError("paired samples must have the same length")
        ok = np.isfinite(v) & np.isfinite(b) & (v > 0) & (b > 0)
        d = np.log(v[ok]) - np.log(b[ok])
        n = int(d.size)
        if n == 0:
            return RatioTest(_NAN, _NAN, _NAN, _NAN, 0, "")
        if n < 2:
            return RatioTest(math.exp(float(d.mean())), _NAN, _NAN, _NAN, n, "")
        mean, var, h = trimmed(d, trim)
        se, df = math.sqrt(var), h - 1
        method = "paired"
    else:
        lv, lb = np.log(_positive(values)), np.log(_positive(baseline))
        n = int(min(lv.size, lb.size))
        if n == 0:
            return RatioTest(_NAN, _NAN, _NAN, _NAN, 0, "")
        if n < 2:
            return RatioTest(math.exp(float(lv.mean() - lb.mean())), _NAN, _NAN, _NAN, n, "")
        (mv, va, hv), (mb, vb, hb) = trimmed(lv, trim), trimmed(lb, trim)
        mean, se = mv - mb, math.sqrt(va + vb)
        df = (va + vb) ** 2 / (va**2 / (hv - 1) + vb**2 / (hb - 1)) if se else 1.0
        method = "welch"
    ratio = math.exp(mean)
    if se == 0:
        return RatioTest(ratio, ratio, ratio, 1.0 if mean == 0 else 0.0, n, method)
    from scipy.stats import t as student

    p = float(2 * student.sf(abs(mean / se), df))
    half = float(student.ppf(1 - alpha / 2, df)) * se
    return RatioTest(ratio, math.exp(mean - half), math.exp(mean + half), p, n, method)


def benjamini_hochberg(p_values) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values) in the original order.

    A figure is a discovery at false discovery rate q when its adjusted value is < q.
    Monotone in the raw p, capped at 1; NaN entries stay NaN and do not count in m."""
    p = np.asarray(p_values, dtype=float).ravel()
    out = np.full(p.shape, _NAN)
    mask = ~np.isnan(p)
    q = p[mask]
    m = q.size
    if m == 0:
        return out
    order = np.argsort(q, kind="stable")
    scaled = q[order] * m / np.arange(1, m + 1)
    adj = np.minimum.accumulate(scaled[::-1])[::-1]
    res = np.empty(m)
    res[order] = np.minimum(adj, 1.0)
    out[mask] = res
    return out


def _robust_scale(x: np.ndarray, center: float) -> float:
    """Sigma estimate: MAD * 1.4826, or mean absolute deviation * 1.253314 if MAD is 0."""
    dev = np.abs(x - center)
    mad = float(np.median(dev))
    if mad > 0:
        return mad * _MAD_TO_SIGMA
    return float(np.mean(dev)) * _MEANAD_TO_SIGMA


def outliers(values, *, threshold: float = 3.5) -> np.ndarray:
    """Boolean flags, same length as ``values``: |modified z-score| > threshold.

    Modified z-score (Iglewicz & Hoaglin): 0.6745 * (x - median) / MAD.  When MAD is 0
    the scale is the mean absolute deviation * 1.253314 (their suggestion); when that
    is 0 too, all values equal the median and nothing is flagged.  Non-finite entries
    are never flagged and take no part in the estimates.  Nothing is removed.
    """
    a = np.asarray(values, dtype=float).ravel()
    flags = np.zeros(a.shape, dtype=bool)
    fin = np.isfinite(a)
    x = a[fin]
    if x.size == 0:
        return flags
    med = float(np.median(x))
    scale = _robust_scale(x, med)
    if scale == 0:
        return flags
    # MAD * 1.4826 == MAD / 0.6745, so this is the Iglewicz-Hoaglin score in both cases.
    flags[fin] = np.abs(x - med) / scale > threshold
    return flags


def ci_halfwidth_rel(summary: Summary) -> float:
    """Half the CI width relative to |median|; inf when median is 0 or CI undefined."""
    lo, hi, med = summary.ci_low, summary.ci_high, summary.median
    if not (math.isfinite(lo) and math.isfinite(hi) and math.isfinite(med)) or med == 0:
        return math.inf
    return (hi - lo) / 2 / abs(med)


def min_detectable_ratio(
    log_ratios, *, n: int, alpha: float = 0.05, power: float = 0.8, trim: float = TRIM
) -> float:
    """The smallest ratio (> 1) the paired test finds with probability ``power`` in ``n``
    rounds, from per-round log ratios of two identical environments (their spread is
    the test's noise): ``exp((t[1-alpha/2] + t[power]) * se)`` with the trimmed t's
    standard error and degrees of freedom at ``n`` rounds (the winsorized spread of the
    given ratios).  Before the false discovery rate's adjustment, which a real matrix
    with several real effects barely moves.  nan with fewer than 2 ratios."""
    from scipy.stats import t as student

    d = _finite(log_ratios)
    if d.size < 2 or n < 2:
        return _NAN
    gn = int(math.floor(trim * n))  # what the test at n rounds trims from each end
    g = int(math.floor(gn / n * d.size))  # the same share of the given ratios
    s = np.sort(d)
    sw2 = float(np.clip(s, s[g], s[d.size - g - 1]).var(ddof=1))  # winsorized variance
    h = n - 2 * gn
    t = student.ppf(1 - alpha / 2, h - 1) + student.ppf(power, h - 1)
    return float(math.exp(t * math.sqrt((n - 1) * sw2 / (h * (h - 1)))))


def significant(
    p_adjusted: float, ratio_low: float, ratio_high: float, *, alpha: float = 0.05
) -> bool:
    """True only if ``p_adjusted < alpha`` AND the ratio CI excludes 1.0.

    With ``log_ratio_test`` the CI excludes 1 exactly when the unadjusted p < alpha, so
    the adjusted p decides; the CI condition keeps the rule safe for any other test.
    Any nan gives False.
    """
    vals = (p_adjusted, ratio_low, ratio_high)
    if not all(math.isfinite(v) for v in vals):
        return False
    return bool(p_adjusted < alpha and (ratio_low > 1.0 or ratio_high < 1.0))


# --- the burst design: rounds (held sets) of paired blocks ------------------------


@dataclass(frozen=True)
class BurstTest(RatioTest):
    """``RatioTest`` of the burst design: ``n`` counts the rounds (held sets) tested,
    ``n_blocks`` the paired blocks behind them, and ``detectable`` is the smallest ratio
    (> 1, and its inverse below 1) the test finds with 80% power at its level from the
    spread of these rounds (``detectable_ratio``): what a row that is not significant
    could have shown."""

    n_blocks: int
    detectable: float


def _block_log_ratios(values, baseline) -> list[np.ndarray]:
    """Per round, log(E_b / B_b) of its usable blocks (both sides finite and > 0)."""
    if len(values) != len(baseline):
        raise ValueError("values and baseline must have the same rounds")
    out = []
    for v, b in zip(values, baseline, strict=True):
        v, b = np.asarray(v, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
        if v.size != b.size:
            raise ValueError("a round's values and baseline must have the same blocks")
        ok = np.isfinite(v) & np.isfinite(b) & (v > 0) & (b > 0)
        out.append(np.log(v[ok]) - np.log(b[ok]))
    return out


def round_log_ratios(values, baseline) -> np.ndarray:
    """Each round's paired log ratio: the median over its blocks of log(E_b / B_b).

    ``values`` and ``baseline`` hold one sequence per round (a held set) of the bursts'
    figures, aligned by block (a 2-D array ``(rounds, blocks)`` is such a sequence;
    rounds may hold different numbers of blocks).  A block missing, non-finite or <= 0 on
    either side is dropped; a round left without a block gives nan."""
    return np.array(
        [float(np.median(d)) if d.size else _NAN for d in _block_log_ratios(values, baseline)]
    )


def detectable_ratio(
    log_ratios, *, alpha: float = 0.05, power: float = 0.8, trim: float = TRIM
) -> float:
    """The smallest ratio (> 1) that the paired trimmed t on these per-round log ratios
    finds with probability ``power`` at level ``alpha``: ``min_detectable_ratio`` at
    their own number of rounds, with the spread actually observed standing for the
    test's noise.  For a row that is not significant ("this run could have detected
    >= x1.04"), in either design (per-round log ratios of the rounds design, or
    ``round_log_ratios`` of the burst design).  nan with fewer than 2 finite values."""
    d = _finite(log_ratios)
    return min_detectable_ratio(d, n=int(d.size), alpha=alpha, power=power, trim=trim)


def burst_ratio_test(
    values, baseline, *, confidence: float = 0.95, trim: float = TRIM
) -> BurstTest:
    """Ratio of an environment's bursts to the baseline's in the burst design, with its
    CI and test: the two-stage (summary statistic) test with the round as the cluster.

    ``values``/``baseline`` as in ``round_log_ratios``.  Stage 1: each round's median
    block log ratio.  Stage 2: the paired trimmed t across rounds (``log_ratio_test``),
    so ``n`` and the degrees of freedom count rounds, never blocks.  The p-values go to
    ``benjamini_hochberg`` with the rest of the matrix.  See the module docstring."""
    blocks = _block_log_ratios(values, baseline)
    d = np.array([float(np.median(x)) for x in blocks if x.size])
    t = log_ratio_test(np.exp(d), np.ones(d.size), paired=True, confidence=confidence, trim=trim)
    return BurstTest(
        t.ratio,
        t.low,
        t.high,
        t.p_value,
        t.n,
        "burst" if t.method else "",
        n_blocks=sum(x.size for x in blocks),
        detectable=detectable_ratio(d, alpha=1.0 - confidence, trim=trim),
    )
