"""Model zoo: cards, held-out metrics reproduced, glass-box exactness, TorchScript loading, bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from torch import nn

from engine.cards import ModelCard, ModelRef
from engine.cli.main import main
from engine.data import SliceSpec
from engine.errors import EveInputError
from engine.models import check_model, list_cards, load, load_model, load_torchscript, models_dir
from engine.models.architectures import SmallCNN
from engine.models.train import RECIPES, SYNTHBRAIN_SPEC, Recipe, TrainConfig, evaluate, fit
from engine.models.zoo import forward

CARDS = {card.name: card for card in list_cards()}
SPEC = SliceSpec("axial", None, 16)  # tiny input for TorchScript checks


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


# ---------------------------------------------------------------- the zoo


def test_every_recipe_has_a_card_and_every_card_a_recipe():
    assert set(CARDS) == set(RECIPES)
    assert {"synthbrain-diagnosis", "synthbrain-shortcut"} <= set(CARDS)
    assert sum(name.startswith("shapes-") and CARDS[name].kind == "cnn" for name in CARDS) >= 2
    assert {c.kind for c in CARDS.values()} == {"cnn", "glass-box"}


@pytest.mark.parametrize("name", sorted(CARDS))
def test_card_is_complete_and_its_model_fits_the_contract(name):
    card = CARDS[name]
    for key in (
        "dataset",
        "target",
        "target_definition",
        "depends_on",
        "task",
        "spec",
        "normalisation",
        "output_names",
        "metrics",
        "command",
    ):
        assert getattr(card, key), key
    assert card.command == f"python -m engine train-classifier {name}"
    spec = card.spec
    if spec.is_volume:  # a 3D model takes the whole p99-normalised volume
        assert card.dataset == "synthbrain" and spec.intensity == "p99" and card.architecture["kwargs"]["dims"] == 3
    else:
        assert spec == (SYNTHBRAIN_SPEC if card.dataset == "synthbrain" else SliceSpec("axial", None, 64))
    model, loaded = load_model(name)
    assert loaded == card and loaded.to_json() == card.to_json() and not model.training
    assert check_model(model, spec) == len(card.output_names)
    if card.kind == "cnn":
        assert card.weights == f"{name}.safetensors" and card.training["wall_time_s"] > 0
        assert (models_dir() / card.weights).stat().st_size < 1_000_000  # assets stay small
    else:
        assert card.function and not card.weights


@pytest.mark.parametrize("name", sorted(CARDS))
def test_card_json_round_trips_every_field(name):
    written = json.loads((models_dir() / f"{name}.json").read_text())
    assert ModelCard.from_json(written).to_json() == written


@pytest.mark.parametrize("name", sorted(CARDS))
def test_card_reproduces_its_held_out_metrics(name, request):
    card = CARDS[name]
    dataset = request.getfixturevalue(card.dataset)
    model, _ = load_model(name)
    measured = evaluate(model, card, dataset)
    recorded = {k: v for k, v in card.metrics.items() if k != "split"}
    assert measured["n"] == recorded["n"] == len(dataset.split_indices("test"))
    for key, value in recorded.items():
        assert measured[key] == pytest.approx(value, abs=0.01), key


def test_diagnosis_models_clearly_beat_chance():
    for name in ("synthbrain-diagnosis", "synthbrain-shortcut", "synthbrain-diagnosis-3d"):
        metrics = CARDS[name].metrics
        assert metrics["accuracy"] >= 0.65 and metrics["auc"] >= 0.75, (name, metrics)
        assert metrics["accuracy"] > max(metrics["positive_fraction"], 1 - metrics["positive_fraction"]) + 0.1


def test_shapes_models_learn_their_targets():
    assert CARDS["shapes-size-texture"].metrics["r2"] > 0.9
    assert CARDS["shapes-elongated"].metrics["accuracy"] > 0.9


# ---------------------------------------------------------------- glass-box models are exact


def _images(dataset, spec, n=6) -> torch.Tensor:
    real = dataset.model_inputs(spec, dataset.split_indices("test")[:n])
    noise = torch.rand(2, 1, spec.size, spec.size, generator=torch.Generator().manual_seed(0))
    return torch.cat([real, noise])


def test_glass_ventricles_is_exactly_its_stated_function(synthbrain):
    model, card = load_model("synthbrain-glass-ventricles")
    kw = card.architecture["kwargs"]
    r0, r1, c0, c1 = kw["window"]
    assert f"rows {r0}..{r1 - 1}, cols {c0}..{c1 - 1}" in card.function
    x = _images(synthbrain, card.spec).requires_grad_()
    y = model(x)[:, 0]
    a = x.detach().double().numpy()[:, 0]
    z = (kw["threshold"] - a[:, r0:r1, c0:c1]) / kw["temperature"]
    np.testing.assert_allclose(y.detach().numpy(), _sigmoid(z).sum(axis=(1, 2)), rtol=1e-5)
    # differentiable: dy/dx = −σ(z)(1 − σ(z)) / τ inside the window, 0 outside
    (grad,) = torch.autograd.grad(y.sum(), x)
    expected = np.zeros_like(a)
    expected[:, r0:r1, c0:c1] = -_sigmoid(z) * (1 - _sigmoid(z)) / kw["temperature"]
    np.testing.assert_allclose(grad.numpy()[:, 0], expected, rtol=1e-4, atol=1e-5)  # |grad| <= 1 / (4 tau) = 5


def test_glass_area_is_exactly_its_stated_function(shapes):
    model, card = load_model("shapes-glass-area")
    kw = card.architecture["kwargs"]
    x = _images(shapes, card.spec)
    a = x.double().numpy()[:, 0]
    frame = np.ones(a.shape[1:], bool)
    b = kw["border"]
    frame[b:-b, b:-b] = False
    background = a[:, frame].mean(axis=1)
    expected = _sigmoid((a - (1 + background[:, None, None]) / 2) / kw["temperature"]).sum(axis=(1, 2))
    np.testing.assert_allclose(model(x)[:, 0].detach().numpy(), expected, rtol=1e-5)


def test_glass_background_is_exactly_the_border_mean(shapes):
    model, card = load_model("shapes-glass-background")
    x = _images(shapes, card.spec)
    b = card.architecture["kwargs"]["border"]
    frame = torch.ones(64, 64, dtype=torch.bool)
    frame[b:-b, b:-b] = False
    torch.testing.assert_close(model(x)[:, 0], x[:, 0][:, frame].mean(dim=1))


def test_glass_box_readouts_track_their_features():
    assert CARDS["synthbrain-glass-ventricles"].metrics["pearson_r"] > 0.9
    assert CARDS["shapes-glass-area"].metrics["pearson_r"] > 0.9


# ---------------------------------------------------------------- training is deterministic


def test_fit_is_deterministic_by_seed():
    recipe = Recipe(
        "tiny",
        "shapes",
        "elongated",
        "binary",
        SPEC,
        "SmallCNN",
        {"size": 16, "outputs": 1, "widths": [2, 4], "pooled": 2, "hidden": 0, "dropout": 0.0},
        train=TrainConfig(epochs=2, batch_size=8, shift=1, flip=True, gain=0.1),
    )
    images = torch.rand(16, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    y = (images.mean(dim=(1, 2, 3)) > 0.5).float().numpy()
    a = fit(recipe, images, y, progress=False).state_dict()
    b = fit(recipe, images, y, progress=False).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_cli_rebuilds_a_glass_box_card(tmp_path, shapes, capsys):
    assert main(["train-classifier", "shapes-glass-background", "--out", str(tmp_path)]) == 0
    rebuilt = json.loads((tmp_path / "shapes-glass-background.json").read_text())
    assert rebuilt["metrics"] == pytest.approx(CARDS["shapes-glass-background"].metrics)
    assert "held-out" in capsys.readouterr().out


def test_cli_names_unknown_or_missing_models(capsys):
    assert main(["train-classifier"]) == 2
    assert "--all" in capsys.readouterr().err
    assert main(["train-classifier", "resnet"]) == 2
    assert "Unknown zoo model 'resnet'" in capsys.readouterr().err


# ---------------------------------------------------------------- loading built-ins: bad input


def test_unknown_model_name_lists_the_zoo():
    with pytest.raises(EveInputError, match="Unknown model 'nope'.*synthbrain-diagnosis"):
        load_model("nope")


def _copy_card(tmp_path, name="shapes-elongated"):
    for suffix in (".json", ".safetensors"):
        shutil.copy(models_dir() / f"{name}{suffix}", tmp_path / f"{name}{suffix}")
    return tmp_path


def test_altered_or_missing_weights_are_refused(tmp_path):
    folder = _copy_card(tmp_path)
    weights = folder / "shapes-elongated.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(EveInputError, match="checksum differs.*train-classifier shapes-elongated"):
        load_model("shapes-elongated", folder=folder)
    weights.unlink()
    with pytest.raises(EveInputError, match="missing"):
        load_model("shapes-elongated", folder=folder)


def test_broken_card_is_refused(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(EveInputError, match="not readable JSON"):
        load_model("bad", folder=tmp_path)


# ---------------------------------------------------------------- user TorchScript models


class Good(nn.Module):
    def __init__(self, outputs: int = 2):
        super().__init__()
        self.net = SmallCNN(size=16, outputs=outputs, widths=(2,), pooled=2, hidden=0)

    def forward(self, x):
        return self.net(x)


class ThreeChannels(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 3)

    def forward(self, x):
        return self.conv(x).mean(dim=(2, 3))


class Flat(nn.Module):
    def forward(self, x):
        return x.mean(dim=(1, 2, 3))  # (B,) instead of (B, 1)


class Grid(nn.Module):
    def forward(self, x):
        return x[:, 0, :2, :2]  # (B, 2, 2): one output per image is not a row


class Pair(nn.Module):
    def forward(self, x):
        return x.mean(dim=(2, 3)), x.amax(dim=(2, 3))


class Double(nn.Module):
    def forward(self, x):
        return x.mean(dim=(2, 3)).double()


class NaNOut(nn.Module):
    def forward(self, x):
        return x.mean(dim=(2, 3)) / 0.0 * 0.0


class BatchMixing(nn.Module):
    def forward(self, x):
        return x.mean(dim=(2, 3)) - x.mean()  # depends on the other images


def _save(module: nn.Module, tmp_path, name="model.pt"):
    path = tmp_path / name
    torch.jit.save(torch.jit.script(module.eval()), str(path))
    return path


def test_torchscript_model_loads_from_path_and_bytes(tmp_path):
    path = _save(Good(), tmp_path)
    model, card = load_torchscript(path, SPEC, output_names=["a", "b"])
    assert card.output_names == ("a", "b") and card.kind == "torchscript" and card.is_torchscript
    assert card.spec == SPEC and card.to_json()["spec"] == {"plane": "axial", "index": None, "size": 16}
    x = torch.rand(3, 1, 16, 16)
    model_bytes, card_bytes = load_torchscript(path.read_bytes(), SPEC)
    torch.testing.assert_close(model(x), model_bytes(x))
    assert card_bytes.output_names == ("output_0", "output_1")


def test_a_model_ref_loads_what_it_names_and_is_a_cache_key(tmp_path):
    path = _save(Good(), tmp_path)
    ref = ModelRef.torchscript(path, SPEC)
    assert hash(ref) == hash(ModelRef.torchscript(str(path), SPEC))
    assert ref != ModelRef.torchscript(path, SliceSpec("axial", None, 32))
    model, card = load(ref)
    assert card.spec == SPEC and card.name == "model.pt" and card.output_names == ("output_0", "output_1")
    builtin, card = load(ModelRef.builtin("shapes-glass-area"))
    assert card == CARDS["shapes-glass-area"] and str(ModelRef.builtin("shapes-glass-area")) == "shapes-glass-area"
    with pytest.raises(ValueError):
        ModelRef(name="a", path="b", spec=SPEC)
    with pytest.raises(ValueError):
        ModelRef(path="b")


@pytest.mark.parametrize(
    ("module", "match"),
    [
        (ThreeChannels(), r"failed on a \(2, 1, 16, 16\) float32 batch"),
        (Grid(), r"must return \(B,\) or \(B, K\)"),
        (Pair(), "not a tuple or dict"),
        (Double(), "float32"),
        (NaNOut(), "NaN or Inf"),
        (BatchMixing(), "eval mode"),
    ],
)
def test_torchscript_wrong_signature_is_named(tmp_path, module, match):
    with pytest.raises(EveInputError, match=match):
        load_torchscript(_save(module, tmp_path), SPEC)


@pytest.mark.parametrize("module", [Flat(), Good(outputs=1), Good(outputs=3)], ids=["(B,)", "(B, 1)", "(B, 3)"])
def test_torchscript_outputs_of_every_usual_shape_are_accepted(tmp_path, module):
    model, card = load_torchscript(_save(module, tmp_path), SPEC)
    x = torch.rand(5, 1, 16, 16)
    expected = module.eval()(x).reshape(5, -1)
    assert card.output_names == tuple(f"output_{j}" for j in range(expected.shape[1]))
    torch.testing.assert_close(forward(model, x), expected)


def test_torchscript_wrong_input_size_is_named(tmp_path):
    linear = nn.Sequential(nn.Flatten(), nn.Linear(16 * 16, 1))
    with pytest.raises(EveInputError, match=r"\(B, 1, 64, 64\)"):
        load_torchscript(_save(linear, tmp_path), SliceSpec("axial", None, 64))


def test_torchscript_output_names_must_match(tmp_path):
    with pytest.raises(EveInputError, match="2 outputs per image but 3 output names"):
        load_torchscript(_save(Good(), tmp_path), SPEC, output_names=["a", "b", "c"])


def test_pickles_and_junk_are_never_loaded(tmp_path):
    pickled = tmp_path / "checkpoint.pt"
    torch.save(Good().state_dict(), pickled)  # a pickle-based checkpoint
    with pytest.raises(EveInputError, match="not a TorchScript model.*never unpickles"):
        load_torchscript(pickled, SPEC)
    with pytest.raises(EveInputError, match="not a TorchScript model"):
        load_torchscript(b"\x80\x04junk", SPEC)
    with pytest.raises(EveInputError, match="empty"):
        load_torchscript(b"", SPEC)
    with pytest.raises(EveInputError, match="does not exist"):
        load_torchscript(tmp_path / "missing.pt", SPEC)


def test_oversized_upload_is_refused(tmp_path, monkeypatch):
    from engine.models import zoo

    path = _save(Good(), tmp_path)
    monkeypatch.setattr(zoo, "MAX_TORCHSCRIPT_BYTES", 100)
    with pytest.raises(EveInputError, match="larger than"):
        load_torchscript(path, SPEC)
    with pytest.raises(EveInputError, match="larger than"):
        load_torchscript(path.read_bytes(), SPEC)
