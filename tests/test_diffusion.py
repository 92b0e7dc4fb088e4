"""Conditional diffusion: tiny-model units (seconds) and checks of the committed weights.

Mirrors `engine/diffusion/`: codec, model (conditions, sampling, saving), train (masks),
score (values, compatibility, estimators). The committed-weights checks skip when the
assets (or the zoo classifiers) are missing; the slow ones are marked `slow`.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.data.shapes import STRIPE_PERIOD
from engine.diffusion import ConditionalDiffusion, FeatureClampWarning, diffusion_score, load_diffusion
from engine.diffusion.codec import PCACodec
from engine.diffusion.model import (
    ASSETS,
    READOUT_GUIDANCE,
    Denoiser,
    DenoiserConfig,
    LatentReadout,
    build,
    build_codec,
    card_denoiser,
    feature_table_tensors,
    save,
)
from engine.diffusion.score import block_score_stats, check_compatible, feature_values
from engine.diffusion.train import TrainConfig, condition_arrays, dropout_masks, slot_masks
from engine.errors import EveInputError

SIZE = 16


def _card(dataset: str = "toy") -> dict:
    percentiles = np.linspace(-2.0, 2.0, 101).tolist()
    numeric = [
        {"name": name, "kind": "numeric", "mean": 0.0, "sd": 1.0, "min": -2.0, "max": 2.0, "data_sd": 1.0,
         "data_percentiles": percentiles}
        for name in ("size", "brightness")
    ]  # fmt: skip
    categorical = {"name": "sex", "kind": "categorical", "levels": ["F", "M"], "data_frequencies": [0.25, 0.75]}
    config = DenoiserConfig(latent_dim=5, cond_dim=4, n_features=3, numeric_slots=(0, 1), width=16, depth=1,
                            n_fourier=2, emb_dim=16)  # fmt: skip
    return {
        "dataset": dataset,
        "spec": {"plane": "axial", "index": None, "size": SIZE},
        "features": [*numeric, categorical],
        "probe_features": [],
        "codec": {"d": 4},
        "denoiser": card_denoiser(config),
    }


@pytest.fixture(scope="module")
def tiny() -> ConditionalDiffusion:
    """A random (untrained) tiny model: deterministic weights, a codec fit on random blobs."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    images = torch.rand(40, 1, SIZE, SIZE, generator=g) * 0.2 + 0.4
    card = _card()
    model = build(card)
    model.codec.load_state_dict(PCACodec.fit(images, 4).state_dict())
    for p in model.denoiser.out.parameters():  # zero-initialised: give it a non-trivial output
        torch.nn.init.normal_(p, std=0.1, generator=g)
    return model


# --- codec --------------------------------------------------------------------------------------


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
    torch.testing.assert_close(variances.sqrt() / variances[0].sqrt(), codec.scales.pow(1 - whiten) /
                               codec.scales[0].pow(1 - whiten), atol=1e-4, rtol=0)  # fmt: skip
    torch.testing.assert_close(codec.decode_mean(codec.encode(images)), images, atol=1e-4, rtol=0)
    rebuilt = build_codec({"codec": {"kind": "pca", "d": 3, "whiten": whiten}, "spec": {"size": SIZE}})
    rebuilt.load_state_dict(codec.state_dict())
    torch.testing.assert_close(rebuilt.encode(images), codec.encode(images))


def test_codec_decode_clips_to_unit_range():
    codec = PCACodec.fit(torch.rand(20, 1, SIZE, SIZE), 2)
    x = codec.decode(torch.full((3, 3), 50.0), torch.randn(3, SIZE, SIZE))
    assert x.min() >= 0 and x.max() <= 1


@pytest.mark.slow
def test_rendered_shapes_reproduce_the_dataset_inputs(shapes):
    """The autoencoder's extra training images are normalised exactly as `model_inputs`."""
    from engine.data import SliceSpec
    from engine.diffusion.autoencoder import rendered_shapes

    noisy, clean = rendered_shapes(len(shapes.table), seed=0)
    rows = np.arange(0, len(shapes.table), 150)
    expected = shapes.model_inputs(SliceSpec("axial", None, 64), rows)
    torch.testing.assert_close(noisy[rows], expected, atol=1e-5, rtol=0)
    assert (noisy - clean).std() < 0.05  # the clean images are the same images without noise
    # not clipped at 1: the data clip after the noise (the flattened stripe peaks carry texture)
    assert clean.max() > 1.1 and (noisy[clean > 1.1] > 0.99).float().mean() > 0.99


# shapes' carrier on the pixel grid or centred on the object; a plain AE (SynthBrain)
@pytest.mark.parametrize("stripe_period, centred", [(STRIPE_PERIOD, False), (STRIPE_PERIOD, True), (None, False)])
def test_autoencoder_codec_fits_decodes_and_round_trips_through_safetensors(tmp_path, stripe_period, centred):
    from engine.diffusion.autoencoder import fit_autoencoder, load_autoencoder, rendered_shapes, save_autoencoder

    torch.manual_seed(0)
    noisy, clean = rendered_shapes(32, seed=5)
    estimate = "flat_pairs" if centred else "residual"
    codec = fit_autoencoder(noisy, targets=clean, latent_dim=9, channels=(8, 8, 8), steps=3, batch_size=8,
                            stripe_period=stripe_period, centred_stripes=centred, noise_estimate=estimate,
                            log=lambda _: None)  # fmt: skip
    assert codec.stripe_period == stripe_period and len(codec.carriers) == (2 if stripe_period else 0)
    z = codec.encode(noisy[:4])
    assert z.shape == (4, 9) and codec.latent_dim == 9
    x = codec.decode(z, torch.randn(4, 64, 64))
    assert x.shape == (4, 1, 64, 64) and x.min() >= 0 and x.max() <= 1
    save_autoencoder(codec, tmp_path / "ae.safetensors")
    loaded = load_autoencoder(tmp_path / "ae.safetensors")
    assert loaded.centred_stripes == centred and loaded.noise_estimate == estimate
    torch.testing.assert_close(loaded.decode_mean(z), codec.decode_mean(z))
    torch.testing.assert_close(loaded.encode(noisy[:4]), z)
    entry = {"kind": "autoencoder", "latent_dim": 9, "channels": [8, 8, 8], "stripe_period": stripe_period,
             "centred_stripes": centred, "noise_estimate": estimate}  # fmt: skip
    rebuilt = build_codec({"codec": entry, "spec": {"size": 64}})
    rebuilt.load_state_dict(codec.state_dict())
    torch.testing.assert_close(rebuilt.decode_mean(z), codec.decode_mean(z))
    torch.testing.assert_close(rebuilt.encode(noisy[:4]), z)


