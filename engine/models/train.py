"""Train (or, for glass-box models, build) every model of Eve's zoo.

    python -m engine train-classifier NAME [NAME ...]     # or --all

Each recipe in `RECIPES` names a dataset, a target, an input `SliceSpec` and an
architecture. Training is deterministic (fixed seeds, deterministic algorithms, one
thread by default), uses only the `train` split, runs a fixed number of epochs (no early
stopping on the test split) and then measures the held-out metrics on the `test` split.
It writes `assets/models/NAME.safetensors` and the card `assets/models/NAME.json`.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from scipy.stats import rankdata
from torch import nn
from tqdm import tqdm

from engine import machine
from engine.cards import ModelCard
from engine.data import Dataset, SliceSpec
from engine.data.defaults import load_default
from engine.data.synthbrain import label_probabilities
from engine.errors import EveInputError
from engine.models import xtrain
from engine.models.zoo import build_model, file_sha256, models_dir

SYNTHBRAIN_SPEC = SliceSpec("coronal", "hippocampus", 64)  # cuts both hippocampi and the lateral ventricles
SHAPES_SPEC = SliceSpec("axial", None, 64)  # shapes are 2D images
# the central 120 mm of the volume at 2.5 mm (ventricles, hippocampi, basal ganglia); fitting the whole
# 234 mm field of view into the cube (4.9 mm voxels) left the same network at chance after 18 epochs
SYNTHBRAIN_VOLUME_SPEC = SliceSpec(size=48, input="volume", spacing=2.5)
NORMALISATION = (
    "per volume: divide by the 99th percentile of non-zero voxels, clip to [0, 1]; slice padded "
    "to a square and resized (bilinear, antialiased) — engine.data.slicing.model_input"
)
VOLUME_NORMALISATION = (
    "per volume: divide by the 99th percentile of non-zero voxels, clip to [0, 1]; resampled to isotropic "
    "voxels (area averaging when shrinking) and centre-cropped or padded to the cube — "
    "engine.data.slicing.model_input"
)


# 1. targets: known functions of the features --------------------------------------------


@dataclass(frozen=True)
class Target:
    """A training target: `values(table, truth)` → one number per row."""

    definition: str  # in words, for the card
    depends_on: tuple[str, ...]  # the features it is a function of (by construction)
    values: Callable[[pd.DataFrame, dict], np.ndarray]
    reference: Callable[[pd.DataFrame, dict], np.ndarray] | None = None  # Bayes-optimal score, if known


def _uniform_z(table: pd.DataFrame, truth: dict, feature: str) -> np.ndarray:
    """Standardise with the feature's *true* uniform distribution (mean, sd from truth.json)."""
    spec = truth["features"][feature]
    low, high = spec["low"], spec["high"]
    return (table[feature].to_numpy(float) - (low + high) / 2) / ((high - low) / np.sqrt(12))


def _label_probability(shortcut: bool):
    def probability(table: pd.DataFrame, truth: dict) -> np.ndarray:
        return label_probabilities(table, truth, shortcut=shortcut)

    return probability


TARGETS: dict[str, Target] = {
    "label": Target(
        "synthbrain `label`: Bernoulli(sigmoid(1.6 z(ventricle_volume) - 1.6 z(hippocampal_volume))), see truth.json",
        ("ventricle_volume", "hippocampal_volume"),
        lambda table, truth: table["label"].to_numpy(float),
        _label_probability(False),
    ),
    "label_shortcut": Target(
        "synthbrain `label_shortcut`: Bernoulli(sigmoid(1.6 z(ventricle_volume) - 1.6 z(hippocampal_volume) "
        "+ 1.6 z(icv))) — leaks head size, see truth.json",
        ("ventricle_volume", "hippocampal_volume", "icv"),
        lambda table, truth: table["label_shortcut"].to_numpy(float),
        _label_probability(True),
    ),
    "size+texture": Target(
        "z(size) + z(texture), each standardised with its true uniform distribution (mean 0, sd 1)",
        ("size", "texture"),
        lambda table, truth: _uniform_z(table, truth, "size") + _uniform_z(table, truth, "texture"),
    ),
    "elongated": Target(
        "1 if aspect < 0.725 (the middle of U(0.45, 1.0)) else 0: a flat ellipse",
        ("aspect",),
        lambda table, truth: (table["aspect"].to_numpy(float) < 0.725).astype(float),
    ),
    "ventricle_volume": Target(
        "read-out of ventricle_volume (mL); metrics compare the output with the true volume",
        ("ventricle_volume",),
        lambda table, truth: table["ventricle_volume"].to_numpy(float),
    ),
    "object_area": Target(
        "read-out of the ellipse's area pi * size^2 * aspect (pixels); metrics compare with it",
        ("size", "aspect"),
        lambda table, truth: np.pi * table["size"].to_numpy(float) ** 2 * table["aspect"].to_numpy(float),
    ),
    "background": Target(
        "read-out of the background brightness; metrics compare with the `background` feature",
        ("background",),
        lambda table, truth: table["background"].to_numpy(float),
    ),
}


