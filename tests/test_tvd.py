"""Tests for engine/scores/tvd.py: closed-form truths, CI coverage, properties, bad input."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import integrate, special

from engine.scores.tvd import (
    CurveResult,
    ScoreResult,
    conditional_curve,
    default_n_bins,
    explained_variance,
    score_from_group_stats,
    score_table,
)

N_LARGE = 20_000
TOL = 0.02
VAR_SIN_2A = (1 - np.exp(-8)) / 2  # Var(sin(2A)) for A ~ N(0, 1); E[sin(2A)] = 0


# ---- a small zoo of models with known S(A) ------------------------------------------


def linear(n, rng, beta=1.0, s=1.0):
    """Y = beta A + eps: S = beta^2 / (beta^2 + s^2)."""
    a = rng.normal(size=n)
    return beta * a + s * rng.normal(size=n), a, beta**2 / (beta**2 + s**2)


def sine(n, rng, s=0.7):
    """Y = sin(2A) + eps: S = Var(sin 2A) / (Var(sin 2A) + s^2)."""
    a = rng.normal(size=n)
    return np.sin(2 * a) + s * rng.normal(size=n), a, VAR_SIN_2A / (VAR_SIN_2A + s**2)


def square(n, rng, s=1.0):
    """Y = A^2 + eps: Var(A^2) = 2, so S = 2 / (2 + s^2)."""
    a = rng.normal(size=n)
    return a**2 + s * rng.normal(size=n), a, 2 / (2 + s**2)


def independent(n, rng):
    """Y ignores A: S = 0."""
    return rng.normal(size=n), rng.normal(size=n), 0.0


@functools.cache
def _var_sigmoid(k):
    """Var(sigmoid(k (A - 1/2))) for A ~ U(0, 1), by quadrature."""
    mean = integrate.quad(lambda a: special.expit(k * (a - 0.5)), 0, 1, points=[0.5])[0]
    return integrate.quad(lambda a: (special.expit(k * (a - 0.5)) - mean) ** 2, 0, 1, points=[0.5])[0]


def sigmoid(n, rng, k=60.0, sd=0.05):
    """Y = sigmoid(k (A - 1/2)) + eps, A ~ U(0, 1): a classifier's probability against a feature it
    thresholds; S = Var(m) / (Var(m) + sd^2) (0.9894 for k = 60, sd = 0.05)."""
    a = rng.random(n)
    return special.expit(k * (a - 0.5)) + sd * rng.normal(size=n), a, _var_sigmoid(k) / (_var_sigmoid(k) + sd**2)


P_CAT, MU_CAT, SD_CAT = np.array([0.5, 0.3, 0.2]), np.array([0.0, 1.0, -1.0]), np.array([1.0, 0.5, 1.5])


def categorical(n, rng):
    """Three categories with known means and (unequal) noise: S = Var_p(mu) / (Var_p(mu) + E_p[sd^2])."""
    c = rng.choice(3, size=n, p=P_CAT)
    between = P_CAT @ MU_CAT**2 - (P_CAT @ MU_CAT) ** 2
    return MU_CAT[c] + SD_CAT[c] * rng.normal(size=n), c, between / (between + P_CAT @ SD_CAT**2)


# ---- closed-form truths at n = 20,000 ------------------------------------------------


@pytest.mark.parametrize(
    "model, kwargs",
    [
        (linear, dict(beta=1.0, s=1.0)),
        (linear, dict(beta=0.3, s=1.0)),
        (linear, dict(beta=2.0, s=0.5)),
        (sine, {}),
        (square, {}),
        (independent, {}),
    ],
)
def test_explained_variance_matches_closed_form(model, kwargs):
    y, a, truth = model(N_LARGE, np.random.default_rng(0), **kwargs)
    r = explained_variance(y, a, n_boot=50)
    assert r.ok and r.status == "ok" and r.message == ""
    assert abs(r.score - truth) < TOL
    assert r.ci_low <= r.score <= r.ci_high
    assert r.n == N_LARGE and r.n_groups == default_n_bins(N_LARGE)


ISHIGAMI_S = (0.3139, 0.4424, 0.0)  # a = 7, b = 0.1 (Sobol & Levitan 1999)


def test_explained_variance_recovers_ishigami_first_order_indices():
    """Given data: Y = sin X1 + 7 sin^2 X2 + 0.1 X3^4 sin X1, X ~ U(-pi, pi)^3 independent."""
    x = np.random.default_rng(8).uniform(-np.pi, np.pi, (N_LARGE, 3))
    y = np.sin(x[:, 0]) + 7 * np.sin(x[:, 1]) ** 2 + 0.1 * x[:, 2] ** 4 * np.sin(x[:, 0])
    for i, truth in enumerate(ISHIGAMI_S):
        r = explained_variance(y, x[:, i], n_boot=50)
        assert abs(r.score - truth) < TOL and r.ci_low <= truth <= r.ci_high


def test_explained_variance_categorical_known_group_means():
    y, c, truth = categorical(N_LARGE, np.random.default_rng(1))
    r = explained_variance(y, c, categorical=True, n_boot=50)
    assert r.n_groups == 3 and abs(r.score - truth) < TOL
    assert r.ci_low <= truth <= r.ci_high


def test_explained_variance_string_categories():
    y, c, truth = categorical(5_000, np.random.default_rng(2))
    labels = np.array(["CN", "MCI", "AD"], dtype=object)[c]
    r_codes = explained_variance(y, c, categorical=True, n_boot=20)
    r_labels = explained_variance(y, labels, categorical=True, n_boot=20)
    assert r_labels.score == pytest.approx(r_codes.score, abs=1e-12)


def test_explained_variance_total_var_matches_sample_variance():
    y, a, _ = linear(N_LARGE, np.random.default_rng(3), beta=2.0, s=3.0)
    r = explained_variance(5 * y, a, n_boot=0)
    assert r.total_var == pytest.approx(np.var(5 * y, ddof=1), rel=0.01)
    assert r.explained_var == pytest.approx(r.score * r.total_var)
    assert np.isnan(r.ci_low) and np.isnan(r.ci_high)  # n_boot=0: no interval


def test_explained_variance_2d_outputs_give_one_result_per_column():
    rng = np.random.default_rng(4)
    y1, a, _ = linear(3_000, rng)
    y2 = rng.normal(size=3_000)
    both = explained_variance(np.column_stack([y1, y2]), a, n_boot=30)
    assert isinstance(both, list) and len(both) == 2
    for col, r in zip((y1, y2), both, strict=True):
        alone = explained_variance(col, a, n_boot=30)
        assert r.score == pytest.approx(alone.score, abs=1e-12)
        assert (r.ci_low, r.ci_high) == pytest.approx((alone.ci_low, alone.ci_high), abs=1e-12)


def test_explained_variance_is_reproducible_and_leaves_inputs_unchanged():
    y, a, _ = sine(2_000, np.random.default_rng(5))
    y0, a0 = y.copy(), a.copy()
    r1 = explained_variance(y, a, n_boot=50, seed=7)
    r2 = explained_variance(y, a, n_boot=50, seed=7)
    assert r1 == r2
    np.testing.assert_array_equal(y, y0)
    np.testing.assert_array_equal(a, a0)


def test_bias_correction_removes_bin_noise():
    """Y independent of A with many small bins: the naive score is about (G-1)/n, ours about 0."""
    y, a, _ = independent(2_000, np.random.default_rng(6))
    r = explained_variance(y, a, n_boot=0, n_bins=200)
    assert r.naive_score == pytest.approx(199 / 2_000, rel=0.3)
    assert abs(r.score_unclipped) < 0.02


def test_default_bins_per_method():
    assert [default_n_bins(n) for n in (30, 100, 1_000, 20_000)] == [2, 5, 50, 368]
    assert [default_n_bins(n, "binned") for n in (30, 100, 1_000, 20_000)] == [3, 10, 100, 737]


def test_method_labels_and_unknown_method():
    rng = np.random.default_rng(7)
    y, a, _ = linear(500, rng)
    assert explained_variance(y, a, n_boot=0).method == "local-linear"
    assert explained_variance(y, a, n_boot=0, method="binned").method == "binned"
    assert explained_variance(y, np.round(a), n_boot=0).method == "groups"  # few values: grouped exactly
    assert explained_variance(y, a > 0, categorical=True, n_boot=0).method == "groups"
    with pytest.raises(ValueError, match="method"):
        explained_variance(y, a, method="kernel")


# ---- a steep E[Y|A] (issue 32) -------------------------------------------------------


def test_steep_bin_is_corrected_where_bins_lose_variance():
    """n = 300, k = 60: E[Y|A] climbs 0.05 -> 0.95 within a third of a bin of 20. The binned estimate
    loses 0.004 (measured bias -0.005 over 200 runs), the corrected one is within 0.0012 (its sd)."""
    y, a, truth = sigmoid(300, np.random.default_rng(50))
    new, old = explained_variance(y, a, n_boot=0), explained_variance(y, a, n_boot=0, method="binned")
    assert new.n_steep >= 1 and old.n_steep == 0
    assert abs(new.score - truth) < 0.0012 < truth - old.score


def test_no_steep_bin_in_noise():
    """With no effect at all, a correction in any bin happens in about 1% of runs (Bonferroni)."""
    for seed in range(5):
        y, a, _ = independent(2_000, np.random.default_rng(seed))
        assert explained_variance(y, a, n_boot=0).n_steep == 0


# ---- coverage of the bootstrap interval ----------------------------------------------


def _coverage(draw, score, reps=100):
    hits = 0
    for i in range(reps):
        truth, result = score(draw(np.random.default_rng(10_000 + i)), seed=i)
        hits += result.ci_low <= truth <= result.ci_high
    return hits / reps


@pytest.mark.slow
@pytest.mark.parametrize("model", [linear, sine, independent, categorical])
def test_explained_variance_ci_covers_truth(model):
    def score(data, seed):
        y, a, truth = data
        return truth, explained_variance(y, a, categorical=model is categorical, n_boot=100, seed=seed)

    assert _coverage(lambda rng: model(3_000, rng), score) >= 0.90


@pytest.mark.slow
def test_score_from_group_stats_ci_covers_truth():
    mu, sd, w = np.array([0.0, 0.5, 1.0, 0.2, -0.4]), np.array([1.0, 1.2, 0.8, 1.0, 1.1]), np.full(5, 0.2)
    between = w @ mu**2 - (w @ mu) ** 2
    truth = between / (between + w @ sd**2)

    def score(rng, seed):
        y = mu[:, None] + sd[:, None] * rng.normal(size=(5, 200))
        return truth, score_from_group_stats(y.mean(1), y.var(1, ddof=1), np.full(5, 200), w, n_boot=200, seed=seed)

    assert _coverage(lambda rng: rng, score) >= 0.90


# 100 replicates: the number of intervals that cover is Binomial(100, p). At the nominal p = 0.95 its
# sd is 2.2 points, so a bound of 0.85 sits 4.5 sd below (with these seeds: 0.96 for the steep case
# at n = 100, 0.90 for the smooth one at n = 300; over 200 runs with n_boot=200, 0.96 and 0.96 in
# benchmarks/results/tvd-coverage.json), while the binned estimator's 0.00-0.02 on the steep case
# (the issue) sits far below it.
COVERAGE_REPS, COVERAGE_BOUND = 100, 0.85


@pytest.mark.parametrize("n, kwargs", [(100, dict(k=60, sd=0.05)), (300, dict(k=6, sd=0.25))], ids=["steep", "smooth"])
def test_local_linear_ci_covers_sigmoid_truth(n, kwargs):
    def score(data, seed):
        y, a, truth = data
        return truth, explained_variance(y, a, n_boot=100, seed=seed)

    assert _coverage(lambda rng: sigmoid(n, rng, **kwargs), score, COVERAGE_REPS) >= COVERAGE_BOUND


def test_binned_ci_misses_steep_truth():
    """The issue, kept reachable: bins of 10 lose E[Y|A]'s variation inside the bin the step falls in."""

    def score(data, seed):
        y, a, truth = data
        return truth, explained_variance(y, a, n_boot=100, seed=seed, method="binned")

    assert _coverage(lambda rng: sigmoid(100, rng), score, 60) < 0.2


