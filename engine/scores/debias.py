"""Generator scores debiased by the real subjects: prediction-powered inference for S(A).

A generator's score alone is a model-based estimate: its interval holds the sampling (and, for a
linear-Gaussian generator, the refit) noise, not the generator's bias. With N real subjects at hand the
bias is measured and removed: each real subject gets a *twin*, a generated image conditioned on that
subject's whole recorded feature vector, so the twin's output tracks the subject's own as far as the
recorded features explain it. The prediction-powered estimate (PPI, Angelopoulos et al. 2023; PPI++ with
power tuning, Angelopoulos, Duchi & Zrnic 2023; the prediction-powered bootstrap, Zrnic 2024) is

    S_pp = S_real + lambda * (S_gen - S_twin)

Code name -> symbol:
    y (N,)           f(x_i), the model's outputs on the N real subjects
    twin (N,)        f(x~_i), x~_i ~ p_gen(x | features of subject i)          (the "predictions")
    gen (M,)         f(x~_j), x~_j ~ p_gen(x | f_j), f_j from a pool of feature vectors (the "unlabelled" set)
    a, a_gen         the scored feature A of the real subjects and of the generated ones
    S_real, S_twin, S_gen   S(A) by the data-path estimator (`tvd.explained_variance`) on (y, a), (twin, a),
                     (gen, a_gen); S_twin and S_gen estimate the generator's S, S_real the truth
    lam              lambda in [0, 1]: 0 is the data path, 1 the plain debiased estimate; tuned to
                     minimise Var(S_pp) = Var(S_real) + lam^2 (Var(S_twin) + Var(S_gen)) - 2 lam Cov(S_real, S_twin)
                     (the generated set is drawn independently of the real subjects), so
                     lam* = Cov(S_real, S_twin) / (Var(S_twin) + Var(S_gen))

Steps (`debiased_score`): 1. the three point estimates; 2. B bootstrap replicates that resample the real
subjects together with their twins, and the generated set on its own; 3. lam* from the replicates' variances
and covariance, clipped to [0, 1]; 4. the interval: the percentiles of S_real* + lam (S_gen* - S_twin*)
over the replicates (PPBoot's percentile interval). The gain grows with how much of the output the recorded
features explain (the twins' correlation with the real outputs): with outputs 98% explained, the toy in
issue 32 halved the data path's RMSE. Validity comes from the real subjects: where the generator is wrong,
S_gen - S_twin carries its error and the rectifier takes it out.

When the generator was trained on the same subjects, its twins reproduce them too well and the rectifier
under-corrects: the twins and generated samples of each of K folds then come from a generator trained on
the other folds (`cross_fitted_draws`, cross-fitting as in PPI's cross-prediction).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from engine.errors import EveInputError
from engine.options import SCORE
from engine.scores.tvd import ScoreResult, explained_variance

MIN_REAL = 30  # fewer real subjects than this: no debiased score (its bootstrap would not hold)
DEFAULT_GENERATED = 512  # M, generated subjects (one draw serves every feature and output)
PATHS = ("data", "generator", "debiased")


@dataclass(frozen=True)
class Draws:
    """What the generator drew for one cohort, ready to score any feature and output: the twins' outputs
    (N, K) in the real subjects' order, and M generated subjects' outputs (M, K) with their feature vectors."""

    twin: np.ndarray  # (N, K)
    gen: np.ndarray  # (M, K)
    gen_features: pd.DataFrame  # (M, features): the pool rows each generated subject was conditioned on
    clamped: dict  # feature -> how many real subjects' values were clamped to the generator's range
    pool: str  # where the generated subjects' feature vectors came from, in words
    cross_fitted: int = 0  # K folds when each fold's draws came from a generator that did not see it


@dataclass(frozen=True)
class Debiased:
    """A debiased score and its parts."""

    result: ScoreResult  # S_pp with its PPBoot interval (status and message as tvd's)
    lam: float
    real: float  # S_real
    twin: float  # S_twin
    gen: ScoreResult  # S_gen with the generated set's own bootstrap interval: model-based, not a CI for the truth
    twin_correlation: float  # corr(y, twin): how far the twins track the real outputs


def _point(y: np.ndarray, a: np.ndarray, categorical: bool) -> float:
    r = explained_variance(y, a, categorical=categorical, n_boot=0)
    return r.score_unclipped if r.ok else np.nan


def debiased_score(
    y,
    twin,
    a,
    gen,
    a_gen,
    *,
    categorical: bool = False,
    n_boot: int = SCORE.n_boot,
    seed: int = 0,
    ci: float = 0.95,
    lam: float | None = None,
) -> Debiased:
    """S_pp = S_real + lam (S_gen - S_twin) for one feature and output, with its PPBoot interval.

    Args:
        y, twin: (N,) the real outputs and their twins' outputs, in the same subject order.
        a: (N,) the real subjects' feature values.
        gen, a_gen: (M,) outputs and feature values of the generated subjects.
        categorical: group A on its exact values.
        n_boot: bootstrap replicates (at least 50 for an interval; 0: none).
        lam: fix lambda (1: the plain debiased estimate, 0: the data path); None: power-tuned.
    """
    y, twin, a = np.asarray(y, float), np.asarray(twin, float), np.asarray(a)
    gen, a_gen = np.asarray(gen, float), np.asarray(a_gen)
    if len(y) != len(twin) or len(y) != len(a) or len(gen) != len(a_gen):
        raise ValueError("y, twin and a must share their length, as must gen and a_gen")
    n, m = len(y), len(gen)
    # 1. the three point estimates (the data path's own result carries the statuses)
    real_result = explained_variance(y, a, categorical=categorical, n_boot=0, ci=ci)
    gen_result = explained_variance(gen, a_gen, categorical=categorical, n_boot=n_boot, seed=seed, ci=ci)
    if n < MIN_REAL:
        failed = replace(
            real_result,
            score=np.nan,
            ci_low=np.nan,
            ci_high=np.nan,
            status="too_few_samples",
            message=f"{n} real subjects: a debiased score needs at least {MIN_REAL}; score from data instead.",
        )
        return Debiased(failed, np.nan, np.nan, np.nan, gen_result, np.nan)
    if not real_result.ok or not gen_result.ok:
        bad = real_result if not real_result.ok else gen_result
        return Debiased(bad, np.nan, np.nan, np.nan, gen_result, np.nan)
    s_real, s_twin, s_gen = real_result.score_unclipped, _point(twin, a, categorical), gen_result.score_unclipped
    corr = float(np.corrcoef(y, twin)[0, 1]) if np.std(twin) > 0 else 0.0
    # 2. bootstrap: real subjects with their twins, the generated set apart
    rng = np.random.default_rng(seed)
    draws = max(int(n_boot), 0)
    reps = np.full((draws, 3), np.nan)
    for b in range(draws):
        i, j = rng.integers(0, n, n), rng.integers(0, m, m)
        reps[b] = (
            _point(y[i], a[i], categorical),
            _point(twin[i], a[i], categorical),
            _point(gen[j], a_gen[j], categorical),
        )
    reps = reps[np.isfinite(reps).all(1)]
    # 3. power tuning
    if lam is None:
        if len(reps) >= 10:
            cov = np.cov(reps.T)  # (3, 3): real, twin, gen
            denominator = cov[1, 1] + cov[2, 2]
            lam = float(np.clip(cov[0, 1] / denominator, 0.0, 1.0)) if denominator > 0 else 0.0
        else:
            lam = 1.0
    score = s_real + lam * (s_gen - s_twin)
    # 4. the percentile interval of the combined replicates
    low = high = np.nan
    if len(reps) >= 50:
        combined = reps[:, 0] + lam * (reps[:, 2] - reps[:, 1])
        # centred on the point estimate: the data-path estimator on a resample with repeated subjects has its
        # own bias, which the three parts do not share equally (the generated set is M, not N)
        combined += score - combined.mean()
        low, high = np.percentile(combined, [50 * (1 - ci), 50 * (1 + ci)])
    result = replace(
        real_result,
        score=float(np.clip(score, 0.0, 1.0)),
        score_unclipped=float(score),
        ci_low=float(np.clip(low, 0.0, 1.0)),
        ci_high=float(np.clip(high, 0.0, 1.0)),
        message=(
            f"debiased: data {s_real:.3f} + {lam:.2f} x (generator {s_gen:.3f} - twins {s_twin:.3f}); {n} real "
            f"subjects and their twins, {m} generated; twins track the real outputs at r = {corr:.2f}"
        ),
        ci_level=ci,
    )
    return Debiased(result, lam, float(s_real), float(s_twin), gen_result, corr)


# -- drawing the twins and the generated subjects ---------------------------------------------------


def twin_conditions(generator, table: pd.DataFrame) -> tuple[dict, dict]:
    """Each subject's recorded features as the generator's condition ({feature: (N,) values}) for the
    features it conditions on, and how many values were clamped to its training range, per feature.
    A categorical level the generator never saw is refused with the rows named."""
    condition, clamped = {}, {}
    for name in generator.features:
        if name not in table.columns:
            continue  # a feature the cohort does not record stays free
        info = generator.feature(name)
        values = table[name].to_numpy()
        if info.is_categorical:
            unseen = sorted({str(v) for v in values} - set(info.levels))
            if unseen:
                rows = [int(i) + 2 for i in np.flatnonzero(~np.isin(values.astype(str), info.levels))[:3]]
                raise EveInputError(
                    f"{name} = {', '.join(unseen)} (rows {', '.join(map(str, rows))}) is a level the generator never "
                    f"saw (it knows {', '.join(info.levels)}): retrain it on a cohort with that level, or score "
                    "from data."
                )
            condition[name] = [str(v) for v in values]
        else:
            values = values.astype(float)
            outside = (values < info.min) | (values > info.max)
            clamped[name] = int(outside.sum())
            condition[name] = np.clip(values, info.min, info.max)
    return condition, clamped


def draw_outputs(
    model,
    generator,
    condition: dict,
    n: int,
    seed: int,
    *,
    sampler=None,
    batch_size: int = SCORE.batch_size,
    progress=None,
) -> np.ndarray:
    """f(x~) (n, K) for n samples x~ ~ p_gen(x | condition row i), sample i seeded (seed, i)."""
    from engine.diffusion.sampler import SamplerConfig  # diffusers (~3 s) only where samples are drawn
    from engine.models.zoo import forward

    config = sampler or SamplerConfig.for_scores(generator)
    outputs = []
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        part = {k: (v[start:stop] if np.ndim(v) else v) for k, v in condition.items()}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # clamps are counted by `twin_conditions`
            images = generator.sample(part, stop - start, seed, config, first_index=start)
        outputs.append(forward(model, images).double().numpy())
        if progress:
            progress(stop, n)
    return np.concatenate(outputs)


def generated_pool(generator, real: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The feature vectors generated subjects are conditioned on: the generator's own training rows (a
    cohort apart from the real subjects: the information they do not hold) when its card keeps them, else
    the real subjects' (then the generated set only averages the generator's noise away)."""
    table = generator.feature_table
    if table is not None and len(table):
        return table.reset_index(drop=True), f"the generator's {len(table)} training subjects' features"
    return real.reset_index(drop=True), f"the {len(real)} real subjects' features (the generator kept none)"


