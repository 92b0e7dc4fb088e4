"""The scoring service: the one place that turns (dataset, model, split, features) into scores.

The CLI report (`engine.reports.html`) and the app (`components.loaders`, which only caches these
calls) both go through it, so the same model, dataset, split and seed give the same numbers
everywhere. One public function a step:

1. `open_dataset(source)` — an embedded dataset name or a folder;
   `resolve_features(dataset, features)` — the features to score;
   `split_rows(dataset, split)` — the rows a split means (one rule);
2. `model_outputs(model, dataset, spec, rows)` — Y = f(x_i), batched, on the model's device;
3. `score_outputs(outputs, dataset, features, rows)` — S(A) = Var(E[Y|A]) / Var(Y) per feature
   with its bootstrap CI (`engine.scores.tvd.score_table`);
4. `data_scores(...)` runs 1-3 for a model and keeps what a report needs (`ScoreReport`;
   `data_report(...)` does 3-4 on outputs already computed, e.g. the app's cached ones);
   `diffusion_scores(...)` does the same from conditional diffusion samples;
5. `set_scores(...)` — the features together (`engine.scores.joint`): the joint score S(all), and per
   feature what it adds to all the others and its Shapley effect; `with_joint(report)` puts them beside a
   data report's one-at-a-time scores; `debiased_scores(..., joint=True)` and `diffusion_scores(...,
   joint=True)` score them from the generator's draws (`engine.scores.debias.debiased_effects`).

Long steps take `progress(done, total)`, a callback the CLI turns into a tqdm bar and the app
into `st.progress`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import torch

from engine import software
from engine.cards import ModelCard, spec_to_json
from engine.data import Dataset, SliceSpec
from engine.data.dataset import SPLITS, resolve_features
from engine.data.defaults import BUILDERS
from engine.errors import EveInputError
from engine.models.zoo import forward
from engine.options import SCORE
from engine.scores.tvd import ScoreResult, score_table

SCORE_COLUMNS = ("feature", "output", "score", "ci_low", "ci_high", "unexplained", "n", "n_groups", "status", "message")
# the card fields a report's metadata repeats
CARD_KEYS = (
    "name",
    "kind",
    "description",
    "dataset",
    "target",
    "task",
    "output_names",
    "outputs",
    "function",
    "weights_sha256",
    "sha256",
)

Progress = Callable[[int, int], None]  # progress(done, total)


# 1. what to score -------------------------------------------------------------------------


def split_rows(dataset: Dataset, split: str = "test") -> np.ndarray:
    """Row indices of a split: `all` rows, or the `test` / `train` rows (every row when the table
    has no split column). A split with no rows is refused rather than silently widened."""
    if split not in SPLITS:
        raise EveInputError(f"Unknown split {split!r}: use one of {', '.join(SPLITS)}.")
    if split == "all":
        return np.arange(len(dataset))
    rows = dataset.split_indices(split)
    if not rows.size:
        raise EveInputError(f"{dataset.name} has no rows with split = {split!r}: score 'all' rows instead.")
    return rows


def default_split(dataset: Dataset) -> str:
    """What to score when nobody says: held-out `test` rows where the table has them, else `all`."""
    has_test = "split" not in dataset.table.columns or (dataset.table["split"] == "test").any()
    return "test" if has_test else "all"


# 2. model outputs -------------------------------------------------------------------------


@torch.inference_mode()
def model_outputs(
    model,
    dataset: Dataset,
    spec: SliceSpec,
    rows=None,
    *,
    batch_size: int = SCORE.batch_size,
    progress: Progress | None = None,
    shard: bool = False,
    runner=None,
) -> np.ndarray:
    """Model outputs f(x_i) for dataset rows, as a (N, K) float32 array in row order.

    Args:
        model: a torch module (or TorchScript) mapping (B, 1, S, S) float32 images to (B, K) or
            (B,) outputs, in eval mode on its device (the batches go there; `zoo.forward`).
        dataset: a loaded dataset.
        spec: what the model is fed (plane, slice, size S, intensity rule).
        rows: (N,) row indices; default every row.
        batch_size: images per forward pass.
        progress: called as progress(images done, N) after each batch.
        runner: where the outputs are computed when not here: `runner(dataset, spec, rows, batch_size,
            progress)` (a cluster's, `Cluster.outputs_runner`); None: on this machine.

    The slices come from `dataset.model_inputs(spec, rows)` (computed once per spec and
    disk-cached), or with `shard` from `dataset.shard_inputs`, which reads only these rows' files
    where nothing is cached (a cluster worker's part of a cohort; the values are the same).
    """
    rows = np.arange(len(dataset)) if rows is None else np.asarray(rows, dtype=np.int64)
    if runner is not None:  # the one place a computation leaves this machine: a cluster's runner
        return runner(dataset, spec, rows, batch_size, progress)
    images = (dataset.shard_inputs if shard else dataset.model_inputs)(spec, rows)  # (N, 1, S, S)
    outs = []
    for start in range(0, len(rows), batch_size):
        outs.append(forward(model, images[start : start + batch_size]))  # (B, K)
        if progress:
            progress(min(start + batch_size, len(rows)), len(rows))
    if not outs:
        raise EveInputError("No images to score: the chosen split is empty; choose another split, or score 'all' rows.")
    return torch.cat(outs).numpy()  # (N, K)


def check_output_count(card: ModelCard, outputs: np.ndarray) -> None:
    if len(card.output_names) != outputs.shape[1]:
        raise EveInputError(
            f"The model returned {outputs.shape[1]} outputs per image but its card names "
            f"{len(card.output_names)}: give one name per output."
        )


# 3. scores --------------------------------------------------------------------------------


def score_outputs(
    outputs,
    dataset: Dataset,
    features=None,
    rows=None,
    output_names=None,
    *,
    n_boot: int = SCORE.n_boot,
    seed: int = 0,
    ci: float = 0.95,
) -> pd.DataFrame:
    """Score table for precomputed outputs on dataset rows (`engine.scores.tvd.score_table`).

    Args:
        outputs: (N,) or (N, K) outputs for `rows`, in the same order.
        dataset: gives the feature values and which features are categorical.
        features: names (list or "a,b,c"); default every feature.
        rows: (N,) row indices the outputs belong to; default every row.
        output_names: K names (default "y0".."y{K-1}").

    Returns one row per (feature, output) with `SCORE_COLUMNS`.
    """
    names = resolve_features(dataset, features)
    rows = np.arange(len(dataset)) if rows is None else np.asarray(rows, dtype=np.int64)
    y = np.asarray(outputs, dtype=float)
    if len(y) != len(rows):
        raise ValueError(f"{len(y)} outputs for {len(rows)} rows")
    values = {f: dataset.feature_values(f)[rows] for f in names}
    cats = tuple(f for f in names if f in dataset.categorical_features)
    return score_table(y, values, categorical=cats, output_names=output_names, n_boot=n_boot, seed=seed, ci=ci)


def score_row(feature: str, output: str, result: ScoreResult) -> dict:
    """One row of a score table (`SCORE_COLUMNS`) from a `ScoreResult`."""
    return dict(
        feature=feature,
        output=output,
        score=result.score,
        ci_low=result.ci_low,
        ci_high=result.ci_high,
        unexplained=1 - result.score,
        n=result.n,
        n_groups=result.n_groups,
        status=result.status,
        message=result.message,
    )


@dataclass(frozen=True)
class ScoreReport:
    """Scores of one model on one dataset, and what the report writers need to draw them."""

    table: pd.DataFrame  # one row per (feature, output), SCORE_COLUMNS
    output_names: list[str]  # names of the scored output columns
    features: dict[str, np.ndarray]  # name -> (N,) values on the scored rows
    categorical: tuple[str, ...]  # features grouped exactly
    metadata: dict  # dataset, model, spec, split, n, method, n_boot, seed, ...
    outputs: np.ndarray | None = None  # (N, K) outputs on the scored rows (data method)
    value_tables: dict = field(default_factory=dict)  # (feature, output) -> per-value table (diffusion)
    joint: pd.DataFrame | None = None  # one row per output, JOINT_SCORE_COLUMNS: S(all) (`with_joint`)


def trained_elsewhere(card: ModelCard, dataset: Dataset) -> str | None:
    """A warning when a built-in model scores a dataset it was not trained on (None otherwise)."""
    if not card.dataset or card.dataset == dataset.name:
        return None
    return (
        f"{card.name} was trained on Eve's {card.dataset}, not on {dataset.name}: its scores on {dataset.name} "
        "describe that model, not one trained on this data."
    )


def explained_kind(card: ModelCard) -> str:
    """What a score explains, in one word: "probability" (a logit's sigmoid or softmax, `ModelRef.explain`),
    "logit", "regression" or "not stated" (a user's model whose card does not say)."""
    if (card.outputs or "").startswith("probability"):
        return "probability"
    return card.output_kind or "not stated"


def dataset_origin(dataset: Dataset) -> str:
    """Where a dataset came from, in words, for reports."""
    if dataset.name in BUILDERS and dataset.truth is not None:
        return f"Eve's embedded synthetic set, generated by engine.data.{dataset.name} (deterministic by seed)"
    if dataset.remote is not None:
        return "an object-store folder (read through pyarrow.fs): images (NIfTI) and a features.csv"
    return "a dataset folder: images (NIfTI) and a features.csv"


def _metadata(dataset: Dataset, card: ModelCard, *, packages: tuple[str, ...] = (), **extra) -> dict:
    """A report's metadata: what was scored (dataset, model, input contract, output explained), how
    (`extra`: method, n, n_boot, seed, ...) and with which software (`engine.software(*packages)`)."""
    described = card.to_json()
    warning = trained_elsewhere(card, dataset)
    return {
        "eve": "Eve, the Explained-Variance Explorer",
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "score": "S(A) = Var(E[Y|A]) / Var(Y), bias-corrected, percentile-bootstrap CI",
        "dataset": {
            "name": dataset.name,
            "path": dataset.location,
            "n_rows": len(dataset),
            "images": "3D volumes" if dataset.is_3d else "2D images",
            "origin": dataset_origin(dataset),
        },
        "model": {k: described[k] for k in CARD_KEYS if k in described},
        "spec": {**spec_to_json(card.spec), "intensity": card.spec.intensity},
        "input": card.spec.describe(),
        "explained": explained_kind(card),
        "outputs_in_words": {name: card.describe_output(i) for i, name in enumerate(card.output_names)},
        **({"warning": warning} if warning else {}),
        **extra,
        "software": software(*packages),
    }


def _check_n_boot(n_boot: int) -> None:
    if n_boot < 0:
        raise EveInputError(f"n_boot = {n_boot}: use 0 (no CI) or a positive number of bootstrap draws.")


def data_scores(
    model,
    card: ModelCard,
    dataset: Dataset,
    features=None,
    *,
    split: str = "test",
    n_boot: int = SCORE.n_boot,
    seed: int = 0,
    output: int | str | None = None,
    batch_size: int = SCORE.batch_size,
    progress: Progress | None = None,
    ci: float = SCORE.ci,
    runner=None,
    where: str | None = None,
) -> ScoreReport:
    """Model outputs on a split of the dataset and their scores for each feature (data method).

    Args:
        model: (B, 1, S, S) -> (B, K) module in eval mode on its device (see `model_outputs`).
        card: the model's card: its input `spec` and `output_names`.
        dataset: a loaded dataset.
        features: names (list or "a,b,c"); default every numeric + categorical feature.
        split: "test", "train" or "all" (`split_rows`).
        n_boot: bootstrap draws for the CI (0: no CI).
        seed: seed of the bootstrap.
        output: score only this output (name or index); default every output.
        batch_size, progress, runner: passed to `model_outputs` (`runner`: a cluster's; `where` describes
            it in the report's metadata).
        ci: confidence level of the interval.
    """
    feature_names = resolve_features(dataset, features)  # fail before the forward pass
    rows = split_rows(dataset, split)
    if output is not None:
        card.output_index(output)
    _check_n_boot(n_boot)
    y = model_outputs(model, dataset, card.spec, rows, batch_size=batch_size, progress=progress, runner=runner)
    return data_report(
        y, card, dataset, feature_names, split=split, n_boot=n_boot, seed=seed, output=output, ci=ci, where=where
    )


def data_report(
    outputs: np.ndarray,
    card: ModelCard,
    dataset: Dataset,
    features=None,
    *,
    split: str = "test",
    n_boot: int = SCORE.n_boot,
    seed: int = 0,
    output: int | str | None = None,
    ci: float = SCORE.ci,
    where: str | None = None,
) -> ScoreReport:
    """The data method's report from outputs already computed: `outputs` (N, K) are the model's
    outputs on the split's rows (`split_rows`), in row order; the rest as in `data_scores`.
    The app's export uses it on its cached outputs, so its report has the numbers on screen."""
    feature_names = resolve_features(dataset, features)
    rows = split_rows(dataset, split)
    _check_n_boot(n_boot)
    y = np.asarray(outputs)
    if len(y) != len(rows):
        raise ValueError(f"{len(y)} outputs for the {len(rows)} rows of the {split} split")
    check_output_count(card, y)
    columns = [card.output_index(output)] if output is not None else list(range(len(card.output_names)))
    names = [card.output_names[j] for j in columns]
    y = y[:, columns]
    table = score_outputs(y, dataset, feature_names, rows, names, n_boot=n_boot, seed=seed, ci=ci)
    values = {f: dataset.feature_values(f)[rows] for f in feature_names}
    cats = tuple(f for f in feature_names if f in dataset.categorical_features)
    meta = _metadata(
        dataset,
        card,
        method="data",
        split=split,
        n=int(len(rows)),
        features=feature_names,
        categorical=list(cats),
        n_boot=int(n_boot),
        seed=int(seed),
        ci_level=ci,
        ci_method="pair_bootstrap" if n_boot else "none",
        **({"cluster": where} if where else {}),
    )
    return ScoreReport(table, names, values, cats, meta, outputs=y)


def diffusion_settings(generator, sampler, *, k_values=None, n_per_value=None, n_boot=SCORE.n_boot, seed=0) -> dict:
    """How diffusion scores were drawn, as a report's metadata records it: the generator's name, K and N
    (None: not recorded; a report reads them off its rows), the sampler, and the interval's method:
    `generator_refits` (a linear-Gaussian generator refitted per draw, `ci_refits` of them),
    `parametric_bootstrap` (`n_boot` draws) or `none`."""
    from engine.scores.generator import GENERATOR_REPLICATES, refittable

    refits = refittable(generator) is not None
    settings = {
        "diffusion": generator.card.name,
        "k_values": k_values,
        "n_per_value": n_per_value,
        "steps": sampler.steps,
        "free_features": sampler.free_features,
        "readout_guidance": sampler.readout_guidance,
        "sampler": sampler.description,
        "n_boot": int(n_boot),
        "seed": int(seed),
        "ci_level": 0.95,
        "ci_method": "none" if not n_boot else "generator_refits" if refits else "parametric_bootstrap",
    }
    if n_boot and refits:
        settings["ci_refits"] = GENERATOR_REPLICATES
    return {k: v for k, v in settings.items() if v is not None}


def diffusion_scores(
    model,
    card: ModelCard,
    dataset: Dataset,
    features=None,
    *,
    diffusion=None,
    output: int | str | None = None,
    k_values: int = SCORE.k_values,
    n_per_value: int = SCORE.n_per_value,
    n_boot: int = SCORE.n_boot,
    seed: int = 0,
    batch_size: int = SCORE.batch_size,
    progress: Progress | None = None,
    sampler=None,
    runner=None,
    where: str | None = None,
    joint: bool = False,
) -> ScoreReport:
    """Scores from a conditional diffusion model (`engine.diffusion.diffusion_score`) instead of data:
    one score per feature x output; `progress(scores done, total)` after each.

    `diffusion` is the diffusion model: a loaded `ConditionalDiffusion` or a name for
    `load_diffusion` (default: the dataset's); `sampler` is how it samples (a `SamplerConfig`;
    default `SamplerConfig.for_scores` of that model). `runner(todo, card, generator, settings)`
    computes the (feature, output column) pairs of `todo` elsewhere and returns `diffusion_score`'s
    results in order (`engine.compute.cluster.Cluster.diffusion_runner`); default here, one after another.

    joint=True also scores the features the generator conditions on together (model-based, like every number
    here): K x N generated subjects, each conditioned on one feature vector of `engine.scores.debias.generated_pool`,
    scored by `engine.scores.joint.shapley_effects` (its interval holds the sampling noise only).
    """
    # engine.diffusion loads diffusers (~3 s): imported when a diffusion score is asked for, not with the service
    from engine.diffusion import SamplerConfig, load_diffusion
    from engine.scores.generator import diffusion_score

    feature_names = resolve_features(dataset, features)
    if card.dataset is None:  # a user's model: the data it scores
        card = replace(card, dataset=dataset.name)
    columns = [card.output_index(output)] if output is not None else list(range(len(card.output_names)))
    generator = (
        load_diffusion(diffusion or dataset.name) if diffusion is None or isinstance(diffusion, str) else diffusion
    )
    sampler = sampler or SamplerConfig.for_scores(generator)
    rows, tables = [], {}
    todo = [(f, j) for f in feature_names for j in columns]
    settings = dict(k_values=k_values, n_per_value=n_per_value, seed=seed, batch_size=batch_size, n_boot=n_boot)
    settings["sampler"] = sampler
    if runner is None:
        results = []
        for i, (f, j) in enumerate(todo):
            results.append(diffusion_score(model, card, generator, f, output=j, **settings))
            if progress:
                progress(i + 1, len(todo))
    else:
        results = runner(todo, card, generator, settings)
    for (f, j), (r, per_value) in zip(todo, results, strict=True):
        rows.append(score_row(f, card.output_names[j], r))
        tables[(f, card.output_names[j])] = per_value
    cats = tuple(f for f in feature_names if f in dataset.categorical_features)
    meta = _metadata(
        dataset,
        card,
        packages=("diffusers",),
        method="diffusion",
        features=feature_names,
        categorical=list(cats),
        **diffusion_settings(generator, sampler, k_values=k_values, n_per_value=n_per_value, n_boot=n_boot, seed=seed),
        **({"cluster": where} if where else {}),
    )
    scored = [card.output_names[j] for j in columns]
    values = {f: dataset.feature_values(f) for f in feature_names}
    table = pd.DataFrame(rows, columns=list(SCORE_COLUMNS))
    report = ScoreReport(table, scored, values, cats, meta, value_tables=tables)
    if not joint:
        return report
    from engine.scores.debias import MORE_GENERATED, draw_generated

    gen, picked, pool = draw_generated(
        model,
        generator,
        dataset.table,
        m_generated=k_values * n_per_value,
        seed=seed,
        sampler=sampler,
        batch_size=batch_size,
    )

    def alone(usable: list[str]) -> SetScores:
        usable_cats = tuple(f for f in usable if f in cats)
        values = {f: picked[f].to_numpy() for f in usable}
        found = _set_scores(gen[:, columns], values, usable_cats, scored, n_boot, seed, SCORE.ci)
        more = " " + MORE_GENERATED.format(m=len(gen))
        for table, status in ((found.effects, "joint_status"), (found.joint, "status")):  # too few: say the fix
            short = table[status].isin(("too_few_samples", "too_many_features"))
            table.loc[short, status.replace("status", "message")] += more
        model_based = "the generated subjects' numbers: intervals of the sampling only, not of the generator's bias"
        about = found.about | {"generated": int(len(gen)), "generated_from": pool, "model_based": model_based}
        return replace(found, about=about)

    return _joined(report, _generator_sets(feature_names, picked.columns, scored, "generator", alone))


# 5. generator scores debiased by the real subjects ---------------------------------------------------


def rows_the_generator_saw(generator, dataset: Dataset, rows: np.ndarray) -> np.ndarray:
    """Which of `rows` the generator was trained on: a folder's generator lists its rows (for the same files,
    by the dataset's fingerprint); an embedded dataset's committed one trained on its train split."""
    training = generator.card.training or {}
    if "rows_trained" in training:
        same = training.get("dataset_fingerprint") in (None, dataset.fingerprint())
        seen = np.asarray(training["rows_trained"], dtype=np.int64) if same else np.array([], np.int64)
    elif (training.get("sources") or {}).get("dataset_train_split") and generator.card.dataset == dataset.name:
        seen = dataset.split_indices("train")
    else:
        seen = np.array([], np.int64)
    return np.intersect1d(rows, seen)


def debiased_scores(
    model,
    card: ModelCard,
    dataset: Dataset,
    features=None,
    *,
    diffusion=None,
    split: str = "test",
    output: int | str | None = None,
    n_generated: int = SCORE.n_generated,
    folds: int | None = None,
    n_boot: int = SCORE.n_boot,
    seed: int = SCORE.seed,
    batch_size: int = SCORE.batch_size,
    sampler=None,
    progress: Progress | None = None,
    joint: bool = False,
) -> ScoreReport:
    """Generator scores debiased by the real subjects of a split (`engine.scores.debias`): the model's outputs
    on the real images, on each one's twin (generated under its recorded features) and on `n_generated`
    generated subjects, combined per feature and output as S_real + lambda (S_gen - S_twin) with the
    prediction-powered bootstrap's interval. The table has the debiased score in `score` / `ci_low` /
    `ci_high`, and beside it the generator's own (`generator_score`..., model-based: its interval holds
    the sampling noise only), the data path's parts and lambda.

    A generator trained on some of these rows is cross-fitted in `folds` folds, each refitted without
    them: by default (`SCORE.folds`) for a linear-Gaussian one (a second each); a diffusion one needs
    `folds` said (each fold retrains it), else the rows are refused with the fix.
    `progress(done, total)` counts the images drawn.

    joint=True scores the features the generator conditions on together from the same draws, debiased the same
    way (`engine.scores.debias.debiased_effects`): `JOINT_COLUMNS` on the rows with the generator's own beside
    them (`GENERATOR_JOINT_COLUMNS`, model-based), S(all) per output in `joint` (with lambda), as `with_joint`.
    """
    from engine.diffusion import SamplerConfig, load_diffusion
    from engine.diffusion.cohort import CohortRecipe, train_on_cohort
    from engine.scores.debias import MIN_REAL, cross_fitted_draws, debiased_score, draw
    from engine.scores.generator import check_compatible, refittable

    feature_names = resolve_features(dataset, features)
    rows = split_rows(dataset, split)
    if card.dataset is None:  # a user's model: the data it scores
        card = replace(card, dataset=dataset.name)
    columns = [card.output_index(output)] if output is not None else list(range(len(card.output_names)))
    generator = (
        load_diffusion(diffusion or dataset.name) if diffusion is None or isinstance(diffusion, str) else diffusion
    )
    check_compatible(card, generator)
    if len(rows) < MIN_REAL:
        raise EveInputError(
            f"The {split} split has {len(rows)} subjects: debiasing by the real images needs at least {MIN_REAL}; "
            "score more rows (--split all), or report the generator's own score (--generator-only)."
        )
    sampler = sampler or SamplerConfig.for_scores(generator)
    y = model_outputs(model, dataset, card.spec, rows, batch_size=batch_size)  # (N, K)
    check_output_count(card, y)
    real = dataset.table.iloc[rows].reset_index(drop=True)
    seen = rows_the_generator_saw(generator, dataset, rows)
    if len(seen) and folds is None and refittable(generator) is None:
        raise EveInputError(
            f"The generator was trained on {len(seen)} of the {len(rows)} rows scored, so its twins of them would "
            f"reproduce them: score rows it did not see (e.g. --split test), or cross-fit it (--folds {SCORE.folds}: "
            "each fold retrains it without its rows, about the generator's training time each)."
        )
    if len(seen):
        recipe = CohortRecipe(kind="linear-gaussian" if refittable(generator) is not None else "diffusion")
        conditioned = [f for f in generator.features if f in dataset.features]

        def fit(train_rows):
            return train_on_cohort(
                dataset, card.spec, features=conditioned, rows=rows[train_rows], recipe=recipe, log=lambda _: None
            )

        drawn = cross_fitted_draws(
            model,
            fit,
            real,
            folds=folds or SCORE.folds,
            m_generated=n_generated,
            seed=seed,
            sampler=sampler,
            batch_size=batch_size,
            progress=progress,
        )
    else:
        drawn = draw(
            model,
            generator,
            real,
            m_generated=n_generated,
            seed=seed,
            sampler=sampler,
            batch_size=batch_size,
            progress=progress,
        )
    table = []
    for f in feature_names:
        categorical = f in dataset.categorical_features
        a = real[f].to_numpy()
        for j in columns:
            row = {"feature": f, "output": card.output_names[j]}
            if f not in drawn.gen_features.columns:
                message = f"The generator does not condition on {f}: score it from data."
                table.append(
                    {
                        **row,
                        "score": np.nan,
                        "ci_low": np.nan,
                        "ci_high": np.nan,
                        "n": len(rows),
                        "n_groups": 0,
                        "status": "not_conditioned",
                        "message": message,
                    }
                )
                continue
            d = debiased_score(
                y[:, j],
                drawn.twin[:, j],
                a,
                drawn.gen[:, j],
                drawn.gen_features[f].to_numpy(),
                categorical=categorical,
                n_boot=n_boot,
                seed=seed,
            )
            table.append(
                {
                    **score_row(f, card.output_names[j], d.result),
                    "generator_score": d.gen.score,
                    "generator_ci_low": d.gen.ci_low,
                    "generator_ci_high": d.gen.ci_high,
                    "data_part": d.real,
                    "twin_part": d.twin,
                    "lam": d.lam,
                    "twin_correlation": d.twin_correlation,
                }
            )
    frame = pd.DataFrame(table)
    frame["unexplained"] = 1 - frame["score"]
    cats = tuple(f for f in feature_names if f in dataset.categorical_features)
    meta = _metadata(
        dataset,
        card,
        packages=("diffusers",),
        method="debiased",
        split=split,
        n=int(len(rows)),
        features=feature_names,
        categorical=list(cats),
        diffusion=generator.card.name,
        n_generated=int(len(drawn.gen)),
        generated_from=drawn.pool,
        cross_fitted=int(drawn.cross_fitted),
        clamped={k: v for k, v in drawn.clamped.items() if v},
        sampler=drawn.sampler or sampler.description,
        n_boot=int(n_boot),
        seed=int(seed),
        ci_level=SCORE.ci,
        ci_method="prediction_powered_bootstrap" if n_boot else "none",
    )
    names = [card.output_names[j] for j in columns]
    values = {f: dataset.feature_values(f)[rows] for f in feature_names}
    report = ScoreReport(frame, names, values, cats, meta, outputs=y[:, columns])
    if not joint:
        return report
    together = _generator_set_scores(drawn, y, real, feature_names, cats, columns, names, n_boot, seed)
    return _joined(report, together)


# 6. the features together: joint score, added scores, Shapley effects (issue 36) ------------------

# beside the one-at-a-time score of each (feature, output) row: what it adds to all the others, S(all) - S(all
# but A), and its Shapley effect (its fair share of S(all)), each with its interval; the status and message of
# these two (a feature left out, too many features for the subjects, ...)
JOINT_COLUMNS = (
    "added",
    "added_ci_low",
    "added_ci_high",
    "shapley",
    "shapley_ci_low",
    "shapley_ci_high",
    "joint_status",
    "joint_message",
)
JOINT_SCORE_COLUMNS = ("output", "score", "ci_low", "ci_high", "n", "status", "message")  # S(all), per output


@dataclass(frozen=True)
class SetScores:
    """What a set of features explains together and how it splits, per output (`set_scores`)."""

    effects: pd.DataFrame  # one row per (feature, output): feature, output, JOINT_COLUMNS
    joint: pd.DataFrame  # one row per output, JOINT_SCORE_COLUMNS: S(all) of the features together
    about: dict  # how: estimator, exact or sampled, subsets, orders, exact limit, draws, seed, level, categorical


def _set_rows(results, output_names: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(effects, joint) tables of `SetScores` from `engine.scores.joint` results, one per output."""
    rows, joint_rows = [], []
    for out, r in zip(output_names, results, strict=True):
        j = r.joint
        joint_rows.append((out, j.score, j.ci_low, j.ci_high, j.n, j.status, j.message))
        for e in r.effects:
            numbers = (e.added, e.added_ci_low, e.added_ci_high, e.shapley, e.shapley_ci_low, e.shapley_ci_high)
            # a failure of the whole set (too many features, constant output) is every row's
            status, message = (e.status, e.message) if j.ok else (j.status, j.message)
            rows.append((e.feature, out, *numbers, status, message))
    effects = pd.DataFrame(rows, columns=["feature", "output", *JOINT_COLUMNS])
    return effects, pd.DataFrame(joint_rows, columns=list(JOINT_SCORE_COLUMNS))


def _set_about(results, categorical: tuple, n_boot: int, seed: int, ci: float) -> dict:
    from engine.scores.joint import MAX_EXACT, N_PERM

    scored = next((r for r in results if r.ok), results[0])
    return {
        "estimator": scored.joint.method or "splines+neighbours",
        "exact": bool(scored.exact),
        "n_subsets": int(scored.n_subsets),
        "n_perm": int(scored.n_perm),
        "max_exact": MAX_EXACT,
        "sampled_orders": N_PERM,
        "together": list(scored.joint.features),
        "n_boot": int(n_boot),
        "seed": int(seed),
        "ci_level": ci,
        "categorical": list(categorical),
    }


def _set_scores(y: np.ndarray, values: dict, categorical: tuple, output_names: list[str], n_boot, seed, ci):
    from engine.scores.joint import shapley_effects

    results = shapley_effects(y, values, categorical=categorical, n_boot=n_boot, seed=seed, ci=ci)
    effects, joint = _set_rows(results, output_names)
    return SetScores(effects, joint, _set_about(results, categorical, n_boot, seed, ci) | {"path": "data"})


def set_scores(
    outputs,
    dataset: Dataset,
    features=None,
    rows=None,
    output_names=None,
    *,
    n_boot: int = SCORE.n_boot,
    seed: int = SCORE.seed,
    ci: float = SCORE.ci,
) -> SetScores:
    """The features together, from data (`engine.scores.joint.shapley_effects`), with the same arguments as
    `score_outputs`: the joint score S(all) per output, and per feature and output the added score
    S(all) - S(all but A) and the Shapley effect, each with a percentile-bootstrap interval.

    All 2^d subsets up to `engine.scores.joint.MAX_EXACT` features, random orders beyond (`about["exact"]`).
    Data problems come back as statuses: a feature with one value is left out (its row "single_value"), a
    constant output "constant_output", more features than the subjects support "too_many_features" on every
    row with the limit and the fix in the message (the one-at-a-time scores are unaffected).
    """
    names = resolve_features(dataset, features)
    rows = np.arange(len(dataset)) if rows is None else np.asarray(rows, dtype=np.int64)
    y = np.asarray(outputs, dtype=float)
    y2 = y.reshape(len(y), -1)
    if len(y2) != len(rows):
        raise ValueError(f"{len(y2)} outputs for {len(rows)} rows")
    output_names = list(output_names) if output_names is not None else [f"y{j}" for j in range(y2.shape[1])]
    values = {f: dataset.feature_values(f)[rows] for f in names}
    cats = tuple(f for f in names if f in dataset.categorical_features)
    return _set_scores(y2, values, cats, output_names, n_boot, seed, ci)


def with_joint(report: ScoreReport) -> ScoreReport:
    """A data report with the features together beside its one-at-a-time scores: `JOINT_COLUMNS` on its rows
    (the rows of its own method when `engine.reports.prose.compare` put other sources beside them), S(all) per
    output in `joint`, and how they were computed in `metadata["joint"]`; the same outputs, rows, bootstrap
    draws, seed and level as its scores. (The generator paths score the features together as they draw:
    `debiased_scores` and `diffusion_scores` with joint=True.)"""
    meta = report.metadata
    if meta.get("method") != "data" or report.outputs is None:
        raise ValueError(
            f"with_joint takes a data report (its outputs and features), not a {meta.get('method')!r} one: "
            "ask debiased_scores or diffusion_scores for joint=True"
        )
    scored = _set_scores(
        np.asarray(report.outputs, dtype=float).reshape(len(report.outputs), -1),
        report.features,
        report.categorical,
        list(report.output_names),
        int(meta.get("n_boot", SCORE.n_boot)),
        int(meta.get("seed", SCORE.seed)),
        float(meta.get("ci_level", SCORE.ci)),
    )
    return _joined(report, scored)


def _joined(report: ScoreReport, scored: SetScores) -> ScoreReport:
    """`report` with the set scores' columns on its rows (same feature and output), `joint` and metadata["joint"].
    Rows of other sources (`engine.reports.prose.compare`: the app's generator rows, the truth) keep the set
    columns they came with (the generator path's own), or none."""
    columns = list(scored.effects.columns[2:])
    table = report.table.drop(columns=[c for c in columns if c in report.table.columns])
    merged = table.merge(scored.effects, on=["feature", "output"], how="left", sort=False)  # keeps the row order
    merged.index = table.index
    if "source" in table.columns and len(table):
        other = table["source"] != table["source"].iloc[0]
        came = report.table.reindex(columns=columns)  # NaN where a row came without them
        for c in columns:
            numeric = merged[c].dtype.kind in "fiu"
            theirs = pd.to_numeric(came[c], errors="coerce") if numeric else came[c].astype(object)
            merged[c] = (merged[c] if numeric else merged[c].astype(object)).where(~other, theirs)
    return replace(report, table=merged, joint=scored.joint, metadata={**report.metadata, "joint": scored.about})


JOINT_ON_ROWS = {"joint_score": "score", "joint_ci_low": "ci_low", "joint_ci_high": "ci_high"}


def joint_on_rows(table: pd.DataFrame, joint: pd.DataFrame, rows=None) -> pd.DataFrame:
    """`table` with each row's output's joint score S(all) and its interval (`JOINT_ON_ROWS`) from `joint` (one row
    per output, `SetScores.joint`), on `rows` (a boolean mask; default every row); other rows keep theirs."""
    by_output = joint.set_index("output")
    for column, source in JOINT_ON_ROWS.items():
        values = table["output"].map(by_output[source])
        if rows is not None:
            values = values.where(rows, table[column] if column in table.columns else np.nan)
        table = table.assign(**{column: values})
    return table


GENERATOR_JOINT_COLUMNS = tuple(f"generator_{c}" for c in JOINT_COLUMNS[:6])  # the generator's own, beside
NOT_CONDITIONED = "The generator does not condition on {feature}: it is left out of the features scored together."


def _left_out_rows(effects: pd.DataFrame, missing: list[str], output_names: list[str]) -> pd.DataFrame:
    """`effects` with a row per (feature the generator does not condition on, output), status not_conditioned."""
    rows = [
        {
            "feature": f,
            "output": out,
            "joint_status": "not_conditioned",
            "joint_message": NOT_CONDITIONED.format(feature=f),
        }
        for f in missing
        for out in output_names
    ]
    return pd.concat([effects, pd.DataFrame(rows, columns=effects.columns)], ignore_index=True) if rows else effects


def _generator_sets(feature_names, conditioned, output_names: list[str], path: str, score) -> SetScores:
    """The features the generator conditions on (`conditioned`: the columns of its draws' feature table) scored
    together by `score(those features) -> SetScores`; each other feature gets a not_conditioned row per output,
    and the metadata says the path and names them."""
    usable = [f for f in feature_names if f in conditioned]
    missing = [f for f in feature_names if f not in usable]
    found = score(usable) if usable else SetScores(*_set_rows([], []), {"together": []})
    about = found.about | {"path": path} | ({"not_conditioned": missing} if missing else {})
    return SetScores(_left_out_rows(found.effects, missing, output_names), found.joint, about)


def _generator_set_scores(
    drawn, y, real: pd.DataFrame, feature_names, categorical, columns, output_names, n_boot, seed
) -> SetScores:
    """The features the generator conditions on scored together, debiased by the real subjects
    (`engine.scores.debias.debiased_effects`), with the generator's own numbers beside them."""
    from engine.scores.debias import debiased_effects

    def debiased(usable: list[str]) -> SetScores:
        cats = tuple(f for f in usable if f in categorical)
        found = debiased_effects(
            y[:, columns],
            drawn.twin[:, columns],
            {f: real[f].to_numpy() for f in usable},
            drawn.gen[:, columns],
            {f: drawn.gen_features[f].to_numpy() for f in usable},
            categorical=cats,
            n_boot=n_boot,
            seed=seed,
            ci=SCORE.ci,
        )
        effects, joint = _set_rows(found.results, output_names)
        own_effects, own_joint = _set_rows(found.generator, output_names)
        effects[list(GENERATOR_JOINT_COLUMNS)] = own_effects[list(JOINT_COLUMNS[:6])].to_numpy()
        own = own_joint[["score", "ci_low", "ci_high"]].to_numpy()
        joint[["generator_score", "generator_ci_low", "generator_ci_high"]] = own
        joint["lam"], joint["twin_correlation"] = found.lam, found.twin_correlation
        about = _set_about(found.results, cats, n_boot, seed, SCORE.ci) | {
            "combination": "S_real(u) + lambda (S_gen(u) - S_twin(u)) for every subset u, one lambda per output",
            "generator_columns": "the generated subjects' own numbers: model-based, intervals of the sampling only",
        }
        return SetScores(effects, joint, about)

    return _generator_sets(feature_names, drawn.gen_features.columns, output_names, "debiased", debiased)
