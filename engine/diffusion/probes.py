"""Feature probes: small regressors that read each numeric feature back from an image.

They check the diffusion model's constraint ("is this sample's ventricle volume the one
asked for?"). Trained by `train-diffusion` on the same training images, to all standardised
numeric features at once, independent of the generator's latent space, and evaluated on
the dataset's held-out test split (R², MAE / SD in the card). A probe's own error bounds
how small a constraint error it can show. Two kinds:
    "pca-mlp"  `FeatureProbe`: its own PCA of the images plus an MLP (SynthBrain: smooth
               anatomy at a fixed place, which a PCA holds)
    "cnn"      `ConvProbe`: a small CNN plus a noise-level input (shapes: an object that
               moves, with a fine stripe texture, which a PCA reads poorly), optionally fed
               the stripes' local amplitude
Their held-out errors are in each card's `probe_report` and in assets/README.md.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from engine.data.shapes_stripes import demodulate, grid_carriers
from engine.diffusion.codec import pca
from engine.diffusion.optim import WarmupCosineAdamW


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
            nn.Linear(n_components + 1, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, n_features),
        )

    def inputs(self, images: torch.Tensor) -> torch.Tensor:
        x = images.reshape(len(images), -1).float() - self.mean
        coef = x @ self.components.T
        resid = x - coef @ self.components
        log_rms = resid.pow(2).mean(1).clamp_min(1e-12).sqrt().log()  # the noise level
        return torch.cat([coef / self.scales, (log_rms[:, None] + 4.0)], 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(self.inputs(images))


class ConvProbe(nn.Module):
    """Image (B, 1, S, S) -> standardised numeric features (B, F): PixelUnshuffle(2) (so the
    convolutions run at <= S/2, fast on a CPU), a 3x3 conv, strided 4x4 convs, an MLP head.

    The head also gets the log median |image - its 3x3 box blur| (a noise level robust to
    edges and texture): per-image intensity normalisation turns a fixed pixel noise into a
    brightness cue, which convolutions followed by pooling estimate poorly."""

    def __init__(
        self,
        size: int,
        n_features: int,
        channels: tuple[int, ...] = (32, 64, 96, 128),
        hidden: int = 256,
        stripe_period: float | None = None,
    ):
        super().__init__()
        self.size, self.channels, self.stripe_period = size, tuple(channels), stripe_period
        if stripe_period:
            self.register_buffer("carriers", grid_carriers(size, stripe_period), persistent=False)
        inputs = 2 if stripe_period else 1
        layers = [nn.PixelUnshuffle(2), nn.Conv2d(4 * inputs, channels[0], 3, 1, 1), nn.SiLU()]
        for a, b in zip(channels, channels[1:], strict=False):
            layers += [nn.Conv2d(a, b, 4, 2, 1), nn.SiLU()]
        self.features = nn.Sequential(*layers, nn.Flatten())
        side = size // 2 // 2 ** (len(channels) - 1)
        self.head = nn.Sequential(
            nn.Linear(channels[-1] * side * side + 1, hidden), nn.SiLU(), nn.Linear(hidden, n_features)
        )

    @staticmethod
    def noise_level(images: torch.Tensor) -> torch.Tensor:
        high_pass = images - nn.functional.avg_pool2d(images, 3, 1, 1, count_include_pad=False)
        return high_pass.abs().flatten(1).median(1).values.clamp_min(1e-6).log()[:, None] + 4.0

    def stripe_energy(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 1, S, S) local amplitude of the known stripe wave, whatever its phase."""
        return demodulate(images, self.carriers).pow(2).sum(1, keepdim=True).add(1e-8).sqrt()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        images = images.float()
        planes = torch.cat([images, self.stripe_energy(images)], 1) if self.stripe_period else images
        return self.head(torch.cat([self.features(planes), self.noise_level(images)], 1))


def fit_conv_probe(
    images: torch.Tensor,
    targets: np.ndarray,
    *,
    steps: int = 6000,
    batch_size: int = 64,
    lr: float = 2e-3,
    seed: int = 0,
    stripe_period: float | None = None,
    log=None,
) -> ConvProbe:
    """Fit on (N, 1, S, S) images and (N, F) standardised targets: AdamW, warm-up and cosine decay;
    random flips are not used (they would change the features' meaning: position, stripe angle).
    `stripe_period`: also feed the local amplitude of that stripe wave (it reads the shapes'
    texture about twice as well as the image alone)."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    probe = ConvProbe(images.shape[-1], targets.shape[1], stripe_period=stripe_period)
    y = torch.as_tensor(targets, dtype=torch.float32)
    optimiser = WarmupCosineAdamW(probe.parameters(), steps=steps, lr=lr, weight_decay=1e-4, warmup=max(1, steps // 50))
    running = None
    for step in range(steps):
        batch = torch.randint(len(images), (batch_size,), generator=g)
        loss = (probe(images[batch]) - y[batch]).pow(2).mean()
        optimiser.step(loss)
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if log and (step + 1) % max(1, steps // 10) == 0:
            log(f"probe step {step + 1}/{steps}: MSE {running:.4f}")
    return probe.eval()


def fit_probe(
    images: torch.Tensor,
    targets: np.ndarray,
    *,
    n_components: int = 64,
    epochs: int = 300,
    seed: int = 0,
    weight_decay: float = 1e-4,
) -> FeatureProbe:
    """Fit on (N, 1, S, S) images and (N, F) standardised targets (full-batch-ish AdamW).

    Not `optim.WarmupCosineAdamW`: this loop runs by epochs of shuffled batches, with a plain
    cosine schedule stepped once per epoch; the committed SynthBrain probe was trained so."""
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


def build_probe(info: dict | None, size: int, n_features: int, tensors: dict) -> nn.Module:
    """The probe a diffusion card describes (its "probe" entry {"kind", ...}; cards without it hold
    a pca-mlp whose `n_components` is stored with its weights) for (B, 1, size, size) images and
    `n_features` outputs, loaded with `tensors`."""
    info = info or {"kind": "pca-mlp"}
    state = dict(tensors)
    if info["kind"] == "cnn":
        probe = ConvProbe(size, n_features, tuple(info["channels"]), stripe_period=info.get("stripe_period"))
    else:
        n_components = int(state.pop("n_components")) if "n_components" in state else info["n_components"]
        probe = FeatureProbe(size, n_features, n_components)
    probe.load_state_dict(state)
    return probe.eval()


def probe_report(
    probe: FeatureProbe,
    images: torch.Tensor,
    values: np.ndarray,
    names: list[str],
    mean: np.ndarray,
    sd: np.ndarray,
    data_sd: np.ndarray,
) -> dict:
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