@settings(max_examples=25, deadline=None)
@given(mean=st.floats(-0.3, 1.3), sd=st.floats(0.005, 0.5))
def test_clipped_noise_moments_match_monte_carlo(mean, sd):
    from engine.diffusion.autoencoder import clipped_noise_moments

    e = torch.randn(400_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    residual = (mean + sd * e).clamp(0, 1) - min(max(mean, 0.0), 1.0)
    first, second = clipped_noise_moments(*torch.tensor([mean, sd], dtype=torch.float64))
    tolerance = 5 * residual.std() / 400_000**0.5 + 1e-9
    assert abs(float(first) - float(residual.mean())) <= tolerance
    assert abs(float(second) - float(residual.pow(2).mean())) <= 5 * residual.pow(2).std() / 400_000**0.5 + 1e-9


def test_flat_pair_noise_sd_ignores_clipping_and_a_smooth_codec_error():
    """Shapes clipped to [0, 1] after noise of a known sd, measured around a noise-free estimate
    with a smooth error (as a codec's): the flat-pair estimate is unbiased to 1%; the residual
    RMS is pulled up by the error and down by the clipped dark backgrounds."""
    from engine.diffusion.autoencoder import flat_pair_noise_sd, rendered_shapes

    _, clean = rendered_shapes(200, seed=4)
    g = torch.Generator().manual_seed(0)
    sd = 0.015 + 0.035 * torch.rand(200, generator=g)
    images = (clean + sd[:, None, None, None] * torch.randn(clean.shape, generator=g)).clamp(0, 1)
    rows = torch.arange(64.0)[:, None]
    estimate = clean + 0.01 * torch.sin(rows / 10) * torch.rand(200, 1, 1, 1, generator=g)  # smooth error
    ratio = flat_pair_noise_sd(images, estimate) / sd
    assert abs(float(ratio.mean()) - 1) < 0.01 and float(ratio.std()) < 0.03, (ratio.mean(), ratio.std())
    rms = (images - estimate.clamp(0, 1)).pow(2).mean((1, 2, 3)).sqrt() / sd
    assert float(rms.std()) > 2 * float(ratio.std()), (rms.std(), ratio.std())


def test_object_centre_finds_the_shapes_centre_to_a_tenth_of_a_pixel():
    """The centred stripes' phase needs the centre: at 0.1 px on row + col the phase is off by
    0.16 rad, which keeps 99% of the stripes' amplitude."""
    from engine.data.shapes import sample_features
    from engine.diffusion.autoencoder import AutoencoderCodec, rendered_shapes

    noisy, clean = rendered_shapes(300, seed=3)
    truth = sample_features(300, 3)[["pos_y", "pos_x"]].to_numpy()
    codec = AutoencoderCodec(latent_dim=9, channels=(8, 8, 8), centred_stripes=True)
    for images in (noisy, clean):
        error = codec.object_centre(images).numpy() - truth
        assert np.abs(error.mean(0)).max() < 0.02 and error.sum(1).std() < 0.1, (error.mean(0), error.std(0))


def test_centred_stripes_demodulate_to_the_texture_whatever_the_position():
    """Against the object-centred carrier the stripes of every shape are in phase: the in-phase
    amplitude at the centre is texture * intensity and the quadrature is ~0, while against the
    grid's carrier the phase turns with pos_x + pos_y."""
    from engine.data.shapes import render_array
    from engine.diffusion.autoencoder import AutoencoderCodec, _NoNoise

    codec = AutoencoderCodec(latent_dim=9, channels=(8, 8, 8), centred_stripes=True)
    rows = [{"size": 12.0, "aspect": 0.9, "intensity": 0.8, "pos_x": 30.0 + shift, "pos_y": 31.0, "texture": 0.3,
             "background": 0.1} for shift in (0.0, 0.5, 1.0, 1.7)]  # fmt: skip
    images = torch.from_numpy(np.stack([render_array(r, _NoNoise()) for r in rows]))[:, None]
    centre = torch.tensor([[r["pos_y"], r["pos_x"]] for r in rows])
    demod = codec.demodulate(images, codec.centred_carriers(centre))[:, :, 31, 30]
    torch.testing.assert_close(demod[:, 0], torch.full((4,), 0.8 * 0.3), atol=0.01, rtol=0)
    assert demod[:, 1].abs().max() < 0.01
    grid = codec.demodulate(images)[:, :, 31, 30]
    assert grid[:, 0].max() - grid[:, 0].min() > 0.2  # the grid's in-phase part turns with the position



# --- sampling -----------------------------------------------------------------------------------


def test_sample_shape_and_range(tiny):
    x = tiny.sample({"size": 0.5}, 3, seed=0, steps=4)
    assert x.shape == (3, 1, SIZE, SIZE)
    assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1


def test_sample_same_seed_gives_identical_images(tiny):
    a = tiny.sample({"size": 0.5, "sex": "M"}, 4, seed=7, steps=5)
    b = tiny.sample({"size": 0.5, "sex": "M"}, 4, seed=7, steps=5)
    assert torch.equal(a, b)


def test_sample_different_seeds_differ(tiny):
    a = tiny.sample({"size": 0.5}, 2, seed=1, steps=4)
    b = tiny.sample({"size": 0.5}, 2, seed=2, steps=4)
    assert not torch.allclose(a, b)


def test_sample_seed_of_each_sample_does_not_depend_on_batch(tiny):
    whole = tiny.sample({}, 4, seed=3, steps=4)
    tail = tiny.sample({}, 2, seed=3, steps=4, first_index=2)
    torch.testing.assert_close(whole[2:], tail, atol=1e-5, rtol=0)


def test_shared_noise_with_one_condition_repeats_one_subject(tiny):
    x = tiny.sample({"brightness": 0.0}, 3, seed=5, steps=4, shared_noise=True)
    torch.testing.assert_close(x[0], x[2], atol=1e-5, rtol=0)


def test_fixed_noise_sweep_changes_smoothly(tiny):
    """Same seed at nearby values: a small change (the slider's morphing)."""
    a = tiny.sample({"size": 0.0}, 1, seed=4, steps=6)
    b = tiny.sample({"size": 0.01}, 1, seed=4, steps=6)
    c = tiny.sample({"size": 0.0}, 1, seed=5, steps=6)
    assert (a - b).abs().mean() < 0.2 * (a - c).abs().mean()


def test_guidance_one_is_the_plain_conditional(tiny):
    a = tiny.sample({"size": 1.0}, 2, seed=0, steps=4, guidance=1.0)
    z_plain, _ = tiny.sample_latents({"size": 1.0}, 2, seed=0, steps=4)
    torch.testing.assert_close(a, tiny.codec.decode(z_plain, tiny.initial_noise(2, 0)[1]))


def test_sweep_values_one_per_sample(tiny):
    x = tiny.sample({"size": [-1.0, 0.0, 1.0]}, 3, seed=0, steps=3, shared_noise=True)
    assert x.shape[0] == 3


# --- free features from the training table --------------------------------------------------


def _linked_table(n: int = 1000) -> pd.DataFrame:
    """brightness = 0.5 size + N(0, 0.1^2); sex M exactly when size + N(0, 0.5^2) > 0."""
    rng = np.random.default_rng(0)
    size = rng.uniform(-2, 2, n)
    return pd.DataFrame({"size": size, "brightness": 0.5 * size + rng.normal(0, 0.1, n),
                         "sex": np.where(size + rng.normal(0, 0.5, n) > 0, "M", "F")})  # fmt: skip


@pytest.fixture(scope="module")
def tabled(tiny) -> ConditionalDiffusion:
    """The tiny model with a training table whose features are linked (`_linked_table`)."""
    model = build(tiny.card, {**{f"codec.{k}": v for k, v in tiny.codec.state_dict().items()},
                              **{f"denoiser.{k}": v for k, v in tiny.denoiser.state_dict().items()}})  # fmt: skip
    model.table_tensors = feature_table_tensors(_linked_table(), tiny.card["features"])
    return model


def test_feature_table_round_trips_through_its_tensors(tabled):
    table = _linked_table()
    got = tabled.feature_table
    assert list(got.columns) == ["size", "brightness", "sex"] and (got["sex"] == table["sex"]).all()
    np.testing.assert_allclose(got[["size", "brightness"]], table[["size", "brightness"]], atol=1e-6)


def test_free_features_follow_the_table_link_near_the_asked_value(tabled):
    """m = 32 of 1,000 uniform rows: sizes within ~0.07 of 1.0, so brightness ~ 0.5 +- 0.1."""
    drawn = tabled.complete_condition({"size": 1.0}, 400, seed=0)
    assert drawn["size"] == 1.0
    brightness = np.asarray(drawn["brightness"])
    assert brightness.mean() == pytest.approx(0.5, abs=0.04) and 0.07 < brightness.std() < 0.14
    assert np.mean(np.asarray(drawn["sex"]) == "M") > 0.9  # P(M | size = 1) = 0.977


def test_asked_level_is_matched_and_free_numbers_follow_it(tabled):
    drawn = tabled.complete_condition({"sex": "F"}, 300, seed=1)
    table = _linked_table()
    assert drawn["sex"] == "F"
    assert np.mean(drawn["size"]) == pytest.approx(table.loc[table["sex"] == "F", "size"].mean(), abs=0.1)


def test_a_sweep_draws_near_each_samples_own_value(tabled):
    values = np.linspace(-1.5, 1.5, 7)
    drawn = tabled.complete_condition({"size": values}, 7, seed=2)
    np.testing.assert_allclose(drawn["brightness"], 0.5 * values, atol=0.35)


@settings(max_examples=25, deadline=None)
@given(value=st.floats(-3.0, 3.0), n=st.integers(1, 12), seed=st.integers(0, 2**31 - 1))
def test_drawn_rows_are_among_the_nearest_and_do_not_depend_on_the_batch(tabled, value, n, seed):
    table = tabled.feature_table
    drawn = tabled.complete_condition({"size": value}, n, seed=seed)
    distance = np.abs(table["size"].to_numpy() - np.clip(value, -2, 2))
    rows = [int(np.flatnonzero(table["brightness"].to_numpy() == b)[0]) for b in drawn["brightness"]]
    assert distance[rows].max() <= np.sort(distance)[31] + 1e-12
    tail = tabled.complete_condition({"size": value}, n - n // 2, seed=seed, first_index=n // 2)
    np.testing.assert_array_equal(drawn["brightness"][n // 2 :], tail["brightness"])


def test_shared_noise_draws_one_row_for_every_sample(tabled):
    drawn = tabled.complete_condition({"size": 0.0}, 5, seed=3, shared_noise=True)
    assert len(set(drawn["brightness"])) == 1 and len(set(drawn["sex"])) == 1


def test_table_sampling_is_seeded_and_saved_with_the_model(tabled, tmp_path):
    a = tabled.sample({"size": 0.5}, 3, seed=4, steps=3, free_features="table")
    assert torch.equal(a, tabled.sample({"size": 0.5}, 3, seed=4, steps=3, free_features="table"))
    joint = tabled.complete_condition({"size": 0.5}, 3, seed=4)  # what "table" samples from
    assert torch.equal(a, tabled.sample(joint, 3, seed=4, steps=3))
    loaded = load_diffusion(save(tabled, None, tmp_path))
    pd.testing.assert_frame_equal(loaded.feature_table, tabled.feature_table)
    torch.testing.assert_close(loaded.sample({"size": 0.5}, 3, seed=4, steps=3, free_features="table"), a)


def test_table_way_errors_are_clear(tiny, tabled):
    with pytest.raises(EveInputError, match="no training feature table.*free_features='model'"):
        tiny.sample({"size": 0.0}, 2, steps=2, free_features="table")
    with pytest.raises(EveInputError, match="free_features = 'data'"):
        tabled.sample({"size": 0.0}, 2, steps=2, free_features="data")
    with pytest.raises(EveInputError, match="not a level of 'sex'"):
        tabled.complete_condition({"sex": "X"}, 2)
    only_f = build(tiny.card)
    only_f.table_tensors = feature_table_tensors(_linked_table().assign(sex="F"), tiny.card["features"])
    with pytest.raises(EveInputError, match="No training row has"):
        only_f.complete_condition({"sex": "M"}, 2)


# --- bad input ------------------------------------------------------------------------------


def test_out_of_range_value_is_clamped_with_a_warning(tiny):
    with pytest.warns(FeatureClampWarning, match="outside the training range"):
        high = tiny.sample({"size": 9.0}, 2, seed=0, steps=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FeatureClampWarning)
        at_max = tiny.sample({"size": 2.0}, 2, seed=0, steps=3)
    assert torch.equal(high, at_max)


@pytest.mark.parametrize(
    "condition, match",
    [
        ({"volume": 1.0}, "Unknown feature 'volume'"),
        ({"sex": "X"}, "not a level of 'sex'"),
        ({"size": float("nan")}, "NaN or infinite"),
        ({"size": [0.0, 1.0]}, "2 values given"),
    ],
)
def test_bad_conditions_raise_clear_errors(tiny, condition, match):
    with pytest.raises(EveInputError, match=match):
        tiny.sample(condition, 3, seed=0, steps=2)


@pytest.mark.parametrize("kw", [{"n": 0}, {"steps": 0}, {"guidance": float("inf")}, {"sampler": "euler"}])
def test_bad_sampling_arguments_raise(tiny, kw):
    args = {"n": 2, "steps": 2} | kw
    with pytest.raises(EveInputError):
        tiny.sample({}, **args)


def test_feature_range_and_unknown_feature(tiny):
    assert tiny.feature_range("size") == (-2.0, 2.0)
    assert tiny.feature_range("sex") == ("F", "M")
    with pytest.raises(EveInputError, match="choose one of size, brightness, sex"):
        tiny.feature_range("age")


def test_load_unknown_diffusion_model_names_the_fix():
    with pytest.raises(EveInputError, match="train-diffusion"):
        load_diffusion("no-such-dataset")


def test_save_and_load_round_trip(tiny, tmp_path):
    path = save(tiny, None, tmp_path)
    loaded = load_diffusion(path)
    torch.testing.assert_close(loaded.sample({"size": 0.3}, 2, seed=1, steps=3), tiny.sample({"size": 0.3}, 2, seed=1,
                                                                                             steps=3))  # fmt: skip


def test_unknown_codec_kind_is_a_clear_error():
    card = _card()
    card["codec"] = {"kind": "wavelet"}
    with pytest.raises(EveInputError, match="codec kind 'wavelet'"):
        build(card)


def test_recipes_name_their_dataset_and_take_overrides():
    from engine.diffusion.train import RECIPES, rebuild_command, recipe

    config = recipe("synthbrain", steps=10, seed=None)
    assert config.steps == 10 and config.seed == RECIPES["synthbrain"].seed
    assert rebuild_command(config) == "python -m engine train-diffusion synthbrain --steps 10"
    experiment = recipe("synthbrain", components=32, whiten=0.25)  # no CLI option for whiten
    assert rebuild_command(experiment) == ('python -c "from engine.diffusion.train import recipe, train_diffusion; '
                                           "train_diffusion(recipe('synthbrain', components=32, whiten=0.25))\"")
    shapes = recipe("shapes")
    assert (shapes.dataset, shapes.codec, shapes.probe) == ("shapes", "autoencoder", "cnn")
    assert rebuild_command(shapes) == "python -m engine train-diffusion shapes"
    with pytest.raises(EveInputError, match="synthbrain"):
        recipe("mnist")


def test_card_design_names_the_stripe_carrier_only_where_the_autoencoder_has_it():
    from engine.diffusion.train import codec_design, recipe

    assert "stripes' known carrier" in codec_design(recipe("shapes"))
    plain = codec_design(recipe("synthbrain", codec="autoencoder"))
    assert plain == "conv-autoencoder codec (d code dims + noise level)"
    assert codec_design(recipe("synthbrain")).startswith("PCA codec")


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
    from engine.diffusion.probes import build_probe, fit_conv_probe

    torch.set_num_threads(1)
    images, targets = _blobs(512, 16, seed=0)
    probe = fit_conv_probe(images, targets, steps=300, seed=0)
    test_images, test_targets = _blobs(128, 16, seed=1)
    with torch.inference_mode():
        pred = probe(test_images).numpy()
    r2 = 1 - ((pred - test_targets) ** 2).mean(0) / test_targets.var(0)
    assert (r2 > 0.9).all(), r2
    card = {"spec": {"size": 16}, "probe_features": ["x", "y"],
            "probe": {"kind": "cnn", "channels": list(probe.channels)}}  # fmt: skip
    reloaded = build_probe(card, probe.state_dict())
    with torch.inference_mode():
        torch.testing.assert_close(reloaded(test_images), probe(test_images))


def test_conv_probe_stripe_energy_reads_the_stripes_amplitude_whatever_their_phase(tmp_path):
    from engine.diffusion.probes import ConvProbe, build_probe

    probe = ConvProbe(64, 2, channels=(8, 8, 8, 8), stripe_period=STRIPE_PERIOD)
    rows, cols = np.mgrid[0:64, 0:64]
    waves = [0.5 + 0.2 * np.sin(2 * np.pi * (rows + cols) / STRIPE_PERIOD + phase) for phase in (0.0, 1.0, 2.5)]
    energy = probe.stripe_energy(torch.tensor(np.stack(waves), dtype=torch.float32)[:, None])[:, 0, 8:-8, 8:-8]
    torch.testing.assert_close(energy, torch.full_like(energy, 0.2), atol=1e-4, rtol=0)
    card = {"spec": {"size": 64}, "probe_features": ["a", "b"],
            "probe": {"kind": "cnn", "channels": [8, 8, 8, 8], "stripe_period": STRIPE_PERIOD}}  # fmt: skip
    reloaded = build_probe(card, probe.state_dict())
    images = torch.rand(3, 1, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(reloaded(images), probe(images))


def test_conv_probe_noise_level_tracks_the_noise_and_ignores_edges():
    from engine.diffusion.probes import ConvProbe

    noise = torch.randn(4, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    level = ConvProbe.noise_level(0.02 * noise)
    assert torch.allclose(ConvProbe.noise_level(0.04 * noise) - level, torch.full_like(level, np.log(2)), atol=1e-4)
    with_edge = 0.02 * noise
    with_edge[:, :, 20:40, 20:40] += 0.8  # an object's sharp edges: under 10% of the pixels
    assert torch.allclose(ConvProbe.noise_level(with_edge), level, atol=0.1)


def test_probe_report_undoes_the_training_standardisation_and_reports_in_data_sd():
    """A probe that is exact in standardised units has zero error once destandardised with the
    training (mean, sd), whatever the dataset's sd used as the unit of MAE / SD."""
    from engine.diffusion.probes import probe_report

    values = np.array([[10.0], [14.0], [18.0]])
    mean, sd = np.array([14.0]), np.array([4.0])

    class Exact(torch.nn.Module):
        def forward(self, images):
            return torch.as_tensor((values - mean) / sd, dtype=torch.float32)

    report = probe_report(Exact(), torch.zeros(3, 1, 4, 4), values, ["v"], mean, sd, data_sd=np.array([2.0]))
    assert report["v"]["mae"] == pytest.approx(0.0, abs=1e-5) and report["v"]["r2"] == pytest.approx(1.0)
    shifted = probe_report(Exact(), torch.zeros(3, 1, 4, 4), values + 1.0, ["v"], mean, sd, data_sd=np.array([2.0]))
    assert shifted["v"]["mae_over_sd"] == pytest.approx(0.5, abs=1e-5)


def _with_readout(tiny: ConditionalDiffusion) -> ConditionalDiffusion:
    """A copy of the tiny model with a fixed linear read-out of its two numeric features."""
    model = build(tiny.card)
    model.load_state_dict(tiny.state_dict())
    g = torch.Generator().manual_seed(7)
    model.readout_tensors = {"weight": torch.randn(2, model.codec.latent_dim, generator=g) * 0.5,
                             "bias": torch.zeros(2)}  # fmt: skip
    model.card = dict(model.card, readout_validation_mae_over_sd={"size": 0.05, "brightness": 0.5})
    return model


def test_readout_guidance_pulls_the_readout_to_the_asked_value(tiny):
    """Closed-form read-out guidance: the read-out of guided samples sits at the asked value
    (read-out noise 1 / strength), far closer than without guidance."""
    model = _with_readout(tiny)
    target = 1.2  # standardised (mean 0, sd 1)

    def readout_error(strength):
        z, _ = model.sample_latents({"size": target}, 64, seed=0, steps=10, readout_guidance=strength)
        return (model.readout(z)[:, 0] - target).abs().mean().item()

    free, guided = readout_error(0.0), readout_error(400.0)
    assert guided < 0.1 < free, (free, guided)


def test_readout_guidance_skips_features_the_readout_reads_poorly(tiny):
    """brightness' read-out error (0.5 SD) is over the limit: guiding on it is a no-op."""
    model = _with_readout(tiny)
    assert model.readout_guidable.tolist() == [1.0, 0.0]
    torch.testing.assert_close(model.sample({"brightness": 1.0}, 3, seed=2, steps=5, readout_guidance=100.0),
                               model.sample({"brightness": 1.0}, 3, seed=2, steps=5))  # fmt: skip


def test_readout_guidance_leaves_unconditioned_samples_alone(tiny):
    model = _with_readout(tiny)
    torch.testing.assert_close(model.sample({}, 3, seed=2, steps=5, readout_guidance=100.0),
                               model.sample({}, 3, seed=2, steps=5))  # fmt: skip


def test_readout_guidance_needs_a_readout_and_a_valid_strength(tiny):
    with pytest.raises(EveInputError, match="no feature read-out"):
        tiny.sample({"size": 0.0}, 1, readout_guidance=10.0)
    with pytest.raises(EveInputError, match="readout_guidance"):
        tiny.sample({"size": 0.0}, 1, readout_guidance=-1.0)


def test_fit_denoiser_returns_the_weights_with_the_best_validation_loss():
    from engine.diffusion.train import fit_denoiser, validation_loss

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
    from engine.diffusion.train import fit_readout

    g = torch.Generator().manual_seed(0)
    z = torch.randn(500, 6, generator=g)
    w, b = torch.randn(2, 6, generator=g), torch.tensor([0.5, -1.0])
    readout = fit_readout(z, (z @ w.T + b).numpy())
    torch.testing.assert_close(readout.net[0].weight, w, atol=1e-4, rtol=0)
    torch.testing.assert_close(readout.net[0].bias, b, atol=1e-4, rtol=0)


def test_fit_readout_mlp_reads_what_a_linear_map_cannot():
    """A feature that is a curved function of the latent (as the shapes' aspect is of the
    autoencoder's code): the MLP read-out gets it, the linear one does not."""
    from engine.diffusion.train import fit_readout

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


def _with_mlp_readout(tiny: ConditionalDiffusion) -> ConditionalDiffusion:
    """A copy of the tiny model with a fixed random MLP read-out of its two numeric features."""
    model = build(dict(tiny.card, readout={"hidden": [16]}))
    model.load_state_dict(tiny.state_dict())
    torch.manual_seed(3)
    model.readout_tensors = LatentReadout(model.codec.latent_dim, 2, (16,)).state_dict()
    model.card = dict(model.card, readout_validation_mae_over_sd={"size": 0.05, "brightness": 0.05})
    return model


def test_mlp_readout_guidance_pulls_the_readout_to_the_asked_value(tiny):
    """Guidance through the Jacobian of a nonlinear read-out, both features asked at once."""
    model = _with_mlp_readout(tiny)
    with torch.no_grad():
        reachable = model.readout(torch.randn(1, model.codec.latent_dim, generator=torch.Generator().manual_seed(1)))
    target = {"size": float(reachable[0, 0]), "brightness": float(reachable[0, 1])}  # standardised

    def readout_error(strength):
        z, _ = model.sample_latents(target, 64, seed=0, steps=10, readout_guidance=strength)
        return (model.readout(z) - reachable).abs().mean().item()

    free, guided = readout_error(0.0), readout_error(400.0)
    assert guided < 0.3 * free, (free, guided)


def test_mlp_readout_saves_and_reloads(tiny, tmp_path):
    model = _with_mlp_readout(tiny)
    loaded = load_diffusion(save(model, None, tmp_path))
    assert loaded.readout.hidden == (16,)
    z = torch.randn(5, model.codec.latent_dim)
    torch.testing.assert_close(loaded.readout(z), model.readout(z))
    asked = {"size": 0.5, "brightness": -0.2}
    torch.testing.assert_close(loaded.sample(asked, 3, seed=4, steps=5, readout_guidance=100.0),
                               model.sample(asked, 3, seed=4, steps=5, readout_guidance=100.0))  # fmt: skip


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
    import pandas as pd

    card = _card()
    table = pd.DataFrame({"size": [0.0, 1.0], "brightness": [1.0, 2.0], "sex": ["M", "F"]})
    c, spans = condition_arrays(table, card["features"])
    assert spans == [(0, 1), (1, 1), (2, 2)]
    assert c[:, 2:].tolist() == [[0.0, 1.0], [1.0, 0.0]]
    slot = slot_masks(torch.tensor([[1.0, 0.0, 1.0]]), spans)
    assert slot.tolist() == [[1.0, 0.0, 1.0, 1.0]]


def test_denoiser_ignores_dropped_feature_values():
    config = DenoiserConfig(latent_dim=3, cond_dim=2, n_features=2, numeric_slots=(0, 1), width=8, depth=1, emb_dim=8)
    net = Denoiser(config)
    torch.nn.init.normal_(net.out.weight)
    z, m = torch.randn(2, 3), torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    c = torch.tensor([[0.5, -3.0], [0.5, 3.0]])  # differ only in the dropped feature
    out = net(z[:1].expand(2, -1), torch.tensor(10), c, m, m)
    torch.testing.assert_close(out[0], out[1])


# --- score ----------------------------------------------------------------------------------


@pytest.mark.parametrize("k_values", [2, 3, 8, 16])
def test_feature_values_are_the_means_of_equal_mass_bins(k_values):
    """Quantile function Q(u) = u^2 on [0, 1] (101 percentiles): bin k's mean is
    K ((k+1)^3 - k^3) / (3 K^3) (up to the linear interpolation between percentiles)."""
    from engine.diffusion.score import quantile_bin_means

    k = np.arange(k_values)
    exact = ((k + 1) ** 3 - k**3) / (3 * k_values**2)
    got = quantile_bin_means((np.arange(101) / 100) ** 2, k_values)
    np.testing.assert_allclose(got, exact, atol=2e-5)
    assert got.mean() == pytest.approx(1 / 3, abs=2e-5)  # equal-mass bins: their means average to E[A]


def test_feature_values_are_bin_means_or_levels(tiny):
    values, weights = feature_values(tiny, "size", 4)
    np.testing.assert_allclose(values, [-1.5, -0.5, 0.5, 1.5], atol=1e-9)
    np.testing.assert_allclose(weights, 0.25)
    levels, w = feature_values(tiny, "sex", 4)
    assert levels == ["F", "M"] and np.allclose(w, [0.25, 0.75])


def test_score_refuses_a_diffusion_model_of_another_dataset(tiny):
    clf = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(SIZE * SIZE, 1))
    card = {"dataset": "synthbrain", "spec": _card()["spec"], "output_names": ["y"]}
    with pytest.raises(EveInputError, match="trained on 'synthbrain'.*generates 'toy'"):
        diffusion_score(clf, card, tiny, "size")
    with pytest.raises(EveInputError, match="slice"):
        check_compatible({"dataset": "toy", "spec": {"plane": "coronal", "index": None, "size": SIZE}}, tiny)


def test_score_unknown_feature_and_output(tiny):
    clf = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(SIZE * SIZE, 1))
    card = {"dataset": "toy", "spec": _card()["spec"], "output_names": ["y"]}
    with pytest.raises(EveInputError, match="Unknown feature 'age'"):
        diffusion_score(clf, card, tiny, "age")
    with pytest.raises(EveInputError, match="Unknown output"):
        diffusion_score(clf, card, tiny, "size", output="logit")


def test_score_draws_free_features_from_the_table_when_the_model_has_one(tiny, tabled):
    clf = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(SIZE * SIZE, 1))
    card = {"dataset": "toy", "spec": _card()["spec"], "output_names": ["y"]}
    _, with_table = diffusion_score(clf, card, tabled, "size", k_values=2, n_per_value=3, steps=2, n_boot=0)
    _, without = diffusion_score(clf, card, tiny, "size", k_values=2, n_per_value=3, steps=2, n_boot=0)
    _, asked = diffusion_score(clf, card, tabled, "size", k_values=2, n_per_value=3, steps=2, n_boot=0,
                               free_features="model")  # fmt: skip
    assert set(with_table["free_features"]) == {"table"} and set(without["free_features"]) == {"model"}
    np.testing.assert_allclose(asked["mean"], without["mean"])


def test_score_guides_by_the_readout_when_the_model_has_one(tiny):
    clf = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(SIZE * SIZE, 1))
    card = {"dataset": "toy", "spec": _card()["spec"], "output_names": ["y"]}
    guided = _with_mlp_readout(tiny)
    runs = {name: diffusion_score(clf, card, model, "size", k_values=2, n_per_value=3, steps=3, n_boot=0, **kw)[1]
            for name, model, kw in [("plain", tiny, {}), ("default", guided, {}),
                                    ("off", guided, {"readout_guidance": 0.0})]}  # fmt: skip
    assert set(runs["plain"]["readout_guidance"]) == {0.0} and set(runs["off"]["readout_guidance"]) == {0.0}
    assert set(runs["default"]["readout_guidance"]) == {READOUT_GUIDANCE}
    np.testing.assert_allclose(runs["off"]["mean"], runs["plain"]["mean"])
    assert not np.allclose(runs["default"]["mean"], runs["plain"]["mean"])


def test_score_runs_with_progress_and_independent_seeds(tiny):
    clf = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(SIZE * SIZE, 1))
    card = {"dataset": "toy", "spec": _card()["spec"], "output_names": ["y"]}
    calls = []
    result, table = diffusion_score(clf, card, tiny, "size", k_values=3, n_per_value=4, steps=3,
                                    progress=lambda i, n: calls.append((i, n)))  # fmt: skip
    assert calls == [(1, 3), (2, 3), (3, 3)]
    assert result.ok and result.n == 12 and 0 <= result.score <= 1
    assert table["seed"].nunique() == 3 and list(table["n"]) == [4, 4, 4]


def test_block_estimate_removes_subject_effects():
    """y_ki = mu_k + b_i + e_ki: the explained variance is Var(mu) whatever the subject spread."""
    rng = np.random.default_rng(0)
    mu = np.array([0.0, 1.0, 2.0, 3.0])
    y = mu[:, None] + rng.normal(0, 3, 400)[None, :] + rng.normal(0, 0.1, (4, 400))
    stats = block_score_stats(y, np.full(4, 0.25))
    assert stats["explained_var"] == pytest.approx(mu.var(), rel=0.02)
    assert stats["score"] == pytest.approx(mu.var() / (mu.var() + 9.01), abs=0.03)


# --- the committed weights ------------------------------------------------------------------

committed = pytest.mark.skipif(not (ASSETS / "synthbrain.json").is_file(), reason="no committed synthbrain model")
EXAMPLE_CONDITIONS = {"synthbrain": {"ventricle_volume": 15.0}, "shapes": {"size": 10.0}}


def _committed(dataset: str):
    if not (ASSETS / f"{dataset}.json").is_file():
        pytest.skip(f"no committed {dataset} diffusion model")
    return load_diffusion(dataset)


@pytest.mark.parametrize("dataset", ["synthbrain", "shapes"])
def test_committed_model_same_seed_identical_and_fast(dataset):
    """The issue's budget: 8 samples at 64x64 in under 2 s on this CPU (measured in the benchmark;
    asserted here only as a gross-regression guard)."""
    torch.set_num_threads(1)
    model = _committed(dataset)
    condition = EXAMPLE_CONDITIONS[dataset]
    model.sample(condition, 8, seed=0)  # warm-up
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        a = model.sample(condition, 8, seed=0)
        times.append(time.perf_counter() - t0)
    b = model.sample(condition, 8, seed=0)
    assert a.shape == (8, 1, 64, 64) and torch.equal(a, b)
    assert min(times) < 2.0, f"8 samples took {min(times):.2f} s (budget 2 s)"


@pytest.mark.parametrize("dataset, plane, features", [
    ("synthbrain", "coronal", {"ventricle_volume", "hippocampal_volume", "icv", "age", "sex"}),
    ("shapes", "axial", {"size", "aspect", "intensity", "pos_x", "pos_y", "texture", "background"}),
])  # fmt: skip
def test_committed_model_describes_itself(dataset, plane, features):
    model = _committed(dataset)
    assert model.dataset == dataset and model.spec.plane == plane
    assert features <= set(model.features)
    card = model.card
    for key in ("wall_time_seconds", "final_loss", "sources"):
        assert key in card["training"]
    assert card["command"].startswith(f"python -m engine train-diffusion {dataset}")


# measured constraint error (probe MAE / SD, K=8 x N=256; the probe's own held-out error is
# part of it), one feature asked and the others free by the model / drawn from the training
# table (joint condition): ventricle 0.071 / 0.063, icv 0.043 / 0.033, noise_sd 0.040 / 0.042,
# gm 0.104 / 0.072, hippocampal 0.138 / 0.106 (0.110 with read-out guidance). These bounds, ~1.5x
# the measurements (K=4 x N=32 here is noisier), guard against regressions.
CONSTRAINT_BOUNDS = {"icv": 0.07, "noise_sd": 0.09, "ventricle_volume": 0.11, "gm_volume": 0.17,
                     "hippocampal_volume": 0.26}  # fmt: skip
TABLE_CONSTRAINT_BOUNDS = {"icv": 0.06, "noise_sd": 0.07, "ventricle_volume": 0.10, "gm_volume": 0.11,
                           "hippocampal_volume": 0.16}  # fmt: skip
# read-out guidance (strength 100), K=8 x N=256: SynthBrain by the model ventricle 0.052, GM 0.068;
# from the table (the score's default) hippocampal 0.093 (0.106 unguided); shapes from the table
# (the MLP read-out) aspect 0.070, intensity 0.081, texture 0.089 (0.210, 0.112, 0.145 unguided)
GUIDED_BOUNDS = {("synthbrain", "model", "ventricle_volume"): 0.09, ("synthbrain", "model", "gm_volume"): 0.10,
                 ("synthbrain", "table", "hippocampal_volume"): 0.14, ("shapes", "table", "aspect"): 0.11,
                 ("shapes", "table", "intensity"): 0.12, ("shapes", "table", "texture"): 0.13}  # fmt: skip


# shapes (measured K=8 x N=256, by the model / from the table): pos_x 0.048 / 0.028, background
# 0.049 / 0.044, size 0.192 / 0.082, aspect 0.461 / 0.210, texture 0.214 / 0.145, intensity 0.117 /
# 0.112 (0.190 / 0.185 before the flat-pair noise estimate; texture 0.662 / 0.622 before the
# stripes' phase was centred on the object); ~1.5x guards
SHAPES_CONSTRAINT_BOUNDS = {"pos_x": 0.09, "background": 0.08, "size": 0.29, "aspect": 0.70, "texture": 0.33,
                            "intensity": 0.18}  # fmt: skip
SHAPES_TABLE_CONSTRAINT_BOUNDS = {"pos_x": 0.06, "background": 0.08, "size": 0.13, "aspect": 0.32, "texture": 0.22,
                                  "intensity": 0.17}  # fmt: skip
BOUNDS = {("synthbrain", "model"): CONSTRAINT_BOUNDS, ("synthbrain", "table"): TABLE_CONSTRAINT_BOUNDS,
          ("shapes", "model"): SHAPES_CONSTRAINT_BOUNDS,
          ("shapes", "table"): SHAPES_TABLE_CONSTRAINT_BOUNDS}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("dataset, free_features, feature",
                         [(d, w, f) for (d, w), bounds in BOUNDS.items() for f in sorted(bounds)])  # fmt: skip
def test_committed_model_meets_the_constraint(dataset, free_features, feature):
    """Probe-measured value vs the asked value (K=4, N=32), against the bounds above."""
    from engine.diffusion.validate import constraint_errors

    bound = BOUNDS[dataset, free_features][feature]
    row = constraint_errors(_only(_committed(dataset), feature), k_values=4, n_per_value=32,
                            free_features=free_features).iloc[0]  # fmt: skip
    assert row["mae_over_sd"] <= bound, row.to_dict()
    assert abs(row["bias_over_sd"]) <= 0.1, row.to_dict()


@pytest.mark.parametrize("dataset", ["synthbrain", "shapes"])
def test_committed_feature_table_is_the_training_rows_inside_the_training_range(dataset):
    """Every stored row encodes without a clamp warning (float32 storage rounds the extremes)."""
    model = _committed(dataset)
    table = model.feature_table
    assert len(table) == model.card["feature_table"]["rows"] == sum(
        n for source, n in model.card["training"]["sources"].items() if "validation" not in source)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FeatureClampWarning)
        model.encode_condition({name: table[name].tolist() for name in table}, len(table))