# ---- properties ----------------------------------------------------------------------

finite = st.floats(-1e3, 1e3, allow_nan=False, allow_subnormal=False)
pairs = st.integers(12, 120).flatmap(
    lambda n: st.tuples(arrays(float, n, elements=finite), arrays(float, n, elements=finite))
)
PROPERTY = settings(max_examples=40, deadline=None, derandomize=True)


@PROPERTY
@given(pairs, st.booleans())
def test_score_and_ci_lie_in_unit_interval(data, categorical_):
    y, a = data
    r = explained_variance(y, np.round(a / 300) if categorical_ else a, categorical=categorical_, n_boot=20)
    if r.ok:
        assert 0 <= r.ci_low <= r.ci_high <= 1 and 0 <= r.score <= 1
    else:
        assert np.isnan(r.score) and r.message


@PROPERTY
@given(pairs, st.floats(0.01, 100), st.booleans(), st.floats(-100, 100))
def test_score_unchanged_by_affine_change_of_output(data, scale, flip, shift):
    y, a = data
    assume(np.ptp(y) > 1e-3)
    r1 = explained_variance(y, a, n_boot=20)
    r2 = explained_variance((-scale if flip else scale) * y + shift, a, n_boot=20)
    assert r1.status == r2.status
    if r1.ok:
        assert r2.score == pytest.approx(r1.score, abs=1e-6)
        assert (r2.ci_low, r2.ci_high) == pytest.approx((r1.ci_low, r1.ci_high), abs=1e-6)


