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

Features together (`debiased_effects`, issue 36): the same combination for every subset u of the features,

    S_pp(u) = S_real(u) + lambda (S_gen(u) - S_twin(u)),

each S(u) by `engine.scores.joint` (real subjects and their twins scored as two outputs of one bootstrap, the
generated subjects on their own, over the same subsets). One lambda per output for all subsets, so the joint,
first-order, added and Shapley numbers are those of one set function S_pp and the Shapley effects still add up
to S_pp(all); lambda minimises the summed variance of the joint, first-order and added scores (PPI++'s trace
rule over the reported numbers). The draws are combined subset by subset, centred on the estimate as above, and
the effects read from them with `engine.scores.joint`'s clipping.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from engine.errors import EveInputError
from engine.options import SCORE
from engine.scores.joint import MAX_EXACT, N_PERM, ShapleyResult, effects_from_draws, subset_draws
from engine.scores.tvd import ScoreResult, explained_variance

MIN_REAL = 30  # fewer real subjects than this: no debiased score (its bootstrap would not hold)
MORE_GENERATED = "On the generator path, draw more generated subjects (K × N, here {m})."  # too few for a set
DEFAULT_GENERATED = 512  # M, generated subjects (one draw serves every feature and output)
PATHS = ("data", "generator", "debiased")


@dataclass(frozen=True)
class Draws:
    """What the generator drew for one cohort, ready to score any feature and output: the twins' outputs
    (N, K) in the real subjects' order, and M generated subjects' outputs (M, K) with their feature vectors."""

    twin: np.ndarray  # (N, K)
    gen: np.ndarray  # (M, K)
    gen_features: pd.DataFrame  # (M, features it conditions on): the values each generated subject was conditioned on
    clamped: dict  # feature -> how many real subjects' values were clamped to the generator's range
    pool: str  # where the generated subjects' feature vectors came from, in words
    cross_fitted: int = 0  # K folds when each fold's draws came from a generator that did not see it
    sampler: str = ""  # how the folds' generators sampled, in words, where it differs from the sampler asked for


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


@dataclass(frozen=True)
class DebiasedSets:
    """The features together, debiased (`debiased_effects`), one entry per output."""

    results: list[ShapleyResult]  # S_pp: joint score of all, and per feature first-order, added and Shapley
    generator: list[ShapleyResult]  # the generated subjects' own: model-based (sampling noise only)
    lam: list[float]  # lambda per output (NaN where the output was not scored)
    twin_correlation: list[float]  # corr(y, twin) per output


def _single_valued(features: dict) -> set[str]:
    return {name for name, a in features.items() if pd.Series(np.asarray(a)).nunique() < 2}


def _trace_lambda(real: np.ndarray, twin: np.ndarray, gen: np.ndarray, found) -> float:
    """lambda minimising the summed variance of the joint, first-order and added scores (draws (B, M) of each
    part, the subsets of `found`): sum_q Cov(real_q, twin_q) / sum_q (Var(twin_q) + Var(gen_q)), in [0, 1]."""
    d = len(found.design.names)
    full = (1 << d) - 1
    where = {int(m): i for i, m in enumerate(found.masks)}
    ones = [where[1 << k] for k in range(d)]
    rests = [where[full & ~(1 << k)] for k in range(d)]

    def reported(v):  # (B, M) -> (B, 1 + 2d)
        s_all = v[:, where[full]]
        return np.column_stack([s_all, v[:, ones], s_all[:, None] - v[:, rests]])

    r, t, g = reported(real), reported(twin), reported(gen)
    keep = np.isfinite(r).all(1) & np.isfinite(t).all(1)
    r, t, g = r[keep], t[keep], g[np.isfinite(g).all(1)]
    if len(r) < 10 or len(g) < 10:
        return 1.0
    covariance = ((r - r.mean(0)) * (t - t.mean(0))).sum(0) / (len(r) - 1)
    denominator = t.var(0, ddof=1).sum() + g.var(0, ddof=1).sum()
    return float(np.clip(covariance.sum() / denominator, 0.0, 1.0)) if denominator > 0 else 0.0