# 2. recipes -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 40
    batch_size: int = 32
    lr: float = 3e-3  # peak of a one-cycle schedule (warm-up, then cosine decay to 0)
    weight_decay: float = 1e-3
    optimiser: str = "adamw"  # "adamw", or "sgd": plain SGD (no momentum), the steps XtrAIn tracks
    shift: int = 0  # random translation of up to ±shift pixels (zero padding)
    flip: bool = False  # random left-right flip (brains: label-preserving)
    gain: float = 0.0  # multiply each image by U(1 - gain, 1 + gain), then clip to [0, 1]
    seed: int = 0


@dataclass(frozen=True)
class Recipe:
    name: str
    dataset: str  # an embedded dataset (engine.data.defaults)
    target: str  # a key of TARGETS
    task: str  # "binary" (one logit) | "regression" | "readout" (glass-box)
    spec: SliceSpec
    architecture: str  # a key of architectures.ARCHITECTURES
    kwargs: dict = field(default_factory=dict)
    description: str = ""
    output_names: tuple[str, ...] = ()
    train: TrainConfig | None = None  # None: glass-box, nothing to train
    search: dict[str, list] | None = None  # glass-box: grid of kwargs, best train-split correlation wins
    output_unit: str | None = None  # a regression or read-out output's unit

    @property
    def track(self) -> int:
        """Test images whose XtrAIn maps are tracked during training (an MLP's `tracked`; 0: none)."""
        return int(self.kwargs.get("tracked", 0))


# chosen by 4-fold cross-validation on synthbrain's train split (a hidden layer or dropout trained worse)
SMALL_CNN = {"size": 64, "outputs": 1, "widths": [8, 16, 32], "pooled": 4, "hidden": 0, "dropout": 0.0}

# 64 patches of 8 x 8 pixels, 2 blocks of width 64; depth, patch, width and learning rate chosen on 60 train
# subjects held out from the other 220 (assets/README.md): depth 4 learnt little from 280 slices
SMALL_VIT = {"size": 64, "patch": 8, "dim": 64, "depth": 2, "heads": 4, "mlp": 128, "outputs": 1}

# a fully connected network for XtrAIn (engine.models.xtrain): 4096 → 32 → 32 → 1, XtrAIn and XtrAIn+ tracked on
# the first 8 test images; 32 hidden units keep the weights and the stored maps under 1 MB
SMALL_MLP = {"size": 64, "outputs": 1, "hidden": [32, 32], "tracked": 8}

RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in [
        Recipe(
            "synthbrain-diagnosis",
            "synthbrain",
            "label",
            "binary",
            SYNTHBRAIN_SPEC,
            "SmallCNN",
            SMALL_CNN,
            "Diagnosis-like classifier: depends on ventricle and hippocampal volume by construction.",
            ("logit P(label=1)",),
            TrainConfig(epochs=40, weight_decay=1e-4, shift=2, flip=True, gain=0.1),
        ),
        Recipe(
            "synthbrain-diagnosis-vit",
            "synthbrain",
            "label",
            "binary",
            SYNTHBRAIN_SPEC,
            "SmallViT",
            SMALL_VIT,
            "Vision Transformer diagnosis-like classifier (the target of synthbrain-diagnosis, on the same slice): "
            "its attention maps sit beside the CNN's maps in Compare.",
            ("logit P(label=1)",),
            TrainConfig(epochs=200, lr=2e-3, weight_decay=0.05, shift=2, flip=True, gain=0.1),
        ),
        Recipe(
            "synthbrain-diagnosis-3d",
            "synthbrain",
            "label",
            "binary",
            SYNTHBRAIN_VOLUME_SPEC,
            "SmallCNN",
            {**SMALL_CNN, "size": 48, "pooled": 3, "dims": 3},
            "3D diagnosis-like classifier on the central 120 mm of the volume (a 48^3 cube of 2.5 mm voxels): "
            "depends on ventricle and hippocampal volume by construction (the target of synthbrain-diagnosis).",
            ("logit P(label=1)",),
            TrainConfig(epochs=25, weight_decay=1e-4, shift=2, flip=True, gain=0.1),
        ),
        Recipe(
            "synthbrain-shortcut",
            "synthbrain",
            "label_shortcut",
            "binary",
            SYNTHBRAIN_SPEC,
            "SmallCNN",
            SMALL_CNN,
            "Shortcut classifier: its label also leaks head size (icv), so the model can look at head size.",
            ("logit P(label_shortcut=1)",),
            TrainConfig(epochs=40, weight_decay=1e-4, shift=2, flip=True, gain=0.1),
        ),
        Recipe(
            "shapes-size-texture",
            "shapes",
            "size+texture",
            "regression",
            SHAPES_SPEC,
            "SmallCNN",
            SMALL_CNN,
            "Regression of z(size) + z(texture): depends on size and texture only.",
            ("z(size)+z(texture)",),
            TrainConfig(epochs=20, weight_decay=1e-4),
            output_unit="SD units",
        ),
        Recipe(
            "shapes-elongated",
            "shapes",
            "elongated",
            "binary",
            SHAPES_SPEC,
            "SmallCNN",
            SMALL_CNN,
            "Classifier of aspect < 0.725 (flat vs round ellipse): depends on aspect only.",
            ("logit P(aspect<0.725)",),
            TrainConfig(epochs=20, weight_decay=1e-4),
        ),
        Recipe(
            "synthbrain-diagnosis-mlp",
            "synthbrain",
            "label",
            "binary",
            SYNTHBRAIN_SPEC,
            "MLP",
            SMALL_MLP,
            "Fully connected diagnosis-like classifier (the target of synthbrain-diagnosis, on the same slice), "
            "trained with plain SGD while XtrAIn and XtrAIn+ were tracked on 8 test images (engine.models.xtrain).",
            ("logit P(label=1)",),
            TrainConfig(epochs=100, lr=0.01, weight_decay=1e-3, optimiser="sgd", flip=True),
        ),
        Recipe(
            "shapes-elongated-mlp",
            "shapes",
            "elongated",
            "binary",
            SHAPES_SPEC,
            "MLP",
            SMALL_MLP,
            "Fully connected classifier of aspect < 0.725 (the target of shapes-elongated), trained with plain SGD "
            "while XtrAIn and XtrAIn+ were tracked on 8 test images (engine.models.xtrain).",
            ("logit P(aspect<0.725)",),
            TrainConfig(epochs=30, lr=0.01, weight_decay=1e-4, optimiser="sgd"),
        ),
        Recipe(
            "synthbrain-glass-ventricles",
            "synthbrain",
            "ventricle_volume",
            "readout",
            SYNTHBRAIN_SPEC,
            "DarkPixelCount",
            {"size": 64, "window": [28, 32, 24, 40], "threshold": 0.6, "temperature": 0.05},
            "Glass-box ventricle read-out: soft count of dark (CSF) pixels in a fixed window over the lateral "
            "ventricles of the coronal hippocampus slice (window and threshold chosen on the train split).",
            ("dark_pixels",),
            search={
                "window": [
                    [r0, r1, c0, 64 - c0] for r0 in (24, 26, 28) for r1 in (30, 32, 34, 36) for c0 in (22, 24, 26, 28)
                ],  # symmetric about the midline
                "threshold": [0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7],
            },
            output_unit="pixels",
        ),
        Recipe(
            "shapes-glass-area",
            "shapes",
            "object_area",
            "readout",
            SHAPES_SPEC,
            "BrightAreaAboveBackground",
            {"size": 64, "border": 4, "temperature": 0.05},
            "Glass-box area read-out: soft count of pixels brighter than halfway between the background "
            "(border mean) and white.",
            ("bright_pixels",),
            output_unit="pixels",
        ),
        Recipe(
            "shapes-glass-background",
            "shapes",
            "background",
            "readout",
            SHAPES_SPEC,
            "BorderMean",
            {"size": 64, "border": 4},
            "Glass-box linear read-out: mean brightness of the 4-pixel border frame (the normalised background).",
            ("border_mean",),
            output_unit="normalised intensity",
        ),
    ]
}