@pytest.mark.slow
@pytest.mark.parametrize("name, feature", [("shapes-glass-background", "background"), ("shapes-glass-area", "size"),
                                           ("shapes-size-texture", "size"), ("shapes-size-texture", "texture"),
                                           ("shapes-elongated", "aspect")])  # fmt: skip
def test_shapes_diffusion_score_matches_the_data_score(shapes, name, feature):
    """Within the issue's 0.05 of all 3,000 images (measured, K=8 x N=256, free features from the
    table, read-out guidance by default: -0.014, +0.002, -0.013, +0.004, -0.007; unguided the
    elongated model's aspect read -0.056, and texture -0.249 before the stripes' phase was centred
    and the codec's targets unclipped; at N=64 the 95% CI is about +-0.05 wide, too wide for this
    check)."""
    from engine.tvd import explained_variance

    model, card, diffusion, y = _zoo_outputs(name, shapes)
    data = explained_variance(y, shapes.feature_values(feature), n_boot=0).score
    diff, _ = diffusion_score(model, card, diffusion, feature, k_values=8, n_per_value=256, n_boot=0)
    assert abs(diff.score - data) <= 0.05, (data, diff.score)


@committed
@pytest.mark.slow
@pytest.mark.parametrize("dataset, free_features, feature", sorted(GUIDED_BOUNDS))
def test_readout_guidance_tightens_the_constraint(dataset, free_features, feature):
    """Read-out guidance (the optional gradient guidance) beats conditioning alone."""
    from engine.diffusion.validate import constraint_errors

    model = _only(_committed(dataset), feature)
    plain = constraint_errors(model, k_values=4, n_per_value=32, free_features=free_features).iloc[0]
    guided = constraint_errors(model, k_values=4, n_per_value=32, readout_guidance=READOUT_GUIDANCE,
                               free_features=free_features).iloc[0]  # fmt: skip
    assert guided["mae_over_sd"] <= GUIDED_BOUNDS[dataset, free_features, feature], guided.to_dict()
    assert guided["mae_over_sd"] < plain["mae_over_sd"], (plain.to_dict(), guided.to_dict())


