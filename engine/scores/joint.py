"""Scores of sets of correlated features, from data: joint, added and Shapley (issue 36).

One feature at a time, S(A) = Var(E[Y|A]) / Var(Y) (`engine.scores.tvd`) counts shared variance once
per feature: on SynthBrain, `synthbrain-diagnosis` reads only the ventricles, yet age (Spearman
0.8 with ventricle volume) scores 63%. Three scores of a set of features A_1..A_d split it:

* joint    S(u) = Var(E[Y | A_u]) / Var(Y) for a set u (u = all: the share of Var(Y) the
           recorded features explain at all);
* added    S(all) - S(all but j), the total Sobol index of A_j restricted to what the recorded
           features explain: what A_j adds to all the others;
* Shapley  phi_j = sum over u not holding j of |u|! (d - |u| - 1)! / d! (S(u + j) - S(u)), A_j's
           average added share over all orders of the features (Owen 2014; Song, Nelson & Staum
           2016). phi_j >= 0 and sum_j phi_j = S(all) whatever the correlation (the weights of
           each S(u) sum to 0 over j except for u = all), so correlated features share what they
           explain together instead of each claiming it.

Code name -> symbol:
    outputs, y           Y, the model output; (n,) or (n, J) for J outputs at once
    features, a_j        A_j, the recorded features (numeric, or categorical: exact labels)
    mask, u              a set of features, bit j set when A_j is in it (0: the empty set)
    basis, B             regression columns, centred and scaled (n, P); `owner` (P,) is the set
                         of features each column belongs to (two bits for a pair column)
    gram, G_u            B_u' B_u, the columns whose owner lies inside u
    rss_u, tss           residual and total sums of squares of the fit of Y on B_u
    adj_u                1 - (rss_u / (n - p_u)) / (tss / (n - 1)), adjusted R^2, p_u = |B_u| + 1
    resid, r             Y - fit on B_u: what the regression of Y on A_u missed
    nb(i)                the K_NEIGHBOURS nearest subjects to subject i in A_u (ranks; exact
                         match on the categorical part)
    corr_u               mean_i r_i mean_{j in nb(i)} r_j: Var(E[r | A_u]) (Broto, Bachoc &
                         Depecker 2020: products of neighbours' outputs)
    fix_u                sigma_u^2 mean_i mean_{j in nb(i)} H_ij, H the hat matrix of the fit: the
                         noise the fit shares between neighbours, taken back
    score, S(u)          adj_u + (corr_u + fix_u) / Var(Y)
    phi_j                the Shapley effect of A_j; `weights` (d, 2^d) with phi = weights @ S

The estimator of Var(E[Y | A_u]) (`method="splines+neighbours"`, the default) has three steps:

1. Regression. Y is fitted by least squares on an additive model in A_u: per numeric feature a
   restricted cubic spline (4 knots at the 5/35/65/95% quantiles: a line and 2 cubic terms,
   linear beyond the outer knots; Harrell 2015, section 2.4.5), per categorical feature one
   column per level but one; plus, for each pair of numeric features in u, the product of their
   linear terms. Its explained share is biased up by the p_u - 1 columns it fits to noise;
   adjusted R^2 takes that back (for a categorical feature alone it is the omega^2-type
   correction of `engine.scores.tvd`). Every subset's fit uses the Gram matrix of all columns, so all
   2^d fits cost one n x P^2 product and 2^d small solves.
2. What the regression missed (steep thresholds, interactions beyond a product of lines): the
   residuals r of that fit still hold E[r | A_u], and the product of a subject's residual and
   its neighbours' mean residual estimates E[E[r | A_u]^2] with a bias of
   -E[(h(a) - h(a'))^2] / 2 for h = E[r | A_u] and a' a neighbour, small because h is flat
   where the regression fitted well (this is why the neighbours work on residuals, not on Y).
   The fit also shares noise between neighbours, E[r_i r_j] = -sigma^2 H_ij; fix_u adds it back
   with H_ij from the Gram matrix (1/n + b_i' G_u^-1 mean_j b_j), about sigma^2 p_u / n.
   With n > MAX_QUERIES, a seeded sample of MAX_QUERIES subjects asks for neighbours (among all
   n): the cost of 2^d neighbour searches, not their accuracy, limits large n.
3. Shapley effects, added and joint scores are sums of the S(u), computed once per subset.

Chosen by measurement (`benchmarks/validate_joint.py`, results in
`benchmarks/results/joint.json`; the reported numbers against truths in closed form or by
double-loop Monte Carlo, X ~ N(0, Sigma) correlated). Largest |bias| over the
1 + 3d reported numbers (S(all); first-order, added, Shapley per feature) / RMSE, 40 data sets
(10 for d = 9), n = 400 and 2,000:

    case (Y)                        n      splines+neighbours  splines (step 1)  neighbours (Broto)
    linear, d = 4                   400    0.016 / 0.030       0.011 / 0.024     0.078 / 0.043
                                    2000   0.005 / 0.014       0.002 / 0.011     0.038 / 0.021
    linear, d = 9                   400    0.043 / 0.025       0.040 / 0.022     0.122 / 0.037
                                    2000   0.008 / 0.010       0.006 / 0.008     0.103 / 0.025
    sigmoid(2 X1 - X3 + 1.5 Z)      2000   0.007 / 0.015       0.007 / 0.011     0.029 / 0.019
    threshold + sine + product      2000   0.009 / 0.017       0.011 / 0.015     0.041 / 0.023
    sigmoid(5 X1 + 3.5 X3 + 2 Z)    400    0.027 / 0.032       0.067 / 0.039     0.045 / 0.034
                                    2000   0.009 / 0.014       0.064 / 0.030     0.018 / 0.015

Neighbours alone are biased wherever a set has several features (the nearest of 2,000 subjects in
9 dimensions is far: up to 0.12 low). The regression alone is the most precise where the truth
is additive with products of lines (RMSE a fifth lower), but a steep classifier of a combination
leaves it 0.067 and 0.064 low at n = 400 and 2,000: a bias that does not shrink with n and that
no interval shows. Step 2 removes it (0.009 at n = 2,000) for about a third more RMSE where the
regression alone was right, and about 100 times the time (the neighbour searches: 2.4 s against
0.02 s for 9 features, 2,000 subjects, no bootstrap), so splines+neighbours is the default.
The 95% intervals of the default covered the truth in 0.92-0.99 of 100 data sets per case, n
and kind of number (linear d = 3 and 4, the sigmoid, an additive model of independent
features; n = 400 and 2,000), except S(all) of the additive model with sin(2 X2) at n = 2,000
(0.89): step 2's neighbour bias in 3 dimensions, about 0.01, is half its interval's width.

Intervals: a pair bootstrap over subjects. Each draw gives every subject a multinomial count;
the counts weight one product (draws x n) @ (n x P(P+1)/2 column products), from which every
subset's fit is solved again (batched by size). The neighbours and residuals of step 2 are kept
(a resampled subject would be its own neighbour), and a pair (i, j) of neighbours weighs
c_i + c_j - 1 in a draw, the first-order part of c_i c_j: both ends of a pair move it, so two
mutual neighbours stay one term. Measured on linear d3, n = 1,000, 100 data sets (95%
intervals of joint / first-order / added / Shapley): weights c_i alone covered 0.93 / 0.88 /
0.91 / 0.90 (mutual pairs counted as independent), c_i c_j 0.97 / 0.97 / 0.99 / 0.97 (its
squared counts triple a pure-noise product's variance) at twice the time, c_i + c_j - 1
0.94 / 0.94 / 0.97 / 0.94. The draw's adjusted R^2 estimates the plug-in R^2 of the original
data (the bootstrap world's truth), so each draw is moved by adj_u - R^2_u (as
`engine.scores.tvd` moves its draws). All joint, added and Shapley values of a draw come from
the same draw's S(u), so their intervals are percentile intervals of one set of replicates.

Clipping: the point estimate and every draw get the same treatment. S(u) and added scores are
clipped to [0, 1]. Shapley effects are clipped at 0 and the positive ones scaled so that they
sum to S(all) (clipped to [0, 1]): phi_j <- max(phi_j, 0) S(all) / sum_k max(phi_k, 0). The sum
of the raw phi is S(all), so the scale is at most 1: negatives (noise about a zero effect) are
taken from the positive shares in proportion.

Categorical features: one regression column per level but one (exact group means, no
smoothing); in step 2, neighbours must match exactly on the categorical part (its codes enter
the neighbour search `CATEGORY_GAP` apart, further than any two subjects on the rank-scaled
numeric part; where the categorical part alone is the set, a subject's neighbours are the next
members of its cell in a seeded order). A subject whose cell has no other member adds nothing
to corr_u. Pair columns are numeric x numeric only: an interaction of a category with a numeric
feature is left to step 2. A column holding numbers and labels together must be declared
categorical (then each distinct value is a level); otherwise it raises, as in `engine.scores.tvd`.

Limits (data problems return a status, never a silent number):
* a feature with one value explains nothing (exactly: E[Y | A_u, c] = E[Y | A_u]); it is left
  out of every set and its own row says "single_value";
* the all-feature regression needs ROWS_PER_COLUMN subjects per column: pair columns are
  dropped first ("no pairs" in `method`), then the spline curves ("lines only": a line per
  numeric feature, the neighbour step then carries the curvature), and with fewer than
  ROWS_PER_COLUMN (1 + lines and level columns) subjects the status is "too_many_features";
* all 2^d subsets for d <= MAX_EXACT (1,024 subsets); beyond it Shapley effects come from
  `n_perm` random orders of the features (every prefix of each order is scored). Each order's
  added shares sum to S(all), so the sum stays exact; its interval resamples the orders within
  each bootstrap draw (permutation and subject noise together);
* each categorical level needs MIN_GROUP subjects, and n at least MIN_SAMPLES (`engine.scores.tvd`).

Cost (`benchmarks/bench_joint.py`, 2 shared cores, 9 features with one categorical, all 512
subsets, 200 draws): 1.5 s for 400 subjects, 16 s for 20,000 (of which the 511 neighbour
searches take about 10 s; step 1 alone 2 s). The time doubles with each feature (2,000
subjects: 0.8 s for d = 7, 3.5 s for d = 9, 8 s for d = 10), a little more than doubles as the
larger sets' searches slow down.

`method="splines"` (step 1 alone) and `method="neighbours"` (step 2 on Y - mean(Y), i.e. the
given-data estimator of Broto et al.) are kept for that comparison.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import sparse, stats
from scipy.spatial import cKDTree

try:  # installed with scikit-learn (nilearn's dependency); without it the neighbour step only runs slower
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover
    threadpool_limits = None

from engine.options import SCORE
from engine.scores.tvd import (
    CONSTANT_MESSAGE,
    MIN_GROUP,
    MIN_SAMPLES,
    non_finite_message,
    output_columns,
    percentile_ci,
)

METHODS = ("splines+neighbours", "splines", "neighbours")
KNOTS = (0.05, 0.35, 0.65, 0.95)  # quantiles of the restricted cubic spline's knots (Harrell's 4)
K_NEIGHBOURS = 4  # neighbours whose mean residual multiplies a subject's (1 was noisier, measured)
MAX_QUERIES = 5_000  # subjects that look for neighbours; more cost time, not accuracy (module docstring)
ROWS_PER_COLUMN = 5  # subjects per regression column of the all-feature fit
MAX_EXACT = 10  # all 2^d subsets up to d = 10; sampled orders beyond
N_PERM = 128  # random orders of the features when d > MAX_EXACT
RIDGE = 1e-9  # times n on the Gram diagonal: a draw that loses a rare level stays solvable
CATEGORY_GAP = 1e3  # distance between categories in the neighbour search (ranks lie in [0, 1])
SOLVE_DOUBLES = 2**23  # doubles per batched solve (64 MiB): bootstrap draws are solved in chunks
SINGLE_FEATURE_MESSAGE = (
    "The feature takes a single value, so it explains nothing; it was left out of the joint score and the "
    "Shapley effects. Choose a feature that varies."
)


@dataclass(frozen=True)
class JointResult:
    """S(A_set) for one output; `score` and the CI are NaN unless status is "ok"."""

    score: float  # Var(E[Y | A_set]) / Var(Y), clipped to [0, 1]
    ci_low: float  # percentile-bootstrap interval, clipped to [0, 1] (NaN if n_boot=0)
    ci_high: float
    n: int  # subjects used
    status: str  # "ok", "constant_output", "single_value", "too_few_samples", "too_many_features", "non_finite"
    message: str  # empty when ok and nothing was left out; otherwise the problem and the fix
    features: tuple[str, ...] = ()  # the features scored together (single-valued ones left out)
    n_params: int = 0  # regression columns of the all-feature fit, intercept included
    score_unclipped: float = np.nan
    ci_level: float = 0.95
    method: str = ""  # METHODS entry, ", no pairs" when pair columns did not fit at this n

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True)
class FeatureEffect:
    """One feature's first-order, added and Shapley scores for one output, each with its CI."""

    feature: str
    score: float  # first-order S(A_j) = S({j})
    ci_low: float
    ci_high: float
    added: float  # S(all) - S(all but j), clipped to [0, 1]
    added_ci_low: float
    added_ci_high: float
    shapley: float  # phi_j, >= 0; the phi of one result sum to joint.score
    shapley_ci_low: float
    shapley_ci_high: float
    status: str  # as JointResult.status; "single_value" for a feature left out
    message: str

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True)
class ShapleyResult:
    """The joint score of all features and each feature's effects, for one output."""

    joint: JointResult  # S(all)
    effects: tuple[FeatureEffect, ...]  # one per feature, in the order given
    exact: bool  # all 2^d subsets (True) or N random orders (False)
    n_subsets: int  # subsets scored (2^d when exact)
    n_perm: int = 0  # random orders when not exact

    @property
    def ok(self) -> bool:
        return self.joint.ok

    def effect(self, feature: str) -> FeatureEffect:
        for e in self.effects:
            if e.feature == feature:
                return e
        raise KeyError(f"no feature {feature!r}; the features are {[e.feature for e in self.effects]}")


