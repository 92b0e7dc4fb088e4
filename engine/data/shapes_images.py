"""Fresh `shapes` images as model inputs, with their noise-free versions.

The shapes generator can render any number of new images, and each one also without its
pixel noise: the diffusion model's autoencoder trains on such extras against the noise-free
renders, and its validation takes fresh ones as an ample reference.
"""

from __future__ import annotations

import numpy as np
import torch

from engine.data.shapes import render_array, sample_features
from engine.data.slicing import intensity_scale, normalise_intensity


class NoNoise:
    """A stand-in for `numpy.random.Generator` whose normal draws are all 0: `render_array`
    with it renders an image without its pixel noise."""

    def normal(self, loc, scale, shape):
        return np.zeros(shape)


def rendered_shapes(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` fresh shapes images (N, 1, 64, 64) normalised as `Dataset.model_inputs` does (seed 0,
    n 3000 reproduces the dataset to 2e-7), and their noise-free versions on the same scale, not
    clipped at 1: the data's clip comes after the noise, as in the autoencoder's `decode` (the
    size-texture classifier reads texture partly from the flattened stripe peaks, which only
    clip(base + a * sin) makes; see assets/README.md, "shapes")."""
    rng = np.random.default_rng(seed + 1)  # as `shapes.build`
    noisy, clean = [], []
    for row in sample_features(n, seed).to_dict("records"):
        # extract_slice returns a 2D image as rendered and to_square is the identity at 64 px,
        # so normalise_intensity is all of `model_inputs`; the clean image shares its scale
        image = render_array(row, rng)
        noisy.append(normalise_intensity(image))
        clean.append(render_array(row, NoNoise()) / intensity_scale(image))
    return torch.from_numpy(np.stack(noisy)).float()[:, None], torch.from_numpy(np.stack(clean)).float()[:, None]
