"""A cohort built the way a user's would be, scored against the truth: the input contract.

The files are 2D images written as most tools write them — shape (16, 16, 1), int16 with a
`scl_slope`, half of them big-endian — and the model is a user's TorchScript glass box that
reads raw intensities and returns a (B,) output: the mean of the image's centre,

    f(x) = mean(x[centre]) = q(1 + a + b^2),   q = the int16 quantisation of the stored value,

with a ~ U(0, 1), b ~ U(-1, 1) (a non-monotone effect) and `marker` ~ U(2, 6), the intensity
of a bright patch in a corner that the model provably never reads: its true score is 0.

True scores by simulation (TRUTH_DRAWS fresh draws of the features, f computed exactly,
binned conditional means with the small-group correction). Under `raw` (what a TorchScript
model is fed by default) every score lands within TOL of its truth and the marker's interval
covers 0. Under `p99` (Eve's rule for its own models) the image is divided by its 99th
percentile — the marker's value, since the patch is the brightest 12% of the non-zero voxels —
so the model is fed x / marker and the marker, which it never reads, explains its output.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from shapes_readout import binned_truth
from torch import nn

from engine.cli.main import main

N = 2000  # subjects in the cohort
TRUTH_DRAWS = 200_000
TOL = 0.03
SLOPE = 0.001  # scl_slope of the int16 files
SIZE = 16


def centre_value(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The centre's stored value, as the int16 file holds it after scaling."""
    return np.round((1.0 + a + b**2) / SLOPE) * SLOPE


class CentreMean(nn.Module):
    """A user's glass box: reads raw intensities, returns one value per image, shape (B,)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0, 4:12, 4:12].mean(dim=(1, 2))


def _features(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {"a": rng.uniform(0, 1, n), "b": rng.uniform(-1, 1, n), "marker": rng.uniform(2, 6, n)}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cohort")
    feats = _features(N, np.random.default_rng(11))
    rows = []
    for i in range(N):
        image = np.zeros((SIZE, SIZE, 1))
        image[4:12, 4:12] = 1.0 + feats["a"][i] + feats["b"][i] ** 2
        image[0:3, 0:3] = feats["marker"][i]
        dtype = np.dtype(">i2") if i % 2 else np.dtype("<i2")  # big- and little-endian files
        stored = np.round(image / SLOPE).astype(dtype)
        nifti = nib.Nifti1Image(stored, np.eye(4))
        nifti.header.set_slope_inter(SLOPE, 0.0)
        nib.save(nifti, folder / f"sub-{i:04d}.nii.gz")
        rows.append({"file": f"sub-{i:04d}.nii.gz", **{k: v[i] for k, v in feats.items()}})
    pd.DataFrame(rows).to_csv(folder / "features.csv", index=False)
    model = folder.parent / "centre_mean.pt"
    torch.jit.save(torch.jit.script(CentreMean().eval()), str(model))
    return folder, model


@pytest.fixture(scope="module")
def truth() -> dict[str, float]:
    feats = _features(TRUTH_DRAWS, np.random.default_rng(2026))
    f = centre_value(feats["a"], feats["b"])
    ranges = {"a": (0, 1), "b": (-1, 1)}
    return {"marker": 0.0, **{k: binned_truth(f, feats[k], *ranges[k], bins=100) for k in ranges}}


def _score(cohort, tmp_path, *extra) -> pd.DataFrame:
    folder, model = cohort
    out = tmp_path / "r.json"
    argv = ["score", "--data", str(folder), "--model", str(model), "--size", str(SIZE), "--out", str(out)]
    assert main([*argv, "--n-boot", "200", *extra]) == 0
    doc = json.loads(out.read_text())
    return doc, pd.DataFrame(doc["scores"]).set_index("feature")


def test_the_truth_has_the_analytic_values(truth):
    # Var(a) = 1/12, Var(b^2) = 1/5 - 1/9 = 4/45 (the quantisation adds ~1e-7 of noise)
    assert truth["a"] == pytest.approx((1 / 12) / (1 / 12 + 4 / 45), abs=0.005)
    assert truth["b"] == pytest.approx((4 / 45) / (1 / 12 + 4 / 45), abs=0.005)


def test_raw_scores_match_the_truth_and_the_unseen_marker_scores_zero(cohort, truth, tmp_path):
    doc, scores = _score(cohort, tmp_path)  # raw is the default for a TorchScript model
    assert doc["spec"]["intensity"] == "raw" and "intensity raw" in doc["input"] and doc["n"] == N
    for feature, true in truth.items():
        assert scores.loc[feature, "score"] == pytest.approx(true, abs=TOL), feature
    assert scores.loc["marker", "ci_low"] <= 0.0 <= scores.loc["marker", "ci_high"]


def test_p99_feeds_the_model_something_else_and_the_unseen_marker_explains_it(cohort, tmp_path):
    _, scores = _score(cohort, tmp_path, "--intensity", "p99")
    assert scores.loc["marker", "ci_low"] > 0.2  # the model never reads the marker's pixels