@dataclass(frozen=True)
class _Design:
    """Validated features ready for scoring: the regression columns and the neighbour coordinates."""

    names: tuple[str, ...]  # the d features that vary, bit j = names[j]
    basis: np.ndarray  # (n, P) centred, unit-variance columns
    owner: np.ndarray  # (P,) int64 mask of the feature(s) each column belongs to
    ranks: np.ndarray  # (n, d) rank / n of numeric features (unused columns for categorical ones)
    codes: np.ndarray  # (n, d) int64 level codes of categorical features (0 for numeric ones)
    n_levels: np.ndarray  # (d,) levels of each categorical feature (1 for numeric ones)
    categorical: np.ndarray  # (d,) bool
    pairs: bool  # pair columns included
    curves: bool = True  # spline curve columns included (else a line per numeric feature: too few subjects)


# ---- the regression columns ----------------------------------------------------------------


def _standardise(cols: np.ndarray) -> np.ndarray:
    """Centre and scale the columns of (n, c) to unit variance; constant columns are dropped."""
    cols = cols - cols.mean(0)
    sd = cols.std(0)
    keep = sd > 1e-12 * (1 + np.abs(cols).max(0))
    return cols[:, keep] / sd[keep]


def _spline_columns(x: np.ndarray) -> np.ndarray:
    """Restricted cubic spline basis of x at the KNOTS quantiles: (n, c), a line first.

    With t_1 < ... < t_K: x and, for k = 1..K-2,
    (x - t_k)+^3 - (x - t_{K-1})+^3 (t_K - t_k) / (t_K - t_{K-1}) + (x - t_K)+^3 (t_{K-1} - t_k) / (t_K - t_{K-1}),
    linear beyond t_1 and t_K (Harrell 2015, eq. 2.25). Fewer than 3 distinct knots: the line only.
    """
    x = (x - x.mean()) / x.std()
    t = np.unique(np.quantile(x, KNOTS))
    cols = [x]
    if t.size >= 3:
        last, before = t[-1], t[-2]
        for tk in t[:-2]:
            term = (
                np.maximum(x - tk, 0) ** 3
                - np.maximum(x - before, 0) ** 3 * (last - tk) / (last - before)
                + np.maximum(x - last, 0) ** 3 * (before - tk) / (last - before)
            )
            cols.append(term / (last - t[0]) ** 2)
    return _standardise(np.stack(cols, axis=1))


