"""A generator trained on a user's cohort alone: `python -m engine train-diffusion --data DIR`.

No generator of extra subjects exists for a user's scans, so everything is learnt from the
cohort's own rows: the PCA latent space, the feature probe and either the conditional
diffusion denoiser (early-stopped on held-out subjects) or the linear-Gaussian latent model
(`gaussian.LatentGaussian`, the floor the diffusion model has to beat). The model input — plane,
slice, size, intensity — is a classifier's contract (`SliceSpec`), so the generator makes the
images that classifier sees.

The card records the dataset's fingerprint, the rows trained on and held out, the recipe and
the wall time. Writing is atomic: a failed or cancelled training leaves no card behind.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from engine import machine
from engine.cards import DiffusionCard
from engine.data.dataset import GENERATORS_DIR, Dataset, resolve_features
from engine.data.slicing import SliceSpec
from engine.diffusion.codec import PCACodec
from engine.diffusion.conditions import FeatureSchema, FeatureTable, feature_table_card
from engine.diffusion.gaussian import LatentGaussian
from engine.diffusion.pipeline import ConditionalDiffusion
from engine.diffusion.probes import fit_probe, probe_report
from engine.diffusion.sampler import TRAIN_SCHEDULE
from engine.diffusion.storage import model_tensors
from engine.diffusion.train import TrainConfig, encode, feature_card, fit_denoiser
from engine.errors import EveInputError
from engine.paths import DIFFUSION_ASSETS

KINDS = ("diffusion", "linear-gaussian")
MIN_SUBJECTS = 50  # below this, a tenth held out is too few to stop on and PCA has too few rows
HOLDOUT_FRACTION, MIN_HOLDOUT = 0.1, 10
# which kind a folder's generators are offered in first: the one that scored closer to the reference on
# scarce SynthBrain cohorts (assets/diffusion/scarce-validation.json; README, "Scarce data")
PREFERRED_KINDS = ("linear-gaussian", "diffusion")


@dataclass(frozen=True)
class CohortRecipe:
    """How a generator is trained on 100-400 subjects (`assets/README.md`, "Scarce data", has the
    measurements behind the defaults)."""

    kind: str = "diffusion"  # one of KINDS
    components: int = 16  # PCA components: fewer than the rows, so each is estimated from data
    whiten: float = 0.5
    width: int = 128  # denoiser MLP width (the ample-data recipe: 384)
    depth: int = 3
    steps: int = 8000  # at most; early stopping usually ends sooner
    eval_every: int = 250
    patience: int = 6  # evaluations without a better held-out loss before stopping
    batch: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-3
    probe_components: int = 16
    probe_epochs: int = 150
    seed: int = 0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise EveInputError(f"Unknown generator kind {self.kind!r}: use one of {', '.join(KINDS)}.")

    def denoiser_config(self, dataset: str) -> TrainConfig:
        return TrainConfig(
            dataset=dataset,
            n_extra=0,
            components=self.components,
            whiten=self.whiten,
            width=self.width,
            depth=self.depth,
            cond_input=True,
            steps=self.steps,
            eval_every=self.eval_every,
            patience=self.patience,
            batch=self.batch,
            lr=self.lr,
            weight_decay=self.weight_decay,
            seed=self.seed,
        )


def check_cohort(dataset: Dataset, spec: SliceSpec, features: list[str], rows: np.ndarray) -> None:
    """Refuse, before any training, what the recipe cannot learn from; each message names the fix."""
    if spec.is_volume:
        raise EveInputError(
            "The generator makes 2D slices and this input is the whole volume: train it for a slice model "
            "(--plane/--slice/--size, or a model card with input kind 'slice'); score a volume model from data."
        )
    if len(rows) < MIN_SUBJECTS:
        raise EveInputError(
            f"{dataset.name} has {len(rows)} subjects to train on: the generator needs at least {MIN_SUBJECTS} "
            "(a tenth of them are held out to stop training); score this cohort from data instead."
        )
    table = dataset.table.iloc[rows]
    for name in resolve_features(dataset, features):  # unknown or no features: the scoring service's message
        values = table[name]
        if name in dataset.categorical_features:
            if values.nunique() < 2:
                raise EveInputError(
                    f"Feature {name!r} has one level ({values.iloc[0]!r}) in the training rows: a generator cannot "
                    "learn its effect; leave it out (--features)."
                )
        elif not np.isfinite(values.to_numpy(float)).all():
            raise EveInputError(f"Feature {name!r} has NaN or Inf values: fill or drop those rows.")
        elif values.std() == 0:
            raise EveInputError(
                f"Feature {name!r} is constant ({values.iloc[0]:g}) in the training rows: a generator cannot learn "
                "its effect; leave it out (--features)."
            )


def split_holdout(rows: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(trained-on rows, held-out rows): a seeded tenth (at least MIN_HOLDOUT) held out to stop on."""
    rows = np.asarray(rows)
    n_held = max(MIN_HOLDOUT, round(HOLDOUT_FRACTION * len(rows)))
    held = np.zeros(len(rows), bool)
    held[np.random.default_rng(seed).permutation(len(rows))[:n_held]] = True
    return rows[~held], rows[held]


