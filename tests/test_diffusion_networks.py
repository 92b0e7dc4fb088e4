"""`engine/diffusion/networks.py`: the denoiser and the latent read-out."""

from __future__ import annotations

import torch

from engine.diffusion.networks import Denoiser, DenoiserConfig, LatentReadout


def test_denoiser_ignores_dropped_feature_values():
    config = DenoiserConfig(latent_dim=3, cond_dim=2, n_features=2, numeric_slots=(0, 1), width=8, depth=1, emb_dim=8)
    net = Denoiser(config)
    torch.nn.init.normal_(net.out.weight)
    z, m = torch.randn(2, 3), torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    c = torch.tensor([[0.5, -3.0], [0.5, 3.0]])  # differ only in the dropped feature
    out = net(z[:1].expand(2, -1), torch.tensor(10), c, m, m)
    torch.testing.assert_close(out[0], out[1])


def test_denoiser_config_round_trips_through_the_cards_json():
    config = DenoiserConfig(latent_dim=5, cond_dim=4, n_features=3, numeric_slots=(0, 1), cond_input=True)
    data = config.to_json()
    assert data["numeric_slots"] == [0, 1] and DenoiserConfig.from_json(data) == config


def test_denoiser_starts_as_the_zero_prediction():
    """The output layer starts at zero (and adaLN's modulation at identity), as in DiT."""
    net = Denoiser(DenoiserConfig(latent_dim=4, cond_dim=1, n_features=1, numeric_slots=(0,), width=8, depth=2))
    out = net(torch.randn(3, 4), torch.tensor(500), torch.randn(3, 1), torch.ones(3, 1), torch.ones(3, 1))
    assert out.shape == (3, 4) and torch.equal(out, torch.zeros(3, 4))


def test_latent_readout_is_linear_without_hidden_layers():
    linear, mlp = LatentReadout(6, 2), LatentReadout(6, 2, (16, 16))
    assert len(linear.net) == 1 and mlp.hidden == (16, 16) and len(mlp.net) == 5
    z = torch.randn(4, 6)
    torch.testing.assert_close(linear(2 * z) - linear.net[0].bias, 2 * (linear(z) - linear.net[0].bias))
    assert mlp(z).shape == (4, 2)
