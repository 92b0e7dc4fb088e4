"""`shapes`: the paper's kind of synthetic set, with independent, known features.

Each 64×64 image holds one textured ellipse on a background. Every feature is drawn
independently from a uniform distribution recorded in `truth.json`, so the true
explained variance of any model that is a known function of the features can be
computed exactly (Jin, Zhu, Fletcher, MIDL 2025, synthetic experiment).

Images are written as 2D NIfTI files so the same loader as for MRI is exercised.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy.special import expit

IMAGE_SIZE = 64
NOISE_SD = 0.02  # fixed pixel noise
# feature name → (low, high) of its uniform distribution
FEATURE_RANGES: dict[str, tuple[float, float]] = {
    "size": (6.0, 14.0),  # semi-major axis, pixels
    "aspect": (0.45, 1.0),  # minor / major axis
    "intensity": (0.35, 0.95),  # object brightness
    "pos_x": (22.0, 42.0),  # centre column, pixels
    "pos_y": (22.0, 42.0),  # centre row, pixels
    "texture": (0.0, 0.35),  # amplitude of stripes inside the object
    "background": (0.0, 0.25),  # nuisance: background brightness
}
STRIPE_PERIOD = 4.0  # pixels


def sample_features(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({name: rng.uniform(lo, hi, n) for name, (lo, hi) in FEATURE_RANGES.items()})


def render_array(features: dict[str, float], rng: np.random.Generator) -> np.ndarray:
    """One (64, 64) image, rows top→bottom, for a dict of feature values."""
    rows, cols = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float32)
    dy, dx = rows - features["pos_y"], cols - features["pos_x"]
    major = features["size"]
    minor = major * features["aspect"]
    radius = np.sqrt((dx / major) ** 2 + (dy / minor) ** 2)  # 1 on the boundary
    inside = expit((1.0 - radius) * major * 2.0)  # ~1 px soft edge
    stripes = 1.0 + features["texture"] * np.sin(2 * np.pi * (dx + dy) / STRIPE_PERIOD)
    image = features["background"] + inside * (features["intensity"] * stripes - features["background"])
    image = image + rng.normal(0.0, NOISE_SD, image.shape)
    return np.clip(image, 0.0, None).astype(np.float32)


def build(
    out_dir: str | Path,
    n: int = 3000,
    seed: int = 0,
    test_fraction: float = 1 / 3,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write `n` images, `features.csv` and `truth.json` to `out_dir`. Deterministic by seed."""
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    table = sample_features(n, seed)
    noise_rng = np.random.default_rng(seed + 1)
    files = []
    for i, row in enumerate(table.to_dict("records")):
        image = render_array(row, noise_rng)
        # stored as (x, y) voxel order; the loader shows it back as rows top→bottom
        volume = np.ascontiguousarray(image[::-1].T)
        name = f"images/shape_{i:05d}.nii.gz"
        nib.save(nib.Nifti1Image(volume, np.eye(4)), out / name)
        files.append(name)
        if progress:
            progress(i + 1, n)
    n_test = int(round(n * test_fraction))
    split = np.array(["train"] * (n - n_test) + ["test"] * n_test)
    table.insert(0, "split", split)
    table.insert(0, "file", files)
    table.insert(0, "subject", [f"shape_{i:05d}" for i in range(n)])
    table.to_csv(out / "features.csv", index=False, float_format="%.6g")
    truth = {
        "dataset": "shapes",
        "seed": seed,
        "n": n,
        "image_size": IMAGE_SIZE,
        "noise_sd": NOISE_SD,
        "stripe_period": STRIPE_PERIOD,
        "features": {
            name: {"distribution": "uniform", "low": lo, "high": hi} for name, (lo, hi) in FEATURE_RANGES.items()
        },
        "independent": True,
        "image_model": "background + soft_ellipse(pos, size, aspect) * (intensity * (1 + texture * "
        "sin(2 pi (dx + dy) / stripe_period)) - background) + N(0, noise_sd)",
    }
    (out / "truth.json").write_text(json.dumps(truth, indent=2))
    return out