@PROPERTY
@given(pairs, st.sampled_from([np.exp, lambda x: x**3, lambda x: np.arctan(x / 5), lambda x: 10 * x - 3]))
def test_score_unchanged_by_increasing_relabelling_of_feature(data, g):
    y, a = data
    a = a / 200  # keep exp finite
    b = g(a)
    # the relabelling must stay strictly monotone in floating point (no new ties)
    assume(np.unique(a).size == np.unique(b).size)
    r1, r2 = explained_variance(y, a, n_boot=20), explained_variance(y, b, n_boot=20)
    assert r1.status == r2.status and r1.n_groups == r2.n_groups
    if r1.ok:
        assert r2.score == pytest.approx(r1.score, abs=1e-9)


distinct_pairs = st.integers(12, 120).flatmap(
    lambda n: st.tuples(arrays(float, n, elements=finite), arrays(float, n, elements=finite, unique=True))
)


@PROPERTY
@given(distinct_pairs, st.integers(0, 2**32 - 1))
def test_score_unchanged_by_order_of_rows(data, seed):
    """Lines and sorted-neighbour differences follow A's order, not the rows' (A without ties; with
    tied values the difference estimate of a steep bin sees the tied rows in their given order)."""
    y, a = data
    p = np.random.default_rng(seed).permutation(a.size)
    r1, r2 = explained_variance(y, a, n_boot=0), explained_variance(y[p], a[p], n_boot=0)
    assert (r1.status, r1.n_groups, r1.n_steep) == (r2.status, r2.n_groups, r2.n_steep)
    if r1.ok:
        assert r2.score == pytest.approx(r1.score, abs=1e-9)


