"""`engine/diffusion/pipeline.py`: sampling p(x | condition), read-out guidance, the feature probe."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from test_diffusion_toys import SIZE, linked_table, toy_card, with_mlp_readout, with_readout

from engine.diffusion import ConditionalDiffusion, SamplerConfig
from engine.diffusion.conditions import FeatureSchema, FeatureTable
from engine.errors import EveInputError

# --- construction -----------------------------------------------------------------------------


def test_every_part_is_given_at_construction(tiny):
    """A model built from a card alone has no read-out, probe or table, and says so."""
    assert tiny.readout is None and tiny.probe is None and tiny.table is None and tiny.feature_table is None
    assert tiny.readout_guidable.tolist() == [0.0, 0.0]
    with pytest.raises(EveInputError, match="no feature probe"):
        tiny.measure_features(torch.zeros(1, 1, SIZE, SIZE))


def test_a_feature_table_of_another_schema_is_refused(tiny):
    other = FeatureSchema("other", toy_card().features)
    with pytest.raises(ValueError, match="schema"):
        ConditionalDiffusion(tiny.codec, tiny.denoiser, tiny.card, table=FeatureTable.from_frame(other, linked_table()))


def test_the_model_describes_itself_from_its_card(tiny):
    assert tiny.dataset == "toy" and tiny.spec.size == SIZE and tiny.features == ["size", "brightness", "sex"]
    assert tiny.numeric_features == ["size", "brightness"] and tiny.card.probe_features == ()


# --- sampling -----------------------------------------------------------------------------------


def test_sample_shape_and_range(tiny):
    x = tiny.sample({"size": 0.5}, 3, 0, SamplerConfig(steps=4))
    assert x.shape == (3, 1, SIZE, SIZE)
    assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1


def test_sample_same_seed_gives_identical_images(tiny):
    a = tiny.sample({"size": 0.5, "sex": "M"}, 4, 7, SamplerConfig(steps=5))
    b = tiny.sample({"size": 0.5, "sex": "M"}, 4, 7, SamplerConfig(steps=5))
    assert torch.equal(a, b)


def test_sample_different_seeds_differ(tiny):
    a = tiny.sample({"size": 0.5}, 2, 1, SamplerConfig(steps=4))
    b = tiny.sample({"size": 0.5}, 2, 2, SamplerConfig(steps=4))
    assert not torch.allclose(a, b)


def test_sample_seed_of_each_sample_does_not_depend_on_batch(tiny):
    whole = tiny.sample({}, 4, 3, SamplerConfig(steps=4))
    tail = tiny.sample({}, 2, 3, SamplerConfig(steps=4), first_index=2)
    torch.testing.assert_close(whole[2:], tail, atol=1e-5, rtol=0)


def test_shared_noise_with_one_condition_repeats_one_subject(tiny):
    x = tiny.sample({"brightness": 0.0}, 3, 5, SamplerConfig(steps=4), shared_noise=True)
    torch.testing.assert_close(x[0], x[2], atol=1e-5, rtol=0)


def test_fixed_noise_sweep_changes_smoothly(tiny):
    """Same seed at nearby values: a small change (the slider's morphing)."""
    config = SamplerConfig(steps=6)
    a = tiny.sample({"size": 0.0}, 1, 4, config)
    b = tiny.sample({"size": 0.01}, 1, 4, config)
    c = tiny.sample({"size": 0.0}, 1, 5, config)
    assert (a - b).abs().mean() < 0.2 * (a - c).abs().mean()


def test_guidance_one_is_the_plain_conditional(tiny):
    a = tiny.sample({"size": 1.0}, 2, 0, SamplerConfig(steps=4, guidance=1.0))
    z_plain, _ = tiny.sample_latents({"size": 1.0}, 2, 0, SamplerConfig(steps=4))
    torch.testing.assert_close(a, tiny.codec.decode(z_plain, tiny.initial_noise(2, 0)[1]))


def test_guidance_changes_the_conditional_samples_only(tiny):
    config = SamplerConfig(steps=4, guidance=3.0)
    assert not torch.allclose(tiny.sample({"size": 1.0}, 2, 0, config), tiny.sample({"size": 1.0}, 2, 0))
    torch.testing.assert_close(tiny.sample({}, 2, 0, config), tiny.sample({}, 2, 0, SamplerConfig(steps=4)))


def test_sweep_values_one_per_sample(tiny):
    x = tiny.sample({"size": [-1.0, 0.0, 1.0]}, 3, 0, SamplerConfig(steps=3), shared_noise=True)
    assert x.shape[0] == 3


def test_keyword_options_are_shorthand_for_the_config(tiny):
    """`sample(..., steps=5, guidance=2)` is `sample(..., SamplerConfig(steps=5, guidance=2))`; a
    keyword given as None keeps the config's value."""
    config = SamplerConfig(steps=5, guidance=2.0)
    expected = tiny.sample({"size": 0.5}, 2, 1, config)
    assert torch.equal(tiny.sample({"size": 0.5}, 2, seed=1, steps=5, guidance=2.0), expected)
    assert torch.equal(tiny.sample({"size": 0.5}, 2, 1, SamplerConfig(steps=9), steps=5, guidance=2.0), expected)
    assert torch.equal(tiny.sample({"size": 0.5}, 2, 1, config, steps=None), expected)
    with pytest.raises(TypeError, match="SamplerConfig"):
        tiny.sample({"size": 0.5}, 2, 1, 20)  # the old positional `steps`


@pytest.mark.parametrize(
    "kw",
    [
        {"n": 0},
        {"steps": 0},
        {"guidance": float("inf")},
        {"sampler": "euler"},
        {"readout_guidance": -1.0},
        {"free_features": "data"},
    ],
)
def test_bad_sampling_arguments_raise(tiny, kw):
    args = {"n": 2, "steps": 2} | kw
    with pytest.raises(EveInputError):
        tiny.sample({}, **args)


# --- free features from the training table ------------------------------------------------------


def test_table_sampling_is_seeded_and_samples_the_joint_condition(tabled):
    table_way = SamplerConfig(steps=3, free_features="table")
    a = tabled.sample({"size": 0.5}, 3, 4, table_way)
    assert torch.equal(a, tabled.sample({"size": 0.5}, 3, 4, table_way))
    joint = tabled.table.complete({"size": 0.5}, 3, seed=4)  # what "table" samples from
    assert torch.equal(a, tabled.sample(joint, 3, 4, SamplerConfig(steps=3)))


def test_table_way_errors_are_clear(tiny, tabled):
    with pytest.raises(EveInputError, match="no training feature table.*free_features='model'"):
        tiny.sample({"size": 0.0}, 2, 0, SamplerConfig(steps=2, free_features="table"))
    with pytest.raises(EveInputError, match="free_features = 'data'"):
        tabled.sample({"size": 0.0}, 2, 0, steps=2, free_features="data")


# --- read-out guidance --------------------------------------------------------------------------


def test_readout_guidance_pulls_the_readout_to_the_asked_value(tiny):
    """Closed-form read-out guidance: the read-out of guided samples sits at the asked value
    (read-out noise 1 / strength), far closer than without guidance."""
    model = with_readout(tiny)
    target = 1.2  # standardised (mean 0, sd 1)

    def readout_error(strength):
        z, _ = model.sample_latents({"size": target}, 64, 0, SamplerConfig(steps=10, readout_guidance=strength))
        return (model.readout(z)[:, 0] - target).abs().mean().item()

    free, guided = readout_error(0.0), readout_error(400.0)
    assert guided < 0.1 < free, (free, guided)


def test_readout_guidance_skips_features_the_readout_reads_poorly(tiny):
    """brightness' read-out error (0.5 SD) is over the limit: guiding on it is a no-op."""
    model = with_readout(tiny)
    assert model.readout_guidable.tolist() == [1.0, 0.0]
    torch.testing.assert_close(
        model.sample({"brightness": 1.0}, 3, 2, SamplerConfig(steps=5, readout_guidance=100.0)),
        model.sample({"brightness": 1.0}, 3, 2, SamplerConfig(steps=5)),
    )


def test_readout_guidance_leaves_unconditioned_samples_alone(tiny):
    model = with_readout(tiny)
    torch.testing.assert_close(
        model.sample({}, 3, 2, SamplerConfig(steps=5, readout_guidance=100.0)),
        model.sample({}, 3, 2, SamplerConfig(steps=5)),
    )


def test_readout_guidance_needs_a_readout_and_a_valid_strength(tiny):
    with pytest.raises(EveInputError, match="no feature read-out"):
        tiny.sample({"size": 0.0}, 1, readout_guidance=10.0)
    with pytest.raises(EveInputError, match="readout_guidance"):
        tiny.sample({"size": 0.0}, 1, readout_guidance=-1.0)


def test_mlp_readout_guidance_pulls_the_readout_to_the_asked_value(tiny):
    """Guidance through the Jacobian of a nonlinear read-out, both features asked at once."""
    model = with_mlp_readout(tiny)
    with torch.no_grad():
        reachable = model.readout(torch.randn(1, model.codec.latent_dim, generator=torch.Generator().manual_seed(1)))
    target = {"size": float(reachable[0, 0]), "brightness": float(reachable[0, 1])}  # standardised

    def readout_error(strength):
        z, _ = model.sample_latents(target, 64, 0, SamplerConfig(steps=10, readout_guidance=strength))
        return (model.readout(z) - reachable).abs().mean().item()

    free, guided = readout_error(0.0), readout_error(400.0)
    assert guided < 0.3 * free, (free, guided)


# --- the feature probe --------------------------------------------------------------------------


class _MeanProbe(torch.nn.Module):
    """Reads both numeric features as the image mean (standardised units)."""

    def forward(self, images):
        return images.mean((1, 2, 3))[:, None].expand(-1, 2)


def test_measure_features_undoes_the_standardisation(tiny):
    features = tuple(f if f.is_categorical else replace(f, mean=10.0, sd=2.0) for f in tiny.card.features)
    card = replace(tiny.card, features=features, probe_features=("brightness", "size"))
    model = ConditionalDiffusion(tiny.codec, tiny.denoiser, card, probe=_MeanProbe())
    measured = model.measure_features(torch.full((2, 1, SIZE, SIZE), 0.25))
    assert list(measured) == ["brightness", "size"]
    assert measured["size"].tolist() == [10.5, 10.5]
    with pytest.raises(EveInputError, match="the probe reads"):
        model.measure_features(torch.zeros(2, SIZE, SIZE))
