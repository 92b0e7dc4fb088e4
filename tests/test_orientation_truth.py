"""A user's model trained on arrays as its files store them, scored through the CLI and the app: the
glass-box truth holds under `stored` (the default for a user's model), and `ras` explains another model.

The cohorts are written here, the way other tools write files: plain `nib.save` of a numpy array (2D),
FSL's LAS voxel order and ITK's LPS (3D). Each glass-box TorchScript model reads the mean of one fixed,
off-centre window of the array it is fed. Feature `a` brightens exactly that window of the stored array;
feature `b` brightens the window that Eve's RAS+ display (2D: transposed and flipped; 3D: left-right
mirrored) puts where the model reads. Truth, by simulation of 200,000 draws of the same generative
process through the same window mean: S(a) = Var(E[Y|a]) / Var(Y) and S(b) = 0 under stored.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from engine.cli.main import main

N = 1000  # subjects: the "n >= 1,000"
SIDE = 16
NOISE, NUISANCE = 0.3, 0.12  # per-pixel noise SD, and the SD of a nuisance that only the window carries
WINDOW_2D = (slice(2, 6), slice(9, 15))  # stored (x, y): off-centre, not symmetric under the display's T[::-1]
# under ras the model's window sees stored[x = 9..14, y = SIDE-1-(2..5)]: where b's blob is put
B_WINDOW_2D = (slice(9, 15), slice(SIDE - 6, SIDE - 2))
WINDOW_3D = (slice(1, 5), slice(3, 9), slice(6, 11))  # stored (i, j, k)
B_WINDOW_3D = (slice(SIDE - 5, SIDE - 1), slice(3, 9), slice(6, 11))  # its left-right mirror: what ras shows


class WindowMean(torch.nn.Module):
    """The mean of one window of the input: (B, 1, S, S) or (B, 1, S, S, S) -> (B,)."""

    def __init__(self, window: tuple[slice, ...]):
        super().__init__()
        self.lo = [s.start for s in window]
        self.hi = [s.stop for s in window]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            return x[:, 0, self.lo[0] : self.hi[0], self.lo[1] : self.hi[1]].mean((1, 2))
        return x[:, 0, self.lo[0] : self.hi[0], self.lo[1] : self.hi[1], self.lo[2] : self.hi[2]].mean((1, 2, 3))


def _images(a, b, u, rng, shape, window, b_window) -> np.ndarray:
    """(n, *shape) stored arrays: background 1 plus noise, a in the model's window (with the nuisance u),
    b in the window ras would show it."""
    images = 1.0 + NOISE * rng.standard_normal((len(a), *shape))
    images[(slice(None), *window)] += (a + u)[(...,) + (None,) * len(shape)]
    images[(slice(None), *b_window)] += b[(...,) + (None,) * len(shape)]
    return images


def _draws(n, rng):
    return rng.uniform(0, 1, n), rng.uniform(0, 1, n), NUISANCE * rng.standard_normal(n)


def _truth(shape, window, b_window) -> dict[str, float]:
    """S(a) and S(b) of the window mean under stored, by simulation: 200,000 draws in chunks, E[Y|A] by
    the mean in 400 equal-count bins of A (its between-bin loss and noise are far below 0.005 here)."""
    rng = np.random.default_rng(12345)
    a, b, y = [], [], []
    for _ in range(20):
        a_, b_, u_ = _draws(10_000, rng)
        images = _images(a_, b_, u_, rng, shape, window, b_window)
        y.append(images[(slice(None), *window)].reshape(10_000, -1).mean(1))
        a.append(a_)
        b.append(b_)
    y, truth = np.concatenate(y), {}
    for name, feature in (("a", np.concatenate(a)), ("b", np.concatenate(b))):
        bins = np.argsort(np.argsort(feature)) * 400 // len(feature)
        means = np.bincount(bins, weights=y) / np.bincount(bins)
        truth[name] = float(np.var(means[bins]) / np.var(y))
    return truth


def _cohort(folder: Path, shape, window, b_window, affine: np.ndarray) -> None:
    folder.mkdir()
    rng = np.random.default_rng(7)
    a, b, u = _draws(N, rng)
    images = _images(a, b, u, rng, shape, window, b_window).astype(np.float32)
    lines = ["file,a,b"]
    for i in range(N):
        nib.save(nib.Nifti1Image(images[i], affine), folder / f"s{i:04d}.nii")
        lines.append(f"s{i:04d}.nii,{a[i]:.6f},{b[i]:.6f}")
    (folder / "features.csv").write_text("\n".join(lines) + "\n")


def _score(tmp_path: Path, folder: Path, model: Path, *flags: str) -> dict[str, dict]:
    out = tmp_path / f"scores-{len(list(tmp_path.glob('scores-*.json')))}.json"
    args = ["score", "--data", str(folder), "--model", str(model), "--split", "all", "--out", str(out), *flags]
    assert main(args) == 0
    report = json.loads(out.read_text())
    return {row["feature"]: row for row in report["scores"]} | {"_meta": report}


def _model(path: Path, window) -> Path:
    torch.jit.save(torch.jit.script(WindowMean(window).eval()), path)
    return path


@pytest.mark.slow
def test_a_2d_model_on_stored_arrays_scores_its_truth_and_ras_swaps_the_features(tmp_path):
    folder = tmp_path / "plain-nib-save"  # nib.save(Nifti1Image(array, np.eye(4))), as a numpy pipeline writes
    _cohort(folder, (SIDE, SIDE), WINDOW_2D, B_WINDOW_2D, np.eye(4))
    model = _model(tmp_path / "window.pt", WINDOW_2D)
    truth = _truth((SIDE, SIDE), WINDOW_2D, B_WINDOW_2D)
    assert truth["a"] > 0.8 and truth["b"] < 0.005

    stored = _score(tmp_path, folder, model, "--size", str(SIDE))  # no card, no flag: the stored default
    assert abs(stored["a"]["score"] - truth["a"]) < 0.03, (stored["a"], truth)
    assert stored["b"]["ci_low"] <= 0.0 < stored["b"]["ci_high"]  # the unread feature's interval holds 0
    assert "orientation stored" in stored["_meta"]["input"]

    ras = _score(tmp_path, folder, model, "--size", str(SIDE), "--orientation", "ras")
    # the model fed the display orientation reads b's window: another model, explained
    assert ras["b"]["score"] > 0.8 and ras["a"]["score"] < 0.05
    assert "orientation ras" in ras["_meta"]["input"]


@pytest.mark.slow
@pytest.mark.parametrize("convention", ["LAS", "LPS"])
def test_a_3d_model_on_fsl_and_itk_volumes_scores_its_truth(tmp_path, convention):
    affine = np.diag([-1.0, -1.0 if convention == "LPS" else 1.0, 1.0, 1.0])  # FSL's LAS, ITK's LPS, 1 mm voxels
    folder = tmp_path / convention
    _cohort(folder, (SIDE,) * 3, WINDOW_3D, B_WINDOW_3D, affine)
    model = _model(tmp_path / "window3d.pt", WINDOW_3D)
    truth = _truth((SIDE,) * 3, WINDOW_3D, B_WINDOW_3D)
    flags = ("--input", "volume", "--size", str(SIDE), "--intensity", "raw")  # raw float32 LAS: the old crash
    stored = _score(tmp_path, folder, model, *flags)
    assert abs(stored["a"]["score"] - truth["a"]) < 0.03, (stored["a"], truth)
    assert stored["b"]["ci_low"] <= 0.0 < stored["b"]["ci_high"]
    ras = _score(tmp_path, folder, model, *flags, "--orientation", "ras")
    if convention == "LAS":  # RAS+ mirrors x: the window reads b's blob
        assert ras["b"]["score"] > 0.8 and ras["a"]["score"] < 0.05
    else:  # LPS: x and y mirrored; the window reads part of b's blob and none of a's
        assert ras["a"]["score"] < 0.05 and ras["b"]["score"] > 0.2


def test_the_app_and_the_cli_feed_an_uploaded_model_without_a_card_the_same_contract(tmp_path):
    """Issue 31: with no card, the sidebar fed an uploaded model the `ventricles` slice in RAS+ and the CLI the
    middle one. Now both come through `UserCard.contract`: the same spec, and the same score table."""
    import pandas as pd
    from streamlit.testing.v1 import AppTest

    from components import loaders, state

    global N
    folder = tmp_path / "cohort"
    n, N = N, 60  # a small cohort: this test is about the doors, not the estimator
    try:
        _cohort(folder, (SIDE,) * 3, WINDOW_3D, B_WINDOW_3D, np.eye(4))  # volumes: which slice is fed matters
    finally:
        N = n
    model = _model(tmp_path / "window.pt", WINDOW_3D[:2])  # a slice model: the window of the slice it is fed

    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app.py"), default_timeout=600)
    at.session_state[state.DATASET] = "upload"
    at.run()
    files = [("features.csv", (folder / "features.csv").read_bytes(), "text/csv")]
    files += [(p.name, p.read_bytes(), "application/octet-stream") for p in sorted(folder.glob("*.nii"))]
    at.sidebar.file_uploader(key=state.DATASET_UPLOAD).set_value(files).run()
    at.sidebar.number_input(key=state.MODEL_SIZE).set_value(SIDE).run()  # the one flag the CLI gets too
    at.sidebar.file_uploader(key=state.MODEL_UPLOAD).set_value(
        ("window.pt", model.read_bytes(), "application/octet-stream")
    ).run()
    assert not at.exception and not at.sidebar.error, [e.value for e in at.sidebar.error]
    app_ref = at.session_state[state.USER_MODEL]
    source = at.session_state[state.USER_DATASET]

    cli = _score(tmp_path, folder, model, "--size", str(SIDE))
    assert app_ref.spec.describe() == cli["_meta"]["input"]
    app = loaders.data_scores(source, app_ref, "cpu", 0, "all", ("a", "b"), 200).set_index("feature")
    cli_table = pd.DataFrame([cli["a"], cli["b"]]).set_index("feature")
    for column in ("score", "ci_low", "ci_high"):
        np.testing.assert_allclose(app[column], cli_table.loc[app.index, column], rtol=0, atol=1e-12)
