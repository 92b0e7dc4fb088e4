"""`engine/diffusion/probes.py`: the feature probes that read a sample's features back."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.data.shapes import STRIPE_PERIOD
from engine.diffusion.probes import ConvProbe, build_probe, fit_conv_probe, fit_probe, probe_report


def _blobs(n: int, size: int, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    """Images of one bright square on noise; targets: its standardised column and row."""
    rng = np.random.default_rng(seed)
    pos = rng.integers(2, size - 6, (n, 2))
    images = rng.normal(0.1, 0.02, (n, 1, size, size))
    for i, (col, row) in enumerate(pos):
        images[i, 0, row : row + 4, col : col + 4] = 0.9
    targets = (pos - (size - 4) / 2) / (size / 4)
    return torch.from_numpy(images).float(), targets


def test_conv_probe_learns_a_position_and_reloads_from_its_card(tmp_path):
    torch.set_num_threads(1)
    images, targets = _blobs(512, 16, seed=0)
    probe = fit_conv_probe(images, targets, steps=300, seed=0)
    test_images, test_targets = _blobs(128, 16, seed=1)
    with torch.inference_mode():
        pred = probe(test_images).numpy()
    r2 = 1 - ((pred - test_targets) ** 2).mean(0) / test_targets.var(0)
    assert (r2 > 0.9).all(), r2
    reloaded = build_probe({"kind": "cnn", "channels": list(probe.channels)}, 16, 2, probe.state_dict())
    with torch.inference_mode():
        torch.testing.assert_close(reloaded(test_images), probe(test_images))


def test_pca_mlp_probe_reloads_from_its_card_or_from_its_stored_size():
    images, targets = _blobs(64, 16, seed=2)
    probe = fit_probe(images, targets, n_components=8, epochs=2)
    state = probe.state_dict()
    legacy = state | {"n_components": torch.tensor(8)}  # cards without "probe" stored it beside the weights
    for info, tensors in [({"kind": "pca-mlp", "n_components": 8}, state), (None, legacy)]:
        reloaded = build_probe(info, 16, 2, tensors)
        with torch.inference_mode():
            torch.testing.assert_close(reloaded(images), probe(images))


def test_conv_probe_stripe_energy_reads_the_stripes_amplitude_whatever_their_phase(tmp_path):
    probe = ConvProbe(64, 2, channels=(8, 8, 8, 8), stripe_period=STRIPE_PERIOD)
    rows, cols = np.mgrid[0:64, 0:64]
    waves = [0.5 + 0.2 * np.sin(2 * np.pi * (rows + cols) / STRIPE_PERIOD + phase) for phase in (0.0, 1.0, 2.5)]
    energy = probe.stripe_energy(torch.tensor(np.stack(waves), dtype=torch.float32)[:, None])[:, 0, 8:-8, 8:-8]
    torch.testing.assert_close(energy, torch.full_like(energy, 0.2), atol=1e-4, rtol=0)
    info = {"kind": "cnn", "channels": [8, 8, 8, 8], "stripe_period": STRIPE_PERIOD}
    reloaded = build_probe(info, 64, 2, probe.state_dict())
    images = torch.rand(3, 1, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(reloaded(images), probe(images))


def test_conv_probe_noise_level_tracks_the_noise_and_ignores_edges():
    noise = torch.randn(4, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    level = ConvProbe.noise_level(0.02 * noise)
    assert torch.allclose(ConvProbe.noise_level(0.04 * noise) - level, torch.full_like(level, np.log(2)), atol=1e-4)
    with_edge = 0.02 * noise
    with_edge[:, :, 20:40, 20:40] += 0.8  # an object's sharp edges: under 10% of the pixels
    assert torch.allclose(ConvProbe.noise_level(with_edge), level, atol=0.1)


def test_probe_report_undoes_the_training_standardisation_and_reports_in_data_sd():
    """A probe that is exact in standardised units has zero error once destandardised with the
    training (mean, sd), whatever the dataset's sd used as the unit of MAE / SD."""
    values = np.array([[10.0], [14.0], [18.0]])
    mean, sd = np.array([14.0]), np.array([4.0])

    class Exact(torch.nn.Module):
        def forward(self, images):
            return torch.as_tensor((values - mean) / sd, dtype=torch.float32)

    report = probe_report(Exact(), torch.zeros(3, 1, 4, 4), values, ["v"], mean, sd, data_sd=np.array([2.0]))
    assert report["v"]["mae"] == pytest.approx(0.0, abs=1e-5) and report["v"]["r2"] == pytest.approx(1.0)
    shifted = probe_report(Exact(), torch.zeros(3, 1, 4, 4), values + 1.0, ["v"], mean, sd, data_sd=np.array([2.0]))
    assert shifted["v"]["mae_over_sd"] == pytest.approx(0.5, abs=1e-5)