def draw(
    model,
    generator,
    real: pd.DataFrame,
    *,
    m_generated: int = DEFAULT_GENERATED,
    seed: int = 0,
    sampler=None,
    batch_size: int = SCORE.batch_size,
    progress: Callable[[int, int], None] | None = None,
    pool: pd.DataFrame | None = None,
) -> Draws:
    """The twins of the real subjects (`real`: their features, one row each) and `m_generated` generated
    subjects (at most one per feature vector of the pool, `generated_pool` unless given: fewer when the pool
    is smaller), with the model's outputs on each. Twin i uses seed (seed, i); generated j (seed + 1, j)."""
    condition, clamped = twin_conditions(generator, real)
    if pool is None:
        pool, where = generated_pool(generator, real)
    else:
        where = f"{len(pool)} given subjects' features"
    # each feature vector once: two subjects generated from one vector share every feature, so their outputs
    # agree beyond the scored feature, and the estimator (which groups equal values) would read that as
    # explained variance (measured: S_gen of an unread feature 0.135 against 0.03 with 256 draws from 360 rows)
    picked = pool.sample(min(m_generated, len(pool)), replace=False, random_state=seed).reset_index(drop=True)
    m_generated = len(picked)
    gen_condition, _ = twin_conditions(generator, picked)
    total = len(real) + m_generated

    def twins_progress(done, _):
        if progress:
            progress(done, total)

    def gen_progress(done, _):
        if progress:
            progress(len(real) + done, total)

    twin = draw_outputs(
        model, generator, condition, len(real), seed, sampler=sampler, batch_size=batch_size, progress=twins_progress
    )
    gen = draw_outputs(
        model,
        generator,
        gen_condition,
        m_generated,
        seed + 1,
        sampler=sampler,
        batch_size=batch_size,
        progress=gen_progress,
    )
    return Draws(twin, gen, picked, clamped, where)


