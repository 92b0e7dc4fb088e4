"""The explorer's banks: one feature's slider positions x n conditional samples under one seed, the
frames a person scrubs through. One rule for what a position draws (`conditional`), one for where
the slider stops (`positions`), and a store on disk so a bank drawn once (by `python -m engine
draw-banks`, which `make run` starts in the background) serves every session and every restart.

    positions(model, feature)                       -> the slider's values
    conditional(model, feature, value, n, seed, g)  -> ((n, S, S) images, (n,) probe-measured or None)
    stored(model, feature, value, n, seed, g)       -> the same from a drawn bank, or None
    draw_bank(model, feature, n, seed, g)           -> the bank's folder (drawn if missing)

A bank's folder is keyed by the generator's card (a retrained generator never reuses old frames), the
explorer's sampler and the settings: `<data dir>/.cache/banks/<card hash>/<feature>-n8-seed0-g1`. It
holds `values.npy`, `images.npy` (positions, n, S, S; float32, read by memory map) and `measured.npy`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from engine.data.defaults import data_dir
from engine.diffusion.pipeline import ConditionalDiffusion
from engine.diffusion.sampler import SamplerConfig
from engine.options import EXPLORER

BANK_VERSION = 1  # bump when what a position draws changes


def positions(model: ConditionalDiffusion, feature: str, steps: int = EXPLORER.steps) -> list:
    """The slider's values: a categorical feature's levels, or `steps` values across a numeric one's
    training range, rounded to 4 significant digits (readable labels, stable keys) and kept inside it."""
    info = model.feature(feature)
    if info.is_categorical:
        return list(model.feature_range(feature))
    lo, hi = model.feature_range(feature)
    return [float(np.clip(float(f"{v:.4g}"), lo, hi)) for v in np.linspace(lo, hi, steps)]


def morph_values(model: ConditionalDiffusion, feature: str, frames: int = 9) -> list:
    """About `frames` of the slider's positions, evenly spaced from end to end (a categorical feature's levels):
    a morph across the feature that reads from the bank."""
    values = positions(model, feature)
    if len(values) <= frames:
        return values
    return [values[int(round(i))] for i in np.linspace(0, len(values) - 1, frames)]


def conditional(
    model: ConditionalDiffusion, feature: str, value, n: int, seed: int, guidance: float
) -> tuple[np.ndarray, np.ndarray | None]:
    """((n, S, S) samples of p(x | feature = value), (n,) probe-measured feature or None).

    Sample i has its own noise seeded from (seed, i), the same at every value: moving the value
    morphs each "subject" smoothly.
    """
    images = model.sample({feature: value}, n, seed, SamplerConfig.for_explorer(guidance))  # (n, 1, S, S)
    measured = None
    if feature in model.card.probe_features:
        measured = np.asarray(model.measure_features(images)[feature], dtype=np.float32)
    return images[:, 0].cpu().numpy().astype(np.float32), measured


def card_hash(model: ConditionalDiffusion) -> str:
    """Names a generator by its card (training run, features, spec): retraining changes it."""
    text = json.dumps(model.card.to_json(), sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def bank_dir(model: ConditionalDiffusion, feature: str, n: int, seed: int, guidance: float) -> Path:
    sampler = repr(SamplerConfig.for_explorer(guidance))
    version = hashlib.sha1(f"{sampler}|v{BANK_VERSION}".encode()).hexdigest()[:8]
    name = f"{feature}-n{n}-seed{seed}-g{guidance:g}-{version}"
    return data_dir() / ".cache" / "banks" / f"{model.dataset}-{card_hash(model)}" / name


_OPEN: dict[Path, tuple[np.ndarray, np.ndarray, np.ndarray | None]] = {}


def _open(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None] | None:
    if folder not in _OPEN:
        if not (folder / "images.npy").is_file():
            return None
        measured = folder / "measured.npy"
        _OPEN[folder] = (
            np.load(folder / "values.npy", allow_pickle=False),
            np.load(folder / "images.npy", mmap_mode="r"),
            np.load(measured, allow_pickle=False) if measured.is_file() else None,
        )
    return _OPEN[folder]


def is_drawn(model: ConditionalDiffusion, feature: str, n: int, seed: int, guidance: float) -> bool:
    """Whether a whole bank of `feature` at these settings is on disk."""
    return _open(bank_dir(model, feature, n, seed, guidance)) is not None


def stored(
    model: ConditionalDiffusion, feature: str, value, n: int, seed: int, guidance: float
) -> tuple[np.ndarray, np.ndarray | None] | None:
    """`conditional(...)` from a drawn bank, or None when no bank holds that value."""
    found = _open(bank_dir(model, feature, n, seed, guidance))
    if found is None:
        return None
    values, images, measured = found
    hits = np.flatnonzero(values == np.asarray(value, dtype=values.dtype))
    if not len(hits):
        return None
    i = int(hits[0])
    return np.array(images[i]), None if measured is None else measured[i].copy()


def draw_bank(
    model: ConditionalDiffusion,
    feature: str,
    n: int = EXPLORER.n,
    seed: int = EXPLORER.seed,
    guidance: float = EXPLORER.guidance,
    progress: Callable[[int, int], None] | None = None,
    steps: int = EXPLORER.steps,
) -> Path:
    """Draw every slider position of `feature` (`positions`) and store them; a bank already drawn is kept.
    Written to a side folder and renamed, so a bank interrupted halfway never looks complete."""
    folder = bank_dir(model, feature, n, seed, guidance)
    if (folder / "images.npy").is_file():
        return folder
    values = positions(model, feature, steps)
    drawn = []
    with torch.inference_mode():
        for i, value in enumerate(values):
            drawn.append(conditional(model, feature, value, n, seed, guidance))
            if progress:
                progress(i + 1, len(values))
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    np.save(partial / "values.npy", np.asarray(values))
    np.save(partial / "images.npy", np.stack([images for images, _ in drawn]))
    if drawn[0][1] is not None:
        np.save(partial / "measured.npy", np.stack([measured for _, measured in drawn]))
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    return folder
