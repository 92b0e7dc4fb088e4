"""Quality metrics for attribution maps: how faithful, how concentrated, how stable, how well placed.

Each metric is a small function of a model, images and maps (from `engine.pixelmaps.methods` or anywhere else),
and each follows one paper:

    deletion_curve(model, images, maps, target)   # pixel flipping / deletion: f as the top pixels go
    insertion_curve(model, images, maps, target)  # insertion: f as the top pixels come back
    curve_auc(fractions, outputs)                  # trapezoid area under either curve, per image
    road_curve(model, images, maps, target)        # ROAD: removed pixels imputed from their neighbours
    noisy_linear_imputation(images, removed)       # ROAD's imputation on its own
    completeness_gap(model, images, maps, target)  # |Σ map − (f(x) − f(x̄))| / |f(x) − f(x̄)|
    sparseness(maps), complexity(maps)             # Gini index and entropy of |map|
    relevance_mass(maps, masks), relevance_rank(maps, masks)  # share of the relevance inside a mask
    local_lipschitz(explain, images)               # how much maps move when the image moves
    random_logit(explain_target, images, target, n_outputs)  # map of another output: should differ
    quality_table(model, images, maps_by_method, target)     # one row per method; `METRICS` for captions

Images and maps are (B, 1, H, W) tensors, or (B, 1, D, H, W) for volumes; `model` maps images to
(B, K) outputs (an `nn.Module` in eval mode, or TorchScript); `target` is an output index (an int,
or one per image). Every per-image metric returns a float64 numpy array (B,). Random metrics take a
`seed` and draw from a generator of their own: the global random state is left alone.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from scipy import sparse
from scipy.sparse.linalg import spsolve

from engine.devices import placed
from engine.errors import EveInputError
from engine.pixelmaps.methods import check_images, check_outputs, spearman

FORWARD_BATCH = 64  # perturbed images per forward pass
ROAD_FRACTIONS = tuple(round(0.1 * k, 1) for k in range(1, 10))  # Rong et al.'s removal fractions
ROAD_NOISE = 0.01  # sd of the noise on imputed pixels, images in [0, 1] (Rong et al.'s default)
COMPLETE_METHODS = ("IntegratedGradients", "DeepLift", "LRP")  # methods that claim completeness
TINY_CHANGE = 1e-12  # |f(x) − f(x̄)| below this leaves the completeness gap undefined

# ROAD's stencil (Rong et al., 2022): a removed pixel is the weighted mean of its neighbours; the weights
# sum to 1, and a linear ramp satisfies it exactly, so a smooth image is filled in without a trace
NEIGHBOURS_2D = tuple(
    ((di, dj), 1 / 6 if di == 0 or dj == 0 else 1 / 12) for di in (-1, 0, 1) for dj in (-1, 0, 1) if (di, dj) != (0, 0)
)
NEIGHBOURS_3D = tuple(
    (offset, 1 / 6) for offset in ((-1, 0, 0), (1, 0, 0), (0, -1, 0), (0, 1, 0), (0, 0, -1), (0, 0, 1))
)

METRICS: dict[str, str] = {
    "deletion_auc": "area under f as the most relevant pixels are deleted first; lower is better "
    "(Samek et al. 2017, pixel flipping; Petsiuk et al. 2018, RISE)",
    "insertion_auc": "area under f as the most relevant pixels are inserted first into a blank image; "
    "higher is better (Petsiuk et al. 2018, RISE)",
    "road_morf_auc": "area under f with the most relevant pixels removed first and imputed from their "
    "neighbours; lower is better (Rong et al. 2022, ROAD)",
    "road_lerf_auc": "area under f with the least relevant pixels removed first and imputed from their "
    "neighbours; higher is better (Rong et al. 2022, ROAD)",
    "completeness_gap": "|Σ map − (f(x) − f(baseline))| relative to |f(x) − f(baseline)|; lower is better "
    "(Sundararajan et al. 2017, completeness axiom)",
    "sparseness": "Gini index of |map|, 0 for a flat map, near 1 for one pixel; higher is better "
    "(Chalasani et al. 2020)",
    "complexity": "entropy of |map| / Σ|map|, log n for a flat map, 0 for one pixel; lower is better "
    "(Bhatt, Weller & Moura 2020)",
    "relevance_mass": "share of |relevance| inside the ground-truth mask (in the table; the function: of the "
    "positive relevance); higher is better "
    "(Arras, Osman & Samek 2022, CLEVR-XAI)",
    "relevance_rank": "share of the K pixels of largest |relevance| inside the K-pixel mask (the function: "
    "largest relevance); higher is better "
    "(Arras, Osman & Samek 2022, CLEVR-XAI)",
}


# 1. validation -----------------------------------------------------------------------------


def _map_batch(maps, name: str = "maps") -> torch.Tensor:
    if isinstance(maps, np.ndarray):
        maps = torch.from_numpy(maps)
    if not isinstance(maps, torch.Tensor):
        raise EveInputError(
            f"{name} are a {type(maps).__name__}, not a torch tensor: give a tensor shaped (B, 1, H, W)."
        )
    if maps.ndim < 2 or len(maps) < 1:
        raise EveInputError(f"{name} have shape {tuple(maps.shape)}: give one map per image, (B, ...).")
    if maps.is_complex():
        raise EveInputError(f"{name} hold complex numbers: give real-valued maps.")
    maps = maps.detach().cpu().to(torch.float64)
    if not torch.isfinite(maps).all():
        raise EveInputError(f"{name} contain NaN or Inf: recompute them, or replace those values.")
    return maps


def _check_maps(maps, images: torch.Tensor, name: str = "maps") -> np.ndarray:
    """The maps as float64 (B, pixels), after checking they are one finite map per image."""
    maps = _map_batch(maps, name)
    if maps.shape != images.shape:
        raise EveInputError(
            f"{name} have shape {tuple(maps.shape)} and the images {tuple(images.shape)}: "
            "give one map per image, shaped like the images."
        )
    return maps.reshape(len(maps), -1).numpy()


def _check_masks(masks, shape: tuple[int, ...]) -> np.ndarray:
    """The masks as bool (B, pixels), broadcast to maps of `shape`."""
    if isinstance(masks, np.ndarray):
        masks = torch.from_numpy(masks)
    if not isinstance(masks, torch.Tensor):
        raise EveInputError(
            f"masks are a {type(masks).__name__}, not a torch tensor: give a bool tensor shaped like the maps."
        )
    if masks.dtype != torch.bool:
        if masks.is_complex() or not ((masks == 0) | (masks == 1)).all():
            raise EveInputError("masks hold values other than 0 and 1: give bool masks, True inside the region.")
        masks = masks != 0
    try:
        masks = torch.broadcast_to(masks.detach().cpu(), shape)
    except RuntimeError:
        raise EveInputError(
            f"masks have shape {tuple(masks.shape)}, which does not broadcast to the maps' {tuple(shape)}: "
            "give one mask per map, or one mask shaped like a single map."
        ) from None
    return masks.reshape(shape[0], -1).numpy()


def _is_count(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, np.integer)) and value >= 1


def _check_steps(steps) -> int:
    if not _is_count(steps):
        raise EveInputError(f"steps = {steps!r}: use a whole number of chunks, 1 or more.")
    return int(steps)


def _check_batch(batch_size) -> int:
    if not _is_count(batch_size):
        raise EveInputError(f"batch_size = {batch_size!r}: use a whole number of images, 1 or more.")
    return int(batch_size)


def _check_baseline(baseline) -> float:
    try:
        value = float(baseline)
    except (TypeError, ValueError):
        value = float("nan")
    if not np.isfinite(value):
        raise EveInputError(f"baseline = {baseline!r}: use a finite number, the value removed pixels take.")
    return value


def _check_fractions(fractions, pixels: int) -> np.ndarray:
    try:
        values = np.asarray(fractions, dtype=np.float64)
    except (TypeError, ValueError):
        values = np.array([np.nan])
    if (
        values.ndim != 1
        or values.size == 0
        or not np.isfinite(values).all()
        or values.min() < 0
        or values.max() >= 1
        or (np.diff(values) <= 0).any()
    ):
        raise EveInputError(
            f"ROAD fractions {fractions!r} are not increasing numbers in [0, 1): "
            "give them in that range, smallest first, e.g. (0.1, 0.2, ..., 0.9)."
        )
    if np.rint(values.max() * pixels) >= pixels:
        raise EveInputError(
            f"ROAD fraction {values.max():g} removes every pixel of a {pixels}-pixel image, leaving nothing "
            f"to impute from: use fractions below {1 - 0.5 / pixels:.4g}."
        )
    return values


def _targets(model, images: torch.Tensor, target) -> torch.Tensor:
    """One output index per image (B,), after checking the model and the target on the images."""
    target_t = check_outputs(model, images, target).long()
    return target_t.expand(len(images)) if target_t.ndim == 0 else target_t


def _explained(explain: Callable, images: torch.Tensor, *args) -> torch.Tensor:
    maps = explain(images, *args)
    if not isinstance(maps, torch.Tensor) or maps.shape != images.shape:
        got = tuple(maps.shape) if isinstance(maps, torch.Tensor) else type(maps).__name__
        raise EveInputError(
            f"The explain function returned {got} for images of shape {tuple(images.shape)}: "
            "it must return one map per image, shaped like the images."
        )
    maps = maps.detach().to(torch.float64)
    if not torch.isfinite(maps).all():
        raise EveInputError("The explain function returned NaN or Inf: it must return finite maps; check it.")
    return maps


# 2. shared pieces --------------------------------------------------------------------------


def _morf_order(flat: np.ndarray) -> np.ndarray:
    """Pixel indices per map (B, pixels), most positive first; a stable sort of −map breaks ties by
    pixel index, so equal values (a flat region, a map of zeros) go in a fixed order."""
    return np.argsort(-flat, axis=1, kind="stable")


def _target_outputs(model, x: torch.Tensor, targets: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        out = model(placed(model, x))  # the model's device (`engine.devices`)
    return out.gather(1, targets[:, None].to(out.device)).squeeze(1).to(torch.float64).cpu().numpy()


def _forward(model, images: torch.Tensor, targets: torch.Tensor, batch_size: int = FORWARD_BATCH) -> np.ndarray:
    return np.concatenate(
        [
            _target_outputs(model, images[i : i + batch_size], targets[i : i + batch_size])
            for i in range(0, len(images), batch_size)
        ]
    )


def _nanmean(values: np.ndarray) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN: the metric does not apply
        return float(np.nanmean(values))


# 3. deletion and insertion -------------------------------------------------------------------


def _curve(model, images, flat, targets, steps, baseline, batch_size, insert) -> tuple[np.ndarray, np.ndarray]:
    n, pixels = flat.shape
    device = images.device
    order = _morf_order(flat)
    ranks = np.empty_like(order)  # ranks[b, p]: where pixel p comes in map b's order
    np.put_along_axis(ranks, order, np.broadcast_to(np.arange(pixels), order.shape), axis=1)
    ranks = torch.from_numpy(ranks).to(device)
    counts = torch.arange(steps + 1, device=device) * pixels // steps  # pixels gone (deletion) or back (insertion)
    values = images.flatten(1)
    fill = torch.tensor(baseline, dtype=images.dtype, device=device)
    rows = torch.arange(n * (steps + 1), device=device)
    outputs = np.empty(len(rows))
    # the B × (steps + 1) images are built a batch at a time: a volume's whole curve need not fit in memory
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        image, step = chunk // (steps + 1), chunk % (steps + 1)
        first = ranks[image] < counts[step, None]
        x = torch.where(~first if insert else first, fill, values[image]).view(len(chunk), *images.shape[1:])
        outputs[start : start + len(chunk)] = _target_outputs(model, x, targets[image])
    return counts.cpu().numpy() / pixels, outputs.reshape(n, steps + 1)


def _perturbation_curve(model, images, maps, target, steps, baseline, batch_size, insert):
    images = check_images(images)
    targets = _targets(model, images, target)
    flat = _check_maps(maps, images)
    steps = _check_steps(steps)
    batch_size = _check_batch(batch_size)
    return _curve(model, images, flat, targets, steps, _check_baseline(baseline), batch_size, insert)


def deletion_curve(
    model,
    images: torch.Tensor,
    maps: torch.Tensor,
    target: int | torch.Tensor = 0,
    *,
    steps: int = 20,
    baseline: float = 0.0,
    batch_size: int = FORWARD_BATCH,
) -> tuple[np.ndarray, np.ndarray]:
    """Deletion curve: the target output as the most relevant pixels are replaced by `baseline`.

    Pixel flipping (Samek et al., "Evaluating the visualization of what a deep neural network has
    learned", IEEE TNNLS 2017) and deletion (Petsiuk et al., "RISE", BMVC 2018). Pixels go in
    descending order of the signed map (most positive first; ties by pixel index), in `steps` equal
    chunks (⌊k·n/steps⌋ pixels gone after chunk k). A faithful map makes f fall fast: a low area.

    Returns:
        fractions (steps + 1,): the share of pixels removed, 0 … 1;
        outputs (B, steps + 1): f at each fraction, outputs[:, 0] = f(x).
    """
    return _perturbation_curve(model, images, maps, target, steps, baseline, batch_size, insert=False)


def insertion_curve(
    model,
    images: torch.Tensor,
    maps: torch.Tensor,
    target: int | torch.Tensor = 0,
    *,
    steps: int = 20,
    baseline: float = 0.0,
    batch_size: int = FORWARD_BATCH,
) -> tuple[np.ndarray, np.ndarray]:
    """Insertion curve: from the all-`baseline` image, the image's pixels are put back, most relevant first.

    Insertion (Petsiuk et al., "RISE", BMVC 2018), in the order and chunks of `deletion_curve`. A
    faithful map makes f rise fast: a high area.

    Returns:
        fractions (steps + 1,): the share of pixels inserted, 0 … 1;
        outputs (B, steps + 1): f at each fraction, outputs[:, 0] = f(baseline), outputs[:, -1] = f(x).
    """
    return _perturbation_curve(model, images, maps, target, steps, baseline, batch_size, insert=True)


def curve_auc(fractions, outputs) -> np.ndarray:
    """Trapezoid area under each curve (B,), over `fractions` (n,) of `outputs` (B, n)."""
    fractions = np.asarray(fractions, dtype=np.float64)
    outputs = np.asarray(outputs, dtype=np.float64)
    if fractions.ndim != 1 or outputs.ndim != 2 or outputs.shape[1] != len(fractions) or len(fractions) < 2:
        raise EveInputError(
            f"curve_auc got fractions of shape {fractions.shape} and outputs of shape {outputs.shape}: "
            "give fractions (n,) with n >= 2 and outputs (B, n), as the curve functions return them."
        )
    return np.trapezoid(outputs, fractions, axis=1)


# 4. ROAD --------------------------------------------------------------------------------------


def _impute(values: np.ndarray, removed: np.ndarray, shape: tuple[int, ...], noise: float, rng) -> np.ndarray:
    """One image's removed pixels (flat bool) filled by ROAD's noisy linear imputation."""
    idx = np.flatnonzero(removed)
    out = values.copy()
    if len(idx) == 0:
        return out
    m = len(idx)
    coords = np.stack(np.unravel_index(idx, shape), axis=1)
    unknown = np.full(values.size, -1)
    unknown[idx] = np.arange(m)
    diagonal, rhs = np.zeros(m), np.zeros(m)
    rows, cols, data = [np.arange(m)], [np.arange(m)], []
    limits = np.asarray(shape)
    # equation i: (Σ_valid w) x_i − Σ_removed w x_j = Σ_known w v_j, i.e. the mean over the neighbours that
    # exist, so a border pixel's weights are renormalised rather than padded with values that are not there
    for offset, weight in NEIGHBOURS_2D if len(shape) == 2 else NEIGHBOURS_3D:
        near = coords + np.asarray(offset)
        inside = np.all((near >= 0) & (near < limits), axis=1)
        eq = np.flatnonzero(inside)
        near_flat = np.ravel_multi_index(tuple(near[inside].T), shape)
        diagonal[eq] += weight
        gone = removed[near_flat]
        rows.append(eq[gone])
        cols.append(unknown[near_flat[gone]])
        data.append(np.full(int(gone.sum()), -weight))
        rhs[eq[~gone]] += weight * values[near_flat[~gone]]
    system = sparse.csc_matrix(
        (np.concatenate([diagonal, *data]), (np.concatenate(rows), np.concatenate(cols))), shape=(m, m)
    )
    # nonsingular while one pixel is known: every group of removed pixels then touches a known one, which
    # makes its block irreducibly diagonally dominant
    out[idx] = np.atleast_1d(spsolve(system, rhs))
    if noise > 0:
        out[idx] += noise * rng.standard_normal(m)
    return out


def _check_noise(noise) -> float:
    try:
        value = float(noise)
    except (TypeError, ValueError):
        value = float("nan")
    if not np.isfinite(value) or value < 0:
        raise EveInputError(f"noise = {noise!r}: use a standard deviation of 0 or more.")
    return value


def noisy_linear_imputation(images: torch.Tensor, removed, *, noise: float = ROAD_NOISE, seed: int = 0) -> torch.Tensor:
    """ROAD's noisy linear imputation (Rong et al., "A consistent and efficient evaluation strategy for
    attribution methods", ICML 2022) of the `removed` pixels of each image.

    Each removed pixel becomes the weighted mean of its 8 neighbours (1/6 for the 4 direct, 1/12 for the
    4 diagonal ones; the 6 face neighbours, 1/6 each, in a volume), solved jointly over all removed
    pixels as one sparse linear system, with the known pixels as boundary values; at the image's border
    only the neighbours that exist count, their weights renormalised. Then Gaussian noise of sd `noise`
    is added to the imputed pixels (from `numpy.random.default_rng(seed)`). `removed` is a bool tensor
    shaped like the images or like one image; at least one pixel per image must stay.

    Returns the imputed images, a new tensor like `images`.
    """
    images = check_images(images)
    gone = _check_masks(removed, tuple(images.shape))
    if gone.all(axis=1).any():
        raise EveInputError(
            "removed covers every pixel of an image, leaving nothing to impute from: keep at least one pixel."
        )
    noise = _check_noise(noise)
    rng = np.random.default_rng(seed)
    values = images.flatten(1).to(torch.float64).cpu().numpy()
    shape = tuple(images.shape[2:])
    filled = np.stack([_impute(values[i], gone[i], shape, noise, rng) for i in range(len(values))])
    return torch.from_numpy(filled).to(images.device, images.dtype).view_as(images)


def _road(model, images, flat, targets, fractions, order, noise, seed, batch_size) -> np.ndarray:
    n, pixels = flat.shape
    ranking = _morf_order(flat)
    if order == "lerf":  # the MoRF order reversed: LeRF at f removes exactly what MoRF at 1 − f keeps
        ranking = ranking[:, ::-1]
    counts = np.rint(fractions * pixels).astype(int)
    rng = np.random.default_rng(seed)
    values = images.flatten(1).to(torch.float64).cpu().numpy()
    shape = tuple(images.shape[2:])
    outputs = np.empty((n, len(counts)))
    pending: list[np.ndarray] = []
    where: list[tuple[int, int]] = []

    def flush():
        if pending:
            x = torch.from_numpy(np.stack(pending)).to(images.device, images.dtype).view(-1, *images.shape[1:])
            image, column = np.array(where).T
            outputs[image, column] = _target_outputs(model, x, targets[torch.from_numpy(image).to(targets.device)])
            pending.clear()
            where.clear()

    for i in range(n):
        for j, count in enumerate(counts):
            removed = np.zeros(pixels, dtype=bool)
            removed[ranking[i, :count]] = True
            pending.append(_impute(values[i], removed, shape, noise, rng))
            where.append((i, j))
            if len(pending) == batch_size:
                flush()
    flush()
    return outputs


def _check_order(order) -> str:
    if order not in ("morf", "lerf"):
        raise EveInputError(
            f"ROAD order {order!r} is unknown: use 'morf' (most relevant first) or 'lerf' (least relevant first)."
        )
    return order


def road_curve(
    model,
    images: torch.Tensor,
    maps: torch.Tensor,
    target: int | torch.Tensor = 0,
    *,
    fractions: Sequence[float] = ROAD_FRACTIONS,
    order: str = "morf",
    noise: float = ROAD_NOISE,
    seed: int = 0,
    batch_size: int = FORWARD_BATCH,
) -> tuple[np.ndarray, np.ndarray]:
    """ROAD, remove and debias (Rong et al., "A consistent and efficient evaluation strategy for
    attribution methods", ICML 2022): f with a fraction of the pixels removed and imputed.

    At each fraction, the most relevant pixels (`order="morf"`; ties by pixel index, as in
    `deletion_curve`) or the least relevant (`"lerf"`, the reverse order) are removed and filled in by
    `noisy_linear_imputation`, whose values carry no trace of which pixels were removed, unlike a
    constant baseline. A faithful map makes the MoRF curve fall fast and the LeRF curve stay high.
    Each (image, fraction) draws its noise in turn from one generator seeded by `seed`.

    Returns:
        fractions (F,) as given; outputs (B, F): f at each fraction.
    """
    images = check_images(images)
    targets = _targets(model, images, target)
    flat = _check_maps(maps, images)
    values = _check_fractions(fractions, flat.shape[1])
    order = _check_order(order)
    noise = _check_noise(noise)
    batch_size = _check_batch(batch_size)
    return values, _road(model, images, flat, targets, values, order, noise, seed, batch_size)


# 5. completeness ---------------------------------------------------------------------------


def _completeness(model, images, flat, targets, baseline) -> np.ndarray:
    change = _forward(model, images, targets) - _forward(model, torch.full_like(images, baseline), targets)
    gap = np.full(len(flat), np.nan)
    ok = np.abs(change) >= TINY_CHANGE
    gap[ok] = np.abs(flat.sum(axis=1)[ok] - change[ok]) / np.abs(change[ok])
    return gap


def completeness_gap(
    model, images: torch.Tensor, maps: torch.Tensor, target: int | torch.Tensor = 0, baseline: float = 0.0
) -> np.ndarray:
    """Relative completeness gap |Σ map − (f(x) − f(x̄))| / |f(x) − f(x̄)| per image (B,), x̄ the constant
    `baseline` image; lower is better.

    Completeness, one of the axioms of Sundararajan et al., "Axiomatic attribution for deep networks"
    (ICML 2017): the relevance sums to the change in output. Meaningful for methods that claim it
    (Integrated Gradients, DeepLift, LRP). NaN where |f(x) − f(x̄)| < 1e-12.
    """
    images = check_images(images)
    targets = _targets(model, images, target)
    return _completeness(model, images, _check_maps(maps, images), targets, _check_baseline(baseline))


# 6. sparseness and complexity ------------------------------------------------------------------


def _flat(maps) -> np.ndarray:
    maps = _map_batch(maps)
    return maps.reshape(len(maps), -1).numpy()


def _gini(flat: np.ndarray) -> np.ndarray:
    a = np.sort(np.abs(flat), axis=1)
    n = a.shape[1]
    total = a.sum(axis=1)
    weights = 2 * np.arange(1, n + 1) - n - 1
    with np.errstate(invalid="ignore", divide="ignore"):
        gini = (a * weights).sum(axis=1) / (n * total)
    return np.where(total > 0, gini, np.nan)


def _entropy(flat: np.ndarray) -> np.ndarray:
    a = np.abs(flat)
    total = a.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = a / total
        terms = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)  # 0 · log 0 = 0
    return np.where(total[:, 0] > 0, -terms.sum(axis=1), np.nan)


def sparseness(maps: torch.Tensor) -> np.ndarray:
    """Gini index of |map| per map (B,); higher is better (the relevance sits on few pixels).

    Chalasani et al., "Concise explanations of neural networks using adversarial training" (ICML 2020),
    computed as Quantus does: with |a| sorted ascending, Σᵢ (2i − n − 1) aᵢ / (n Σᵢ aᵢ), i = 1..n (without
    Quantus's 1e-7 offset, so a one-hot map gives (n − 1)/n and a flat map 0). NaN for a map of zeros.
    """
    return _gini(_flat(maps))


def complexity(maps: torch.Tensor) -> np.ndarray:
    """Entropy (natural log) of p = |a| / Σ|a| per map (B,); lower is better (a simpler explanation).

    Bhatt, Weller & Moura, "Evaluating and aggregating feature-based model explanations" (IJCAI 2020).
    A flat map gives log n, a one-hot map 0; NaN for a map of zeros.
    """
    return _entropy(_flat(maps))


# 7. localisation -------------------------------------------------------------------------------


def _mass(flat: np.ndarray, inside: np.ndarray) -> np.ndarray:
    positive = np.clip(flat, 0.0, None)
    total = positive.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mass = (positive * inside).sum(axis=1) / total
    return np.where(total > 0, mass, np.nan)


def _rank(flat: np.ndarray, inside: np.ndarray) -> np.ndarray:
    order = _morf_order(flat)
    k = inside.sum(axis=1)
    hits = np.take_along_axis(inside, order, axis=1)
    found = np.array([hits[i, : k[i]].sum() for i in range(len(k))], dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(k > 0, found / np.maximum(k, 1), np.nan)


def relevance_mass(maps: torch.Tensor, masks) -> np.ndarray:
    """Relevance mass accuracy per map (B,): positive relevance inside the mask / all positive relevance;
    higher is better.

    Arras, Osman & Samek, "CLEVR-XAI: a benchmark dataset for the ground truth evaluation of neural
    network explanations" (Information Fusion, 2022). `masks` is bool, shaped like the maps or like one
    map (then used for all). NaN for a map without positive relevance.
    """
    flat_maps = _map_batch(maps)
    inside = _check_masks(masks, tuple(flat_maps.shape))
    return _mass(flat_maps.reshape(len(flat_maps), -1).numpy(), inside)


def relevance_rank(maps: torch.Tensor, masks) -> np.ndarray:
    """Relevance rank accuracy per map (B,): with K the mask's size, the share of the K most relevant
    pixels (signed, ties by pixel index) that lie inside the mask; higher is better.

    Arras, Osman & Samek, "CLEVR-XAI" (Information Fusion, 2022). NaN for an empty mask.
    """
    flat_maps = _map_batch(maps)
    inside = _check_masks(masks, tuple(flat_maps.shape))
    return _rank(flat_maps.reshape(len(flat_maps), -1).numpy(), inside)


# 8. robustness and sanity -----------------------------------------------------------------------


def local_lipschitz(
    explain: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    *,
    radius: float = 0.02,
    n_perturb_samples: int = 10,
    seed: int = 0,
) -> np.ndarray:
    """Local Lipschitz estimate per image (B,): max over δ ~ U(−radius, radius) per pixel of
    ‖φ(x + δ) − φ(x)‖₂ / ‖δ‖₂, φ = `explain` (images → maps shaped like them); lower is more stable.

    Alvarez-Melis & Jaakkola, "On the robustness of interpretability methods" (ICML workshop, 2018),
    which maximises the ratio over the ball; here it is the maximum over `n_perturb_samples` random
    perturbations, drawn from a `torch.Generator` seeded by `seed`. δ is measured as the images
    actually moved (x + δ − x in the images' precision).
    """
    images = check_images(images)
    try:
        radius = float(radius)
    except (TypeError, ValueError):
        radius = float("nan")
    if not np.isfinite(radius) or radius <= 0:
        raise EveInputError(f"radius = {radius!r}: use a positive perturbation size, e.g. 0.02.")
    if not _is_count(n_perturb_samples):
        raise EveInputError(f"n_perturb_samples = {n_perturb_samples!r}: use a whole number, 1 or more.")
    reference = _explained(explain, images)
    generator = torch.Generator().manual_seed(int(seed))
    best = np.zeros(len(images))
    for _ in range(int(n_perturb_samples)):
        delta = (torch.rand(images.shape, generator=generator) * 2 - 1) * radius
        moved = images + delta.to(images.device, images.dtype)
        step = (moved.to(torch.float64) - images.to(torch.float64)).flatten(1).norm(dim=1).cpu().numpy()
        change = (_explained(explain, moved) - reference).flatten(1).norm(dim=1).cpu().numpy()
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = np.where(step > 0, change / step, 0.0)
        best = np.maximum(best, ratio)
    return best


def random_logit(
    explain_target: Callable,
    images: torch.Tensor,
    target: int | torch.Tensor,
    n_outputs: int,
    *,
    seed: int = 0,
) -> np.ndarray:
    """Random logit test per image (B,): Spearman rank correlation between the map for `target` and the
    map for a randomly chosen other output; lower is better (a map that explains the target differs).

    Sixt, Granz & Landgraf, "When explanations lie: why many modified BP attributions fail" (ICML 2020).
    `explain_target(images, index)` gives maps shaped like the images for output `index`: an int when
    every image draws the same other output (always so with 2 outputs), else a LongTensor (B,). The
    other output is uniform over the n_outputs − 1 others, from `numpy.random.default_rng(seed)`.
    NaN where a map is constant.
    """
    if isinstance(n_outputs, bool) or not isinstance(n_outputs, (int, np.integer)) or n_outputs < 2:
        raise EveInputError(
            f"The random-logit test needs a model with 2 or more outputs, not {n_outputs!r}: "
            "use it on a multi-output model."
        )
    images = check_images(images)
    target_t = torch.as_tensor(target)
    if (
        target_t.is_floating_point()
        or target_t.ndim > 1
        or (target_t.ndim == 1 and len(target_t) != len(images))
        or ((target_t < 0) | (target_t >= n_outputs)).any()
    ):
        raise EveInputError(
            f"target {target!r} is not an output index below {n_outputs}: give an int, or one index per image."
        )
    targets = target_t.expand(len(images)).cpu().numpy()
    rng = np.random.default_rng(seed)
    others = (targets + rng.integers(1, int(n_outputs), size=len(images))) % int(n_outputs)
    other = int(others[0]) if (others == others[0]).all() else torch.as_tensor(others, device=images.device)
    return spearman(_explained(explain_target, images, target), _explained(explain_target, images, other))


# 9. the table ---------------------------------------------------------------------------------


def quality_table(
    model,
    images: torch.Tensor,
    maps_by_method: dict[str, torch.Tensor],
    target: int | torch.Tensor = 0,
    *,
    masks=None,
    baseline: float = 0.0,
    steps: int = 20,
    road: bool = True,
    completeness_methods: Sequence[str] = COMPLETE_METHODS,
    batch_size: int = FORWARD_BATCH,
) -> pd.DataFrame:
    """The map-quality metrics per method, as a DataFrame: one row per method, each value the mean over
    images (NaN-aware), with columns method, the keys of `METRICS`, n_images.

    The deletion and insertion curves use `steps` and `baseline`; ROAD (if `road`) its default fractions,
    noise and seed; the completeness gap only for methods in `completeness_methods`, and relevance
    mass / rank only with `masks`: NaN where a metric does not apply.
    """
    if not isinstance(maps_by_method, dict) or not maps_by_method:
        raise EveInputError(
            "maps_by_method is empty or not a dict: give a dict with one entry per method, "
            "its name to its maps shaped like the images."
        )
    images = check_images(images)
    targets = _targets(model, images, target)
    steps = _check_steps(steps)
    batch_size = _check_batch(batch_size)
    baseline = _check_baseline(baseline)
    inside = None if masks is None else _check_masks(masks, tuple(images.shape))
    flats = {method: _check_maps(maps, images, f"{method!r} maps") for method, maps in maps_by_method.items()}
    fractions = _check_fractions(ROAD_FRACTIONS, images[0].numel()) if road else None
    nan = np.full(len(images), np.nan)
    rows = []
    for method, flat in flats.items():
        scores = {}
        for column, insert in (("deletion_auc", False), ("insertion_auc", True)):
            curve = _curve(model, images, flat, targets, steps, baseline, batch_size, insert)
            scores[column] = curve_auc(*curve)
        for order in ("morf", "lerf"):
            if road:
                outputs = _road(model, images, flat, targets, fractions, order, ROAD_NOISE, 0, batch_size)
                scores[f"road_{order}_auc"] = curve_auc(fractions, outputs)
            else:
                scores[f"road_{order}_auc"] = nan
        complete = method in completeness_methods
        scores["completeness_gap"] = _completeness(model, images, flat, targets, baseline) if complete else nan
        scores["sparseness"] = _gini(flat)
        scores["complexity"] = _entropy(flat)
        # |map|: a read-out's relevance may be all negative (darker raises a dark-pixel count), and the
        # question here is where the model looks, not which way
        scores["relevance_mass"] = nan if inside is None else _mass(np.abs(flat), inside)
        scores["relevance_rank"] = nan if inside is None else _rank(np.abs(flat), inside)
        rows.append({"method": method, **{c: _nanmean(scores[c]) for c in METRICS}, "n_images": len(images)})
    return pd.DataFrame(rows, columns=["method", *METRICS, "n_images"])
