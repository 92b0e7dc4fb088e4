"""The networks of the latent diffusion model: the denoiser eps_theta and the latent read-out.

Code name -> symbol (Ho et al. 2020, DDPM):
    z_t (B, D)       noisy latent
    t                diffusion step, 0..999
    c (B, C)         standardised condition slots (one per numeric feature, one-hot slots per
                     categorical feature; `conditions.py`); slots of dropped features are 0
    m (B, F)         per-feature mask: 1 = conditioned on, 0 = left free
    slot_mask (B, C) m spread over each feature's slots
    eps_theta(z_t, t, c, m)   `Denoiser`: the noise prediction (B, D)
    r(z_0) (B, Fn)   `LatentReadout`: the standardised numeric features read from a clean latent
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from torch import nn


@dataclass
class DenoiserConfig:
    latent_dim: int = 33  # D = PCA components + 1 (noise level)
    cond_dim: int = 9  # C, condition slots
    n_features: int = 9  # F, maskable features
    numeric_slots: tuple[int, ...] = ()  # slots holding a numeric (Fourier-embedded) feature
    width: int = 384  # hidden width of the residual MLP
    depth: int = 4  # residual blocks
    n_fourier: int = 6  # Fourier frequencies per numeric feature (1/2 .. 2^(n-2))
    emb_dim: int = 256  # time + condition embedding width
    cond_input: bool = False  # also feed the condition embedding to the input layer, beside z_t

    @classmethod
    def from_json(cls, data: dict) -> DenoiserConfig:
        """The card's "denoiser" entry (lists for tuples)."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})

    def to_json(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


class _Block(nn.Module):
    """h + MLP(adaLN(h, emb)): LayerNorm modulated by the time + condition embedding."""

    def __init__(self, width: int, emb_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False)
        self.modulation = nn.Linear(emb_dim, 3 * width)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.SiLU(), nn.Linear(2 * width, width))
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        scale, shift, gate = self.modulation(emb).chunk(3, dim=1)
        return h + (1 + gate) * self.mlp(self.norm(h) * (1 + scale) + shift)


class Denoiser(nn.Module):
    """eps_theta(z_t, t, c, m): a residual MLP with adaLN conditioning (latent diffusion)."""

    def __init__(self, config: DenoiserConfig):
        super().__init__()
        self.config = config
        numeric = list(config.numeric_slots)
        self.register_buffer("numeric_slots", torch.tensor(numeric, dtype=torch.long), persistent=False)
        freqs = 2.0 ** torch.arange(config.n_fourier, dtype=torch.float32) / 2.0
        self.register_buffer("freqs", freqs, persistent=False)
        cond_in = config.cond_dim + config.n_features + 2 * len(numeric) * config.n_fourier
        self.time_proj = Timesteps(128, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embed = TimestepEmbedding(128, config.emb_dim)
        self.cond_embed = nn.Sequential(
            nn.Linear(cond_in, config.emb_dim), nn.SiLU(), nn.Linear(config.emb_dim, config.emb_dim)
        )
        self.inp = nn.Linear(config.latent_dim + (config.emb_dim if config.cond_input else 0), config.width)
        self.blocks = nn.ModuleList(_Block(config.width, config.emb_dim) for _ in range(config.depth))
        self.out_norm = nn.LayerNorm(config.width)
        self.out = nn.Linear(config.width, config.latent_dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def embed_condition(self, c: torch.Tensor, m: torch.Tensor, slot_mask: torch.Tensor) -> torch.Tensor:
        """(B, C) values, (B, F) mask, (B, C) mask per slot -> (B, emb_dim)."""
        c = c * slot_mask
        parts = [c, m]
        if self.numeric_slots.numel():
            v = c[:, self.numeric_slots]  # (B, Fn)
            angle = v[:, :, None] * self.freqs * math.pi  # (B, Fn, n_fourier)
            keep = slot_mask[:, self.numeric_slots, None]
            parts += [(angle.sin() * keep).flatten(1), (angle.cos() * keep).flatten(1)]
        return self.cond_embed(torch.cat(parts, 1))

    def forward(self, z_t, t, c, m, slot_mask) -> torch.Tensor:
        t = torch.as_tensor(t, device=z_t.device).expand(len(z_t))
        cond = self.embed_condition(c, m, slot_mask)
        emb = nn.functional.silu(self.time_embed(self.time_proj(t).to(z_t.dtype)) + cond)
        h = self.inp(torch.cat([z_t, cond], 1) if self.config.cond_input else z_t)
        for block in self.blocks:
            h = block(h, emb)
        return self.out(self.out_norm(h))  # (B, D)


class LatentReadout(nn.Module):
    """The standardised numeric features (B, Fn) read from clean latents (B, D): the least-squares
    linear map (`hidden` = ()) or an MLP (SiLU) fit by `train.fit_readout`. Read-out guidance
    (`pipeline.ConditionalDiffusion`) steers by its Jacobian; an MLP reads a curved feature (the
    shapes' aspect from the autoencoder's code) that a linear map cannot."""

    def __init__(self, latent_dim: int, n_features: int, hidden: tuple[int, ...] = ()):
        super().__init__()
        self.hidden = tuple(hidden)
        widths = (latent_dim, *self.hidden)
        layers = [m for a, b in zip(widths, widths[1:], strict=False) for m in (nn.Linear(a, b), nn.SiLU())]
        self.net = nn.Sequential(*layers, nn.Linear(widths[-1], n_features))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)