def _only(model, feature):
    """A view of the model whose probe list is one feature (for a per-feature check)."""

    class View:
        def __init__(self, m):
            self._m = m
            self.card = dict(m.card, probe_features=[feature])

        def __getattr__(self, name):
            return getattr(self._m, name)

    return View(model)


def _zoo_has(*names):
    from engine.models.zoo import models_dir

    return all((models_dir() / f"{n}.json").is_file() for n in names)


def _zoo_outputs(name: str, dataset):
    """Zoo classifier `name`, its card, the dataset's committed diffusion model and the
    classifier's outputs on every image of `dataset` (skips when either is missing)."""
    if not _zoo_has(name):
        pytest.skip(f"zoo model {name} not built")
    from engine.models.zoo import load_model

    torch.set_num_threads(1)
    model, card = load_model(name)
    diffusion = _committed(dataset.truth["dataset"])
    with torch.inference_mode():
        y = model(dataset.model_inputs(diffusion.spec))[:, 0].numpy()
    return model, card, diffusion, y


@committed
@pytest.mark.slow
@pytest.mark.parametrize("name", ["synthbrain-diagnosis", "synthbrain-shortcut"])
def test_diffusion_score_matches_the_data_score(synthbrain, name):
    """Diffusion (free features from the training table, read-out guidance, K=8 x N=256) vs data-based
    score (400 subjects) for the volumes, within the issue's 0.05 (measured -0.015..+0.045), and the same top
    feature. The misses (age, shortcut contrast: the 400 subjects' chance) are in assets/README.md."""
    from engine.tvd import explained_variance

    model, card, diffusion, y = _zoo_outputs(name, synthbrain)
    scores = {}
    for feature in ("ventricle_volume", "hippocampal_volume", "gm_volume"):
        data = explained_variance(y, synthbrain.feature_values(feature), n_boot=0).score
        diff, table = diffusion_score(model, card, diffusion, feature, k_values=8, n_per_value=256, n_boot=0)
        assert set(table["free_features"]) == {"table"}
        assert abs(diff.score - data) <= 0.05, (feature, data, diff.score)
        scores[feature] = (data, diff.score)
    assert max(scores, key=lambda f: scores[f][0]) == max(scores, key=lambda f: scores[f][1])


