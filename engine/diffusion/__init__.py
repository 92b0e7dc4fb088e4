"""Conditional diffusion: images from p(x | A = a), feature probes and the diffusion-based score.

    load_diffusion(name_or_dataset) -> ConditionalDiffusion
        .features, .feature_range(name), .sample(condition, n, seed, steps, guidance, shared_noise,
                                                 readout_guidance, free_features)
    measure_features(images, diffusion) -> {feature: values}     (feature probes)
    diffusion_score(model, card, diffusion, feature, ...) -> (ScoreResult, per-value table)

Design, numbers and the rebuild command: `assets/README.md` ("Diffusion") and the card
`assets/diffusion/<dataset>.json`.
"""

from __future__ import annotations

import numpy as np
import torch

from engine.diffusion.model import ConditionalDiffusion, FeatureClampWarning, load_diffusion
from engine.diffusion.score import diffusion_score


def measure_features(
    images: torch.Tensor, diffusion: ConditionalDiffusion | str = "synthbrain"
) -> dict[str, np.ndarray]:
    """Feature values read from (B, 1, S, S) images by the probes trained with `diffusion`."""
    if isinstance(diffusion, str):
        diffusion = load_diffusion(diffusion)
    return diffusion.measure_features(images)


__all__ = ["ConditionalDiffusion", "FeatureClampWarning", "diffusion_score", "load_diffusion", "measure_features"]