@pytest.mark.parametrize("n", [60, 84, 120])
def test_a_constant_output_with_one_outlier_scores_the_same_in_any_row_order(n):
    """Hypothesis's find: Y constant but for one row. The bins without the outlier have no within-bin
    variance; the float error of the standardisation (which the rows' order changes) must not be read
    as a steep bin (it was: 0 or 3 steep bins by row order)."""
    y = np.full(n, 107.25)
    y[6] = 491.5625
    a = np.random.default_rng(n).permutation(np.arange(n) + 0.125)
    r1 = explained_variance(y, a, n_boot=0)
    for seed in range(30):
        p = np.random.default_rng(seed).permutation(n)
        r2 = explained_variance(y[p], a[p], n_boot=0)
        assert (r2.n_steep, r2.n_groups) == (r1.n_steep, r1.n_groups)
        assert r2.score == pytest.approx(r1.score, abs=1e-9)


@PROPERTY
@given(pairs)
def test_methods_agree_on_exact_groups(data):
    """Categories have no binning loss: both methods are the group estimator, field for field."""
    y, a = data
    c = np.round(a / 300)
    r1 = explained_variance(y, c, categorical=True, n_boot=10)
    r2 = explained_variance(y, c, categorical=True, n_boot=10, method="binned")
    np.testing.assert_equal(dataclasses.astuple(r1), dataclasses.astuple(r2))
    assert r1.method == ("groups" if r1.ok else "") and r1.n_steep == 0


@settings(max_examples=25, deadline=None, derandomize=True)
@given(st.integers(0, 2**32 - 1), st.integers(200, 2_000), st.floats(0, 3))
def test_permuted_feature_gives_ci_covering_zero(seed, n, beta):
    rng = np.random.default_rng(seed)
    y, a, _ = linear(n, rng, beta=beta)
    r = explained_variance(y, rng.permutation(a), n_boot=100, seed=seed, ci=0.99)
    assert r.ci_low == 0.0 or r.ci_low <= 0 <= r.ci_high