def cross_fitted_draws(
    model,
    fit: Callable[[np.ndarray], object],
    real: pd.DataFrame,
    *,
    folds: int = SCORE.folds,
    m_generated: int = DEFAULT_GENERATED,
    seed: int = 0,
    sampler=None,
    batch_size: int = SCORE.batch_size,
) -> Draws:
    """`draw` when the generator learns from the real subjects themselves: K folds, each fold's twins and
    M/K generated subjects from `fit(rows of the other folds)` (a generator that never saw the fold). Fold k's
    subjects are generated under the features of fold k - 1's subjects (in its generator's training set), so
    every real feature vector conditions one generated subject at most (two that share one would share every
    feature: see `draw`)."""
    n = len(real)
    order = np.random.default_rng(seed).permutation(n)
    parts = np.array_split(order, folds)
    twin = None
    gens, features, clamped = [], [], {}
    for k, held in enumerate(parts):
        generator = fit(np.setdiff1d(order, held))
        drawn = draw(
            model,
            generator,
            real.iloc[held],
            m_generated=max(1, m_generated // folds),
            seed=seed + 7 * k,
            sampler=sampler,
            batch_size=batch_size,
            pool=real.iloc[parts[k - 1]].reset_index(drop=True),
        )
        if twin is None:
            twin = np.zeros((n, drawn.twin.shape[1]))
        twin[held] = drawn.twin
        gens.append(drawn.gen)
        features.append(drawn.gen_features)
        for name, count in drawn.clamped.items():
            clamped[name] = clamped.get(name, 0) + count
    return Draws(
        twin,
        np.concatenate(gens),
        pd.concat(features, ignore_index=True),
        clamped,
        f"the real subjects' features, each fold's generated under the previous fold's ({folds} folds)",
        cross_fitted=folds,
    )