# diagnosis x age on 16,000 generator subjects the classifier never saw (assets/README.md); the
# 400-subject score (0.622) sits 2 sd of chance above it
AMPLE_DIAGNOSIS_AGE = 0.538


@committed
@pytest.mark.slow
def test_free_features_from_the_table_carry_the_age_link(synthbrain):
    """Age acts on the image through atrophy: drawn from training subjects of that age, the free
    volumes carry it (measured 0.533); the denoiser's condition dropout loses part (0.466)."""
    model, card, diffusion, _ = _zoo_outputs("synthbrain-diagnosis", synthbrain)
    table, _ = diffusion_score(model, card, diffusion, "age", k_values=8, n_per_value=256, n_boot=0)
    dropout, _ = diffusion_score(model, card, diffusion, "age", k_values=8, n_per_value=256, n_boot=0,
                                 free_features="model")  # fmt: skip
    assert abs(table.score - AMPLE_DIAGNOSIS_AGE) <= 0.05, table.score
    assert table.score > dropout.score, (table.score, dropout.score)


@pytest.mark.slow
def test_cheap_slice_generator_matches_the_full_generator():
    """The extra training subjects (one slice, `synth_slices`) follow `synthbrain.synthesize_subject`:
    same volumes (GM corrected for the stride-2 grid) and the same slice up to the noise."""
    from engine.data import SliceSpec
    from engine.diffusion.synth_slices import check_against_full

    report = check_against_full(SliceSpec("coronal", "hippocampus", 64), n=2)
    for column in ("ventricle_volume", "hippocampal_volume", "gm_volume", "icv"):
        assert report[f"{column}_rel_err"].abs().max() < 0.003, report
    assert report["slice_rms_diff"].max() < 0.035, report