def train_on_cohort(
    dataset: Dataset,
    spec: SliceSpec,
    *,
    features: list[str] | None = None,
    rows=None,
    recipe: CohortRecipe = CohortRecipe(),
    log: Callable[[str], None] = print,
) -> ConditionalDiffusion:
    """A generator of `spec` slices conditioned on `features` (default: every feature that varies on `rows`; a
    constant one teaches nothing and is left out; one asked for by name is checked, and refused if constant),
    learnt from `rows` (default every row) of `dataset` and nothing else."""
    t_start = time.time()
    rows = np.arange(len(dataset)) if rows is None else np.asarray(rows)
    if features is None:
        features = [f for f in dataset.features if dataset.table[f].iloc[rows].nunique() > 1]
    features = list(features)
    check_cohort(dataset, spec, features, rows)
    torch.manual_seed(recipe.seed)
    train_rows, held_rows = split_holdout(rows, recipe.seed)
    train_images, held_images = dataset.model_inputs(spec, train_rows), dataset.model_inputs(spec, held_rows)
    table = dataset.table.iloc[train_rows][features].reset_index(drop=True)
    held_table = dataset.table.iloc[held_rows][features].reset_index(drop=True)
    feature_entries = feature_card(table, dataset, features)
    schema = FeatureSchema(dataset.name, feature_entries)
    c, spans = schema.encode_rows(table)
    c_held, _ = schema.encode_rows(held_table)
    components = min(recipe.components, len(train_rows) - 2)
    codec = PCACodec.fit(train_images, components, recipe.whiten)
    z0, z_held = encode(codec, train_images), encode(codec, held_images)
    log(f"{len(train_rows)} subjects trained on, {len(held_rows)} held out; PCA d={components}")
    config = recipe.denoiser_config(dataset.name)
    if recipe.kind == "linear-gaussian":
        denoiser, stats = LatentGaussian.fit(c, z0), {}
        denoiser_entry, design = denoiser.config_json(), "a joint Gaussian of the features and the latent"
    else:
        denoiser, stats = fit_denoiser(z0, c, spans, config, (z_held, c_held), log)
        denoiser_entry = denoiser.config.to_json()
        design = "a residual-MLP eps-denoiser with adaLN conditioning, early-stopped on held-out subjects"
    numeric = [f for f in feature_entries if not f.is_categorical]
    names = [f.name for f in numeric]
    mean, sd = np.array([f.mean for f in numeric]), np.array([f.sd for f in numeric])
    probe = report = None
    if names:
        targets = (table[names].to_numpy(float) - mean) / sd
        probe = fit_probe(
            train_images,
            targets,
            n_components=min(recipe.probe_components, len(train_rows) - 2),
            epochs=recipe.probe_epochs,
            seed=recipe.seed,
        )
        data_sd = np.array([f.data_sd for f in numeric])
        report = probe_report(probe, held_images, held_table[names].to_numpy(float), names, mean, sd, data_sd)
    card = DiffusionCard(
        name=f"{dataset.name}-{recipe.kind}",
        dataset=dataset.name,
        spec=spec,
        design=f"trained on the cohort alone: PCA codec (d components + noise level) and {design}",
        features=feature_entries,
        probe={"kind": "pca-mlp", "n_components": min(recipe.probe_components, len(train_rows) - 2)},
        probe_features=tuple(names),
        codec={"kind": "pca", "d": components, "whiten": recipe.whiten},
        denoiser=denoiser_entry,
        schedule=dict(TRAIN_SCHEDULE) if recipe.kind == "diffusion" else None,
        training={
            "recipe": asdict(recipe),
            "dataset_fingerprint": dataset.fingerprint(),
            "dataset_path": str(dataset.root),
            "rows_trained": [int(r) for r in train_rows],
            "rows_held_out": [int(r) for r in held_rows],
            "subjects_trained": dataset.table["subject"].iloc[train_rows].tolist(),
            **{k: v for k, v in stats.items() if k != "curve"},
            "curve": stats.get("curve", []),
            "wall_time_seconds": round(time.time() - t_start, 1),
            "threads": torch.get_num_threads(),
            "machine": machine(),
        },
        probe_report=report,
        feature_table=feature_table_card(len(table)),
        command=f"python -m engine train-diffusion --data {dataset.root} --kind {recipe.kind}",
    )
    table_rows = FeatureTable.from_frame(schema, table)
    return ConditionalDiffusion(codec, denoiser, card, probe=probe, table=table_rows)


