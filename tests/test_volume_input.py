"""Whole-volume models (input kind `volume`): the contract, the resampling, and a user's 3D
cohort scored against the truth.

The cohort is written the way a scanner export would be: anisotropic 2 x 2 x 3 mm voxels,
int16 with a `scl_slope`, some files big-endian. Each volume holds a central block of value
v = 1 + a + b^2 (a ~ U(0, 1), b ~ U(-1, 1): a non-monotone effect) and a bright corner patch
of value `marker` ~ U(2, 6). The user's TorchScript model takes the whole volume as a cube and
returns the mean of the cube's centre, which lies inside the block: f = v exactly, so the
marker's true score is 0 and a's and b's are computed by simulation (as in test_user_cohort).
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

from engine.cards import ModelRef, UserCard, spec_from_json, spec_to_json
from engine.cli.main import main
from engine.data import SliceSpec, load_dataset
from engine.data.slicing import cube_planes, model_input, peak_voxel, to_cube
from engine.errors import DatasetError, EveInputError
from engine.models import check_model, load
from engine.models.architectures import SmallCNN
from engine.pixelmaps import methods

N = 2000
TRUTH_DRAWS = 200_000
TOL = 0.03
SHAPE, ZOOMS = (20, 20, 12), (2.0, 2.0, 3.0)  # a 40 x 40 x 36 mm field of view
CUBE = 16  # the model's cube: 2.5 mm voxels fitted to the 40 mm extent
SLOPE = 0.001


def _affine() -> np.ndarray:
    return np.diag([*ZOOMS, 1.0])


def _block_mask() -> np.ndarray:
    """Voxels within 10 mm (per axis) of the volume's centre: a 20 mm block in world space."""
    centre = (np.array(SHAPE) - 1) / 2
    grid = np.stack(np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij"), -1)
    return (np.abs((grid - centre) * np.array(ZOOMS)) <= 10.0).all(-1)


class CubeCentreMean(nn.Module):
    """A user's 3D glass box: (B, 1, S, S, S) raw intensities -> (B,), the mean of the central 4^3 voxels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[-1] // 2
        return x[:, 0, c - 2 : c + 2, c - 2 : c + 2, c - 2 : c + 2].mean(dim=(1, 2, 3))


def _features(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {"a": rng.uniform(0, 1, n), "b": rng.uniform(-1, 1, n), "marker": rng.uniform(2, 6, n)}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cohort3d")
    feats = _features(N, np.random.default_rng(5))
    block = _block_mask()
    rows = []
    for i in range(N):
        volume = np.zeros(SHAPE)
        volume[block] = 1.0 + feats["a"][i] + feats["b"][i] ** 2
        volume[:3, :3, :2] = feats["marker"][i]
        dtype = np.dtype(">i2") if i % 2 else np.dtype("<i2")
        image = nib.Nifti1Image(np.round(volume / SLOPE).astype(dtype), _affine())
        image.header.set_slope_inter(SLOPE, 0.0)
        nib.save(image, folder / f"sub-{i:04d}.nii.gz")
        rows.append({"file": f"sub-{i:04d}.nii.gz", **{k: v[i] for k, v in feats.items()}})
    pd.DataFrame(rows).to_csv(folder / "features.csv", index=False)
    model = folder.parent / "cube_centre.pt"
    torch.jit.save(torch.jit.script(CubeCentreMean().eval()), str(model))
    return folder, model


@pytest.fixture(scope="module")
def truth() -> dict[str, float]:
    feats = _features(TRUTH_DRAWS, np.random.default_rng(2027))
    f = np.round((1.0 + feats["a"] + feats["b"] ** 2) / SLOPE) * SLOPE
    return {"marker": 0.0, "a": binned_truth(f, feats["a"], 0, 1, bins=100), "b": binned_truth(f, feats["b"], -1, 1)}


# 1. the contract --------------------------------------------------------------------------------


def test_a_volume_spec_states_its_shape_key_and_contract():
    spec = SliceSpec(size=48, input="volume", spacing=3.0, intensity="raw")
    assert spec.is_volume and spec.shape == (1, 48, 48, 48)
    assert spec.key == "volume-48-3mm-raw"
    assert "whole volume" in spec.describe() and "3 mm" in spec.describe() and "intensity raw" in spec.describe()
    assert SliceSpec(size=48, input="volume").key != SliceSpec("axial", None, 48).key
    assert spec_from_json(spec_to_json(spec)) == spec
    assert spec_to_json(SliceSpec(size=32, input="volume")) == {"input": "volume", "size": 32}


@pytest.mark.parametrize(
    "kwargs, fix",
    [
        ({"input": "cube"}, "slice, volume"),
        ({"input": "volume", "size": 300}, "4 to 256"),
        ({"input": "volume", "spacing": 50.0}, "0.1 to 20"),
        ({"spacing": 2.0}, "volume input only"),
    ],
)
def test_a_bad_volume_spec_names_the_fix(kwargs, fix):
    with pytest.raises(EveInputError, match=fix):
        SliceSpec(**{"size": 32, **kwargs})


def test_a_user_card_can_ask_for_a_volume_and_flags_override_it(tmp_path):
    card = UserCard.from_json({"input": {"kind": "volume", "size": 32, "spacing": 2.5}, "intensity": "zscore"})
    spec = card.ref(tmp_path / "m.pt").spec
    # what the card leaves out (the orientation) takes a user's model's default: the arrays as stored
    assert spec == SliceSpec("axial", None, 32, "zscore", input="volume", spacing=2.5, orientation="stored")
    assert card.ref(tmp_path / "m.pt", size=24, spacing=4.0).spec.size == 24
    with pytest.raises(EveInputError, match="input kind 'cube'"):
        UserCard.from_json({"input": {"kind": "cube"}})


def test_a_card_that_contradicts_its_model_names_the_card():
    slice_model = torch.jit.script(SmallCNN(size=16, widths=(4,), pooled=2, hidden=0, dropout=0.0).eval())
    with pytest.raises(EveInputError, match=r"volumes shaped \(B, 1, 16, 16, 16\).*model card's input"):
        check_model(slice_model, SliceSpec(size=16, input="volume"))
    volume_model = SmallCNN(size=16, widths=(4,), pooled=2, hidden=0, dropout=0.0, dims=3).eval()
    assert check_model(volume_model, SliceSpec(size=16, input="volume")) == 1
    with pytest.raises(EveInputError, match=r"images shaped \(B, 1, 16, 16\)"):
        check_model(volume_model, SliceSpec("axial", None, 16))


# 2. resampling keeps the anatomy's shape --------------------------------------------------------


def test_to_cube_keeps_a_sphere_round_across_anisotropic_voxels():
    zooms = (1.0, 2.0, 4.0)
    shape = (80, 40, 20)  # an 80 mm cube of field, sampled three ways
    grid = np.stack(np.meshgrid(*(np.arange(n) for n in shape), indexing="ij"), -1)
    centre = (np.array(shape) - 1) / 2
    sphere = (np.linalg.norm((grid - centre) * np.array(zooms), axis=-1) <= 24.0).astype(np.float32)
    cube = to_cube(torch.from_numpy(sphere)[None, None], zooms, 32)[0, 0].numpy()  # 2.5 mm voxels
    widths = [(cube.max(axis=tuple(a for a in range(3) if a != axis)) > 0.5).sum() for axis in range(3)]
    assert max(widths) - min(widths) <= 1 and abs(widths[0] - 48 / 2.5) <= 1.5  # a 48 mm diameter each way


def test_a_spacing_crops_or_pads_around_the_centre():
    volume = torch.ones(1, 1, 10, 10, 10)  # 20 mm at 2 mm
    padded = to_cube(volume, (2.0, 2.0, 2.0), 20, spacing=2.0)[0, 0]  # 40 mm cube: 20 mm of ones, centred
    assert padded.shape == (20, 20, 20) and padded.sum() == 1000 and padded[5:15, 5:15, 5:15].min() == 1
    cropped = to_cube(volume, (2.0, 2.0, 2.0), 6, spacing=2.0)[0, 0]
    assert cropped.shape == (6, 6, 6) and cropped.min() == 1


def test_three_planes_cross_at_the_maps_peak():
    cube = np.zeros((8, 8, 8), np.float32)
    cube[2, 5, 6] = -3.0
    assert peak_voxel(cube) == (2, 5, 6)
    planes = cube_planes(cube, peak_voxel(cube))
    assert {p: k for p, (k, _) in planes.items()} == {"axial": 6, "coronal": 5, "sagittal": 2}
    assert all(image.min() == -3.0 for _, image in planes.values())  # each plane goes through the peak


# 3. a user's cohort, scored against the truth ---------------------------------------------------


def test_model_inputs_are_cubes_and_a_2d_dataset_is_refused(cohort, shapes):
    folder, _ = cohort
    dataset = load_dataset(folder)
    spec = SliceSpec(size=CUBE, input="volume", intensity="raw")
    inputs = dataset.model_inputs(spec, [0, 1])
    assert inputs.shape == (2, 1, CUBE, CUBE, CUBE)
    data, affine = dataset.volume(0)
    assert torch.equal(inputs[0:1], model_input(data, affine, spec))
    with pytest.raises(DatasetError, match="holds 2D images.*whole volumes"):
        shapes.model_inputs(SliceSpec(size=16, input="volume"), [0])


def test_raw_volume_scores_match_the_truth_and_the_unseen_marker_scores_zero(cohort, truth, tmp_path):
    folder, model = cohort
    out = tmp_path / "r.json"
    argv = ["score", "--data", str(folder), "--model", str(model), "--input", "volume", "--size", str(CUBE)]
    assert main([*argv, "--out", str(out), "--n-boot", "200"]) == 0
    doc = json.loads(out.read_text())
    scores = pd.DataFrame(doc["scores"]).set_index("feature")
    spec = {"input": "volume", "size": CUBE, "intensity": "raw", "orientation": "stored"}  # a user model's default
    assert doc["spec"] == spec and "whole volume" in doc["input"]
    for feature, true in truth.items():
        assert scores.loc[feature, "score"] == pytest.approx(true, abs=TOL), feature
    assert scores.loc["marker", "ci_low"] <= 0.0 <= scores.loc["marker", "ci_high"]


def test_a_volume_model_is_refused_by_the_diffusion_path(cohort):
    from engine.scores.generator import check_compatible

    folder, model = cohort
    _, card = load(ModelRef.torchscript(model, SliceSpec(size=CUBE, input="volume", intensity="raw")))
    generator = type("Generator", (), {"dataset": card.dataset, "spec": SliceSpec("axial", None, 64)})()
    with pytest.raises(EveInputError, match="takes whole volumes.*method data"):
        check_compatible(card, generator)


# 4. maps in 3D ----------------------------------------------------------------------------------


class LinearVolume(nn.Module):
    """y = sum(w * x): every gradient method's map is known exactly (IG, DeepLift, InputXGradient = w * x)."""

    def __init__(self, size: int):
        super().__init__()
        self.w = nn.Parameter(torch.randn(1, 1, size, size, size, generator=torch.Generator().manual_seed(1)))

    def forward(self, x):
        return (x * self.w).flatten(1).sum(1, keepdim=True)


@pytest.mark.parametrize("method", ["IntegratedGradients", "DeepLift", "InputXGradient"])
def test_a_linear_volume_models_maps_are_weight_times_input(method):
    model = LinearVolume(6).eval()
    x = torch.rand(2, 1, 6, 6, 6, generator=torch.Generator().manual_seed(2))
    maps = methods.attribution_map(model, x, method)
    assert maps.shape == x.shape
    torch.testing.assert_close(maps, model.w.detach() * x, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method", sorted(methods.METHODS))
def test_every_method_maps_a_3d_cnn_in_the_shape_of_its_input(method):
    with torch.random.fork_rng():  # its own weights, whatever ran before (some inits leave Grad-CAM's ReLU all 0)
        torch.manual_seed(0)
        model = SmallCNN(size=12, widths=(4, 8), pooled=2, hidden=0, dropout=0.0, dims=3).eval()
    x = torch.rand(2, 1, 12, 12, 12, generator=torch.Generator().manual_seed(3))
    why = methods.unavailable(model, method)
    if method == "LRP" or methods.METHODS[method].attention:  # captum has no 3D LRP rules; a CNN has no attention
        assert why and method in str(pytest.raises(EveInputError, methods.attribution_map, model, x, method).value)
        return
    assert why is None
    maps = methods.attribution_map(model, x, method)
    assert maps.shape == x.shape and torch.isfinite(maps).all() and maps.abs().sum() > 0