def _design(columns: dict[str, np.ndarray], categorical: set[str], n: int, with_basis: bool):
    """A `_Design`, or (status, message) when the regression needs more subjects than there are."""
    names = tuple(columns)
    d = len(names)
    blocks, owners, ranks, codes = [], [], np.zeros((n, d)), np.zeros((n, d), dtype=np.int64)
    n_levels, is_cat = np.ones(d, dtype=np.int64), np.zeros(d, dtype=bool)
    for j, name in enumerate(names):
        a = columns[name]
        if name in categorical:
            code, levels = pd.factorize(pd.Series(a), sort=False)
            codes[:, j], n_levels[j], is_cat[j] = code, len(levels), True
            block = _standardise(np.eye(len(levels))[code][:, 1:]) if with_basis else np.zeros((n, 0))
        else:
            ranks[:, j] = stats.rankdata(a) / n
            block = _spline_columns(a.astype(float)) if with_basis else np.zeros((n, 0))
        blocks.append(block)
        owners.append(np.full(block.shape[1], 1 << j, dtype=np.int64))
    columns_without_pairs = 1 + sum(b.shape[1] for b in blocks)
    curves = True
    if with_basis and n < ROWS_PER_COLUMN * columns_without_pairs:  # the curves go before the features do
        blocks = [b if is_cat[j] else b[:, :1] for j, b in enumerate(blocks)]
        owners = [o[: blocks[j].shape[1]] for j, o in enumerate(owners)]
        columns_without_pairs, curves = 1 + sum(b.shape[1] for b in blocks), False
    pair_blocks, pair_owners = [], []
    numeric = [j for j in range(d) if not is_cat[j] and blocks[j].shape[1] > 0]
    for i_, i in enumerate(numeric):
        for j in numeric[i_ + 1 :]:
            pair_blocks.append(blocks[i][:, 0] * blocks[j][:, 0])
            pair_owners.append((1 << i) | (1 << j))
    pairs = with_basis and len(pair_blocks) > 0 and n >= ROWS_PER_COLUMN * (columns_without_pairs + len(pair_blocks))
    if with_basis and n < ROWS_PER_COLUMN * columns_without_pairs:
        msg = (
            f"{d} features need {columns_without_pairs} regression columns (a line per numeric feature, a column "
            f"per level but one per categorical feature); {n} subjects support at most "
            f"{n // ROWS_PER_COLUMN} ({ROWS_PER_COLUMN} subjects a column). Score fewer features, merge rare "
            f"levels or use more subjects."
        )
        return "too_many_features", msg
    if pairs:
        pair_cols = _standardise(np.stack(pair_blocks, axis=1))
        if pair_cols.shape[1] == len(pair_blocks):  # (a constant product would shift the owners)
            blocks.append(pair_cols)
            owners.append(np.array(pair_owners, dtype=np.int64))
        else:
            pairs = False
    basis = np.concatenate(blocks, axis=1) if blocks else np.zeros((n, 0))
    owner = np.concatenate(owners) if owners else np.zeros(0, dtype=np.int64)
    return _Design(names, basis, owner, ranks, codes, n_levels, is_cat, pairs, curves)