# 3. metrics -------------------------------------------------------------------------------


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann–Whitney U, ties counted half)."""
    labels = np.asarray(labels).astype(bool)
    n1, n0 = labels.sum(), (~labels).sum()
    if n1 == 0 or n0 == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def metrics(task: str, y: np.ndarray, out: np.ndarray, reference: np.ndarray | None = None) -> dict:
    """Held-out metrics of outputs `out` (N,) against targets `y` (N,)."""
    y, out = np.asarray(y, float), np.asarray(out, float)
    result: dict = {"n": int(len(y))}
    if task == "binary":
        result["accuracy"] = float(((out > 0) == (y > 0.5)).mean())
        result["auc"] = auc(y, out)
        result["positive_fraction"] = float(y.mean())
        if reference is not None:  # the true P(y=1 | features): what a perfect model could do
            result["bayes_accuracy"] = float(((reference > 0.5) == (y > 0.5)).mean())
            result["bayes_auc"] = auc(y, reference)
    elif task == "regression":
        result["r2"] = float(1 - np.sum((y - out) ** 2) / np.sum((y - y.mean()) ** 2))
        result["rmse"] = float(np.sqrt(np.mean((y - out) ** 2)))
        result["pearson_r"] = float(np.corrcoef(y, out)[0, 1])
    else:  # readout: how well the output tracks the feature, up to a linear map
        r = float(np.corrcoef(y, out)[0, 1])
        result["pearson_r"] = r
        result["r2_linear"] = r * r
    return result


@torch.inference_mode()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Model outputs (N, K) for images (N, 1, S, S), in batches."""
    model.eval()
    device = next(itertools.chain(model.parameters(), model.buffers()), torch.empty(0)).device
    return torch.cat(
        [model(images[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(images), batch_size)]
    )


def evaluate(model: nn.Module, card: ModelCard, dataset: Dataset, split: str = "test") -> dict:
    """Recompute a card's held-out metrics on `dataset`'s split (what the tests check)."""
    target = TARGETS[card.target]
    rows = dataset.split_indices(split)
    table = dataset.table.iloc[rows].reset_index(drop=True)
    y = target.values(table, dataset.truth)
    out = predict(model, dataset.model_inputs(card.spec, rows))[:, 0].numpy()
    reference = target.reference(table, dataset.truth) if target.reference and card.task == "binary" else None
    return metrics(card.task, y, out, reference)


# 4. training ------------------------------------------------------------------------------


def augment(x: torch.Tensor, config: TrainConfig, generator: torch.Generator) -> torch.Tensor:
    """Random shifts, left-right flips and gain jitter of a batch of images (B, 1, S, S) or
    volumes (B, 1, S, S, S). Left-right is an image's last axis (neurological convention) and a
    volume's first spatial axis (RAS+ x)."""
    b, spatial = len(x), x.shape[2:]
    ones = (1,) * (x.ndim - 1)
    if config.shift:
        p = config.shift
        padded = F.pad(x, (p, p) * len(spatial))
        # one draw per axis, in axis order (a 2D recipe's draws, and so its weights, as before 3D)
        offsets = torch.stack([torch.randint(0, 2 * p + 1, (b,), generator=generator) for _ in spatial], dim=1)
        x = torch.stack(
            [
                padded[(i, slice(None), *(slice(o, o + n) for o, n in zip(offsets[i].tolist(), spatial, strict=True)))]
                for i in range(b)
            ]
        )
    if config.flip:
        flip = torch.rand(b, generator=generator) < 0.5
        x = torch.where(flip.view(b, *ones), x.flip(2 if len(spatial) == 3 else -1), x)
    if config.gain:
        gain = 1 + config.gain * (2 * torch.rand(b, *ones, generator=generator) - 1)
        x = (x * gain).clamp(0, 1)
    return x


def fit(
    recipe: Recipe,
    images: torch.Tensor,
    y: np.ndarray,
    *,
    progress: bool = True,
    on_step: Callable[[dict, dict], None] | None = None,
) -> nn.Module:
    """Train a recipe's model on images (N, 1, S, S) and targets y (N,). Deterministic by seed.

    `on_step(old, new)` is called after every optimiser step with the parameters before and after it
    ({name: tensor}, detached; e.g. `engine.models.xtrain.Tracker.step`); it must not change them."""
    config = recipe.train
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    model = build_model({"class": recipe.architecture, "kwargs": recipe.kwargs}, recipe.name)
    targets = torch.tensor(np.asarray(y), dtype=torch.float32)[:, None]  # (N, 1)
    loss_fn = nn.BCEWithLogitsLoss() if recipe.task == "binary" else nn.MSELoss()
    if config.optimiser not in ("adamw", "sgd"):
        raise ValueError(f"unknown optimiser {config.optimiser!r}")
    optimiser = (
        torch.optim.SGD(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        if config.optimiser == "sgd"
        else torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    )
    steps_per_epoch = -(-len(images) // config.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=config.lr, total_steps=config.epochs * steps_per_epoch, pct_start=0.1
    )
    bar = tqdm(range(config.epochs), desc=f"training {recipe.name}", unit="epoch", disable=not progress)
    for _ in bar:
        model.train()
        order = torch.randperm(len(images), generator=generator)
        total = 0.0
        for start in range(0, len(images), config.batch_size):
            idx = order[start : start + config.batch_size]
            if len(idx) < 2:  # BatchNorm needs two images
                continue
            x = augment(images[idx], config, generator)
            loss = loss_fn(model(x), targets[idx])
            optimiser.zero_grad()
            loss.backward()
            old = {n: p.detach().clone() for n, p in model.named_parameters()} if on_step else None
            optimiser.step()
            if on_step:
                on_step(old, {n: p.detach() for n, p in model.named_parameters()})
            schedule.step()
            total += loss.item() * len(idx)
        bar.set_postfix(loss=f"{total / len(images):.4f}")
    return model.eval()


def calibrate(recipe: Recipe, dataset: Dataset) -> tuple[Recipe, dict]:
    """Pick a glass-box model's fixed kwargs from `recipe.search`: the combination whose output
    correlates best (Pearson r) with the target on the train split. Nothing is fitted after."""
    rows = dataset.split_indices("train")
    images = dataset.model_inputs(recipe.spec, rows)
    y = TARGETS[recipe.target].values(dataset.table.iloc[rows].reset_index(drop=True), dataset.truth)
    keys = list(recipe.search)
    best = (-np.inf, None)
    for values in itertools.product(*(recipe.search[k] for k in keys)):
        kwargs = {**recipe.kwargs, **dict(zip(keys, values, strict=True))}
        out = predict(build_model({"class": recipe.architecture, "kwargs": kwargs}, recipe.name), images)[:, 0].numpy()
        r = float(np.corrcoef(out, y)[0, 1]) if out.std() > 0 else -np.inf
        if r > best[0]:
            best = (r, kwargs)
    n = int(np.prod([len(v) for v in recipe.search.values()]))
    calibration = {
        "split": "train",
        "searched": {k: f"{len(v)} values" for k, v in recipe.search.items()},
        "combinations": n,
        "criterion": f"Pearson r with {recipe.target}",
        "train_pearson_r": best[0],
    }
    return replace(recipe, kwargs=best[1]), calibration


def _tracking_card(recipe: Recipe, dataset: Dataset, rows: np.ndarray, tracker) -> dict:
    """The card's `xtrain` entry (`engine.models.xtrain.Tracking`): which maps the weights file holds, of which
    images."""
    return xtrain.Tracking(
        methods=xtrain.METHODS,
        stored=xtrain.STORED_METHODS,
        images=tuple(dataset.subjects[r] for r in rows),
        split="test",
        explained=xtrain.EXPLAINED if recipe.task == "binary" else xtrain.EXPLAINED[:1],
        steps=tracker.steps,
        stored_as=xtrain.STORED_AS.format(f"{recipe.name}.safetensors"),
        xstep=xtrain.XSTEP,
    ).to_json()


def _card(recipe: Recipe, model: nn.Module, wall_time: float | None) -> ModelCard:
    target = TARGETS[recipe.target]
    card = ModelCard(
        name=recipe.name,
        kind="cnn" if recipe.train else "glass-box",
        description=recipe.description,
        dataset=recipe.dataset,
        target=recipe.target,
        target_definition=target.definition,
        depends_on=tuple(target.depends_on),
        task=recipe.task,
        spec=recipe.spec,
        normalisation=VOLUME_NORMALISATION if recipe.spec.is_volume else NORMALISATION,
        output_names=tuple(recipe.output_names),
        output_unit=recipe.output_unit,
        outputs={
            "binary": "logit (apply a sigmoid for the probability)",
            "regression": "predicted target",
            "readout": "exact read-out (see function)",
        }[recipe.task],
        architecture={"class": recipe.architecture, "kwargs": recipe.kwargs},
        command=f"python -m engine train-classifier {recipe.name}",
        torch_version=torch.__version__.split("+")[0],
    )
    if recipe.train:
        training = {
            **asdict(recipe.train),
            "split": "train",
            "wall_time_s": round(wall_time, 1),
            "threads": torch.get_num_threads(),
            "machine": machine(),
        }
        return replace(card, n_parameters=sum(p.numel() for p in model.parameters()), training=training)
    return replace(card, function=model.formula())


def train_recipe(name: str, out_dir: str | Path | None = None, *, progress: bool = True, dataset=None) -> ModelCard:
    """Rebuild one zoo model: train (or build), evaluate on the test split, write weights and card."""
    if name not in RECIPES:
        raise EveInputError(f"Unknown zoo model {name!r}: choose one of {', '.join(RECIPES)}.")
    recipe = RECIPES[name]
    out = models_dir() if out_dir is None else Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dataset = dataset or load_default(recipe.dataset)
    target = TARGETS[recipe.target]
    wall_time = None
    if recipe.train:
        rows = dataset.split_indices("train")
        images = dataset.model_inputs(recipe.spec, rows)
        y = target.values(dataset.table.iloc[rows].reset_index(drop=True), dataset.truth)
        deterministic = torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(True)
        tracker = None
        if recipe.track:  # XtrAIn on the first test images, every step (engine.models.xtrain)
            tracked_rows = dataset.split_indices("test")[: recipe.track]
            tracked = dataset.model_inputs(recipe.spec, tracked_rows)
            architecture = build_model({"class": recipe.architecture, "kwargs": recipe.kwargs}, name)  # its layers
            tracker = xtrain.Tracker(architecture, tracked, probability=recipe.task == "binary")
        start = time.perf_counter()
        try:
            model = fit(recipe, images, y, progress=progress, on_step=tracker.step if tracker else None)
        finally:
            torch.use_deterministic_algorithms(deterministic)
        wall_time = time.perf_counter() - start
        if tracker:
            xtrain.store(model, tracker, tracked)
    elif recipe.search:
        recipe, calibration = calibrate(recipe, dataset)
    if not recipe.train:
        model = build_model({"class": recipe.architecture, "kwargs": recipe.kwargs}, name)
    card = _card(recipe, model, wall_time)
    if recipe.train and tracker:
        training = {**card.training, "xtrain_tracking_s": round(tracker.seconds, 1)}
        card = replace(card, training=training, xtrain=_tracking_card(recipe, dataset, tracked_rows, tracker))
    if recipe.search:
        card = replace(card, calibration=calibration)
    card = replace(card, metrics={"split": "test", **evaluate(model, card, dataset)})
    weights = out / f"{name}.safetensors"
    if recipe.train:
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        save_file(state, weights, metadata={"card": f"{name}.json"})
        card = replace(card, weights=weights.name, weights_sha256=file_sha256(weights))
    elif weights.exists():
        weights.unlink()  # a glass-box model has no weights file
    (out / f"{name}.json").write_text(json.dumps(card.to_json(), indent=2) + "\n")
    return card
