"""A linear latent space for the diffusion model: PCA of the slices plus a noise level.

Code name -> meaning:
    mean (P,)             mean image, P = S * S pixels
    components (d, P)     the first d principal directions (orthonormal rows)
    scales (d,)           sd of each PCA coefficient in the training images
    whiten (float)        p: coefficients are divided by scales^p, rescaled to unit mean variance;
                          1 whitens every component, 0 keeps the PCA spectrum (one global scale)
    z (B, d + 1)          latent: the scaled coefficients c / divisors, and the standardised
                          log RMS of the residual r = x - decode_mean(c) (the noise level)
    noise_filter (S, S)   amplitude spectrum of the residuals (their spatial correlation)
    noise_map (S, S)      relative RMS of the residuals per pixel (background vs tissue)

Decoding adds back a noise field with the residuals' spectrum, pixel map and the
sample's own level, then clips to [0, 1], so samples look like data to a classifier
(measured: `fidelity` in the training card).
"""

from __future__ import annotations

import numpy as np
import torch


def pca(images: torch.Tensor, d: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PCA by SVD of (N, 1, S, S) images, centred, in float64: mean (P,), components (d, P), scales (d,)."""
    n = len(images)
    x = images.reshape(n, -1).double()
    mean = x.mean(0)
    _, sv, vt = torch.linalg.svd(x - mean, full_matrices=False)
    return mean, vt[:d], sv[:d] / np.sqrt(n - 1)


class PCACodec(torch.nn.Module):
    """Image (B, 1, S, S) <-> latent (B, d + 1). Fit with `PCACodec.fit`."""

    def __init__(self, size: int, d: int, whiten: float = 1.0):
        super().__init__()
        p = size * size
        self.size, self.d, self.whiten = size, d, whiten
        self.register_buffer("mean", torch.zeros(p))
        self.register_buffer("components", torch.zeros(d, p))
        self.register_buffer("scales", torch.ones(d))
        self.register_buffer("log_rms_stats", torch.tensor([0.0, 1.0]))  # mean, sd of log RMS residual
        self.register_buffer("noise_filter", torch.ones(size, size))
        self.register_buffer("noise_map", torch.ones(size, size))

    @property
    def latent_dim(self) -> int:
        return self.d + 1

    @property
    def divisors(self) -> torch.Tensor:
        """What each coefficient is divided by in the latent: scales^p, the mean latent variance 1."""
        return self.scales**self.whiten * self.scales.pow(2 - 2 * self.whiten).mean().sqrt()

    @classmethod
    def fit(cls, images: torch.Tensor, d: int, whiten: float = 1.0) -> PCACodec:
        """PCA by SVD of the (N, P) centred images (float64), then the residual statistics."""
        n, _, s, _ = images.shape
        codec = cls(s, d, whiten)
        mean, components, scales = pca(images, d)
        codec.mean.copy_(mean.float())
        codec.components.copy_(components.float())
        codec.scales.copy_(scales.float())
        x = images.reshape(n, -1).double()
        coef = (x - mean) @ components.T
        resid = (x - mean - coef @ components).float().reshape(n, s, s)
        rms = resid.pow(2).mean((1, 2)).sqrt().clamp_min(1e-6)
        log_rms = rms.log()
        codec.log_rms_stats.copy_(torch.stack([log_rms.mean(), log_rms.std().clamp_min(1e-3)]))
        unit = resid / rms[:, None, None]
        power = torch.fft.fft2(unit).abs().pow(2).mean(0)
        codec.noise_filter.copy_(power.sqrt() / power.mean().sqrt())  # unit-power filter
        noise_map = unit.pow(2).mean(0).sqrt()
        codec.noise_map.copy_(noise_map / noise_map.pow(2).mean().sqrt())
        return codec

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 1, S, S) -> (B, d + 1)."""
        x = images.reshape(len(images), -1).float() - self.mean
        coef = x @ self.components.T
        resid = x - coef @ self.components
        log_rms = resid.pow(2).mean(1).sqrt().clamp_min(1e-6).log()
        level = (log_rms - self.log_rms_stats[0]) / self.log_rms_stats[1]
        return torch.cat([coef / self.divisors, level[:, None]], 1)

    def decode_mean(self, z: torch.Tensor) -> torch.Tensor:
        """The noise-free image (B, 1, S, S) of a latent, not clipped."""
        x = self.mean + (z[:, : self.d] * self.divisors) @ self.components
        return x.reshape(len(z), 1, self.size, self.size)

    def decode(self, z: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Image (B, 1, S, S) in [0, 1]; `noise` (B, S, S) standard normal adds the residual noise."""
        x = self.decode_mean(z)
        if noise is not None:
            rms = (z[:, self.d] * self.log_rms_stats[1] + self.log_rms_stats[0]).exp()  # (B,)
            colored = torch.fft.ifft2(torch.fft.fft2(noise) * self.noise_filter).real * self.noise_map
            x = x + rms[:, None, None, None] * colored[:, None]
        return x.clamp(0.0, 1.0)