# ---- neighbours ------------------------------------------------------------------------------


def _neighbours(design: _Design, mask: int, query: np.ndarray, rng: np.random.Generator):
    """The K_NEIGHBOURS nearest subjects to each query subject in the features of `mask`.

    Returns nb (Q, K) row indices and valid (Q, K) bool: a neighbour is valid when it shares the
    query's categorical cell (and is not the query itself). Numeric features enter as rank / n,
    categorical ones as one cell code CATEGORY_GAP apart.
    """
    d, n, k = len(design.names), design.ranks.shape[0], K_NEIGHBOURS
    in_set = np.array([(mask >> j) & 1 for j in range(d)], dtype=bool)
    numeric, cats = in_set & ~design.categorical, in_set & design.categorical
    cell = np.zeros(n, dtype=np.int64)
    for j in np.flatnonzero(cats):  # mixed-radix code of the categorical part
        cell = cell * design.n_levels[j] + design.codes[:, j]
    if not numeric.any():  # 1. categorical part alone: the next members of the cell in a seeded order
        order = np.lexsort((rng.permutation(n), cell))
        starts = np.searchsorted(cell[order], cell[order], side="left")
        sizes = np.searchsorted(cell[order], cell[order], side="right") - starts
        position = np.empty(n, dtype=np.int64)
        position[order] = np.arange(n)
        p, step = position[query][:, None], np.arange(1, k + 1)[None, :]
        s0, sz = starts[p], sizes[p]
        nb = order[s0 + (p - s0 + step) % sz]
        return nb, np.broadcast_to(step < sz, nb.shape)
    # 2. numeric part: a KD-tree on ranks, the cell as one more coordinate far apart
    coords = design.ranks[:, numeric]
    if cats.any():
        coords = np.column_stack([coords, CATEGORY_GAP * cell])
    dist, idx = cKDTree(coords).query(coords[query], k=k + 1, workers=-1)
    is_self = idx == query[:, None]
    keep = ~is_self
    keep[~is_self.any(axis=1), -1] = False  # ties can hide the query itself: drop the farthest instead
    nb, dist = idx[keep].reshape(-1, k), dist[keep].reshape(-1, k)
    return nb, dist < CATEGORY_GAP / 2


# ---- subset scores and their bootstrap -------------------------------------------------------


def _columns(owner: np.ndarray, mask: int) -> np.ndarray:
    """Regression columns whose features all lie in `mask`."""
    return np.flatnonzero((owner & ~np.int64(mask)) == 0)


