"""A MONAI bundle is a model with its own contract (`engine.data.bundle`): its preprocessing, run by MONAI,
gives the same model inputs and outputs as the equivalent hand-written contract; an untrusted bundle runs
only MONAI's own transform records."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from engine.cards import ModelRef, model_ref
from engine.cli.main import main
from engine.data import load_dataset
from engine.data.bundle import check_allowed, is_bundle, read_bundle
from engine.data.slicing import SliceSpec
from engine.errors import EveInputError
from engine.models import load
from engine.scores.service import model_outputs

CUBE = 16
SHAPE = (12, 14, 16)  # stored; padded to the cube (an even difference per axis: both tools centre it the same)
TRANSFORMS = [
    {"_target_": "LoadImaged", "keys": "@image_key", "image_only": True},
    {"_target_": "EnsureChannelFirstd", "keys": "@image_key"},
    {"_target_": "Orientationd", "keys": "@image_key", "axcodes": "RAS"},
    {"_target_": "Spacingd", "keys": "@image_key", "pixdim": [1.0, 1.0, 1.0]},
    {"_target_": "ScaleIntensityd", "keys": "@image_key"},
    {"_target_": "ResizeWithPadOrCropd", "keys": "@image_key", "spatial_size": [CUBE, CUBE, CUBE]},
]
# the same contract, hand-written: RAS+, 1 mm voxels (the cube fitted to the field of view), min-max, centre pad
HAND = SliceSpec("axial", None, CUBE, "minmax", input="volume", orientation="ras")


class CornerMeans(torch.nn.Module):
    """Two outputs: the means of two asymmetric corners of the cube (a flip would swap what they read)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = x[:, 0, 2:6, 3:9, 4:10].mean((1, 2, 3))
        b = x[:, 0, 9:14, 8:12, 2:7].mean((1, 2, 3))
        return torch.stack([a, b], 1)


def write_bundle(root: Path, transforms=TRANSFORMS) -> Path:
    (root / "models").mkdir(parents=True)
    (root / "configs").mkdir()
    torch.jit.save(torch.jit.script(CornerMeans().eval()), root / "models" / "model.ts")
    metadata = {
        "name": "corner-means",
        "version": "0.1.0",
        "network_data_format": {
            "inputs": {"image": {"type": "image", "num_channels": 1, "spatial_shape": [CUBE] * 3}},
            "outputs": {"pred": {"type": "regression", "num_channels": 2, "channel_def": {"0": "a", "1": "b"}}},
        },
    }
    (root / "configs" / "metadata.json").write_text(json.dumps(metadata))
    inference = {"image_key": "image", "preprocessing": {"_target_": "Compose", "transforms": transforms}}
    (root / "configs" / "inference.json").write_text(json.dumps(inference))
    return root


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    """Six asymmetric volumes stored as FSL writes them (LAS), 1 mm voxels, different intensity ranges."""
    folder = tmp_path_factory.mktemp("bundle") / "cohort"
    folder.mkdir()
    rng = np.random.default_rng(0)
    affine = np.diag([-1.0, 1.0, 1.0, 1.0])
    lines = ["file,a"]
    for i in range(6):
        array = rng.uniform(0, 50 + 20 * i, SHAPE).astype(np.float32)
        array[:4, :5, :6] += 100  # a bright corner: asymmetric
        nib.save(nib.Nifti1Image(array, affine), folder / f"s{i}.nii.gz")
        lines.append(f"s{i}.nii.gz,{i}")
    (folder / "features.csv").write_text("\n".join(lines) + "\n")
    return folder


def test_a_bundle_feeds_what_the_equivalent_hand_written_contract_feeds(tmp_path, cohort):
    bundle = write_bundle(tmp_path / "corner-means")
    assert is_bundle(bundle)
    ref = model_ref(bundle)
    assert ref.spec.bundle == str(bundle.resolve()) and ref.output_names == ("a", "b")
    dataset = load_dataset(cohort)
    by_bundle = dataset.model_inputs(ref.spec)
    by_hand = dataset.model_inputs(HAND)
    np.testing.assert_allclose(by_bundle.numpy(), by_hand.numpy(), rtol=0, atol=1e-6)
    model, card = load(ref, "cpu")
    hand_model, hand_card = load(ModelRef.torchscript(bundle / "models" / "model.ts", HAND), "cpu")
    rows = np.arange(len(dataset))
    outputs = model_outputs(model, dataset, card.spec, rows)
    np.testing.assert_allclose(outputs, model_outputs(hand_model, dataset, hand_card.spec, rows), rtol=0, atol=1e-6)
    words = card.spec.describe()
    assert "Orientationd(axcodes=RAS)" in words and "ResizeWithPadOrCropd(spatial_size=[16, 16, 16])" in words


def test_the_command_line_scores_a_bundle_and_its_report_states_the_transforms(tmp_path, cohort, capsys):
    bundle = write_bundle(tmp_path / "corner-means")
    out = tmp_path / "report.json"
    assert main(["score", "--data", str(cohort), "--model", str(bundle), "--split", "all", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["input"].startswith("the MONAI bundle corner-means's own preprocessing, run by MONAI: LoadImaged")
    assert {row["output"] for row in report["scores"]} == {"a", "b"}
    assert "trusts" in capsys.readouterr().out
    # the input flags are the bundle's business
    assert main(["score", "--data", str(cohort), "--model", str(bundle), "--size", "32", "--out", str(out)]) == 2
    assert "is a MONAI bundle" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("record", "named"),
    [
        ({"_target_": "monai.transforms.Lambdad", "keys": "image", "func": "$lambda x: x"}, "Lambdad"),
        ({"_target_": "builtins.exec", "source": "print(1)"}, "builtins.exec"),
        ({"_target_": "ScaleIntensityd", "keys": "$__import__('os').getcwd()"}, "expression"),
    ],
    ids=["lambda", "exec", "expression"],
)
def test_an_untrusted_bundle_runs_only_monais_own_transforms(tmp_path, record, named):
    bundle = write_bundle(tmp_path / "b", [*TRANSFORMS[:2], record])
    with pytest.raises(EveInputError, match=named):
        check_allowed(bundle)
    check_allowed(write_bundle(tmp_path / "good"))  # the allowed list passes


def test_a_bundle_whose_metadata_lacks_its_input_is_refused_with_the_fix(tmp_path):
    bundle = write_bundle(tmp_path / "b")
    (bundle / "configs" / "metadata.json").write_text(json.dumps({"name": "x"}))
    with pytest.raises(EveInputError, match="network_data_format"):
        read_bundle(bundle)
