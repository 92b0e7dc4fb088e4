"""The `shapes` stripe wave as tensors: what the shapes autoencoder and the CNN probe are told.

Inside each object the stripes are sin(2 pi (dx + dy) / STRIPE_PERIOD) (`shapes.render_array`),
so they are known up to their amplitude and phase. Code name -> meaning:
    carriers (2, S, S)   sin, cos of 2 pi (row + col) / period on the pixel grid (`grid_carriers`)
    period_box(x)        a box filter one stripe period (4 px) wide, which nulls the stripes
    demodulate(x, c)     2 period_box(x * c): the stripes' local amplitude against carriers c
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from engine.data.shapes import STRIPE_PERIOD

__all__ = ["STRIPE_PERIOD", "demodulate", "grid_carriers", "period_box"]


def grid_carriers(size: int, period: float) -> torch.Tensor:
    """(2, S, S) sin, cos of 2 pi (row + col) / period: the shapes' stripe wave on the pixel grid."""
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    phase = 2 * math.pi * (rows + cols).float() / period
    return torch.stack([phase.sin(), phase.cos()])


def period_box(images: torch.Tensor) -> torch.Tensor:
    """A box filter one stripe period (4 px) wide, which nulls the stripes. It spans i - 1 .. i + 2,
    so its output is shifted by half a pixel."""
    return F.avg_pool2d(F.pad(images, (1, 2, 1, 2), mode="replicate"), 4, 1)


def demodulate(images: torch.Tensor, carriers: torch.Tensor) -> torch.Tensor:
    """(B, 2, S, S) local amplitudes of `images` (B, 1, S, S) against the sin, cos `carriers`:
    multiplied, then `period_box`, which nulls the carrier on a smooth base."""
    return 2 * period_box(images * carriers)
