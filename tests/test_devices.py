"""One device rule (`engine.devices`): every model call puts its inputs on the model's device, whichever
door it comes through (outputs, maps of each family, map quality, a counterfactual), and `--device` is
honoured by every command or refused with the fix.

`Recorder` wraps a model and records, on every call, where its input was and where its weights are.
On a machine with CUDA the tests run on both devices; on a CPU-only machine (this project's CI) the CPU
half checks the wiring, and the refusal of `--device cuda` is checked for real.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from engine.cards import ModelRef
from engine.cli.main import main
from engine.data.defaults import open_dataset
from engine.devices import model_device, resolve_device
from engine.errors import EveInputError
from engine.models import load
from engine.pixelmaps.methods import attribution_map
from engine.pixelmaps.quality import quality_table
from engine.scores.service import model_outputs

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


class Recorder(nn.Module):
    """A model that records (input device, weights' device) on every call, then runs the wrapped one."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.calls: list[tuple[torch.device, torch.device]] = []

    @property
    def cam_layer(self):  # Grad-CAM's layer is the wrapped model's
        return getattr(self.model, "cam_layer", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append((x.device, model_device(self)))
        return self.model(x)

    def check(self) -> None:
        assert self.calls, "the model was never called"
        astray = [(i, w) for i, w in self.calls if i != w]
        assert not astray, f"inputs on another device than the model: {astray[:3]}"


@pytest.fixture(scope="module")
def shapes():
    return open_dataset("shapes")


@pytest.mark.parametrize("device", DEVICES)
def test_every_model_call_gets_its_inputs_on_the_models_device(shapes, device):
    model, card = load(ModelRef.builtin("shapes-size-texture"), device)
    recorder = Recorder(model).eval()
    images = shapes.model_inputs(card.spec, [0, 1, 2])  # on the CPU, as the dataset gives them
    model_outputs(recorder, shapes, card.spec, [0, 1, 2])
    maps = {  # one method of each family: gradients, paths, perturbation, a layer's CAM, regions
        method: attribution_map(recorder, images, method, 0, **params)
        for method, params in (
            ("Saliency", {}),
            ("IntegratedGradients", {"n_steps": 8}),
            ("Occlusion", {}),
            ("LayerGradCam", {}),
            ("FeatureAblation", {}),
        )
    }
    assert all(m.device == images.device for m in maps.values())  # results come back where they were asked
    quality_table(recorder, images, maps, 0, road=False, steps=4)
    recorder.check()


@pytest.mark.parametrize("device", DEVICES)
def test_attention_maps_get_their_inputs_on_the_models_device(device):
    synthbrain = open_dataset("synthbrain")
    model, card = load(ModelRef.builtin("synthbrain-diagnosis-vit"), device)
    images = synthbrain.model_inputs(card.spec, [0, 1])
    recorder = Recorder(model).eval()
    for method in ("AttentionRollout", "AttentionGradient"):
        assert attribution_map(recorder, images, method, 0).device == images.device
    recorder.check()


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
def test_a_counterfactual_runs_the_classifier_on_its_device(device):
    from engine.diffusion import load_diffusion
    from engine.explanations.counterfactual import subject_counterfactual

    dataset = open_dataset("synthbrain")
    model, card = load(ModelRef.builtin("synthbrain-diagnosis"), device)
    recorder = Recorder(model).eval()
    subject = dataset.subjects[0]
    before = float(dataset.table["ventricle_volume"].iloc[0])
    result = subject_counterfactual(
        recorder, card, load_diffusion("synthbrain"), dataset, subject, "ventricle_volume", before * 1.2
    )
    assert result.output_after == result.output_after  # a number came back
    recorder.check()


@pytest.mark.parametrize(
    "command",
    [
        ["score", "--data", "shapes", "--model", "shapes-size-texture", "--out", "{tmp}/s.json"],
        ["maps", "--data", "shapes", "--model", "shapes-size-texture", "--out", "{tmp}/m.csv", "--n", "1"],
        ["anchors", "--data", "shapes", "--model", "shapes-size-texture", "--out", "{tmp}/a.json"],
        [
            "counterfactual",
            *("--data", "synthbrain", "--model", "synthbrain-diagnosis", "--subject", "x"),
            *("--feature", "age", "--value", "70", "--out", "{tmp}/c.json"),
        ],
    ],
    ids=lambda c: c[0],
)
@pytest.mark.skipif(torch.cuda.is_available(), reason="refusing --device cuda needs a machine without CUDA")
def test_every_command_refuses_a_device_this_machine_lacks_with_the_fix(tmp_path, capsys, command):
    argv = [part.format(tmp=tmp_path) for part in command] + ["--device", "cuda"]
    assert main(argv) == 2
    assert "no CUDA GPU: use --device cpu" in capsys.readouterr().err


def test_a_device_name_eve_does_not_run_on_is_refused():
    with pytest.raises(EveInputError, match="Unknown device 'gpu0': use cpu or cuda"):
        resolve_device("gpu0")
    with pytest.raises(EveInputError, match="'meta' is not one Eve runs on"):
        resolve_device("meta")
    assert resolve_device("cpu") == torch.device("cpu")
