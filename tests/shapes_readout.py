"""Test models for the shapes set whose scores are known: an image read-out, and its truth.

The ground truth: on `shapes` every feature is independent and uniform (truth.json), so the
true S(A) = Var(E[g | A]) / Var(g) is computed without the estimator under test, by a large
Monte Carlo: fresh features drawn from truth.json, images rendered by a batched replica of
the shapes generator (`render_batch`, checked against it in test_scoring.py), binned
conditional means with the small-group correction (`binned_truth`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from engine.cards import ModelCard
from engine.data import SliceSpec
from engine.data import shapes as shapes_generator

SPEC = SliceSpec("axial", None, 64)  # shapes are 2D images
READOUT_NAMES = ["area", "border", "centroid_x"]
TRUTH_MC = 16_000  # Monte Carlo images for the image model's true scores (standard error <= 0.005)
TOL = 0.03  # |estimate - truth| allowed at n = 3,000 (estimator + Monte Carlo error)
CI_SLACK = 0.015  # the truth must lie in the 95% CI widened by this (3x the truth's Monte Carlo error)


# 1. a model that reads the image, and the truth ------------------------------------------------


class ShapesReadout(nn.Module):
    """Exact functions of the image (B, 1, S, S) -> (B, 3):

    area        soft count of pixels brighter than halfway between the background and white
    border      mean of the 4-pixel border frame (the normalised background)
    centroid_x  column of the centroid of the pixels 0.1 above the background
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.shape[-1]
        frame = x.new_ones(s, s)
        frame[4 : s - 4, 4 : s - 4] = 0.0
        b = (x * frame).sum(dim=(2, 3)) / frame.sum()  # (B, 1)
        area = torch.sigmoid((x - (1.0 + b[:, :, None, None]) / 2.0) / 0.05).sum(dim=(2, 3))
        cols = torch.arange(s, dtype=x.dtype, device=x.device)
        w = torch.relu(x - b[:, :, None, None] - 0.1)
        cx = (w * cols).sum(dim=(2, 3)) / w.sum(dim=(2, 3)).clamp(min=1e-6)
        return torch.cat([area, b, cx], 1)


class NeedsSize64(nn.Module):
    """Only works on 64 x 64 inputs (a flattening linear layer)."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(64 * 64, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))


def save_script(module: nn.Module, path) -> str:
    torch.jit.save(torch.jit.script(module.eval()), str(path))
    return str(path)


def render_batch(features: dict[str, np.ndarray], generator: torch.Generator, noise_sd: float) -> torch.Tensor:
    """Batched replica of `shapes.render_array` + `normalise_intensity`: (B, 1, 64, 64)."""
    size, period = shapes_generator.IMAGE_SIZE, shapes_generator.STRIPE_PERIOD
    grid = torch.arange(size, dtype=torch.float32)
    rows, cols = torch.meshgrid(grid, grid, indexing="ij")
    f = {k: torch.as_tensor(np.array(v), dtype=torch.float32)[:, None, None] for k, v in features.items()}
    dy, dx = rows - f["pos_y"], cols - f["pos_x"]
    major = f["size"]
    radius = torch.sqrt((dx / major) ** 2 + (dy / (major * f["aspect"])) ** 2)
    inside = torch.sigmoid((1.0 - radius) * major * 2.0)
    stripes = 1.0 + f["texture"] * torch.sin(2 * np.pi * (dx + dy) / period)
    image = f["background"] + inside * (f["intensity"] * stripes - f["background"])
    image = image + noise_sd * torch.randn(image.shape, generator=generator)
    flat = image.clamp(min=0.0).reshape(len(image), -1)  # (B, S*S)
    # 99th percentile of the non-zero pixels (np.percentile, linear): among the top 42 values
    back = 0.01 * ((flat > 0).sum(1) - 1).double()  # its position counted from the largest
    j = back.floor().long()
    frac = (back - j).float()
    top = flat.topk(42, dim=1).values
    q = top.gather(1, j[:, None])[:, 0] * (1 - frac) + top.gather(1, (j + 1).clamp(max=41)[:, None])[:, 0] * frac
    return (flat / q[:, None]).clamp(0.0, 1.0).reshape(-1, 1, size, size)


def binned_truth(y: np.ndarray, a: np.ndarray, low: float, high: float, bins: int = 30) -> float:
    """Var(E[y|a]) / Var(y) from a large sample of a ~ U(low, high): equal-width bins, minus
    the noise sum_k w_k (1 - w_k) s2_k / n_k of the bin means."""
    k = np.minimum(((a - low) / (high - low) * bins).astype(int), bins - 1)
    n = np.bincount(k, minlength=bins)
    means = np.bincount(k, y, bins) / n
    s2 = np.bincount(k, (y - means[k]) ** 2, bins) / (n - 1)
    w = n / n.sum()
    explained = (w * (means - (w * means).sum()) ** 2).sum() - (w * (1 - w) * s2 / n).sum()
    return float(explained / y.var())


GLASS_BOX = ("shapes-glass-area", "shapes-glass-background")  # zoo read-outs, scored if built


def built_glass_boxes() -> dict[str, tuple[nn.Module, ModelCard]]:
    from engine.models import zoo

    built = {c.name for c in zoo.list_cards()}
    return {name: zoo.load_model(name) for name in GLASS_BOX if name in built}


def card_for(names, spec: SliceSpec = SPEC) -> ModelCard:
    """The card of a test model that takes `spec` and returns outputs named `names`."""
    return ModelCard(name="test model", kind="test", spec=spec, output_names=tuple(names))
