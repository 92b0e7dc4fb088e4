"""The diffusion-based score: S(A) from samples of p(x | A = a_k) (Jin, Zhu & Fletcher, MIDL 2025).

Code name -> symbol:
    values[k], a_k      K values of A: means of A within K equal-mass bins of its marginal in
                        the dataset (numeric), or its levels (categorical)
    weights[k], w_k     p(a_k): 1/K for the equal-mass bins, level frequencies for categories
    y[k]  (N,)          classifier output f(x) for N samples x ~ p(x | A = a_k), guidance 1 (and,
                        where the model has a feature read-out, read-out guidance: `SamplerConfig.for_scores`)
    means, variances    per-value mean and ddof=1 variance of y[k]

The other features follow p(A_-i | A_i = a_k): by default (`free_features="table"`) each
sample takes them from a training row near a_k and is drawn from the joint condition
(`conditions.FeatureTable.complete`); "model" leaves them to the denoiser's condition
dropout, which on SynthBrain carries the feature links too loosely (assets/README.md).

Independent noise seeds per value (seed_k = sample_seed(seed, k)): the groups are then
independent and `engine.scores.tvd.score_from_group_stats` applies the (K-1)/(KN)-type bias
correction. With `shared_seeds=True` every value reuses the same N noise seeds (what the
slider shows: the same subjects at each value); the groups are then dependent and the
randomized-block estimate is used instead: the noise in the between-value variance comes
only from the value x subject interaction, estimated by the two-way residual mean square.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from engine.cards import ModelCard
from engine.data.slicing import SliceSpec
from engine.diffusion.conditions import FeatureTable
from engine.diffusion.gaussian import LatentGaussian
from engine.diffusion.pipeline import ConditionalDiffusion
from engine.diffusion.sampler import SamplerConfig, sample_seed
from engine.diffusion.storage import load_diffusion
from engine.errors import EveInputError
from engine.models.zoo import forward
from engine.options import SCORE
from engine.scores.tvd import ScoreResult, score_from_group_stats

GENERATOR_REPLICATES = 20  # a linear-Gaussian generator's bootstrap refits per score (`generator_bootstrap_score`)
REPLICATE_SEED = 7919  # seeds of the generator's bootstrap resamples (sample_seed(REPLICATE_SEED, b))


def feature_values(diffusion: ConditionalDiffusion, feature: str, k_values: int) -> tuple[list, np.ndarray]:
    """(values a_k, weights w_k) for a feature: the means of K equal-mass bins of the dataset's
    marginal (equal weights), or the categories with their frequencies.

    Bin means rather than the bins' quantile midpoints: the midpoints pull the outer values in,
    which shrinks Var(E[f | A]) where the effect sits in the tails (assets/README.md)."""
    info = diffusion.feature(feature)
    if info.is_categorical:
        w = np.asarray(info.data_frequencies, float)
        keep = w > 0
        return [lv for lv, k in zip(info.levels, keep, strict=True) if k], w[keep] / w[keep].sum()
    if k_values < 2:
        raise EveInputError(f"k_values = {k_values}: give at least 2 feature values to compare.")
    values = quantile_bin_means(info.data_percentiles, k_values)
    values = np.clip(values, info.min, info.max)  # inside the training range: no clamp warning
    return values.tolist(), np.full(k_values, 1.0 / k_values)


def quantile_bin_means(percentiles, k_values: int) -> np.ndarray:
    """Mean of A in each of K equal-mass bins, for the quantile function that interpolates the
    101 percentiles linearly (the trapezoid rule through its breakpoints is exact for it)."""
    edges = np.linspace(0.0, 100.0, k_values + 1)
    means = []
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        u = np.union1d(np.arange(np.ceil(low), np.floor(high) + 1), [low, high])
        q = np.interp(u, np.arange(101), percentiles)
        means.append(float(((q[1:] + q[:-1]) / 2 * np.diff(u)).sum() / (high - low)))
    return np.asarray(means)


def _slice(spec: SliceSpec) -> str:
    where = f"slice {spec.index}" if spec.index is not None else "slice (middle)"
    return f"{spec.plane} {where} at {spec.size} px, orientation {spec.orientation}, intensity {spec.intensity}"


def check_compatible(card: ModelCard, diffusion: ConditionalDiffusion) -> None:
    """The classifier must see the slice the diffusion model generates. Its training dataset may
    differ (a zoo model scored on a user's cohort, through a generator of that cohort): the score
    then describes the model on that cohort, as a data-path score would."""
    if card.spec is not None and card.spec.is_volume:
        raise EveInputError(
            f"{card.name} takes whole volumes, and the diffusion model generates 2D slices "
            f"({_slice(diffusion.spec)}): score it from data (method data), where every image is real."
        )
    if card.spec is not None and card.spec != diffusion.spec:
        raise EveInputError(
            f"The classifier sees the {_slice(card.spec)} but the diffusion model generates the "
            f"{_slice(diffusion.spec)}: retrain one of them on the same slice."
        )


def block_score_stats(y: np.ndarray, weights: np.ndarray) -> dict:
    """Randomized-block estimate for y (K, N) with shared noise seeds across values.

    explained = sum_k w_k (m_k - m)^2 - sum_k w_k (1 - w_k) MS_int / N, where MS_int is the
    two-way (value x seed) residual mean square; within = sum_k w_k s2_k.
    """
    k, n = y.shape
    w = weights / weights.sum()
    m_k = y.mean(1)
    b_i = y.mean(0)
    resid = y - m_k[:, None] - b_i[None, :] + y.mean()
    ms_int = (resid**2).sum() / max((k - 1) * (n - 1), 1)
    m = (w * m_k).sum()
    between = (w * (m_k - m) ** 2).sum()
    explained = between - (w * (1 - w)).sum() * ms_int / n
    within = (w * y.var(1, ddof=1)).sum()
    total = within + explained
    return {
        "score": float(np.clip(explained / total, 0, 1)),
        "explained_var": float(explained),
        "total_var": float(total),
        "ms_interaction": float(ms_int),
    }


def diffusion_score(
    model,
    card: ModelCard,
    diffusion: ConditionalDiffusion | str,
    feature: str,
    *,
    k_values: int = SCORE.k_values,
    n_per_value: int = SCORE.n_per_value,
    output: int | str = 0,
    seed: int = 0,
    sampler: SamplerConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
    batch_size: int = SCORE.batch_size,
    n_boot: int = SCORE.n_boot,
    shared_seeds: bool = False,
    **sampler_overrides,
):
    """S(A) for one classifier output from N diffusion samples at each of K feature values.

    Args:
        model: the classifier, (B, 1, S, S) -> (B, outputs).
        card: its `ModelCard` (`dataset`, `spec` and the outputs are checked).
        diffusion: a `ConditionalDiffusion` or a name for `load_diffusion`.
        feature: the feature A (numeric: K quantile values; categorical: its levels).
        k_values: K, feature values for a numeric feature.
        n_per_value: N, samples per value (independent seeds per value).
        output: output column (index or name).
        seed: base seed; value k uses `sample_seed(seed, k)`.
        sampler: how the samples are drawn (default `SamplerConfig.for_scores(diffusion)`: the other
            features from the training table and read-out guidance where the model has them; it
            pulls each sample towards the features it was asked for and leaves the rest alone,
            unlike classifier-free guidance, which narrows p(x | a)). Its guidance must be 1.
        progress: called as progress(done, total) after each value.
        shared_seeds: reuse the same N seeds at every value (randomized-block estimate).
        **sampler_overrides: `SamplerConfig` fields (steps, free_features, readout_guidance),
            shorthand for `sampler.override(...)`; None keeps the sampler's value.

    Returns:
        (ScoreResult, table) with one row per value: value, weight, seed, n, mean, variance, the
        sampler's free_features and readout_guidance, and for a probed numeric feature the
        probe's measured mean and the constraint MAE.
    """
    if isinstance(diffusion, str):
        diffusion = load_diffusion(diffusion)
    check_compatible(card, diffusion)
    if refittable(diffusion) is not None and n_boot > 0 and not shared_seeds:
        # a refit takes milliseconds: the interval holds the generator's own error too
        return generator_bootstrap_score(
            model,
            card,
            diffusion,
            feature,
            replicates=GENERATOR_REPLICATES,
            seed=seed,
            progress=progress,
            k_values=k_values,
            n_per_value=n_per_value,
            output=output,
            sampler=sampler,
            batch_size=batch_size,
            **sampler_overrides,
        )
    plan = plan_score(
        card,
        diffusion,
        feature,
        k_values=k_values,
        n_per_value=n_per_value,
        output=output,
        seed=seed,
        sampler=sampler,
        shared_seeds=shared_seeds,
        **sampler_overrides,
    )
    draws = []
    for k in range(len(plan.values)):
        draws.append(draw_value(model, diffusion, plan, k, batch_size=batch_size))
        if progress:
            progress(k + 1, len(plan.values))
    return finish_score(diffusion, plan, draws, n_boot=n_boot)


@dataclass(frozen=True)
class ScorePlan:
    """What a diffusion score draws: N samples at each value a_k with seed seeds[k] (checked, ready
    to fan out value by value: `draw_value` for each k, then `finish_score`)."""

    feature: str
    output_index: int
    values: list
    weights: np.ndarray
    seeds: list[int]
    n_per_value: int
    config: SamplerConfig
    shared_seeds: bool
    seed: int


def plan_score(
    card: ModelCard,
    diffusion: ConditionalDiffusion,
    feature: str,
    *,
    k_values: int = SCORE.k_values,
    n_per_value: int = SCORE.n_per_value,
    output: int | str = 0,
    seed: int = 0,
    sampler: SamplerConfig | None = None,
    shared_seeds: bool = False,
    **sampler_overrides,
) -> ScorePlan:
    """`diffusion_score`'s checks and its K values, weights and seeds (before any sample is drawn)."""
    check_compatible(card, diffusion)
    if n_per_value < 2:
        raise EveInputError(f"n_per_value = {n_per_value}: use at least 2 samples per value (a variance needs 2).")
    index = card.output_index(output)
    config = (sampler or SamplerConfig.for_scores(diffusion)).override(**sampler_overrides)
    if config.guidance != 1.0:
        raise EveInputError(
            f"guidance = {config.guidance:g}: use guidance 1; the scores sample the plain conditional model, "
            "and guidance > 1 narrows p(x | a) and inflates them."
        )
    values, weights = feature_values(diffusion, feature, k_values)
    seeds = [seed if shared_seeds else sample_seed(seed, k) for k in range(len(values))]
    return ScorePlan(feature, index, values, np.asarray(weights), seeds, n_per_value, config, shared_seeds, seed)


def draw_value(
    model, diffusion: ConditionalDiffusion, plan: ScorePlan, k: int, *, batch_size: int = SCORE.batch_size
) -> tuple[np.ndarray, np.ndarray | None]:
    """Value k of a plan: the model's outputs (N,) on N samples at a_k, and the probe's reading of the
    feature on them (None where the feature has no probe). The same numbers wherever it runs."""
    feature, a, n_total = plan.feature, plan.values[k], plan.n_per_value
    y, measured = [], []
    for start in range(0, n_total, batch_size):
        n = min(batch_size, n_total - start)
        # sample seeds are (seeds[k], i) for i = start.. : a batch split does not change them
        images = diffusion.sample({feature: a}, n, plan.seeds[k], plan.config, first_index=start)
        y.append(forward(model, images)[:, plan.output_index].double().numpy())
        if feature in diffusion.card.probe_features:
            measured.append(diffusion.measure_features(images)[feature])
    return np.concatenate(y), (np.concatenate(measured) if measured else None)


def finish_score(
    diffusion: ConditionalDiffusion, plan: ScorePlan, draws: list, *, n_boot: int = SCORE.n_boot
) -> tuple[ScoreResult, pd.DataFrame]:
    """The score and per-value table from a plan's draws (`draw_value` for k = 0..K-1, in order)."""
    rows, ys = [], []
    for k, (y, measured) in enumerate(draws):
        ys.append(y)
        row = {
            "value": plan.values[k],
            "weight": float(plan.weights[k]),
            "seed": plan.seeds[k],
            "n": len(y),
            "mean": float(y.mean()),
            "variance": float(y.var(ddof=1)),
            "free_features": plan.config.free_features,
            "readout_guidance": plan.config.readout_guidance,
        }
        if measured is not None:
            a, sd = plan.values[k], diffusion.feature(plan.feature).data_sd
            row |= {
                "measured_mean": float(measured.mean()),
                "constraint_mae": float(np.mean(np.abs(measured - a))),
                "constraint_mae_over_sd": float(np.mean(np.abs(measured - a)) / sd),
            }
        rows.append(row)
    table = pd.DataFrame(rows)
    if not plan.shared_seeds:
        result = score_from_group_stats(
            table["mean"], table["variance"], table["n"], table["weight"], n_boot=n_boot, seed=plan.seed
        )
    else:
        stats = block_score_stats(np.stack(ys), plan.weights)
        result = ScoreResult(
            score=stats["score"],
            ci_low=np.nan,
            ci_high=np.nan,
            n=int(table["n"].sum()),
            status="ok",
            message="randomized-block estimate (shared seeds); no CI",
            n_groups=len(plan.values),
            explained_var=stats["explained_var"],
            total_var=stats["total_var"],
        )
    return result, table


def constraint_errors(
    diffusion: ConditionalDiffusion,
    k_values: int = SCORE.k_values,
    n_per_value: int = SCORE.constraint_samples,
    seed: int = 0,
    sampler: SamplerConfig | None = None,
    features: list[str] | None = None,
) -> pd.DataFrame:
    """Per probed feature (default: all of them): MAE / SD of probe(sample) - a_k over the score's K
    values x N samples, one feature asked (sample seeds as a score's; `sampler` default `SamplerConfig()`)."""
    rows = []
    for feature in diffusion.card.probe_features if features is None else features:
        values, _ = feature_values(diffusion, feature, k_values)
        sd = diffusion.feature(feature).data_sd
        errs = []
        for k, a in enumerate(values):
            x = diffusion.sample({feature: a}, n_per_value, sample_seed(seed, k), sampler)
            errs.append(diffusion.measure_features(x)[feature] - a)
        errs = np.stack(errs)  # (K, N)
        per_value = np.abs(errs).mean(1) / sd
        rows.append(
            {
                "feature": feature,
                "mae_over_sd": float(np.abs(errs).mean() / sd),
                "bias_over_sd": float(errs.mean() / sd),
                "worst_value_mae_over_sd": float(per_value.max()),
                "probe_heldout_mae_over_sd": diffusion.card.probe_report[feature]["mae_over_sd"],
            }
        )
    return pd.DataFrame(rows)


def refittable(diffusion: ConditionalDiffusion) -> LatentGaussian | None:
    """The linear-Gaussian generator a bootstrap refits in milliseconds; None for a diffusion
    model (its interval is the sampling's)."""
    return diffusion.denoiser if isinstance(diffusion.denoiser, LatentGaussian) else None


def bootstrap_replicate(diffusion: ConditionalDiffusion, b: int) -> ConditionalDiffusion:
    """Replicate `b` of a linear-Gaussian generator: refitted on a bootstrap resample of its
    training subjects, its free features drawn from the same resample; codec, probe, card shared."""
    gaussian = refittable(diffusion)
    if gaussian is None:
        raise EveInputError(
            "Only a linear-Gaussian generator is refitted per bootstrap draw (in milliseconds): for a diffusion "
            "model, use diffusion_score, whose interval covers the sampling noise only."
        )
    refitted, index = gaussian.bootstrap(sample_seed(REPLICATE_SEED, b))
    table = None if diffusion.table is None else FeatureTable(diffusion.table.schema, diffusion.table.values[index])
    return ConditionalDiffusion(
        diffusion.codec, refitted, diffusion.card, readout=diffusion.readout, probe=diffusion.probe, table=table
    )


def generator_bootstrap_score(
    model,
    card: ModelCard,
    diffusion: ConditionalDiffusion,
    feature: str,
    *,
    replicates: int = 40,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
    **kwargs,
) -> tuple[ScoreResult, pd.DataFrame]:
    """`diffusion_score` with an interval that includes the generator's own error: the score of the
    generator as fitted, and as CI the 2.5th and 97.5th percentiles of the scores of `replicates`
    generators refitted on bootstrap resamples of the training subjects, each from its own samples
    (so the interval holds the fit's and the sampling's noise together). Generators with a
    linear-Gaussian part only (`refittable`); `progress(done, total)` is called after each replicate."""
    if replicates < 10:
        raise EveInputError(f"replicates = {replicates}: use at least 10 for a 95% interval.")
    result, table = diffusion_score(model, card, diffusion, feature, n_boot=0, seed=seed, **kwargs)
    if not result.ok:
        return result, table
    draws = []
    for b in range(replicates):  # replicate b: its own refit and its own samples (seeds apart from the point's)
        refit = bootstrap_replicate(diffusion, b)
        replicate, _ = diffusion_score(model, card, refit, feature, n_boot=0, seed=sample_seed(seed, 1 + b), **kwargs)
        if replicate.ok:
            draws.append(replicate.score)
        if progress:
            progress(b + 1, replicates)
    low, high = np.percentile(draws, [2.5, 97.5]) if len(draws) >= 10 else (np.nan, np.nan)
    n_subjects = len(refittable(diffusion).rows)
    message = f"95% CI: {len(draws)} refits on bootstrap resamples of the {n_subjects} training subjects, each sampled"
    return replace(result, ci_low=float(low), ci_high=float(high), message=message), table