# ---- score_from_group_stats ----------------------------------------------------------


def test_group_stats_agree_with_explained_variance_on_categorical_data():
    y, c, _ = categorical(4_000, np.random.default_rng(20))
    groups = [y[c == k] for k in range(3)]
    from_stats = score_from_group_stats(
        [g.mean() for g in groups], [g.var(ddof=1) for g in groups], [g.size for g in groups], n_boot=0
    )
    from_data = explained_variance(y, c, categorical=True, n_boot=0)
    for field in ("score", "explained_var", "total_var", "naive_score"):
        assert getattr(from_stats, field) == pytest.approx(getattr(from_data, field), rel=1e-9)


def test_group_stats_recover_known_truth_with_weights():
    rng = np.random.default_rng(21)
    mu, sd = np.linspace(-1, 1, 8) ** 2, np.linspace(0.5, 1.0, 8)
    w = np.exp(-0.5 * np.linspace(-2, 2, 8) ** 2)
    w /= w.sum()
    between = w @ mu**2 - (w @ mu) ** 2
    truth = between / (between + w @ sd**2)
    y = mu[:, None] + sd[:, None] * rng.normal(size=(8, 2_000))
    r = score_from_group_stats(y.mean(1), y.var(1, ddof=1), np.full(8, 2_000), w)
    assert abs(r.score - truth) < TOL  # about 5 standard errors; coverage is tested below
    assert r.ci_low < r.score < r.ci_high and r.ci_high - r.ci_low < 0.03


def test_group_stats_bias_correction_removes_noise_inflation():
    """K values, N samples each, no effect: naive ~ (K-1)/(KN), corrected ~ 0 on average."""
    k, n, reps = 10, 20, 300
    rng = np.random.default_rng(22)
    naive, corrected = [], []
    for _ in range(reps):
        y = rng.normal(size=(k, n))
        r = score_from_group_stats(y.mean(1), y.var(1, ddof=1), np.full(k, n), n_boot=0)
        naive.append(r.naive_score)
        corrected.append(r.score_unclipped)
    assert np.mean(naive) == pytest.approx((k - 1) / (k * n), rel=0.15)
    assert abs(np.mean(corrected)) < 3 * np.std(corrected) / np.sqrt(reps)


# ---- bad input -----------------------------------------------------------------------


def test_constant_output():
    r = explained_variance(np.full(50, 3.0), np.arange(50.0))
    assert r.status == "constant_output" and np.isnan(r.score) and "constant" in r.message


def test_single_value_feature():
    r = explained_variance(np.random.default_rng(0).normal(size=50), np.full(50, 1.0))
    assert r.status == "single_value" and np.isnan(r.score) and "single value" in r.message


@pytest.mark.parametrize("n", [0, 1, 9])
def test_too_few_samples(n):
    r = explained_variance(np.arange(n, dtype=float), np.arange(n, dtype=float))
    assert r.status == "too_few_samples" and "at least 10" in r.message


def test_category_with_one_member_is_too_few_samples():
    y = np.random.default_rng(0).normal(size=30)
    c = np.array(["a"] * 15 + ["b"] * 14 + ["rare"])
    r = explained_variance(y, c, categorical=True)
    assert r.status == "too_few_samples" and "'rare'" in r.message and "at least 2" in r.message


def test_numeric_feature_with_few_values_is_grouped_exactly():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 2, 5_000).astype(float)  # a binary feature passed as continuous
    y = a + rng.normal(size=5_000)
    r = explained_variance(y, a, n_boot=20)
    assert r.n_groups == 2
    assert r.score == pytest.approx(explained_variance(y, a, categorical=True, n_boot=20).score)


def test_feature_shared_by_all_samples_but_one_is_single_value():
    r = explained_variance(np.arange(30.0), np.r_[np.zeros(29), 1.0])
    assert r.status == "single_value"


def test_non_finite_output_message_says_how_many_and_where():
    y = np.random.default_rng(0).normal(size=40)
    y[[7, 20]] = [np.nan, np.inf]
    r = explained_variance(y, np.arange(40.0))
    assert r.status == "non_finite" and np.isnan(r.score)
    assert "2 non-finite" in r.message and "index 7" in r.message


