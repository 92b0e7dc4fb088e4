"""`engine/diffusion/train.py`: recipes, condition dropout, the denoiser and read-out fits, the
training data (the cheap SynthBrain slices of `engine.data.synthbrain_slices`)."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from test_diffusion_toys import toy_card

from engine.diffusion.conditions import FeatureSchema
from engine.diffusion.train import (
    RECIPES,
    TrainConfig,
    codec_design,
    dropout_masks,
    fit_denoiser,
    fit_readout,
    rebuild_command,
    recipe,
    slot_masks,
    validation_loss,
)
from engine.errors import EveInputError


def test_recipes_name_their_dataset_and_take_overrides():
    config = recipe("synthbrain", steps=10, seed=None)
    assert config.steps == 10 and config.seed == RECIPES["synthbrain"].seed
    assert rebuild_command(config) == "python -m engine train-diffusion synthbrain --steps 10"
    experiment = recipe("synthbrain", components=32, whiten=0.25)  # no CLI option for whiten
    assert rebuild_command(experiment) == (
        'python -c "from engine.diffusion.train import recipe, train_diffusion; '
        "train_diffusion(recipe('synthbrain', components=32, whiten=0.25))\""
    )
    shapes = recipe("shapes")
    assert (shapes.dataset, shapes.codec, shapes.probe) == ("shapes", "autoencoder", "cnn")
    assert rebuild_command(shapes) == "python -m engine train-diffusion shapes"
    with pytest.raises(EveInputError, match="synthbrain"):
        recipe("mnist")


def test_card_design_names_the_stripe_carrier_only_where_the_autoencoder_has_it():
    assert "stripes' known carrier" in codec_design(recipe("shapes"))
    plain = codec_design(recipe("synthbrain", codec="autoencoder"))
    assert plain == "conv-autoencoder codec (d code dims + noise level)"
    assert codec_design(recipe("synthbrain")).startswith("PCA codec")


# --- condition dropout ----------------------------------------------------------------------


def test_dropout_masks_mix_all_dropped_single_and_random():
    config = TrainConfig(p_all_dropped=0.1, p_single=0.3)
    m = dropout_masks(20000, 6, config, torch.Generator().manual_seed(0))
    assert set(m.unique().tolist()) <= {0.0, 1.0}
    kept = m.sum(1)
    assert 0.1 < (kept == 0).float().mean() < 0.2  # all dropped + random rows with none kept
    assert 0.3 < (kept == 1).float().mean() < 0.45
    assert (kept == 6).float().mean() > 0.05  # joint conditions are trained too
    assert torch.allclose(m.mean(0), m.mean(0).mean(), atol=0.02)  # no feature favoured


def test_slot_masks_cover_a_categorical_feature_whole():
    schema = FeatureSchema("toy", toy_card().features)
    table = pd.DataFrame({"size": [0.0, 1.0], "brightness": [1.0, 2.0], "sex": ["M", "F"]})
    c, spans = schema.encode_rows(table)
    assert spans == [(0, 1), (1, 1), (2, 2)]
    assert c[:, 2:].tolist() == [[0.0, 1.0], [1.0, 0.0]]
    slot = slot_masks(torch.tensor([[1.0, 0.0, 1.0]]), spans)
    assert slot.tolist() == [[1.0, 0.0, 1.0, 1.0]]


# --- the fits -------------------------------------------------------------------------------


def test_fit_denoiser_returns_the_weights_with_the_best_validation_loss():
    g = torch.Generator().manual_seed(0)
    z0, c = torch.randn(64, 5, generator=g), torch.randn(64, 2, generator=g)
    spans = [(0, 1), (1, 1)]
    config = TrainConfig(steps=6, eval_every=2, batch=16, width=16, depth=1, lr=0.05)
    net, stats = fit_denoiser(z0[:48], c[:48], spans, config, (z0[48:], c[48:]), log=lambda _: None)
    assert [row["step"] for row in stats["curve"]] == [2, 4, 6]
    best = min(stats["curve"], key=lambda row: row["validation"])
    assert stats["best_step"] == best["step"]
    assert validation_loss(net, z0[48:], c[48:], spans, config) == pytest.approx(best["validation"], rel=1e-5)


def test_fit_readout_recovers_a_linear_map():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(500, 6, generator=g)
    w, b = torch.randn(2, 6, generator=g), torch.tensor([0.5, -1.0])
    readout = fit_readout(z, (z @ w.T + b).numpy())
    torch.testing.assert_close(readout.net[0].weight, w, atol=1e-4, rtol=0)
    torch.testing.assert_close(readout.net[0].bias, b, atol=1e-4, rtol=0)


def test_fit_readout_mlp_reads_what_a_linear_map_cannot():
    """A feature that is a curved function of the latent (as the shapes' aspect is of the
    autoencoder's code): the MLP read-out gets it, the linear one does not."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(3000, 4, generator=g)
    y = torch.stack([z[:, 0] ** 2 - 1, torch.sin(2 * z[:, 1])], 1)
    held = torch.randn(500, 4, generator=g)
    truth = torch.stack([held[:, 0] ** 2 - 1, torch.sin(2 * held[:, 1])], 1)
    errors = {}
    for hidden in [(), (64, 64)]:
        readout = fit_readout(z, y.numpy(), hidden=hidden, steps=1500)
        with torch.no_grad():
            errors[hidden] = (readout(held) - truth).abs().mean(0)
    assert (errors[(64, 64)] < 0.15).all() and (errors[()] > 0.5).all(), errors


# --- the training data ------------------------------------------------------------------------


@pytest.mark.slow
def test_cheap_slice_generator_matches_the_full_generator():
    """The extra training subjects (one slice, `synthbrain_slices`) follow
    `synthbrain.synthesize_subject`: same volumes (GM corrected for the stride-2 grid) and the
    same slice up to the noise."""
    from engine.data import SliceSpec
    from engine.data.synthbrain_slices import check_against_full

    report = check_against_full(SliceSpec("coronal", "hippocampus", 64), n=2)
    for column in ("ventricle_volume", "hippocampal_volume", "gm_volume", "icv"):
        assert report[f"{column}_rel_err"].abs().max() < 0.003, report
    assert report["slice_rms_diff"].max() < 0.035, report
