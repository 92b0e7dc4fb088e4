"""`engine/diffusion/codec.py`: the PCA latent space."""

from __future__ import annotations

import pytest
import torch
from test_diffusion_toys import SIZE

from engine.diffusion.codec import PCACodec
from engine.diffusion.storage import build_codec


def test_codec_reconstructs_low_rank_images_exactly():
    g = torch.Generator().manual_seed(1)
    basis = torch.randn(3, SIZE * SIZE, generator=g)
    images = (0.5 + 0.05 * torch.randn(30, 3, generator=g) @ basis).reshape(30, 1, SIZE, SIZE)
    codec = PCACodec.fit(images, 3)
    z = codec.encode(images)
    assert z.shape == (30, 4)
    torch.testing.assert_close(codec.decode_mean(z), images, atol=1e-4, rtol=0)


@pytest.mark.parametrize("whiten", [0.0, 0.5, 1.0])
def test_codec_latent_has_unit_mean_variance_and_the_whitening_power_sets_its_spectrum(whiten):
    g = torch.Generator().manual_seed(2)
    basis = torch.linalg.qr(torch.randn(SIZE * SIZE, 3, generator=g))[0].T  # orthonormal rows
    sds = torch.tensor([4.0, 1.0, 0.25])
    images = (0.5 + 0.01 * (torch.randn(400, 3, generator=g) * sds) @ basis).reshape(400, 1, SIZE, SIZE)
    codec = PCACodec.fit(images, 3, whiten=whiten)
    z = codec.encode(images)[:, :3]
    variances = z.var(0)
    torch.testing.assert_close(variances.mean(), torch.tensor(1.0), atol=1e-3, rtol=0)
    # the latent's sd ratio between components is the PCA's to the power 1 - whiten
    torch.testing.assert_close(
        variances.sqrt() / variances[0].sqrt(),
        codec.scales.pow(1 - whiten) / codec.scales[0].pow(1 - whiten),
        atol=1e-4,
        rtol=0,
    )
    torch.testing.assert_close(codec.decode_mean(codec.encode(images)), images, atol=1e-4, rtol=0)
    rebuilt = build_codec({"kind": "pca", "d": 3, "whiten": whiten}, SIZE)
    rebuilt.load_state_dict(codec.state_dict())
    torch.testing.assert_close(rebuilt.encode(images), codec.encode(images))


def test_codec_decode_clips_to_unit_range():
    codec = PCACodec.fit(torch.rand(20, 1, SIZE, SIZE), 2)
    x = codec.decode(torch.full((3, 3), 50.0), torch.randn(3, SIZE, SIZE))
    assert x.min() >= 0 and x.max() <= 1
