"""The burst design's statistics (issue 22), proved on the recorded noise of a noisy VM.

The noise model (``tests/noise_model.py``) resamples the 30 s series of 5 ms bursts in
``tests/data/noise/``: a round (a held set) takes a random stretch of it, each block one
burst per environment in a fresh random order, and each launch adds its own lognormal
effect per round.  A quick run is 8 rounds of 75 blocks (30 s of one op shared by 8
environments); the launch effect is 2% unless said otherwise.  Measured here, with the
seeds below:

* coverage of the 95% ratio CI: null 93.8% (launch effect 2%), 95.0% (none), compute
  94.2% (600 figures each); the median half-width is 2.5% at a 2% launch effect, 0.5%
  without one;
* A/A twins, 60 matrices of 30 figures: 5.6% of figures p < 0.05 unadjusted, 0.4%
  called after Benjamini-Hochberg, 10% of the matrices with a call (the trimmed t's far
  tail at 8 rounds is about twice the nominal);
* power, 50 matrices of 24 twins, 3 figures at +5% and 3 at +10% (BH): +10% 100%, +5%
  61% (97% unadjusted); twins called 1.0%, false discoveries 3.5% of the calls;
* the naive test that takes a figure's 600 blocks as independent covers 54% at a 2%
  launch effect (the two-stage test 95% on the same figures); the hierarchical
  bootstrap (rounds, then blocks within them) 90.5% there, and 99% with no launch
  effect, where its interval is 1.15x as wide as the two-stage one;
* at the minimum detectable ratio of the model's spread (x1.039) the test finds the
  effect in 81% of runs; the ratio single runs report scatters (p10-p90 x1.021-1.053),
  and at its median (x1.034) the test finds it in 74%.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from bench import stats
from tests import noise_model as nm

NAN = float("nan")


def _tests(env, base) -> list[stats.BurstTest]:
    return [stats.burst_ratio_test(v, b) for v, b in zip(env, base, strict=True)]


def _covered(tests, truth) -> float:
    return float(np.mean([t.low <= truth <= t.high for t in tests]))


def _rejected(tests) -> np.ndarray:
    return np.array([t.p_value < 0.05 for t in tests])


# --- the functions, on known answers ----------------------------------------------


def test_round_log_ratios_are_the_median_block_ratio():
    v = [[2.0, 4.0, 1.0], [1.0, 1.0], [3.0, 0.0, NAN]]
    b = [[1.0, 2.0, 1.0], [1.0, 2.0], [1.0, 5.0, 5.0]]
    d = stats.round_log_ratios(v, b)
    assert d[0] == pytest.approx(math.log(2))  # median of log 2, log 2, 0
    assert d[1] == pytest.approx(-math.log(2) / 2)  # two blocks: the mean of 0 and -log 2
    assert d[2] == pytest.approx(math.log(3))  # the zero and the nan blocks are dropped
    assert np.isnan(stats.round_log_ratios([[0.0]], [[1.0]])).all()  # no usable block
    two_d = stats.round_log_ratios(np.array([[2.0, 4.0]]), np.array([[1.0, 1.0]]))
    assert two_d[0] == pytest.approx(math.log(8) / 2)
    with pytest.raises(ValueError):
        stats.round_log_ratios([[1.0, 2.0]], [[1.0]])
    with pytest.raises(ValueError):
        stats.round_log_ratios([[1.0]], [[1.0], [1.0]])


def test_burst_ratio_test_is_the_trimmed_t_on_the_rounds():
    rng = np.random.default_rng(1)
    env, base = nm.simulate(rng, [1.07], rounds=9, blocks=20)
    env[0, 3, :5] = np.nan  # five blocks lost in round 4
    t = stats.burst_ratio_test(env[0], base[0])
    d = stats.round_log_ratios(env[0], base[0])
    ref = stats.log_ratio_test(np.exp(d), np.ones(9), paired=True)
    assert (t.ratio, t.low, t.high, t.p_value) == pytest.approx(
        (ref.ratio, ref.low, ref.high, ref.p_value), rel=1e-12
    )
    assert (t.n, t.n_blocks, t.method) == (9, 9 * 20 - 5, "burst")
    assert t.detectable == stats.detectable_ratio(d) == stats.min_detectable_ratio(d, n=9)
    assert isinstance(t, stats.RatioTest)  # downstream code reads it as any ratio test
    q = stats.benjamini_hochberg([t.p_value, 0.5])
    assert stats.significant(q[0], t.low, t.high) == (q[0] < 0.05)


def test_burst_ratio_test_degenerate():
    none = stats.burst_ratio_test([], [])
    assert none.method == "" and none.n == 0 and np.isnan(none.ratio)
    one = stats.burst_ratio_test([[2.0, 2.0]], [[1.0, 1.0]])
    assert one.ratio == pytest.approx(2.0) and np.isnan(one.p_value) and one.n_blocks == 2
    assert np.isnan(one.detectable)
    lost = stats.burst_ratio_test([[2.0], [0.0], [4.0]], [[1.0], [1.0], [2.0]])
    assert lost.n == 2 and lost.n_blocks == 2 and lost.ratio == pytest.approx(2.0)
    assert math.isnan(stats.detectable_ratio([0.01]))


# --- the design's choices, on the recorded noise ----------------------------------


def test_the_median_is_the_efficient_round_summary_on_this_noise():
    """Block log ratios here are sharply peaked with heavy tails (kurtosis 8-14: two
    bursts in the same phase agree, bursts astride a phase change do not), so the
    median of a round's blocks scatters least: for null its SD across rounds is
    half the 20%-trimmed mean's and a fifth of the mean's."""
    rng = np.random.default_rng(2)
    for op in nm.COLUMNS:
        env, base = nm.simulate(rng, np.ones(500), op=op, launch_sd=0.0)
        d = np.log(env / base)  # (figures, rounds, blocks)
        med = np.median(d, axis=2).std()
        assert med < 0.6 * d.mean(axis=2).std()
        assert med <= 1.01 * sps.trim_mean(d, 0.2, axis=2).std()
        if op == "null":
            assert med < 0.6 * sps.trim_mean(d, 0.2, axis=2).std()


@pytest.mark.parametrize(("op", "launch_sd"), [("null", 0.02), ("null", 0.0), ("compute", 0.02)])
def test_the_ratio_ci_covers_95_percent(op, launch_sd):
    rng = np.random.default_rng(3)
    env, base = nm.simulate(rng, np.full(600, 1.10), op=op, launch_sd=launch_sd)
    assert 0.92 <= _covered(_tests(env, base), 1.10) <= 0.98


def test_twins_are_called_different_in_at_most_5_percent():
    """A/A figures, in matrices of 30 with Benjamini-Hochberg over each."""
    rng = np.random.default_rng(4)
    raw, called, any_call = [], [], []
    for _ in range(60):  # matrices of 30 A/A figures
        tests = _tests(*nm.simulate(rng, np.ones(30)))
        q = stats.benjamini_hochberg([t.p_value for t in tests])
        sig = [stats.significant(p, t.low, t.high) for p, t in zip(q, tests, strict=True)]
        raw.extend(_rejected(tests))
        called.extend(sig)
        any_call.append(any(sig))
    assert 0.03 <= np.mean(raw) <= 0.075  # the unadjusted test is near its level
    assert np.mean(called) <= 0.05
    # Under the global null BH is a family-wise test, at 5% if p were exact; the trimmed t
    # at 8 rounds is liberal in its far tail (about 2x at p < 0.05/30, on normal rounds
    # too), so a matrix of 30 twins sees a call in ~10% of runs, not 5%.
    assert np.mean(any_call) <= 0.15


def test_5_and_10_percent_are_found_in_a_quick_run():
    """Matrices of 24 twins, 3 figures at +5% and 3 at +10%, with Benjamini-Hochberg."""
    rng = np.random.default_rng(5)
    effects = np.r_[np.ones(24), np.full(3, 1.05), np.full(3, 1.10)]
    sig, raw = [], []
    for _ in range(50):
        tests = _tests(*nm.simulate(rng, effects))
        q = stats.benjamini_hochberg([t.p_value for t in tests])
        sig.append([stats.significant(p, t.low, t.high) for p, t in zip(q, tests, strict=True)])
        raw.append(_rejected(tests))
    sig, raw = np.array(sig), np.array(raw)
    assert sig[:, 27:].mean() >= 0.9  # +10%
    assert raw[:, 24:27].mean() >= 0.9  # +5% alone
    assert sig[:, 24:27].mean() >= 0.5  # +5% among 24 twins: BH asks more of its p
    assert sig[:, :24].mean() <= 0.05
    false = sig[:, :24].sum(axis=1) / np.maximum(sig.sum(axis=1), 1)
    assert false.mean() <= 0.05  # the false discovery rate


def test_the_round_is_the_cluster():
    """With per-launch effects, taking every block as independent undercovers badly:
    the blocks of a round share their launches, which no number of blocks averages out."""
    rng = np.random.default_rng(6)
    env, base = nm.simulate(rng, np.full(300, 1.10))
    naive = [
        stats.log_ratio_test(v.ravel(), b.ravel(), paired=True)
        for v, b in zip(env, base, strict=True)
    ]
    assert _covered(naive, 1.10) < 0.6
    assert _covered(_tests(env, base), 1.10) >= 0.92


@pytest.mark.parametrize("op", list(nm.COLUMNS))
def test_rounds_not_blocks_set_the_detectable_effect(op):
    """The minimum detectable ratio of the model's spread (``min_detectable_ratio`` of
    its pooled round log ratios), by launch effect, rounds and blocks a round: blocks
    matter only while launches add nothing; past ~25 blocks the launches decide, and
    only more rounds (relaunches) bring the figure down."""
    rng = np.random.default_rng(9)

    def mdr(launch_sd, rounds, blocks) -> float:
        env, base = nm.simulate(
            rng, np.ones(200), op=op, launch_sd=launch_sd, rounds=rounds, blocks=blocks
        )
        d = np.concatenate([stats.round_log_ratios(v, b) for v, b in zip(env, base, strict=True)])
        return stats.min_detectable_ratio(d, n=rounds) - 1

    assert mdr(0.0, 8, 10) > 1.5 * mdr(0.0, 8, 75)
    assert mdr(0.0, 8, 25) < 0.015
    assert mdr(0.02, 8, 25) < 1.15 * mdr(0.02, 8, 75)
    assert mdr(0.01, 8, 75) < 0.025 < 0.03 < mdr(0.02, 8, 75) < 0.045
    assert mdr(0.02, 12, 75) < 0.032


def _hierarchical_bootstrap(d, rng, n_boot=200) -> tuple[float, float]:
    """Percentile 95% CI of the ratio: rounds resampled, then blocks within each."""
    r, k = d.shape
    rounds = rng.integers(0, r, size=(n_boot, r, 1))
    medians = np.median(d[rounds, rng.integers(0, k, size=(n_boot, r, k))], axis=2)
    lo, hi = np.quantile(sps.trim_mean(medians, stats.TRIM, axis=1), [0.025, 0.975])
    return math.exp(lo), math.exp(hi)


def test_the_hierarchical_bootstrap_is_no_better():
    """Resampling blocks as well as rounds counts the blocks' noise twice (99% coverage,
    wider intervals, when launches add nothing), and a percentile interval over 8 rounds
    is too narrow when they do (90%); its p-value cannot go below 1/n_boot either."""
    rng = np.random.default_rng(7)
    for launch_sd, lo, hi in ((0.02, 0.0, 0.925), (0.0, 0.97, 1.0)):
        env, base = nm.simulate(rng, np.ones(200), launch_sd=launch_sd)
        boot = [_hierarchical_bootstrap(np.log(v / b), rng) for v, b in zip(env, base, strict=True)]
        covered = np.mean([a <= 1.0 <= b for a, b in boot])
        assert lo <= covered <= hi
        if launch_sd == 0.0:
            width = np.median([math.log(b / a) for a, b in boot])
            ours = np.median([math.log(t.high / t.low) for t in _tests(env, base)])
            assert width > 1.1 * ours


def test_the_detectable_ratio_is_found_80_percent_of_the_time():
    """At the detectable ratio of the model's spread the test finds the effect ~80% of
    the time; a single run's figure scatters around it (at the median of those, ~74%)."""
    rng = np.random.default_rng(8)
    env, base = nm.simulate(rng, np.ones(500))
    pooled = np.concatenate([stats.round_log_ratios(v, b) for v, b in zip(env, base, strict=True)])
    true_mdr = stats.min_detectable_ratio(pooled, n=nm.ROUNDS)
    reported = np.median([t.detectable for t in _tests(env, base)])
    assert 1.02 < reported < true_mdr < 1.06
    for mdr, lo, hi in ((true_mdr, 0.74, 0.88), (reported, 0.68, 0.86)):
        found = _rejected(_tests(*nm.simulate(rng, np.full(500, mdr)))).mean()
        assert lo <= found <= hi