def save_cohort_model(model: ConditionalDiffusion, out_dir: str | Path) -> Path:
    """`<out_dir>/<name>.json` and `.safetensors`, written to a temporary folder first and moved in
    one rename each, so a failure leaves the previous model (or nothing), never half a card."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = out_dir / f".{model.card.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        save_file({k: v.contiguous() for k, v in model_tensors(model).items()}, staging / "weights.safetensors")
        (staging / "card.json").write_text(json.dumps(model.card.to_json(), indent=2))
        (staging / "weights.safetensors").replace(out_dir / f"{model.card.name}.safetensors")
        (staging / "card.json").replace(out_dir / f"{model.card.name}.json")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir / f"{model.card.name}.json"


def find_generators(folder: str | Path, spec: SliceSpec | None = None) -> list[Path]:
    """The generator cards in `<folder>/eve-generators/` (that make `spec`'s slices, if given),
    the preferred kind first (`PREFERRED_KINDS`)."""
    found = []
    for path in sorted((Path(folder) / GENERATORS_DIR).glob("*.json")):
        try:
            card = DiffusionCard.from_json(json.loads(path.read_text()), path)
        except (ValueError, OSError):
            continue  # not a generator card; `load_diffusion` names the problem when one is asked for
        if spec is None or card.spec == spec:
            kind = card.denoiser.get("kind", "diffusion")
            found.append((PREFERRED_KINDS.index(kind) if kind in PREFERRED_KINDS else len(PREFERRED_KINDS), path))
    return [path for _, path in sorted(found)]


def trust_note(card: DiffusionCard) -> str | None:
    """When to trust a generator trained on a cohort alone, in words, from the committed scarce-data
    validation (`assets/diffusion/scarce-validation.json`); None for a generator trained on ample data."""
    if "rows_trained" not in (card.training or {}):
        return None
    n = len(card.training["rows_trained"]) + len(card.training["rows_held_out"])
    path = DIFFUSION_ASSETS / "scarce-validation.json"
    summary = {(r["n_subjects"], r["path"]): r for r in json.loads(path.read_text())["summary"]}
    sizes = sorted({size for size, _ in summary})
    nearest = min(sizes, key=lambda size: abs(size - n))
    kind = card.denoiser.get("kind", "diffusion")
    data, own = summary[nearest, "data"], summary.get((nearest, kind))
    measured = (
        ""
        if own is None
        else (
            f" On SynthBrain cohorts of {nearest}, such generators scored {own['rmse']:.3f} from the reference "
            f"(RMSE; their intervals covered it in {own['coverage']:.0%} of pairs) against {data['rmse']:.3f} "
            f"for the data path ({data['coverage']:.0%})."
        )
    )
    return (
        f"This generator learnt from your {n} subjects alone, so it holds no more information than they do.{measured} "
        "Trust the data path's score; the generator's shows what it learnt and lets you see images."
    )