def debiased_effects(
    y,
    twin,
    features: dict,
    gen,
    gen_features: dict,
    *,
    categorical: tuple[str, ...] = (),
    n_boot: int = SCORE.n_boot,
    seed: int = 0,
    ci: float = 0.95,
    lam: float | None = None,
    max_exact: int = MAX_EXACT,
    n_perm: int = N_PERM,
) -> DebiasedSets:
    """S_pp(u) = S_real(u) + lam (S_gen(u) - S_twin(u)) over the subsets of `features`, read as the joint score
    of all and each feature's first-order, added and Shapley scores (module docstring), per output.

    Args:
        y, twin: (N,) or (N, J) the real outputs and their twins', in the same subject order.
        features: name -> (N,) the real subjects' values; gen_features the same names -> (M,) the generated
            subjects' (the feature vectors they were conditioned on).
        gen: (M,) or (M, J) the generated subjects' outputs.
        lam: fix lambda for every output (1: plain debiased, 0: the data path); None: tuned per output.
        max_exact, n_perm: as `engine.scores.joint.shapley_effects`.
    """
    y2, twin2, gen2 = (np.asarray(v, float).reshape(len(v), -1) for v in (y, twin, gen))
    if y2.shape != twin2.shape or gen2.shape[1] != y2.shape[1]:
        raise ValueError(f"y {y2.shape}, twin {twin2.shape} and gen {gen2.shape} must share their outputs")
    if set(features) != set(gen_features):
        raise ValueError("features and gen_features must name the same features")
    n, n_out = y2.shape
    names = tuple(str(k) for k in features)
    gen_features = {k: np.asarray(gen_features[k]) for k in features}  # the real subjects' order of the names
    options = dict(categorical=categorical, n_boot=n_boot, ci=ci, max_exact=max_exact, n_perm=n_perm)
    # a feature single-valued among the real subjects explains nothing there: left out of the generated set too
    flat = _single_valued({k: features[k] for k in names})
    for name in flat - _single_valued(gen_features):
        gen_features[name] = np.full(len(gen2), gen_features[name][0])
    lost = sorted(_single_valued(gen_features) - flat)
    real = subset_draws(np.hstack([y2, twin2]), features, seed=seed, **options)
    same = real if real.scored and not lost else None  # the generated set scores the real set's subsets
    made = subset_draws(gen2, gen_features, seed=seed + 1, subsets_of=same, **options)
    failures: list = [None] * n_out
    if n < MIN_REAL:
        message = f"{n} real subjects: a debiased score needs at least {MIN_REAL}; score from data instead."
        failures = [("too_few_samples", message)] * n_out
    elif not real.scored:
        failures = [real.fail or f or real.failures[j + n_out] for j, f in enumerate(real.failures[:n_out])]
    elif lost:
        them = "it" if len(lost) == 1 else "them"
        message = (
            f"The generated subjects' {', '.join(lost)} take a single value, so the generator cannot speak to {them}: "
            f"deselect {them}, or score the features together from data."
        )
        failures = [("single_value", message)] * n_out
    elif not made.scored:
        why = made.fail or next(f for f in made.failures if f)
        message = f"The generated subjects could not be scored together: {why[1]} {MORE_GENERATED.format(m=len(gen2))}"
        failures = [(why[0], message)] * n_out
    else:
        for j in range(n_out):
            failures[j] = real.failures[j] or real.failures[n_out + j] or made.failures[j]
    todo = [j for j, f in enumerate(failures) if f is None]
    lams, corr = [np.nan] * n_out, [np.nan] * n_out
    combined = None
    if todo:
        column = {j: i for i, j in enumerate(real.todo)}  # real.values holds the scored outputs of [y, twin]
        made_column = {j: i for i, j in enumerate(made.todo)}
        parts = []
        for j in todo:
            v_real, v_twin = real.values[..., column[j]], real.values[..., column[n_out + j]]
            v_gen = made.values[..., made_column[j]]
            lams[j] = float(lam) if lam is not None else _trace_lambda(v_real[1:], v_twin[1:], v_gen[1:], real)
            corr[j] = float(np.corrcoef(y2[:, j], twin2[:, j])[0, 1]) if np.std(twin2[:, j]) > 0 else 0.0
            v = v_real + lams[j] * (v_gen - v_twin)  # (1 + B, M)
            if len(v) > 1:  # centred on the estimate, as debiased_score's draws
                with np.errstate(invalid="ignore"):
                    v[1:] += v[0] - np.nanmean(v[1:], axis=0)
            parts.append(v)
        combined = np.stack(parts, -1)  # (1 + B, M, J')
    results = effects_from_draws(replace(real, failures=failures, fail=None), combined)
    return DebiasedSets(results, effects_from_draws(made), lams, corr)


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


