"""Explained-variance scores from data: S(A) = Var(E[Y|A]) / Var(Y).

Jin, Zhu & Fletcher, "Feature Attribution for Deep Learning Models through Total
Variance Decomposition" (MIDL 2025). The law of total variance splits

    Var(Y) = Var(E[Y | A]) + E[Var(Y | A)]       (explained + unexplained)

and the score is the explained fraction (the correlation ratio eta^2).

Code name -> symbol:
    outputs, y            Y = f(X), the model output (a logit or a probability)
    feature, a            A, the human-readable feature
    means[k], m_k         E[Y | A = a_k], estimated by the mean of group k
    variances[k], s2_k    Var(Y | A = a_k), unbiased (ddof=1) within-group variance
    counts[k], n_k        number of outputs in group k (N per value for the sampler)
    weights[k], w_k       p(a_k), weight of group k (n_k / n for data)
    between               sum_k w_k (m_k - m)^2 with m = sum_k w_k m_k: naive Var(E[Y|A])
    inflation             sum_k w_k (1 - w_k) s2_k / n_k: its expected excess from noise
    explained_var         between - inflation: Var(E[Y|A]) (omega^2-type correction)
    within                sum_k w_k s2_k: E[Var(Y|A)]
    total_var             within + explained_var: Var(Y)
    u                     rank of A (ties share their mean rank)
    line_var[k], r2_k     residual variance (ddof=2) of a straight line in u fitted in bin k
    diff_var[k], d2_k     (3 R1 - R2) / 2, R_j = sum_i (y_(i+j) - y_(i))^2 / 2 (n_k - j) over
                          A-sorted neighbours in bin k: Var(Y|A) with no smoothness needed
    steep[k], lambda_k    how much of D_k = r2_k - d2_k is taken back (0: none, 1: all)

Why the inflation term: m_k = mu_k + e_k with Var(e_k) = s2_k / n_k, independent across
groups. Then E[sum_k w_k (m_k - m)^2] = sum_k w_k (mu_k - mu)^2 + sum_k w_k Var(e_k)
- Var(sum_k w_k e_k), i.e. the truth plus sum_k w_k (1 - w_k) s2_k / n_k. With equal
groups and a common s2 this is (K - 1) / (K N) * s2, and for data (w_k = n_k / n) it is
(G - 1) / n * s2. Because total_var = within + explained_var, the score is also
1 - within / total_var: every estimator below differs only in how it measures E[Var(Y|A)].

A continuous feature is grouped into quantile bins, and two estimators are offered:

* `method="binned"` (the estimator before issue 32): within = sum_k w_k s2_k over
  round(n^(2/3)) bins of at least 10 outputs. E[Y|A] varies inside a bin, so s2_k holds
  that variation too and the score is biased down by E[Var(E[Y|A] | bin)] / Var(Y). Where
  E[Y|A] is steep (a classifier's probability against a feature it thresholds) this loss
  dwarfs the sampling error, and the bootstrap, which keeps the bins, cannot see it.
* `method="local-linear"` (default): within = sum_k w_k (r2_k - lambda_k D_k) over
  round(n^(2/3) / 2) bins of at least 20 outputs:
  1. A line in the rank of A is fitted in each bin; its residual variance r2_k misses only
     the bend of E[Y|A] inside a bin (O(h^4) for bin width h, against O(h^2) for s2_k).
     The line costs a degree of freedom per bin, hence bins twice as wide as before.
  2. Where E[Y|A] bends within a bin (a step), the line misses too; neighbours in A's
     order see it. R_j is Var(Y|A) plus half the mean squared change of E[Y|A] over j
     neighbours, which grows like j (j + 1) for independent draws of A where E[Y|A] is
     locally linear, so d2_k = (3 R1 - R2) / 2 cancels it (Rice 1984; the extrapolation
     in the lag as in Tong & Wang 2005). d2_k is about twice as noisy as r2_k, so it
     replaces r2_k only where D_k = r2_k - d2_k shows that the line left variance:
     z_k = D_k sqrt(n_k) / ref_k, with ref_k the larger of d2_k and the median r2 over bins
     k-4..k+4 (the local noise level, not inflated by a steep bin), is about N(0, c) with
     c = 2.5 for Gaussian noise (measured; the spread of z over the bins when larger). A
     bin with z_k > t = sqrt(c) Phi^-1(1 - 0.01 / G) whose line residuals are also
     positively autocorrelated (one-sided 5%; that check is immune to noise that grows
     across bins) takes back lambda_k = 1 - (t / z_k)^4 of D_k: all of it when z_k >> t,
     little near t, so a false alarm (1-5% of runs with no steep bin) moves the score little.
  3. Both steps use the order and ranks of A only: any increasing relabelling of A gives
     the same score, as before.

The interval is the pair bootstrap of the data with bins, ranks and lambda_k kept; each
draw refits the lines with multinomial weights and, in a corrected bin, adds
lambda_k N(0, c ref_k^2 / n_k) for the noise of D_k. Its world has residuals about each
line scaled by sqrt(n_k / (n_k - 2)) (modified residuals), so that its noise variance is
r2_k rather than the plug-in RSS_k / n_k; percentiles are moved from that world's score to
the estimate.

Chosen by measurement (bias and RMSE of the point estimate over 300-400 runs; coverage in
`benchmarks/validate_tvd_coverage.py` -> `benchmarks/results/tvd-coverage.json`, 200
runs a cell). Candidates at n = 100, Y = sigmoid(60 (A - 0.5)) + N(0, 0.05^2) (S = 0.989)
and Y independent of A (S = 0), bias / RMSE:

    binned (bins of 10)                    -0.036 / 0.040    +0.019 / 0.036
    lines in bins of 10                    -0.006 / 0.008    +0.027 / 0.050
    lines in bins of 20                    -0.021 / 0.023    +0.018 / 0.034
    d2 everywhere (no bins)                -0.000 / 0.003    +0.065 / 0.114
    lines in bins of 20 + d2 where steep   -0.001 / 0.004    +0.018 / 0.035

and the same order at n = 300-5,000. Finer bins, sorted differences alone (and, tried too,
a Tong & Wang regression over 5-10 lags, Richardson between G and 2G bins) each buy the
steep case with 1.4-3x the error at S = 0; the lines in wide bins keep S = 0 and smooth
curves where they were, and the test hands the steep bins, only, to d2. Coverage of the
95% interval, old -> new, over the issue's cases at n = 100-2,000: k = 60, sd = 0.05:
0.02-0.90 -> 0.905-0.96; k = 30, sd = 0.10: 0.38-0.94 -> 0.90-0.965; k = 12 and k = 6:
0.89-0.94 -> 0.90-0.965; near 1 (k = 60, sd = 0.02): 0.00-0.17 -> 0.87-0.99 (short of 0.9
at n = 300-1,000, where the step spans 2-4 bins whose misses, ~1e-4 of S and 0.6 sd, are
below the test's reach); S = 0 and S = 0.02: 0.98-1.00 for both. RMSE: 0.05-0.9x the old
one on the steep cases, 0.94-1.07x on the smooth ones and at S = 0.02 and 0, except S = 0 at
n = 200 (1.24x: 2% of runs correct a bin of weight 1/10 by mistake); widths 4-10% wider
where the old interval under-covered (smooth cases), narrower where it missed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from engine.options import SCORE

MIN_SAMPLES = 10  # fewer outputs than this: "too_few_samples"
MIN_GROUP = 2  # each group needs 2 outputs for a within-group variance
MIN_LINE = 3  # a bin needs 3 outputs (and 2 distinct ranks) for a line and its residual variance
MIN_STEEP = 20  # and 20 for the steep-bin test (its null tail is heavier than Gaussian in smaller bins)
STEEP_ALPHA = 0.01  # chance that any bin is corrected when no bin is steep (Bonferroni over bins)
ROUNDING = 1e-20  # a within-bin variance of the standardised output below this is float error, not noise
STEEP_WINDOW = 9  # bins k-4..k+4 give the local noise level that scales D_k
STEEP_LAG = stats.norm.isf(0.05)  # and the line's residuals must be autocorrelated at the one-sided 5% level
STEEP_NOISE = 2.5  # Var(r2_k - d2_k) ~ 2.5 Var(Y|A)^2 / n_k with Gaussian noise (measured 2.45-2.53)
METHODS = ("local-linear", "binned")
CONSTANT_MESSAGE = "The output is constant (zero variance), so there is nothing to explain. Check the model and output."
SINGLE_MESSAGE = "The feature takes a single value, so it cannot explain any variance. Choose a feature that varies."


@dataclass(frozen=True)
class ScoreResult:
    """One score S(A) for one output; `score` and the CI are NaN unless status is "ok"."""

    score: float  # corrected S(A), clipped to [0, 1]
    ci_low: float  # percentile-bootstrap interval, clipped to [0, 1] (NaN if n_boot=0)
    ci_high: float
    n: int  # number of outputs used
    status: str  # "ok", "constant_output", "single_value", "too_few_samples", "non_finite"
    message: str  # empty when ok; otherwise the problem and the fix in plain words
    n_groups: int  # groups (categories, quantile bins or feature values a_k)
    explained_var: float = np.nan  # Var(E[Y|A]) after the bias correction (unclipped)
    total_var: float = np.nan  # Var(Y) = E[Var(Y|A)] + Var(E[Y|A])
    naive_score: float = np.nan  # between / (within + between) of the groups, without any correction
    score_unclipped: float = np.nan  # explained_var / total_var; can be < 0 by noise
    ci_level: float = 0.95
    method: str = ""  # "local-linear" or "binned" (quantile bins), "groups" (exact values); "" if not ok
    n_steep: int = 0  # bins where the difference estimate replaced (part of) the line's residual variance

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True)
class CurveResult:
    """E[Y | A = a] and Var(Y | A = a) on a grid, ready for plotting. All arrays (P,)."""

    grid: np.ndarray  # feature values a (the categories for a categorical feature)
    mean: np.ndarray  # E[Y | A = a]
    band_low: np.ndarray  # pointwise confidence band of the conditional mean
    band_high: np.ndarray
    variance: np.ndarray  # Var(Y | A = a)
    count: np.ndarray  # outputs per category, or the smoother's effective sample size
    bandwidth: float = np.nan  # Gaussian kernel bandwidth (NaN for categorical)
    status: str = "ok"
    message: str = ""


def _failed(status: str, message: str, n: int, n_groups: int = 0, ci: float = 0.95) -> ScoreResult:
    return ScoreResult(np.nan, np.nan, np.nan, n, status, message, n_groups, ci_level=ci)


def default_n_bins(n: int, method: str = "local-linear") -> int:
    """Quantile bins for n outputs.

    "local-linear": round(n^(2/3) / 2), clipped to [2, n // 20] (at least 20 outputs a bin);
    "binned": round(n^(2/3)), clipped to [2, n // 10] (at least 10 outputs a bin).
    """
    if method == "binned":
        return int(max(2, min(round(n ** (2 / 3)), n // 10)))
    return int(max(2, min(round(n ** (2 / 3) / 2), n // 20)))


def non_finite_message(x: np.ndarray, what: str) -> str | None:
    """A message if x holds NaN/Inf (or missing values for object arrays), else None."""
    if x.dtype.kind in "fc":
        bad = ~np.isfinite(x)
    elif x.dtype.kind == "O":
        bad = np.asarray(pd.isna(x), dtype=bool)
    else:  # integers, booleans and strings cannot be NaN
        return None
    if not bad.any():
        return None
    rows = np.flatnonzero(bad.reshape(len(x), -1).any(axis=1))
    return (
        f"{what} has {int(bad.sum())} non-finite value(s) (NaN or Inf) in {rows.size} sample(s); "
        f"the first is at index {rows[0]}. Remove or fix those samples before scoring."
    )


def _quantile_bins(a: np.ndarray, n_bins: int) -> np.ndarray:
    """Group codes (n,) of about n_bins quantile bins of a, each with >= MIN_GROUP outputs.

    Bins depend on the ranks of a only (so any increasing relabelling of A gives the same
    groups), ties always share a bin, and a feature with at most n_bins distinct values
    is grouped on its exact values.
    """
    values, inverse, counts = np.unique(a, return_inverse=True, return_counts=True)
    if values.size <= n_bins:
        value_bin = np.arange(values.size)
    else:  # bin of each distinct value = quantile position of its first occurrence
        value_bin = ((np.cumsum(counts) - counts) * n_bins) // a.size
    bin_counts = np.bincount(value_bin, weights=counts).astype(np.int64)
    # merge bins with fewer than MIN_GROUP outputs (or none) into the next one
    new_id, current, filled = np.zeros(bin_counts.size, dtype=np.int64), 0, 0
    for b, c in enumerate(bin_counts):
        new_id[b], filled = current, filled + c
        if filled >= MIN_GROUP:
            current, filled = current + 1, 0
    if filled:  # a short remainder joins the last full bin
        new_id[new_id == current] = max(current - 1, 0)
    return new_id[value_bin[inverse.ravel()]]


def _score_core(means, variances, counts, weights, floor: float = 0.0):
    """Corrected score from group statistics; arrays (..., G), returns arrays (...).

    Groups with count 0 must have weight 0; a group with count 1 borrows the pooled
    within-group variance for its noise term. Scores whose total variance is <= floor
    (a bootstrap draw of identical outputs) are NaN.
    """
    w = weights / weights.sum(axis=-1, keepdims=True)
    # 1. naive between-group variance of the means: Var(E[Y|A]) plus noise
    m = (w * means).sum(axis=-1, keepdims=True)
    between = (w * (means - m) ** 2).sum(axis=-1)
    # 2. expected noise in it: sum_k w_k (1 - w_k) s2_k / n_k  (see module docstring)
    has_var = counts >= 2
    df = np.where(has_var, counts - 1, 0)
    pooled = (df * np.where(has_var, variances, 0)).sum(-1, keepdims=True) / np.maximum(df.sum(-1, keepdims=True), 1)
    s2 = np.where(has_var, variances, pooled)
    noise = np.where(counts > 0, s2 / np.maximum(counts, 1), 0.0)
    inflation = (w * (1 - w) * noise).sum(axis=-1)
    # 3. law of total variance: Var(Y) = E[Var(Y|A)] + Var(E[Y|A])
    explained = between - inflation
    within = (w * s2).sum(axis=-1)
    total = within + explained
    with np.errstate(invalid="ignore", divide="ignore"):
        score = np.where(total > floor, explained / total, np.nan)
        return score, explained, total, between / (within + between)


def _line_var(cnt, su, suu, sy, syy, suy, fallback, ddof: int = 2):
    """Residual variance of a weighted straight line y ~ u in each bin, RSS / (cnt - ddof); (G, J).

    Takes weighted sums per bin: cnt, su, suu (G,) of 1, u, u^2 and sy, syy, suy (G, J) of
    y, y^2, u y. Bins with fewer than MIN_LINE outputs or a single rank keep `fallback`.
    """
    safe = np.maximum(cnt, 1)
    s_uu = suu - su**2 / safe  # (G,)
    fits = (cnt >= MIN_LINE) & (s_uu > 1e-9 * safe)
    s_uy = suy - su[:, None] * sy / safe[:, None]
    s_yy = syy - sy**2 / safe[:, None]
    rss = np.maximum(s_yy - s_uy**2 / np.where(fits, s_uu, 1)[:, None], 0)
    return np.where(fits[:, None], rss / np.maximum(cnt - ddof, 1)[:, None], fallback)


def _difference_var(ys, codes, starts, counts):
    """d2_k = (3 R1 - R2) / 2 from neighbours in A-sorted order within each bin; (G, J), >= 0.

    ys (n, J) and codes (n,) sorted by A; R_j averages (y_(i+j) - y_(i))^2 / 2 over pairs in
    one bin. Bins with fewer than MIN_STEEP outputs get NaN.
    """

    def r(j):  # per-bin mean of half squared j-th differences
        same = codes[j:] == codes[:-j]
        d2 = np.where(same[:, None], (ys[j:] - ys[:-j]) ** 2, 0.0)
        sums = np.add.reduceat(np.concatenate([d2, np.zeros((j, ys.shape[1]))]), starts, axis=0)
        return sums / (2 * np.maximum(counts - j, 1))[:, None]

    d2 = np.maximum((3 * r(1) - r(2)) / 2, 0)
    return np.where((counts >= MIN_STEEP)[:, None], d2, np.nan)


def _lag1(e, codes, starts, counts):
    """sqrt(n_k) times the lag-1 autocorrelation of the A-sorted residuals e (n, J) in each bin; (G, J).

    About N(0, 1) when e is noise, whatever its scale or shape; positive when the line misses
    a trend that neighbours share.
    """
    same = (codes[1:] == codes[:-1])[:, None]
    products = np.concatenate([np.where(same, e[1:] * e[:-1], 0.0), np.zeros((1, e.shape[1]))])
    lag, ss = np.add.reduceat(products, starts, axis=0), np.add.reduceat(e**2, starts, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ss > 0, lag / ss, 0.0) * np.sqrt(counts)[:, None]


def _steep_bins(line_var, diff_var, lag1, counts):
    """lambda_k (G, J) in [0, 1], the share of D_k = r2_k - d2_k to take back, and Var(D_k) (G, J).

    Module docstring, step 2: z_k = D_k sqrt(n_k) / ref_k with ref_k the larger of d2_k and the
    median r2 over bins k-4..k+4; its null spread sqrt(c) with c = max(STEEP_NOISE, (1.4826 MAD
    of z over bins)^2) (the MAD with 10 or more bins only); the threshold t = sqrt(c)
    Phi^-1(1 - STEEP_ALPHA / G), and lambda_k = 1 - (t / z_k)^4 above it, in bins whose line
    residuals are also positively autocorrelated (`lag1` > STEEP_LAG).
    """
    g = counts.size
    d = line_var - diff_var
    half = STEEP_WINDOW // 2
    padded = np.pad(line_var, ((half, half), (0, 0)), constant_values=np.nan)
    ref = np.nanmedian(np.lib.stride_tricks.sliding_window_view(padded, STEEP_WINDOW, axis=0), axis=-1)  # (G, J)
    ref = np.fmax(ref, diff_var)  # where the noise grows fast across bins (heteroscedastic), d2_k knows it
    with np.errstate(invalid="ignore", divide="ignore"):  # (variances of the standardised output: below
        #  ROUNDING they are the float error of a constant stretch, which the rows' order changes)
        z = np.where(ref > ROUNDING, d * np.sqrt(counts)[:, None] / ref, np.where(d > ROUNDING, np.inf, 0.0))
    z = np.where(np.isnan(z), 0.0, z)  # bins too small for d2_k
    c = np.full(z.shape[1], STEEP_NOISE)
    if g >= 10:
        spread = 1.4826 * np.median(np.abs(z - np.median(z, axis=0)), axis=0)
        c = np.where(np.isfinite(spread), np.maximum(c, spread**2), c)
    t = np.sqrt(c) * stats.norm.isf(STEEP_ALPHA / g)
    with np.errstate(invalid="ignore", divide="ignore"):
        steep = np.where((z > t) & (lag1 > STEEP_LAG), 1 - (t / z) ** 4, 0.0)
    return steep, c * ref**2 / counts[:, None]


def percentile_ci(replicates: np.ndarray, shift: float, ci: float) -> tuple[float, float]:
    """Percentile interval of unclipped bootstrap scores + shift, then clipped to [0, 1].

    The resampled world's true score is the plug-in one of the original data (its group
    means and lines are the observed ones), so replicates centre there; `shift` = corrected
    estimate - that plug-in truth moves them back to the corrected estimate.
    """
    reps = replicates[np.isfinite(replicates)] + shift
    if reps.size < 2:
        return np.nan, np.nan
    low, high = np.quantile(reps, [(1 - ci) / 2, (1 + ci) / 2])
    return float(np.clip(low, 0, 1)), float(np.clip(high, 0, 1))


def _result(raw, explained, total, naive, bounds, n, n_groups, ci, method, n_steep=0) -> ScoreResult:
    score, stats_ = float(np.clip(raw, 0, 1)), (float(explained), float(total), float(naive), float(raw))
    return ScoreResult(score, *bounds, int(n), "ok", "", int(n_groups), *stats_, ci, method, int(n_steep))


def score_from_group_stats(
    means, variances, counts, weights=None, *, n_boot: int = SCORE.n_boot, seed: int = 0, ci: float = 0.95
) -> ScoreResult:
    """S(A) from per-value statistics, e.g. N diffusion samples at each of K values a_k.

    Args:
        means: (K,) group means of Y, estimates of E[Y | A = a_k].
        variances: (K,) within-group sample variances of Y (ddof=1).
        counts: (K,) outputs per group n_k (each >= 2).
        weights: (K,) p(a_k), the weight of each value; default proportional to counts.
        n_boot: parametric-bootstrap draws for the CI (0: no CI).
        seed: seed of the bootstrap generator.
        ci: confidence level of the interval.

    The bias correction subtracts sum_k w_k (1 - w_k) s2_k / n_k from the weighted
    between-value variance (module docstring). The CI is a parametric bootstrap: each
    mean is redrawn from N(m_k, s2_k / n_k) and each variance from
    s2_k * chi2(n_k - 1) / (n_k - 1), with the weights held fixed. The groups are exact
    values, so there is no binning loss to correct (`ScoreResult.method` is "groups").
    """
    means, variances = np.asarray(means, float), np.asarray(variances, float)
    counts = np.asarray(counts, float)
    weights = counts.copy() if weights is None else np.asarray(weights, float)
    # 1. validate: programming errors raise, data problems return a status
    if not (means.ndim == 1 and means.shape == variances.shape == counts.shape == weights.shape):
        raise ValueError(
            f"means, variances, counts and weights must be 1-D of one length, got "
            f"{means.shape}, {variances.shape}, {counts.shape}, {weights.shape}"
        )
    n, k = int(counts.sum()) if np.isfinite(counts).all() else 0, means.size
    for name, x in (("means", means), ("variances", variances), ("counts", counts), ("weights", weights)):
        if (msg := non_finite_message(x, name)) is not None:
            return _failed("non_finite", msg, n, k, ci)
    if (variances < 0).any() or (weights < 0).any() or weights.sum() <= 0:
        raise ValueError("variances and weights must be >= 0, with a positive total weight")
    if k < 2:
        msg = f"Only {k} feature value; S(A) needs outputs at 2 or more values of A. Add feature values."
        return _failed("single_value", msg, n, k, ci)
    if (counts < MIN_GROUP).any():
        i = int(np.argmin(counts))
        msg = f"Value {i} has {counts[i]:g} output(s); each needs at least {MIN_GROUP}. Draw more samples per value."
        return _failed("too_few_samples", msg, n, k, ci)
    w = weights / weights.sum()
    if np.ptp(means) == 0 and (variances == 0).all():
        return _failed("constant_output", CONSTANT_MESSAGE, n, k, ci)
    # 2. point estimate
    raw, explained, total, naive = _score_core(means, variances, counts, w)
    # 3. parametric bootstrap for the CI
    bounds = (np.nan, np.nan)
    if n_boot > 0:
        rng = np.random.default_rng(seed)
        boot_means = rng.normal(means, np.sqrt(variances / counts), size=(n_boot, k))
        boot_vars = variances * rng.chisquare(counts - 1, size=(n_boot, k)) / (counts - 1)
        boot = _score_core(boot_means, boot_vars, counts, w, floor=1e-12 * total)[0]
        bounds = percentile_ci(boot, raw - naive, ci)  # parametric world: truth = naive
    return _result(raw, explained, total, naive, bounds, n, k, ci, "groups")


def _group(a: np.ndarray, categorical: bool, n_bins: int | None, method: str) -> tuple[np.ndarray, bool]:
    """Group codes (n,) 0..G-1, and whether they are exact values of A (categories, or few values)."""
    if categorical:
        return pd.factorize(pd.Series(a), sort=False)[0].astype(np.int64), True
    n_bins = n_bins or default_n_bins(a.size, method)
    return _quantile_bins(a.astype(float), n_bins), np.unique(a).size <= n_bins


def _sorted_ranks(a_sorted: np.ndarray) -> np.ndarray:
    """Ranks 1..n of sorted values (n,); ties share the mean of their ranks."""
    _, inverse, counts = np.unique(a_sorted, return_inverse=True, return_counts=True)
    return (np.cumsum(counts) - (counts - 1) / 2)[inverse.ravel()]


def explained_variance(
    outputs,
    feature,
    *,
    categorical: bool = False,
    n_boot: int = SCORE.n_boot,
    seed: int = 0,
    n_bins: int | None = None,
    ci: float = 0.95,
    method: str = "local-linear",
) -> ScoreResult | list[ScoreResult]:
    """S(A) = Var(E[Y|A]) / Var(Y) from pairs (y_i, a_i), with a bootstrap CI.

    Args:
        outputs: (n,) or (n, K) model outputs Y; (n, K) gives a list of K results.
        feature: (n,) feature values A (any hashable values if categorical).
        categorical: group on the exact values of A instead of quantile bins.
        n_boot: bootstrap draws over (Y, A) pairs for the CI (0: no CI).
        seed: seed of the bootstrap generator.
        n_bins: quantile bins for a continuous A; default `default_n_bins(n, method)`.
        ci: confidence level of the interval.
        method: how E[Var(Y|A)] is measured in quantile bins (module docstring):
            "local-linear" (a line in the rank of A per bin, and sorted-neighbour
            differences where E[Y|A] is steep) or "binned" (the within-bin variance, the
            estimator before issue 32). Categories, and continuous features with at most
            n_bins distinct values, are grouped on their exact values by either
            (`ScoreResult.method` "groups").

    Bins, ranks and the steep-bin weights are computed once; each bootstrap draw resamples
    pairs (multinomial counts per sample) and recomputes group sums with `np.add.reduceat`
    on A-sorted data.
    """
    y, a = np.asarray(outputs), np.asarray(feature)
    # 1. validate: programming errors raise, data problems return a status per output
    if y.ndim not in (1, 2) or a.ndim != 1 or len(y) != len(a):
        raise ValueError(f"outputs must be (n,) or (n, K) and feature (n,), got {y.shape} and {a.shape}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    y2 = (y[:, None] if y.ndim == 1 else y).astype(float)  # (n, K)
    n, n_out = y2.shape
    results: list[ScoreResult | None] = [None] * n_out

    def fail_all(status, msg, n_groups=0):
        return [r or _failed(status, msg, n, n_groups, ci) for r in results]

    def finish(rs):
        return rs if y.ndim == 2 else rs[0]

    if not categorical and a.dtype.kind not in "biuf":
        raise ValueError("a continuous feature must be numeric; pass categorical=True for labels")
    if (msg := non_finite_message(a, "The feature")) is not None:
        return finish(fail_all("non_finite", msg))
    for j in range(n_out):
        if (msg := non_finite_message(y2[:, j], "The output" + (f" column {j}" if y.ndim == 2 else ""))) is not None:
            results[j] = _failed("non_finite", msg, n, 0, ci)
    if n < MIN_SAMPLES:
        msg = f"Only {n} samples; the score needs at least {MIN_SAMPLES}. Score on more images."
        return finish(fail_all("too_few_samples", msg))
    # 2. group: exact categories or quantile bins
    codes, exact = _group(a, categorical, n_bins, method)
    counts = np.bincount(codes)
    g = counts.size
    if g < 2:  # (a continuous feature whose samples all but one share a value lands here too)
        return finish(fail_all("single_value", SINGLE_MESSAGE, g))
    if counts.min() < MIN_GROUP:
        label = a[np.flatnonzero(codes == np.argmin(counts))[0]]
        msg = f"Feature value {label!r} has 1 sample; each value needs at least {MIN_GROUP}. Merge or drop rare values."
        return finish(fail_all("too_few_samples", msg, g))
    for j in range(n_out):
        if results[j] is None and np.ptp(y2[:, j]) == 0:
            results[j] = _failed("constant_output", CONSTANT_MESSAGE, n, g, ci)
    todo = [j for j in range(n_out) if results[j] is None]
    if not todo:
        return finish(results)
    # 3. per-group statistics on standardised outputs, sorted by A (bins are runs of sorted A)
    order = np.argsort(codes if categorical else a, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    center, scale = y2[:, todo].mean(0), y2[:, todo].std(0)
    ys = (y2[order][:, todo] - center) / scale  # (n, J)
    means = np.add.reduceat(ys, starts, axis=0) / counts[:, None]  # (G, J)
    resid = ys - np.repeat(means, counts, axis=0)  # y - m_k, for stable sums of squares
    resid2 = resid**2
    variances = np.add.reduceat(resid2, starts, axis=0) / (counts[:, None] - 1)
    raw, explained, total, naive = _score_core(means.T, variances.T, counts, counts.astype(float))
    # the resampled world's truth is the plug-in score (ddof=0 variances, no correction)
    plug_in_var = variances * ((counts - 1) / counts)[:, None]
    world = _score_core(means.T, plug_in_var.T, counts, counts.astype(float))[3]
    local = method == "local-linear" and not exact
    steep = np.zeros_like(means)
    if local:
        # 4. E[Var(Y|A)] per bin: a line in the rank u of A (r2_k), and where the line misses a
        #    steep E[Y|A], sorted-neighbour differences (d2_k); within = sum_k w_k (r2_k - lambda_k D_k)
        u = _sorted_ranks(a[order])
        du = u - np.repeat(np.add.reduceat(u, starts) / counts, counts)  # u - mean u in the bin
        suu, suy = np.add.reduceat(du**2, starts), np.add.reduceat(du[:, None] * resid, starts, axis=0)
        fits = (counts >= MIN_LINE) & (suu > 1e-9 * counts)  # bins with a line (else their mean only)
        in_bin = np.repeat(np.arange(g), counts)
        trend = np.where(fits[:, None], suy / np.where(fits, suu, 1)[:, None], 0.0)[in_bin] * du[:, None]
        e = resid - trend  # residuals of the lines, (n, J)
        ss = variances * (counts - 1)[:, None]  # sums of squares about the bin means (u, y centred in a bin)
        line = _line_var(counts, np.zeros(g), suu, np.zeros_like(means), ss, suy, fallback=variances)  # r2_k
        diff = _difference_var(ys, codes[order], starts, counts)  # d2_k
        steep, var_d = _steep_bins(line, diff, _lag1(e, codes[order], starts, counts), counts)  # lambda_k, Var(D_k)
        d = np.where(steep > 0, line - diff, 0.0)  # D_k where it is used
        within = (counts / n) @ (line - steep * d)
        explained, raw = total - within, 1 - within / total
        # the bootstrap world: residuals about each bin's line scaled by sqrt(n_k / (n_k - 2)), so that
        # its noise variance is r2_k rather than the plug-in RSS_k / n_k (modified residuals, Davison &
        # Hinkley 1997, section 6.2.3); its true score is then 1 - within / (its Var(Y))
        inflate = np.sqrt(counts / (counts - np.where(fits, 2, 1)))[in_bin, None]
        resid = trend + inflate * e
        resid2 = resid**2
        world = 1 - within / (resid2.mean(0) + (counts / n) @ means**2)
        du_resid = du[:, None] * resid
    # 5. pair bootstrap: multinomial counts per sample, group sums by reduceat
    boot = np.full((n_boot, len(todo)), np.nan)
    rng = np.random.default_rng(seed)
    for b in range(n_boot):
        c = np.bincount(rng.integers(0, n, n), minlength=n).astype(float)  # (n,)
        cnt = np.add.reduceat(c, starts)  # (G,)
        s1 = np.add.reduceat(c[:, None] * resid, starts, axis=0)  # (G, J)
        s2 = np.add.reduceat(c[:, None] * resid2, starts, axis=0)
        safe = np.maximum(cnt, 1)[:, None]
        b_means = means + s1 / safe
        b_vars = np.maximum(s2 - s1**2 / safe, 0) / np.maximum(cnt - 1, 1)[:, None]
        boot[b], _, b_total, _ = _score_core(b_means.T, b_vars.T, cnt, cnt, floor=1e-12)  # Var(Y) = 1 here
        if local:  # refit the lines with the draw's weights; a corrected bin also draws its D_k noise
            eps = rng.standard_normal(g)[:, None]
            su, suu = np.add.reduceat(c * du, starts), np.add.reduceat(c * du**2, starts)
            suy = np.add.reduceat(c[:, None] * du_resid, starts, axis=0)
            b_line = _line_var(cnt, su, suu, s1, s2, suy, fallback=b_vars)
            b_within = (cnt / cnt.sum()) @ (b_line - steep * (d + np.sqrt(var_d) * eps))
            with np.errstate(invalid="ignore", divide="ignore"):
                boot[b] = np.where(b_total > 1e-12, 1 - b_within / b_total, np.nan)
    n_steep = (steep > 0).sum(0)
    for i, j in enumerate(todo):
        bounds = percentile_ci(boot[:, i], raw[i] - world[i], ci) if n_boot > 0 else (np.nan, np.nan)
        label = "groups" if exact else method
        stats_ = (explained[i] * scale[i] ** 2, total[i] * scale[i] ** 2, naive[i])
        results[j] = _result(raw[i], *stats_, bounds, n, g, ci, label, n_steep[i])
    return finish(results)


def conditional_curve(
    outputs,
    feature,
    *,
    categorical: bool = False,
    grid=None,
    n_points: int = 50,
    bandwidth: float | None = None,
    level: float = 0.95,
) -> CurveResult:
    """E[Y | A = a] with a pointwise band, and Var(Y | A = a), for plotting.

    Args:
        outputs: (n,) model outputs Y (one column).
        feature: (n,) feature values A.
        categorical: one point per category (mean, t-interval, variance, count).
        grid: (P,) values a to evaluate at; default `n_points` evenly spaced between the
            1st and 99th percentiles of A (the sparse tails are left out).
        bandwidth: Gaussian-kernel bandwidth h; default Silverman's rule
            0.9 * min(sd, IQR / 1.349) * n^(-1/5).
        level: confidence level of the band.

    Continuous A uses a local-linear Gaussian-kernel smoother (Nadaraya-Watson plus a
    local slope, which removes its bias at the edges and where the density of A changes):
    with K_i = exp(-(a_i - a)^2 / 2h^2), mean = sum_i l_i y_i for the equivalent kernel
    l_i, variance = sum K_i (y_i - local line)^2 / sum K_i, and the band
    mean +- z * sqrt(variance * sum l_i^2) (sampling error only, not the smoothing bias).
    `count` is the effective sample size 1 / sum l_i^2. Points with fewer than 3 samples
    within 5 h are NaN.
    """
    y, a = np.asarray(outputs), np.asarray(feature)
    if y.ndim != 1 or a.ndim != 1 or len(y) != len(a):
        raise ValueError(f"outputs and feature must be 1-D of one length, got {y.shape} and {a.shape}")
    empty = np.array([], dtype=float)

    def failed(status, message):
        return CurveResult(empty, empty, empty, empty, empty, empty, np.nan, status, message)

    for x, what in ((y, "The output"), (a, "The feature")):
        if (msg := non_finite_message(x, what)) is not None:
            return failed("non_finite", msg)
    if len(y) < MIN_SAMPLES:
        return failed("too_few_samples", f"Only {len(y)} samples; the curve needs at least {MIN_SAMPLES}.")
    y = y.astype(float)
    if categorical:
        codes, labels = pd.factorize(pd.Series(a), sort=True)
        counts = np.bincount(codes, minlength=len(labels)).astype(float)
        mean = np.bincount(codes, weights=y) / counts
        with np.errstate(invalid="ignore", divide="ignore"):
            var = np.bincount(codes, weights=(y - mean[codes]) ** 2) / (counts - 1)
            half = stats.t.ppf((1 + level) / 2, np.maximum(counts - 1, 1)) * np.sqrt(var / counts)
        return CurveResult(np.asarray(labels), mean, mean - half, mean + half, var, counts)
    a = a.astype(float)
    if np.ptp(a) == 0:
        return failed("single_value", SINGLE_MESSAGE)
    # 1. bandwidth (Silverman's rule of thumb) and grid
    if bandwidth is None:
        spread = min(a.std(ddof=1), stats.iqr(a) / 1.349) or a.std(ddof=1)
        bandwidth = 0.9 * spread * len(a) ** (-1 / 5)
    grid = np.linspace(*np.quantile(a, [0.01, 0.99]), n_points) if grid is None else np.asarray(grid, float)
    # 2. local-linear fit at each grid point over the samples within 5 h (a sorted once)
    order = np.argsort(a)
    a_s, y_s = a[order], y[order] - y.mean()
    lo, hi = np.searchsorted(a_s, grid - 5 * bandwidth), np.searchsorted(a_s, grid + 5 * bandwidth)
    mean, var, sum_l2 = (np.full(grid.size, np.nan) for _ in range(3))
    for p, (i, j) in enumerate(zip(lo, hi, strict=True)):
        d = a_s[i:j] - grid[p]  # a_i - a
        k = np.exp(-0.5 * (d / bandwidth) ** 2)  # K_i
        s0, s1, s2 = k.sum(), k @ d, k @ d**2
        det = s0 * s2 - s1**2
        if j - i < 3 or det <= 1e-12 * s0 * s2:
            continue  # too few samples near a: leave NaN
        ell = k * (s2 - s1 * d) / det  # equivalent kernel l_i: mean = sum_i l_i y_i
        slope = k * (s0 * d - s1) / det @ y_s[i:j]
        mean[p] = ell @ y_s[i:j]
        var[p] = k @ (y_s[i:j] - mean[p] - slope * d) ** 2 / s0
        sum_l2[p] = ell @ ell
    # 3. band from the sampling variance of the fit: Var(mean) = Var(Y | A = a) sum_i l_i^2
    half = stats.norm.ppf((1 + level) / 2) * np.sqrt(var * sum_l2)
    mean = mean + y.mean()
    count = np.nan_to_num(1 / sum_l2)
    return CurveResult(grid, mean, mean - half, mean + half, var, count, float(bandwidth))


def output_columns(outputs, output_names: list[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """(n, K) outputs and their K names: the given names, else a DataFrame's columns, "y" for one output, or
    "y0".."y{K-1}"; ValueError when the count of names does not match."""
    if output_names is None and isinstance(outputs, pd.DataFrame):
        output_names = [str(c) for c in outputs.columns]
    y = np.asarray(outputs)
    y2 = y.reshape(len(y), -1)
    if output_names is None:
        output_names = ["y"] if y.ndim == 1 else [f"y{j}" for j in range(y2.shape[1])]
    if len(output_names) != y2.shape[1]:
        raise ValueError(f"{len(output_names)} output names for {y2.shape[1]} output columns")
    return y2, list(output_names)


def score_table(
    outputs,
    features: dict[str, np.ndarray],
    categorical: tuple[str, ...] = (),
    output_names: list[str] | None = None,
    **kw,
) -> pd.DataFrame:
    """One row per (feature, output column) with the score, its CI and any problem.

    Args:
        outputs: (n,) or (n, K) outputs, or a DataFrame whose columns name the outputs.
        features: name -> (n,) feature values.
        categorical: names of the features to group exactly.
        output_names: K names; default the DataFrame columns, "y" for one output, or
            "y0".."y{K-1}".
        **kw: passed to `explained_variance` (n_boot, seed, n_bins, ci).

    Columns: feature, output, score, ci_low, ci_high, unexplained (1 - score), n,
    n_groups, status, message.
    """
    y2, output_names = output_columns(outputs, output_names)
    unknown = set(categorical) - set(features)
    if unknown:
        raise ValueError(f"categorical names {sorted(unknown)} are not among the features")
    rows = []
    for name, values in features.items():
        results = explained_variance(y2, values, categorical=name in categorical, **kw)
        for out, r in zip(output_names, results, strict=True):
            rows.append((name, out, r.score, r.ci_low, r.ci_high, 1 - r.score, r.n, r.n_groups, r.status, r.message))
    columns = ["feature", "output", "score", "ci_low", "ci_high", "unexplained", "n", "n_groups", "status", "message"]
    return pd.DataFrame(rows, columns=columns)
