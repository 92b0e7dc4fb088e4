"""Conditional diffusion: images from p(x | A = a) and feature probes (the generator path's score,
which draws from these, lives in `engine.scores.generator`).

    load_diffusion(name_or_dataset) -> ConditionalDiffusion
        .features, .feature(name), .feature_range(name), .card (a `DiffusionCard`),
        .sample(condition, n, seed, config: SamplerConfig, shared_noise=..., first_index=...)
    SamplerConfig(steps, guidance, free_features, readout_guidance, sampler)
        .for_scores(model), .for_explorer(guidance), .description
    measure_features(images, diffusion) -> {feature: values}     (feature probes)

The package, top to bottom: `networks` (denoiser, read-out), `conditions` (the feature schema,
condition encoding, free features from the training table), `sampler` (schedules, seeds,
`SamplerConfig`), `pipeline` (`ConditionalDiffusion`), the latent spaces `codec` (PCA) and
`autoencoder` (shapes), `probes`, `storage` (save / load), and the trainers `optim`
and `train`. Design, numbers and the rebuild command: `assets/README.md` ("Diffusion") and the
card `assets/diffusion/<dataset>.json`.
"""

from __future__ import annotations

import numpy as np
import torch

from engine.diffusion.conditions import FeatureClampWarning
from engine.diffusion.pipeline import ConditionalDiffusion
from engine.diffusion.sampler import READOUT_GUIDANCE, SamplerConfig, sample_seed
from engine.diffusion.storage import load_diffusion


def measure_features(
    images: torch.Tensor, diffusion: ConditionalDiffusion | str = "synthbrain"
) -> dict[str, np.ndarray]:
    """Feature values read from (B, 1, S, S) images by the probes trained with `diffusion`."""
    if isinstance(diffusion, str):
        diffusion = load_diffusion(diffusion)
    return diffusion.measure_features(images)


__all__ = [
    "READOUT_GUIDANCE",
    "ConditionalDiffusion",
    "FeatureClampWarning",
    "SamplerConfig",
    "load_diffusion",
    "measure_features",
    "sample_seed",
]