def test_non_finite_feature_fails_every_column_and_bad_column_fails_alone():
    rng = np.random.default_rng(0)
    y, a = rng.normal(size=(60, 2)), rng.normal(size=60)
    a_bad = a.copy()
    a_bad[3] = np.nan
    assert [r.status for r in explained_variance(y, a_bad)] == ["non_finite", "non_finite"]
    y[5, 1] = np.nan
    statuses = [r.status for r in explained_variance(y, a, n_boot=10)]
    assert statuses == ["ok", "non_finite"]


def test_length_mismatch_raises():
    with pytest.raises(ValueError, match="feature"):
        explained_variance(np.zeros(10), np.zeros(11))


def test_group_stats_degenerate_inputs():
    assert score_from_group_stats([1.0], [1.0], [5]).status == "single_value"
    assert score_from_group_stats([1.0, 2.0], [1.0, 1.0], [5, 1]).status == "too_few_samples"
    assert score_from_group_stats([1.0, 1.0], [0.0, 0.0], [5, 5]).status == "constant_output"
    assert score_from_group_stats([1.0, np.nan], [1.0, 1.0], [5, 5]).status == "non_finite"
    with pytest.raises(ValueError):
        score_from_group_stats([1.0, 2.0], [1.0, 1.0], [5, 5, 5])


# ---- conditional_curve ---------------------------------------------------------------


def test_conditional_curve_recovers_sine():
    y, a, _ = sine(N_LARGE, np.random.default_rng(30), s=0.7)
    c = conditional_curve(y, a, n_points=41)
    assert isinstance(c, CurveResult) and c.status == "ok"
    assert all(x.shape == (41,) for x in (c.grid, c.mean, c.band_low, c.band_high, c.variance, c.count))
    middle = np.abs(c.grid) < 1.5
    assert np.max(np.abs(c.mean[middle] - np.sin(2 * c.grid[middle]))) < 0.06
    assert np.all(c.band_low <= c.mean) and np.all(c.mean <= c.band_high)
    # the band only covers sampling error, so check it where the curve is flat-ish
    assert np.median(np.abs(c.variance[middle] - 0.49)) < 0.05


def test_conditional_curve_categorical_gives_per_category_values():
    y, c, _ = categorical(N_LARGE, np.random.default_rng(31))
    curve = conditional_curve(y, c, categorical=True)
    np.testing.assert_array_equal(curve.grid, [0, 1, 2])
    np.testing.assert_allclose(curve.mean, MU_CAT, atol=0.05)
    np.testing.assert_allclose(curve.variance, SD_CAT**2, rtol=0.08)
    assert curve.count.sum() == N_LARGE
    assert np.all((curve.band_low <= MU_CAT) & (MU_CAT <= curve.band_high))


def test_conditional_curve_reports_bad_input():
    y = np.random.default_rng(0).normal(size=30)
    y[4] = np.nan
    assert conditional_curve(y, np.arange(30.0)).status == "non_finite"
    assert conditional_curve(np.arange(30.0), np.ones(30)).status == "single_value"


# ---- score_table ---------------------------------------------------------------------


def test_score_table_has_one_row_per_feature_and_output():
    rng = np.random.default_rng(40)
    y, a, _ = linear(2_000, rng)
    outputs = pd.DataFrame({"logit": y, "const": np.ones(2_000)})
    features = {"age": a, "noise": rng.normal(size=2_000), "site": rng.integers(0, 3, 2_000)}
    table = score_table(outputs, features, categorical=("site",), n_boot=20)
    assert list(table.columns) == [
        "feature",
        "output",
        "score",
        "ci_low",
        "ci_high",
        "unexplained",
        "n",
        "n_groups",
        "status",
        "message",
    ]
    assert len(table) == 6
    row = table.set_index(["feature", "output"]).loc[("age", "logit")]
    assert row.score == pytest.approx(0.5, abs=0.05) and row.unexplained == pytest.approx(1 - row.score)
    assert set(table.loc[table.output == "const", "status"]) == {"constant_output"}
    assert table.set_index(["feature", "output"]).loc[("site", "logit"), "n_groups"] == 3


def test_score_result_is_frozen():
    r = explained_variance(*linear(100, np.random.default_rng(0))[:2], n_boot=0)
    assert isinstance(r, ScoreResult)
    with pytest.raises(AttributeError):
        r.score = 0.3
