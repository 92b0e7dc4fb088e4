"""The newer attribution families against known answers: LRP, the region methods (feature ablation,
Shapley value sampling, LIME, KernelSHAP) on grids, anatomy and a real atlas, and methods that do not
apply to a model listed with their reason."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from engine.data.slicing import SliceSpec
from engine.errors import EveInputError
from engine.models.architectures import SmallCNN
from engine.pixelmaps import regions
from engine.pixelmaps.methods import METHODS, attribution_map, available_methods, region_labels, unavailable

SIZE = 16
MASK = torch.zeros(SIZE, SIZE, dtype=torch.bool)
MASK[4:10, 3:9] = True


class BiasFreeLinear(nn.Module):
    """y = Σ w·x, no bias: IG, DeepLift, Input×Gradient and LRP must all give w·x exactly."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.linear = nn.Linear(SIZE * SIZE, 1, bias=False)
        with torch.no_grad():
            self.linear.weight.copy_(weight.reshape(1, -1))
        self.flatten = nn.Flatten()

    def forward(self, x):
        return self.linear(self.flatten(x))


def _images(n: int = 3) -> torch.Tensor:
    return torch.rand(n, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(3))


def _weights(mask=None) -> torch.Tensor:
    w = torch.randn(SIZE, SIZE, generator=torch.Generator().manual_seed(5))
    return w if mask is None else w * mask


@pytest.mark.parametrize("method", ["IntegratedGradients", "DeepLift", "InputXGradient", "LRP"])
def test_a_linear_models_maps_are_weight_times_input(method):
    w = _weights()
    x = _images()
    maps = attribution_map(BiasFreeLinear(w).eval(), x, method)
    torch.testing.assert_close(maps, w * x, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("rule", ["epsilon", "gamma"])
def test_lrp_relevance_adds_up_to_a_bias_free_relu_nets_output(rule):
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.ReLU(), nn.Flatten(), nn.Linear(4 * SIZE * SIZE, 1, bias=False)
    ).eval()
    x = _images()
    maps, delta = attribution_map(net, x, "LRP", rule=rule, return_delta=True)
    if rule == "epsilon":  # LRP-0 on a bias-free ReLU net conserves relevance exactly
        torch.testing.assert_close(maps.sum((1, 2, 3)), net(x)[:, 0].detach(), rtol=1e-4, atol=1e-5)
    assert torch.isfinite(maps).all() and delta.shape == (3,)


@pytest.mark.parametrize("method", ["FeatureAblation", "ShapleyValueSampling", "KernelShap", "Lime"])
def test_a_model_that_reads_one_region_gets_its_relevance_there(method):
    model = BiasFreeLinear(_weights(MASK).abs()).eval()  # reads only MASK, with positive weights
    labels = MASK.long()  # two regions: the read one (1) and the rest (0)
    x = _images(2)
    maps = attribution_map(model, x, method, regions=labels, n_samples=300) if METHODS[method].slow else None
    if maps is None:
        maps = attribution_map(model, x, method, regions=labels)
    inside, outside = maps[:, 0][:, MASK], maps[:, 0][:, ~MASK]
    assert torch.allclose(inside, inside[:, :1].expand_as(inside))  # one value per region
    # LIME's ridge penalty (alpha 1) leaks a little onto the unread region (0.13% here); the others are exact
    leak = 1e-2 if method == "Lime" else 1e-6
    assert (inside > 0).all() and outside.abs().max() <= leak * inside.abs().min()
    if method in ("FeatureAblation", "ShapleyValueSampling", "KernelShap"):  # additive model: exact
        torch.testing.assert_close(inside[:, 0], model(x)[:, 0].detach(), rtol=1e-3, atol=1e-4)


