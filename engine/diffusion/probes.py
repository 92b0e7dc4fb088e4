"""Feature probes: small regressors that read each numeric feature back from an image.

They check the diffusion model's constraint ("is this sample's ventricle volume the one
asked for?"). A probe is its own PCA of the images (independent of the generator's) plus an
MLP to all standardised numeric features at once, trained by `train-diffusion` on the same
training images and evaluated on the dataset's held-out test split (R², MAE / SD in the
card). A probe's own error bounds how small a constraint error it can show.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from engine.diffusion.codec import pca


class FeatureProbe(nn.Module):
    """Image (B, 1, S, S) -> standardised numeric features (B, F)."""

    def __init__(self, size: int, n_features: int, n_components: int = 64, hidden: int = 256):
        super().__init__()
        p = size * size
        self.size = size
        self.register_buffer("mean", torch.zeros(p))
        self.register_buffer("components", torch.zeros(n_components, p))
        self.register_buffer("scales", torch.ones(n_components))
        self.net = nn.Sequential(
            nn.Linear(n_components + 1, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
            nn.Linear(hidden, n_features),
        )  # fmt: skip

    def inputs(self, images: torch.Tensor) -> torch.Tensor:
        x = images.reshape(len(images), -1).float() - self.mean
        coef = x @ self.components.T
        resid = x - coef @ self.components
        log_rms = resid.pow(2).mean(1).clamp_min(1e-12).sqrt().log()  # the noise level
        return torch.cat([coef / self.scales, (log_rms[:, None] + 4.0)], 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(self.inputs(images))


def fit_probe(images: torch.Tensor, targets: np.ndarray, *, n_components: int = 64, epochs: int = 300,
              seed: int = 0, weight_decay: float = 1e-4) -> FeatureProbe:  # fmt: skip
    """Fit on (N, 1, S, S) images and (N, F) standardised targets (full-batch-ish AdamW)."""
    torch.manual_seed(seed)
    n, _, s, _ = images.shape
    probe = FeatureProbe(s, targets.shape[1], n_components)
    mean, components, scales = pca(images, n_components)
    probe.mean.copy_(mean.float())
    probe.components.copy_(components.float())
    probe.scales.copy_(scales.float())
    with torch.no_grad():
        inputs = probe.inputs(images)
    y = torch.as_tensor(targets, dtype=torch.float32)
    opt = torch.optim.AdamW(probe.net.parameters(), lr=2e-3, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(n, generator=g)
        for batch in order.split(256):
            loss = (probe.net(inputs[batch]) - y[batch]).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    return probe.eval()


def probe_report(probe: FeatureProbe, images: torch.Tensor, values: np.ndarray, names: list[str],
                 mean: np.ndarray, sd: np.ndarray, data_sd: np.ndarray) -> dict:  # fmt: skip
    """Held-out R², MAE and MAE / SD per feature; `mean`, `sd` undo the targets' standardisation,
    `data_sd` (the feature's SD in the dataset) is the unit of MAE / SD."""
    with torch.inference_mode():
        pred = probe(images).numpy() * sd + mean
    report = {}
    for j, name in enumerate(names):
        err = pred[:, j] - values[:, j]
        report[name] = {
            "r2": float(1 - np.mean(err**2) / np.var(values[:, j])),
            "mae": float(np.mean(np.abs(err))),
            "mae_over_sd": float(np.mean(np.abs(err)) / data_sd[j]),
        }
    return report
