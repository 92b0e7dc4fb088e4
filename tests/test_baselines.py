"""Captum baseline maps: shapes, completeness, known answers, quality data, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from engine.errors import EveInputError
from engine.models.architectures import DarkPixelCount, SmallCNN
from engine.pixelmaps.methods import (
    METHODS,
    attribution_map,
    available_methods,
    captum_metrics_table,
    display_normalise,
    infidelity,
    randomisable_layers,
    randomisation_check,
    sensitivity_max,
    unavailable,
)

SIZE = 16
CNN_METHODS = [m for m, info in METHODS.items() if not info.attention]  # attention maps: tests/test_attention.py
DETERMINISTIC = [m for m in CNN_METHODS if not METHODS[m].random]


# ---------------------------------------------------------------- a small zoo of hand-made models


def tiny_cnn(outputs: int = 2) -> nn.Module:
    torch.manual_seed(0)
    return SmallCNN(size=SIZE, outputs=outputs, widths=(2, 4), pooled=2, hidden=8, dropout=0.0).eval()


class Linear(nn.Module):
    """y_k = Σ w_k · x: every gradient method has a closed-form answer."""

    def __init__(self, outputs: int = 2):
        super().__init__()
        self.conv = nn.Conv2d(1, outputs, SIZE, bias=True)  # one S×S filter per output
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(outputs, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(1)))

    def forward(self, x):
        return self.conv(x).flatten(1)


class NaNModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3)

    def forward(self, x):
        return self.conv(x).mean(dim=(2, 3)) * float("nan")


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(4, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def cnn() -> nn.Module:
    return tiny_cnn()


# ---------------------------------------------------------------- every method


@pytest.mark.parametrize("method", CNN_METHODS)
def test_method_returns_finite_maps_of_the_image_shape_for_a_batch(cnn, images, method):
    maps = attribution_map(cnn, images, method, target=1)
    assert maps.shape == images.shape
    assert maps.dtype == torch.float32
    assert torch.isfinite(maps).all()
    assert maps.abs().sum() > 0


@pytest.mark.parametrize("method", CNN_METHODS)
def test_method_leaves_images_model_and_gradients_unchanged(cnn, images, method):
    before = images.clone()
    state = {k: v.clone() for k, v in cnn.state_dict().items()}
    attribution_map(cnn, images, method, target=0)
    assert torch.equal(images, before)
    assert not images.requires_grad and images.grad is None
    assert all(p.grad is None for p in cnn.parameters())
    assert all(torch.equal(v, state[k]) for k, v in cnn.state_dict().items())
    assert not cnn.training
    # no captum hooks left behind
    assert all(not m._forward_hooks and not m._backward_hooks for m in cnn.modules())


@pytest.mark.parametrize("method", DETERMINISTIC)
def test_batched_maps_equal_one_image_at_a_time(cnn, images, method):
    batched = attribution_map(cnn, images, method, target=1)
    single = attribution_map(cnn, images, method, target=1, batch_size=1)
    torch.testing.assert_close(batched, single, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("method", [m for m, info in METHODS.items() if info.random])
def test_random_methods_are_reproducible_by_seed_and_keep_the_global_rng(cnn, images, method):
    state, numpy_state = torch.random.get_rng_state(), np.random.get_state()
    a = attribution_map(cnn, images, method, target=1, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(np.array_equal(x, y) for x, y in zip(np.random.get_state(), numpy_state, strict=True))
    np.random.seed(12345)  # captum draws GradientShap's path coefficients from numpy's global RNG
    b = attribution_map(cnn, images, method, target=1, seed=3)
    c = attribution_map(cnn, images, method, target=1, seed=4)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_per_image_targets(cnn, images):
    target = torch.tensor([0, 1, 1, 0])
    maps = attribution_map(cnn, images, "Saliency", target=target)
    for i in range(len(images)):
        torch.testing.assert_close(maps[i : i + 1], attribution_map(cnn, images[i : i + 1], "Saliency", int(target[i])))


# ---------------------------------------------------------------- completeness and known answers


@pytest.mark.parametrize("target", [0, 1])
def test_integrated_gradients_completeness_within_convergence_delta(cnn, images, target):
    maps, delta = attribution_map(cnn, images, "IntegratedGradients", target=target, return_delta=True)
    with torch.no_grad():
        gap = cnn(images)[:, target] - cnn(torch.zeros_like(images))[:, target]  # f(x) − f(baseline)
    total = maps.sum(dim=(1, 2, 3))
    # captum's delta is exactly Σ maps − (f(x) − f(baseline)) ...
    torch.testing.assert_close(total - gap, delta, rtol=1e-3, atol=1e-5)
    # ... and it is small: completeness holds
    assert (delta.abs() <= 0.02 * gap.abs() + 1e-4).all(), (delta, gap)


def test_deeplift_completeness(cnn, images):
    maps, delta = attribution_map(cnn, images, "DeepLift", target=1, return_delta=True)
    with torch.no_grad():
        gap = cnn(images)[:, 1] - cnn(torch.zeros_like(images))[:, 1]
    torch.testing.assert_close(maps.sum(dim=(1, 2, 3)), gap, rtol=1e-3, atol=1e-4)
    assert delta.abs().max() < 1e-3


@pytest.mark.parametrize(
    ("method", "params", "expected"),
    [
        ("Saliency", {}, lambda x, w: w.abs().expand_as(x)),
        ("Saliency", {"abs": False}, lambda x, w: w.expand_as(x)),
        ("InputXGradient", {}, lambda x, w: x * w),
        ("IntegratedGradients", {}, lambda x, w: x * w),
        ("DeepLift", {}, lambda x, w: x * w),
        ("GradientShap", {"stdevs": 0.0}, lambda x, w: x * w),
        ("Occlusion", {"window": 1, "stride": 1}, lambda x, w: x * w),
        ("GuidedBackprop", {}, lambda x, w: w.expand_as(x)),  # no ReLU: plain gradient
        ("SmoothGrad", {}, lambda x, w: w.abs().expand_as(x)),  # gradient is constant
    ],
)
def test_linear_model_known_answers(images, method, params, expected):
    model = Linear().eval()
    w = model.conv.weight[1:2].detach()  # (1, 1, S, S), output 1
    maps = attribution_map(model, images, method, target=1, **params)
    torch.testing.assert_close(maps, expected(images, w), rtol=1e-4, atol=1e-5)


def test_gradcam_is_upsampled_and_non_negative(cnn, images):
    maps = attribution_map(cnn, images, "LayerGradCam", target=1)
    assert maps.shape == images.shape and (maps >= 0).all()
    signed = attribution_map(cnn, images, "LayerGradCam", target=1, relu=False, layer="features.6")
    assert signed.shape == images.shape


def test_glass_box_model_maps(images):
    model = DarkPixelCount(SIZE, (4, 10, 4, 12), threshold=0.5, temperature=0.1).eval()
    maps = attribution_map(model, images, "Saliency", abs=False)
    # dy/dx = −σ'(·)/τ inside the window, exactly 0 outside
    assert (maps[..., :4, :] == 0).all() and (maps[..., 4:10, 4:12] < 0).all()
    for method in available_methods(model):
        assert torch.isfinite(attribution_map(model, images, method)).all()
    assert "Sigmoid" in unavailable(model, "LRP")  # listed with its reason, not raised by the app


# ---------------------------------------------------------------- display normalisation


def test_display_normalise_signed_and_absolute():
    maps = torch.linspace(-3, 1, 2 * SIZE * SIZE).reshape(2, 1, SIZE, SIZE)
    signed = display_normalise(maps, signed=True, percentile=99)
    assert signed.min() == -1 and signed.max() <= 1
    assert torch.equal(torch.sign(signed), torch.sign(maps))
    absolute = display_normalise(maps, signed=False, percentile=100)
    assert absolute.min() >= 0 and absolute.max() == 1
    torch.testing.assert_close(absolute[0], maps[0].abs() / maps[0].abs().max())


def test_display_normalise_keeps_zero_maps_and_sparse_maps():
    zeros = torch.zeros(1, 1, SIZE, SIZE)
    assert torch.equal(display_normalise(zeros), zeros)
    sparse = zeros.clone()
    sparse[0, 0, 3, 3] = 5.0  # the 99th percentile is 0: scale by the max instead
    assert display_normalise(sparse)[0, 0, 3, 3] == 1.0


@pytest.mark.parametrize("percentile", [0, -5, 101])
def test_display_normalise_rejects_bad_percentile(percentile):
    with pytest.raises(EveInputError, match="percentile"):
        display_normalise(torch.ones(1, 1, 4, 4), percentile=percentile)


# ---------------------------------------------------------------- quality of the maps


def test_infidelity_is_zero_for_the_exact_gradient_of_a_linear_model(images):
    model = Linear().eval()
    exact = infidelity(model, images, "Saliency", target=1, abs=False)  # the gradient w: Iᵀw = y(x) − y(x − I)
    assert exact.abs().max() < 1e-5  # zero up to float32 rounding
    assert infidelity(model, images, "Saliency", target=1).min() > 0.01  # |w| loses the sign


def test_sensitivity_max_per_image(cnn, images):
    sens = sensitivity_max(cnn, images, "Saliency", target=1, n_perturb_samples=4)
    assert sens.shape == (len(images),) and torch.isfinite(sens).all() and (sens >= 0).all()
    # the saliency map of a linear model does not depend on x at all
    linear = Linear().eval()
    assert sensitivity_max(linear, images, "Saliency", target=1, n_perturb_samples=4).max() < 1e-6


def test_the_captum_metrics_table_is_plain_data(cnn, images):
    table = captum_metrics_table(
        cnn, images[:2], ["Saliency", "IntegratedGradients", "Occlusion"], target=1, n_perturb_samples=3
    )
    assert list(table["method"]) == ["Saliency", "IntegratedGradients", "Occlusion"]
    assert {"infidelity", "sensitivity_max", "n_images"} <= set(table.columns)
    assert table[["infidelity", "sensitivity_max"]].notna().all().all()


def test_randomisation_check_cascades_from_the_top(cnn, images):
    layers = randomisable_layers(cnn)
    assert layers[0].startswith("head") and layers[-1] == "features.0"
    state = {k: v.clone() for k, v in cnn.state_dict().items()}
    table = randomisation_check(cnn, images, ["Saliency", "LayerGradCam", "Occlusion"], target=1)
    assert all(torch.equal(v, state[k]) for k, v in cnn.state_dict().items())  # the model is untouched
    assert len(table) == 3 * (len(layers) + 1)
    assert (table.loc[table.step == 0, "spearman"] == 1).all()
    last = table[table.step == len(layers)]
    assert (last["spearman_abs"] < 0.9).all()  # fully random weights: the maps change
    independent = randomisation_check(cnn, images, ["Saliency"], target=1, mode="independent")
    assert list(independent["layer"])[1:] == layers


def test_randomisation_check_on_a_model_without_layers(images):
    model = DarkPixelCount(SIZE, None, 0.5, 0.1).eval()
    table = randomisation_check(model, images, ["Saliency"])
    assert list(table["step"]) == [0]


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("shape", "match"),
    [
        ((SIZE, SIZE), r"images\[None, None\]"),
        ((1, SIZE, SIZE), r"images\[None\]"),
        ((2, 3, SIZE, SIZE), r"\(B, 1, S, S\)"),
        ((1, 1, 1, SIZE, SIZE), r"\(B, 1, S, S\)"),
        ((0, 1, SIZE, SIZE), r"\(B, 1, S, S\)"),
    ],
)
def test_wrong_shaped_images(cnn, shape, match):
    with pytest.raises(EveInputError, match=match):
        attribution_map(cnn, torch.rand(*shape), "Saliency")


def test_images_of_the_wrong_size_name_the_size():
    model = nn.Sequential(nn.Flatten(), nn.Linear(SIZE * SIZE, 1)).eval()
    with pytest.raises(EveInputError, match=r"failed on images of shape \(2, 1, 8, 8\)"):
        attribution_map(model, torch.rand(2, 1, 8, 8), "Saliency")


def test_non_finite_or_integer_images(cnn, images):
    bad = images.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(EveInputError, match="NaN or Inf"):
        attribution_map(cnn, bad, "Saliency")
    with pytest.raises(EveInputError, match="float32"):
        attribution_map(cnn, (images * 255).to(torch.uint8), "Saliency")
    with pytest.raises(EveInputError, match="torch tensor"):
        attribution_map(cnn, images.tolist(), "Saliency")


def test_model_returning_nan(images):
    with pytest.raises(EveInputError, match="NaN or Inf for image"):
        attribution_map(NaNModel().eval(), images, "IntegratedGradients")


@pytest.mark.parametrize("target", [2, -1, 7, torch.tensor([0, 1, 2, 0])])
def test_target_out_of_range(cnn, images, target):
    with pytest.raises(EveInputError, match=r"out of range: the model has 2 output\(s\), indices 0\.\.1"):
        attribution_map(cnn, images, "Saliency", target=target)


@pytest.mark.parametrize("target", [0.5, torch.tensor([0, 1])])
def test_malformed_target(cnn, images, target):
    with pytest.raises(EveInputError, match="target"):
        attribution_map(cnn, images, "Saliency", target=target)


def test_unknown_method_and_parameter(cnn, images):
    with pytest.raises(EveInputError, match="Unknown attribution method 'LIME'.*Saliency"):
        attribution_map(cnn, images, "LIME")
    with pytest.raises(EveInputError, match="Occlusion has no parameter 'n_steps'"):
        attribution_map(cnn, images, "Occlusion", n_steps=3)
    with pytest.raises(EveInputError, match="no convergence delta"):
        attribution_map(cnn, images, "Saliency", return_delta=True)
    with pytest.raises(EveInputError, match="window"):
        attribution_map(cnn, images, "Occlusion", window=SIZE + 1)
    with pytest.raises(EveInputError, match="no layer 'nope'"):
        attribution_map(cnn, images, "LayerGradCam", layer="nope")


def test_model_in_training_mode(images):
    model = tiny_cnn().train()
    with pytest.raises(EveInputError, match=r"model.eval\(\)"):
        attribution_map(model, images, "Saliency")


def test_torchscript_models_refuse_hook_methods_with_a_clear_message(cnn, images):
    scripted = torch.jit.script(cnn)
    assert attribution_map(scripted, images, "IntegratedGradients").shape == images.shape
    for method in ("DeepLift", "GuidedBackprop", "LayerGradCam"):
        with pytest.raises(EveInputError, match="TorchScript"):
            attribution_map(scripted, images, method)
    with pytest.raises(EveInputError, match="TorchScript"):
        randomisation_check(scripted, images, ["Saliency"])