def _generated_conditions(generator, real: pd.DataFrame, m_generated: int, seed: int, pool=None):
    """(feature vectors picked, the generator's condition for them, where they came from in words)."""
    if pool is None:
        pool, where = generated_pool(generator, real)
    else:
        where = f"{len(pool)} given subjects' features"
    # each feature vector once: two subjects generated from one vector share every feature, so their outputs
    # agree beyond the scored feature, and the estimator (which groups equal values) would read that as
    # explained variance (measured: S_gen of an unread feature 0.135 against 0.03 with 256 draws from 360 rows)
    picked = pool.sample(min(m_generated, len(pool)), replace=False, random_state=seed).reset_index(drop=True)
    # only the features the generator conditions on: a pool of real subjects holds others too (cross-fitting's
    # folds, a generator that kept no table), which the generated subjects do not carry
    picked = picked[[f for f in generator.features if f in picked.columns]]
    condition, _ = twin_conditions(generator, picked)
    return picked, condition, where


def draw_generated(
    model,
    generator,
    real: pd.DataFrame,
    *,
    m_generated: int = DEFAULT_GENERATED,
    seed: int = 0,
    sampler=None,
    batch_size: int = SCORE.batch_size,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, pd.DataFrame, str]:
    """`draw`'s generated subjects alone (no twins): the model's outputs (M, K) on them, the feature vectors they
    were conditioned on, and where those came from in words; subject j seeded (seed + 1, j), as in `draw`."""
    picked, condition, where = _generated_conditions(generator, real, m_generated, seed)
    outputs = draw_outputs(
        model, generator, condition, len(picked), seed + 1, sampler=sampler, batch_size=batch_size, progress=progress
    )
    return outputs, picked, where


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
    picked, gen_condition, where = _generated_conditions(generator, real, m_generated, seed, pool)
    m_generated = len(picked)
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
    progress: Callable[[int, int], None] | None = None,
) -> Draws:
    """`draw` when the generator learns from the real subjects themselves: K folds, each fold's twins and
    M/K generated subjects from `fit(rows of the other folds)` (a generator that never saw the fold);
    `progress(images drawn, images in all)` after each fold's fit and draw. Fold k's
    subjects are generated under the features of fold k - 1's subjects (in its generator's training set), so
    every real feature vector conditions one generated subject at most (two that share one would share every
    feature: see `draw`)."""
    n = len(real)
    order = np.random.default_rng(seed).permutation(n)
    parts = np.array_split(order, folds)
    twin = None
    gens, features, clamped = [], [], {}
    used, done = set(), 0
    per_fold = max(1, m_generated // folds)
    total = n + sum(min(per_fold, len(p)) for p in parts)  # fold k draws from fold k - 1's vectors
    for k, held in enumerate(parts):
        generator = fit(np.setdiff1d(order, held))
        config = None if sampler is None else sampler.for_model(generator)  # a fold's generator may lack a read-out
        if config is not None and config != sampler:
            used.add(config.description)
        drawn = draw(
            model,
            generator,
            real.iloc[held],
            m_generated=per_fold,
            seed=seed + 7 * k,
            sampler=config,
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
        done += len(held) + len(drawn.gen)
        if progress:
            progress(done, total)
    return Draws(
        twin,
        np.concatenate(gens),
        pd.concat(features, ignore_index=True),
        clamped,
        f"the real subjects' features, each fold's generated under the previous fold's ({folds} folds)",
        cross_fitted=folds,
        sampler=" ".join(sorted(used)),
    )