def _subset_scores(design: _Design, y: np.ndarray, masks: np.ndarray, method: str, n_boot: int, rng):
    """S(u) for each mask (M,) and each output of y (n, J): estimates (M, J) and draws (B, M, J).

    The draws are already moved by adj_u - R^2_u (module docstring, Intervals). The empty mask
    scores 0 exactly.
    """
    n, n_out = y.shape
    basis = design.basis
    p_all = basis.shape[1]
    yc = y - y.mean(0)
    tss = (yc**2).sum(0)  # (J,)
    var_y = tss / (n - 1)
    # 1. regression on the original data: every subset's fit from the one Gram matrix
    gram = basis.T @ basis + RIDGE * n * np.eye(p_all)
    cross = basis.T @ yc  # (P, J)
    cols = [_columns(design.owner, int(m)) for m in masks]
    sizes = np.array([c.size for c in cols])
    rss, coef = np.empty((masks.size, n_out)), [np.zeros((0, n_out))] * masks.size
    for p in np.unique(sizes):
        group = np.flatnonzero(sizes == p)
        if p == 0:
            rss[group] = tss
            continue
        idx = np.stack([cols[i] for i in group])  # (m, p)
        beta = np.linalg.solve(gram[idx[:, :, None], idx[:, None, :]], cross[idx])  # (m, p, J)
        rss[group] = tss - np.einsum("mpj,mpj->mj", cross[idx], beta)
        for i, b in zip(group, beta, strict=True):
            coef[i] = b
    df = (n - sizes - 1)[:, None]  # (M, 1)
    adj = 1 - (rss / df) / var_y  # adjusted R^2, (M, J)
    shift = adj - (1 - rss / tss)  # adj_u - R^2_u: the draws' truth is the plug-in R^2
    # 2. neighbours on the residuals: corr_u + fix_u (not for method="splines", nor for a categorical
    #    feature alone, whose level means the regression fits exactly)
    use_nb = method != "splines"
    query = np.sort(rng.permutation(n)[:MAX_QUERIES]) if n > MAX_QUERIES else np.arange(n)
    draws_of = [np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(n_boot)]
    counts = np.array(draws_of, dtype=float).reshape(n_boot, n)  # (B, n): each subject's count in each draw
    corr, fix = np.zeros((masks.size, n_out)), np.zeros((masks.size, n_out))
    corr_b = np.zeros((n_boot, masks.size, n_out))
    saturated = {1 << j for j in np.flatnonzero(design.categorical)}
    basis_q = basis[query]
    # one BLAS thread for the many small products here: with two, they wait on each other and on the
    # KD-tree's threads (measured: 9 features, 20,000 subjects, 36 s -> 16 s on 2 shared cores)
    single_blas = threadpool_limits(1, "blas") if threadpool_limits else contextlib.nullcontext()
    with single_blas:
        for i, m in enumerate(masks if use_nb else ()):
            if m == 0 or int(m) in saturated:
                continue
            nb, valid = _neighbours(design, int(m), query, rng)
            c, full_coef = cols[i], np.zeros((p_all, n_out))
            full_coef[c] = coef[i]
            resid = yc - basis @ full_coef  # (n, J)
            pair_w = valid / np.maximum(valid.sum(1), 1)[:, None]  # (Q, K): mean over a subject's valid neighbours
            pairs = pair_w[:, :, None] * resid[query][:, None, :] * resid[nb]  # (Q, K, J): r_i r_j / |nb(i)|
            n_has = pair_w.sum()  # query subjects with a neighbour
            corr[i] = pairs.sum((0, 1)) / max(n_has, 1)
            # noise the fit shares between neighbours: sigma^2 (1/n + mean_i b_i' G_u^-1 mean_j b_j)
            hat = 1 / n
            if c.size and n_has:
                mean_nb = sparse.csr_matrix(
                    (pair_w.ravel(), nb.ravel(), np.arange(0, nb.size + 1, nb.shape[1])), (query.size, n)
                )
                b_nb = (mean_nb @ basis)[:, c]  # (Q, p): mean_j b_j over each subject's neighbours
                shared = b_nb.T @ basis_q[:, c] / n_has  # (p, p)
                hat += np.trace(np.linalg.solve(gram[np.ix_(c, c)], shared))
            fix[i] = rss[i] / df[i] * hat
            if n_boot:  # pair (i, j) weighs c_i + c_j - 1 in a draw (module docstring, Intervals)
                ends = np.concatenate([np.repeat(query, K_NEIGHBOURS), nb.ravel()])
                terms = np.column_stack([pairs.reshape(-1, n_out), pair_w.reshape(-1)])  # (Q K, J + 1)
                by_subject = np.stack([np.bincount(ends, np.tile(t, 2), minlength=n) for t in terms.T], axis=1)
                sums = counts @ by_subject - terms.sum(0)  # (B, J + 1): sums of r_i r_j and of the weights
                corr_b[:, i] = sums[:, :n_out] / np.maximum(sums[:, n_out:], 1e-12)
    estimate = np.where((masks == 0)[:, None], 0.0, adj + (corr + fix) / var_y)
    if n_boot == 0:
        return estimate, np.zeros((0, masks.size, n_out))
    # 3. bootstrap: multinomial counts weight sums of column products; every fit is solved again
    upper = np.triu_indices(p_all)
    s_b, s_y, s_yy = counts @ basis, counts @ yc, counts @ yc**2  # (B, P), (B, J), (B, J)
    s_bb, s_by = np.zeros((n_boot, upper[0].size)), np.zeros((n_boot, p_all * n_out))
    rows = max(1, 2**22 // max(upper[0].size + p_all * n_out, 1))  # 32 MiB of products at a time
    for start in range(0, n, rows):
        blk, yb, c = basis[start : start + rows], yc[start : start + rows], counts[:, start : start + rows]
        s_bb += c @ (blk[:, upper[0]] * blk[:, upper[1]])
        s_by += c @ (blk[:, :, None] * yb[:, None, :]).reshape(len(blk), -1)
    gram_b = np.zeros((n_boot, p_all, p_all))
    gram_b[:, upper[0], upper[1]] = s_bb
    gram_b[:, upper[1], upper[0]] = s_bb
    gram_b += RIDGE * n * np.eye(p_all) - s_b[:, :, None] * s_b[:, None, :] / n  # centred in the draw
    cross_b = s_by.reshape(n_boot, p_all, n_out) - s_b[:, :, None] * s_y[:, None, :] / n
    tss_b = s_yy - s_y**2 / n  # (B, J)
    fitted = np.zeros((n_boot, masks.size, n_out))
    for p in np.unique(sizes[sizes > 0]):
        group = np.flatnonzero(sizes == p)
        idx = np.stack([cols[i] for i in group])
        chunk = max(1, SOLVE_DOUBLES // (group.size * p * (p + n_out)))
        for b0 in range(0, n_boot, chunk):
            g = gram_b[b0 : b0 + chunk][:, idx[:, :, None], idx[:, None, :]]  # (b, m, p, p)
            rhs = cross_b[b0 : b0 + chunk][:, idx]  # (b, m, p, J)
            fitted[b0 : b0 + chunk, group] = np.einsum("bmpj,bmpj->bmj", rhs, np.linalg.solve(g, rhs))
    var_b = (tss_b / (n - 1))[:, None]  # (B, 1, J)
    with np.errstate(invalid="ignore", divide="ignore"):  # a draw of identical outputs gives NaN, dropped
        draws = 1 - ((tss_b[:, None] - fitted) / df) / var_b
        draws += (corr_b + fix) / var_b  # the same neighbour products, re-weighted by the draw; fix_u kept
    draws += shift
    draws[:, masks == 0] = 0.0
    return estimate, draws


# ---- Shapley weights and clipping ------------------------------------------------------------


def _shapley_weights(d: int) -> np.ndarray:
    """(d, 2^d) with phi = weights @ S over masks 0..2^d - 1.

    weights[j, u] = w(|u| - 1) if j is in u, else -w(|u|), with w(s) = s! (d - s - 1)! / d!;
    each column but u = all and u = {} sums to 0 over j, so sum_j phi_j = S(all) - S({}).
    """
    masks = np.arange(2**d)
    size = np.array([bin(m).count("1") for m in masks])
    w = np.array([math.factorial(s) * math.factorial(d - s - 1) / math.factorial(d) for s in range(d)] + [0.0])
    has = (masks[None, :] >> np.arange(d)[:, None]) & 1  # (d, 2^d)
    return np.where(has == 1, w[np.maximum(size - 1, 0)][None, :], -w[size][None, :])


def _clip_shares(phi: np.ndarray, total: np.ndarray) -> np.ndarray:
    """Shapley effects (..., d) clipped at 0 and scaled to sum to `total` (...) clipped to [0, 1]."""
    positive = np.maximum(phi, 0)
    mass = positive.sum(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = np.where(mass > 0, np.clip(total, 0, 1)[..., None] / mass, 0.0)
    return positive * scale


# ---- validation ---------------------------------------------------------------------------


def _prepare(outputs, features, categorical, method: str):
    """Validated (y2 (n, J), design or None, per-output failures, left-out features, fail (status, msg)).

    Programming errors raise; data problems come back as a status for all outputs (fail) or for
    one output (failures[j]).
    """
    y = np.asarray(outputs)
    if y.ndim not in (1, 2):
        raise ValueError(f"outputs must be (n,) or (n, K), got shape {y.shape}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not isinstance(features, dict) or not features:
        raise ValueError("features must be a non-empty dict of name -> (n,) values")
    categorical = set(categorical)
    if unknown := categorical - set(features):
        raise ValueError(f"categorical names {sorted(unknown)} are not among the features")
    columns = {str(k): np.asarray(v) for k, v in features.items()}
    categorical = {str(k) for k in categorical}
    n = len(y)
    for name, a in columns.items():
        if a.ndim != 1 or len(a) != n:
            raise ValueError(f"feature {name!r} must be (n,) = ({n},), got shape {a.shape}")
        if name not in categorical and a.dtype.kind not in "biuf":
            raise ValueError(f"feature {name!r} is not numeric; pass it in categorical=(...) to use its labels")
    y2 = (y[:, None] if y.ndim == 1 else y).astype(float)
    failures: list[tuple[str, str] | None] = [None] * y2.shape[1]
    for name, a in columns.items():
        if (msg := non_finite_message(a, f"Feature {name!r}")) is not None:
            return y2, None, failures, (), ("non_finite", msg)
    for j in range(y2.shape[1]):
        what = "The output" + (f" column {j}" if y.ndim == 2 else "")
        if (msg := non_finite_message(y2[:, j], what)) is not None:
            failures[j] = ("non_finite", msg)
        elif np.ptp(y2[:, j]) == 0:
            failures[j] = ("constant_output", CONSTANT_MESSAGE)
    if n < MIN_SAMPLES:
        msg = f"Only {n} samples; the scores need at least {MIN_SAMPLES}. Score on more images."
        return y2, None, failures, (), ("too_few_samples", msg)
    left_out = tuple(name for name, a in columns.items() if pd.Series(a).nunique() < 2)
    for name in categorical - set(left_out):
        levels = pd.Series(columns[name]).value_counts()
        if levels.min() < MIN_GROUP:
            msg = (
                f"Feature {name!r} has level {levels.idxmin()!r} with {levels.min()} sample(s); each level needs at "
                f"least {MIN_GROUP}. Merge or drop rare levels."
            )
            return y2, None, failures, left_out, ("too_few_samples", msg)
    kept = {name: a for name, a in columns.items() if name not in left_out}
    if not kept:
        msg = "Every feature takes a single value, so together they explain nothing. Choose features that vary."
        return y2, None, failures, left_out, ("single_value", msg)
    design = _design(kept, categorical, n, with_basis=method != "neighbours")
    if isinstance(design, tuple):
        return y2, None, failures, left_out, design
    return y2, design, failures, left_out, None


def _left_out_message(left_out: tuple[str, ...]) -> str:
    if not left_out:
        return ""
    return f"Left out {', '.join(map(repr, left_out))}: a feature with a single value explains nothing."


# ---- public API ----------------------------------------------------------------------------


def joint_score(
    outputs,
    features: dict[str, np.ndarray],
    *,
    categorical: tuple[str, ...] = (),
    n_boot: int = SCORE.n_boot,
    seed: int = 0,
    ci: float = 0.95,
    method: str = "splines+neighbours",
) -> JointResult | list[JointResult]:
    """S(A_set) = Var(E[Y | A_set]) / Var(Y) of all `features` together, with a bootstrap CI.

    Args:
        outputs: (n,) or (n, K) model outputs Y; (n, K) gives a list of K results.
        features: name -> (n,) values: the set A_set.
        categorical: names of the features to treat as labels (exact levels).
        n_boot: bootstrap draws over subjects for the CI (0: no CI).
        seed: seed of the generator (neighbour queries, tie order, bootstrap).
        ci: confidence level of the interval.
        method: estimator of Var(E[Y | A_u]) (module docstring): "splines+neighbours" (default),
            "splines" or "neighbours".
    """
    y2, design, failures, left_out, fail = _prepare(outputs, features, categorical, method)
    single = np.asarray(outputs).ndim == 1
    n, n_out = y2.shape
    if fail is not None:
        results = [JointResult(np.nan, np.nan, np.nan, n, *(f or fail), ci_level=ci) for f in failures]
        return results[0] if single else results
    full = (1 << len(design.names)) - 1
    masks = np.array([0, full], dtype=np.int64)
    results = _joint_results(design, y2, failures, left_out, masks, method, n_boot, seed, ci, index=1)
    return results[0] if single else results


def _method_label(design: _Design, method: str) -> str:
    if method == "neighbours":
        return method
    return method + ("" if design.curves else ", lines only") + ("" if design.pairs else ", no pairs")


def _joint_results(design, y2, failures, left_out, masks, method, n_boot, seed, ci, index):
    """JointResult per output from the scores of `masks`, S(all) at masks[index]."""
    n = len(y2)
    results = [None if f is None else JointResult(np.nan, np.nan, np.nan, n, *f, ci_level=ci) for f in failures]
    todo = [j for j, f in enumerate(failures) if f is None]
    if not todo:
        return results
    estimate, draws = _subset_scores(design, y2[:, todo], masks, method, n_boot, np.random.default_rng(seed))
    p = design.basis.shape[1] + 1 if method != "neighbours" else 1
    for i, j in enumerate(todo):
        raw = float(estimate[index, i])
        bounds = percentile_ci(draws[:, index, i], 0.0, ci) if n_boot else (np.nan, np.nan)
        results[j] = JointResult(
            float(np.clip(raw, 0, 1)),
            *bounds,
            n,
            "ok",
            _left_out_message(left_out),
            design.names,
            p,
            raw,
            ci,
            _method_label(design, method),
        )
    return results


def _masks_for(d: int, max_exact: int, n_perm: int, rng):
    """Masks to score, and how to read Shapley effects from them.

    Exact: all 2^d masks (mask m at index m). Sampled: prefixes of n_perm random orders, plus the
    singletons and all-but-one sets; `prefix_index` (n_perm, d + 1) indexes S of each prefix and
    `orders` (n_perm, d) the feature added at each step.
    """
    full = (1 << d) - 1
    if d <= max_exact:
        return np.arange(2**d, dtype=np.int64), None, None
    orders = np.argsort(rng.random((n_perm, d)), axis=1)
    bits = np.left_shift(np.int64(1), orders.astype(np.int64))
    prefixes = np.concatenate([np.zeros((n_perm, 1), dtype=np.int64), np.cumsum(bits, axis=1)], axis=1)
    singles = np.left_shift(np.int64(1), np.arange(d, dtype=np.int64))
    extra = np.concatenate([[0, full], singles, full - singles])
    masks, inverse = np.unique(np.concatenate([prefixes.ravel(), extra]), return_inverse=True)
    return masks, inverse[: prefixes.size].reshape(prefixes.shape), orders


@dataclass
class SubsetDraws:
    """S(u) of every subset that the effects are read from, per output: the estimate and the bootstrap draws
    (`subset_draws`), for `effects_from_draws`. `values` of several SubsetDraws on the same masks can be
    combined before the effects are read (`engine.scores.debias.debiased_effects`)."""

    names: tuple[str, ...]  # the features asked, in order
    n: int  # subjects
    n_boot: int
    ci: float
    method: str
    failures: list  # per output: None, or (status, message) of an output that cannot be scored
    left_out: tuple[str, ...]  # single-valued features
    fail: tuple[str, str] | None = None  # (status, message) of the whole set; then nothing else is set
    design: _Design | None = None
    masks: np.ndarray | None = None  # (M,) the subsets scored
    prefix_index: np.ndarray | None = None  # (n_perm, d + 1) when sampled (`_masks_for`), else None
    orders: np.ndarray | None = None
    values: np.ndarray | None = None  # (1 + B, M, J') S(u) of the outputs scored: estimate, then draws
    rng: np.random.Generator | None = None  # the generator after the draws (the orders' resampling uses it)

    @property
    def todo(self) -> list[int]:
        """The outputs scored (the others failed: `failures`)."""
        return [j for j, f in enumerate(self.failures) if f is None]

    @property
    def scored(self) -> bool:
        return self.fail is None and bool(self.todo)


def subset_draws(
    outputs,
    features: dict[str, np.ndarray],
    *,
    categorical: tuple[str, ...] = (),
    n_boot: int = SCORE.n_boot,
    seed: int = 0,
    ci: float = 0.95,
    method: str = "splines+neighbours",
    max_exact: int = MAX_EXACT,
    n_perm: int = N_PERM,
    subsets_of: SubsetDraws | None = None,
) -> SubsetDraws:
    """S(u) with its bootstrap draws for every subset `shapley_effects` reads (arguments as there);
    `subsets_of` scores the subsets (and random orders) of another SubsetDraws of the same features."""
    if not 1 <= max_exact <= 20 or n_perm < 2:
        raise ValueError(f"max_exact must lie in [1, 20] and n_perm be >= 2, got {max_exact} and {n_perm}")
    y2, design, failures, left_out, fail = _prepare(outputs, features, categorical, method)
    names = tuple(str(k) for k in features)
    found = SubsetDraws(names, len(y2), n_boot, ci, method, failures, left_out, fail)
    if not found.scored:
        return found
    rng = np.random.default_rng(seed)
    if subsets_of is not None:
        if not subsets_of.scored or subsets_of.design.names != design.names:
            raise ValueError("subsets_of must score the same features")
        masks, prefix_index, orders = subsets_of.masks, subsets_of.prefix_index, subsets_of.orders
    else:
        masks, prefix_index, orders = _masks_for(len(design.names), max_exact, n_perm, rng)
    estimate, draws = _subset_scores(design, y2[:, found.todo], masks, method, n_boot, rng)
    found.design, found.masks, found.prefix_index, found.orders = design, masks, prefix_index, orders
    found.values, found.rng = np.concatenate([estimate[None], draws]), rng
    return found


def effects_from_draws(found: SubsetDraws, values: np.ndarray | None = None) -> list[ShapleyResult]:
    """First-order, added and Shapley scores and the joint score per output (a list over all outputs) from
    the S(u) of `found`, or from `values` (its shape) when given: estimates and percentile intervals of the
    same draws, clipped as the module docstring says."""
    n, ci, n_boot, names, left_out = found.n, found.ci, found.n_boot, found.names, found.left_out

    def failed(status, message):
        joint = JointResult(np.nan, np.nan, np.nan, n, status, message, ci_level=ci)
        effects = tuple(_nan_effect(name, status, message) for name in names)
        return ShapleyResult(joint, effects, True, 0)

    if found.fail is not None:
        return [failed(*(f or found.fail)) for f in found.failures]
    if not found.todo:
        return [failed(*f) for f in found.failures]
    design, masks, prefix_index, orders = found.design, found.masks, found.prefix_index, found.orders
    values = found.values if values is None else values  # (1 + B, M, J)
    d = len(design.names)
    # 1. the values of each S(u) the effects are read from: the estimate first, then the draws
    position = {int(m): i for i, m in enumerate(masks)}
    full = (1 << d) - 1
    s_all = values[:, position[full]]  # (1 + B, J)
    singles = np.stack([values[:, position[1 << j]] for j in range(d)], -1)  # (1 + B, J, d)
    rest = np.stack([values[:, position[full & ~(1 << j)]] for j in range(d)], -1)
    added = np.clip(s_all[..., None] - rest, 0, 1)
    # 2. Shapley: exact weights over all subsets, or the mean added share over sampled orders
    if prefix_index is None:
        phi = np.einsum("bmj,dm->bjd", values, _shapley_weights(d))
        n_perm_used = 0
    else:
        n_perm = len(orders)
        steps = values[:, prefix_index[:, 1:]] - values[:, prefix_index[:, :-1]]  # (1 + B, N, d, J)
        step_of = np.argsort(orders, axis=1)  # (N, d): the step at which each feature is added
        contrib = steps[:, np.arange(n_perm)[:, None], step_of]  # (1 + B, N, d, J), by feature
        weights = np.ones((1, n_perm))  # the estimate uses every order once; each draw resamples them
        if n_boot:
            rng = found.rng
            resampled = np.stack(
                [np.bincount(rng.integers(0, n_perm, n_perm), minlength=n_perm) for _ in range(n_boot)]
            )
            weights = np.concatenate([weights, resampled])
        phi = np.einsum("bn,bndj->bjd", weights, contrib) / n_perm
        n_perm_used = n_perm
    phi = _clip_shares(phi, s_all)
    # 3. one result per output: estimate and percentile intervals of the same draws
    results = [None if f is None else failed(*f) for f in found.failures]
    p = design.basis.shape[1] + 1 if found.method != "neighbours" else 1
    label = _method_label(design, found.method)

    def interval(x):  # x (1 + B,): estimate, then draws
        return percentile_ci(x[1:], 0.0, ci) if n_boot else (np.nan, np.nan)

    for i, j in enumerate(found.todo):
        raw = float(values[0, position[full], i])
        joint = JointResult(
            float(np.clip(raw, 0, 1)),
            *interval(s_all[:, i]),
            n,
            "ok",
            _left_out_message(left_out),
            design.names,
            p,
            raw,
            ci,
            label,
        )
        effects = []
        for name in names:
            if name in left_out:
                effects.append(_nan_effect(name, "single_value", SINGLE_FEATURE_MESSAGE))
                continue
            k = design.names.index(name)
            first, add, share = singles[:, i, k], added[:, i, k], phi[:, i, k]
            effects.append(
                FeatureEffect(
                    name,
                    float(np.clip(first[0], 0, 1)),
                    *interval(first),
                    float(add[0]),
                    *interval(add),
                    float(share[0]),
                    *interval(share),
                    "ok",
                    "",
                )
            )
        results[j] = ShapleyResult(joint, tuple(effects), prefix_index is None, masks.size, n_perm_used)
    return results


def shapley_effects(
    outputs,
    features: dict[str, np.ndarray],
    *,
    categorical: tuple[str, ...] = (),
    n_boot: int = SCORE.n_boot,
    seed: int = 0,
    ci: float = 0.95,
    method: str = "splines+neighbours",
    max_exact: int = MAX_EXACT,
    n_perm: int = N_PERM,
) -> ShapleyResult | list[ShapleyResult]:
    """First-order, added and Shapley scores of each feature, and the joint score of all.

    Args:
        outputs: (n,) or (n, K) model outputs Y; (n, K) gives a list of K results.
        features: name -> (n,) values A_1..A_d.
        categorical: names of the features to treat as labels (exact levels).
        n_boot: bootstrap draws over subjects for the CIs (0: no CI); every score of a draw
            comes from the same resampled subjects.
        seed: seed of the generator (neighbour queries, tie order, orders, bootstrap).
        ci: confidence level of the intervals.
        method: estimator of Var(E[Y | A_u]) (module docstring).
        max_exact: largest d scored over all 2^d subsets; beyond, `n_perm` random orders.
        n_perm: random orders of the features when d > max_exact (Song, Nelson & Staum 2016).

    Shapley effects are >= 0 and sum to `joint.score` exactly (module docstring, Clipping).
    """
    found = subset_draws(
        outputs,
        features,
        categorical=categorical,
        n_boot=n_boot,
        seed=seed,
        ci=ci,
        method=method,
        max_exact=max_exact,
        n_perm=n_perm,
    )
    results = effects_from_draws(found)
    return results[0] if np.asarray(outputs).ndim == 1 else results


def _nan_effect(name: str, status: str, message: str) -> FeatureEffect:
    nan = np.nan
    return FeatureEffect(name, nan, nan, nan, nan, nan, nan, nan, nan, nan, status, message)


def score_table(
    outputs,
    features: dict[str, np.ndarray],
    categorical: tuple[str, ...] = (),
    output_names: list[str] | None = None,
    **kw,
) -> pd.DataFrame:
    """One row per (feature, output): first-order, added and Shapley scores with their CIs.

    Args:
        outputs: (n,) or (n, K) outputs, or a DataFrame whose columns name the outputs.
        features: name -> (n,) feature values.
        categorical: names of the features to treat as labels.
        output_names: K names; default the DataFrame columns, "y" for one output, or "y0".."y{K-1}".
        **kw: passed to `shapley_effects` (n_boot, seed, ci, method, max_exact, n_perm).

    Columns: feature, output, score, ci_low, ci_high, added, added_ci_low, added_ci_high, shapley,
    shapley_ci_low, shapley_ci_high, status, message. `attrs["joint"]` holds the joint score of
    all features, one row per output: output, score, ci_low, ci_high, status, message.
    """
    y2, output_names = output_columns(outputs, output_names)
    results = shapley_effects(y2, features, categorical=categorical, **kw)
    rows, joint_rows = [], []
    for out, r in zip(output_names, results, strict=True):
        joint_rows.append((out, r.joint.score, r.joint.ci_low, r.joint.ci_high, r.joint.status, r.joint.message))
        for e in r.effects:
            rows.append(
                (
                    e.feature,
                    out,
                    e.score,
                    e.ci_low,
                    e.ci_high,
                    e.added,
                    e.added_ci_low,
                    e.added_ci_high,
                    e.shapley,
                    e.shapley_ci_low,
                    e.shapley_ci_high,
                    e.status,
                    e.message,
                )
            )
    columns = [
        "feature",
        "output",
        "score",
        "ci_low",
        "ci_high",
        "added",
        "added_ci_low",
        "added_ci_high",
        "shapley",
        "shapley_ci_low",
        "shapley_ci_high",
        "status",
        "message",
    ]
    table = pd.DataFrame(rows, columns=columns)
    table.attrs["joint"] = pd.DataFrame(
        joint_rows, columns=["output", "score", "ci_low", "ci_high", "status", "message"]
    )
    return table