def test_shapley_values_add_up_to_the_output_minus_the_baselines_on_a_nonlinear_model():
    torch.manual_seed(0)
    net = SmallCNN(size=SIZE, outputs=2, widths=(2, 4), pooled=2, hidden=8, dropout=0.0).eval()
    x = _images(2)
    labels = region_labels("grid", (SIZE, SIZE))
    maps = attribution_map(net, x, "ShapleyValueSampling", target=1, regions=labels, n_samples=5)
    table = [
        regions.region_shares(
            m[0].numpy(), regions.Regions(labels.numpy(), tuple(map(str, range(64))), "grid"), regional=True
        )
        for m in maps
    ]
    with torch.no_grad():
        difference = net(x)[:, 1] - net(torch.zeros_like(x))[:, 1]
    np.testing.assert_allclose([t["attribution"].sum() for t in table], difference.numpy(), rtol=1e-4, atol=1e-5)


def test_grid_regions_are_square_cells_numbered_from_zero():
    labels = region_labels("grid", (SIZE, SIZE))
    assert labels.unique().tolist() == list(range(64)) and (labels[:2, :2] == 0).all() and labels[0, 2] == 1
    assert region_labels(4, (8, 8, 8)).unique().numel() == 8
    with pytest.raises(EveInputError, match="one label per pixel"):
        attribution_map(BiasFreeLinear(_weights()).eval(), _images(1), "FeatureAblation", regions=torch.zeros(3, 3))


def test_methods_that_do_not_apply_are_listed_with_their_reason_and_refused_with_it():
    scripted = torch.jit.script(BiasFreeLinear(_weights()).eval())
    assert "TorchScript" in unavailable(scripted, "LRP") and "LRP" not in available_methods(scripted)
    volume_net = SmallCNN(size=8, dims=3, widths=(2,), pooled=2, hidden=0, dropout=0.0).eval()
    assert "Conv3d" in unavailable(volume_net, "LRP")
    assert "no convolution" in unavailable(BiasFreeLinear(_weights()).eval(), "LayerGradCam")
    with pytest.raises(EveInputError, match=r"LRP cannot explain this model \(captum's LRP has no rule .*Conv3d"):
        attribution_map(volume_net, torch.rand(1, 1, 8, 8, 8), "LRP")
    assert available_methods(volume_net, slow=False) == [
        m for m, info in METHODS.items() if m != "LRP" and not info.slow and not info.attention
    ]


SYNTHBRAIN_SLICE = SliceSpec(plane="coronal", index="hippocampus", size=64)


def test_anatomy_regions_cut_the_models_slice_and_name_the_structures():
    anatomy = regions.anatomy_regions(SYNTHBRAIN_SLICE)
    assert anatomy.labels.shape == (64, 64) and {"ventricles", "hippocampi", "grey matter"} <= set(anatomy.names)
    sizes = dict(zip(anatomy.names, np.bincount(anatomy.labels.ravel()), strict=True))
    assert sizes["outside the brain"] > sizes["grey matter"] > sizes["hippocampi"] > 0
    atlas = regions.atlas_regions(SYNTHBRAIN_SLICE, "aal")
    assert "Hippocampus_L" in atlas.names and "Hippocampus_R" in atlas.names
    with pytest.raises(EveInputError, match="named MNI slice.*use regions 'grid'"):
        regions.anatomy_regions(SliceSpec(plane="axial", index=None, size=64))


def test_a_region_map_says_how_much_of_the_output_each_structure_carries():
    anatomy = regions.anatomy_regions(SYNTHBRAIN_SLICE)
    reads = torch.from_numpy(anatomy.labels == anatomy.names.index("ventricles"))
    model = BiasFreeLinear.__new__(BiasFreeLinear)
    nn.Module.__init__(model)
    model.flatten = nn.Flatten()
    model.linear = nn.Linear(64 * 64, 1, bias=False)
    with torch.no_grad():
        model.linear.weight.copy_(reads.float().reshape(1, -1))
    x = torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    amap = attribution_map(model.eval(), x, "FeatureAblation", regions=anatomy.labels)
    shares = regions.region_shares(amap[0, 0].numpy(), anatomy, regional=True)
    assert shares.iloc[0]["region"] == "ventricles" and shares.iloc[0]["share"] == pytest.approx(1.0)
    pixel = regions.region_shares(attribution_map(model.eval(), x, "InputXGradient")[0, 0].numpy(), anatomy)
    assert pixel.iloc[0]["region"] == "ventricles" and pixel.iloc[0]["share"] == pytest.approx(1.0)
