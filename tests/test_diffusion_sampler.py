"""`engine/diffusion/sampler.py`: `SamplerConfig` (one set of defaults, two presets), seeds, solvers."""

from __future__ import annotations

from dataclasses import FrozenInstanceError

import pytest
from test_diffusion_toys import linked_table, toy_model, with_mlp_readout, with_table

from engine.diffusion import READOUT_GUIDANCE, SamplerConfig, sample_seed
from engine.diffusion.sampler import EXPLORER_STEPS, SAMPLERS, make_scheduler
from engine.errors import EveInputError


def test_the_defaults_are_the_plain_conditional_model():
    config = SamplerConfig()
    assert (config.steps, config.guidance, config.free_features, config.readout_guidance, config.sampler) == (
        20,
        1.0,
        "model",
        0.0,
        "dpm++",
    )
    with pytest.raises(FrozenInstanceError):
        config.steps = 10


def test_the_explorer_preset_is_the_defaults_at_the_sliders_guidance_in_fewer_steps():
    assert SamplerConfig.for_explorer() == SamplerConfig(steps=EXPLORER_STEPS)
    assert SamplerConfig.for_explorer(2.0) == SamplerConfig(guidance=2.0, steps=EXPLORER_STEPS)
    assert EXPLORER_STEPS < SamplerConfig().steps  # the scores' steps


def test_the_score_preset_uses_the_table_and_the_readout_where_the_model_has_them():
    tiny = toy_model()
    assert SamplerConfig.for_scores(tiny) == SamplerConfig()
    assert SamplerConfig.for_scores(with_table(tiny, linked_table())) == SamplerConfig(free_features="table")
    guided = SamplerConfig.for_scores(with_mlp_readout(tiny))
    assert guided == SamplerConfig(readout_guidance=READOUT_GUIDANCE) and guided.guidance == 1.0


def test_description_says_how_the_samples_are_drawn():
    assert SamplerConfig(free_features="table", readout_guidance=100).description == (
        "Other features drawn from the training rows nearest the value, read-out guidance 100; "
        "DPM-Solver++(2M), 20 steps."
    )
    assert SamplerConfig(guidance=2, sampler="ddim", steps=50).description == (
        "Other features left to the denoiser (its condition dropout), no read-out guidance, classifier-free "
        "guidance 2; DDIM, 50 steps."
    )


def test_override_replaces_the_given_fields_and_keeps_those_given_as_none():
    config = SamplerConfig(steps=10, free_features="table")
    assert config.override(steps=None, readout_guidance=5) == SamplerConfig(
        steps=10, free_features="table", readout_guidance=5.0
    )
    with pytest.raises(TypeError):
        config.override(guidance_scale=2.0)


def test_numbers_are_stored_as_their_types():
    config = SamplerConfig(steps=10.0, guidance=2, readout_guidance=100)
    assert type(config.steps) is int and type(config.guidance) is float and type(config.readout_guidance) is float
    assert config.to_json() == {
        "steps": 10,
        "guidance": 2.0,
        "free_features": "model",
        "readout_guidance": 100.0,
        "sampler": "dpm++",
    }


@pytest.mark.parametrize(
    "fields, match",
    [
        ({"steps": 0}, "steps = 0"),
        ({"steps": 1001}, "1 to 1000"),
        ({"guidance": -1.0}, "guidance = -1.0"),
        ({"guidance": float("nan")}, "finite weight"),
        ({"readout_guidance": float("inf")}, "readout_guidance = inf"),
        ({"free_features": "data"}, "free_features = 'data'"),
        ({"sampler": "euler"}, "Unknown sampler 'euler'"),
    ],
)
def test_invalid_options_raise_on_construction(fields, match):
    with pytest.raises(EveInputError, match=match):
        SamplerConfig(**fields)


@pytest.mark.parametrize("kind", SAMPLERS)
def test_every_sampler_is_built_on_the_training_schedule(kind):
    scheduler = make_scheduler(kind)
    assert scheduler.config.num_train_timesteps == 1000 and scheduler.config.prediction_type == "epsilon"
    with pytest.raises(EveInputError, match="Unknown sampler"):
        make_scheduler("euler")


def test_sample_seeds_are_distinct_and_reproducible():
    seeds = [sample_seed(0, i) for i in range(100)]
    assert len(set(seeds)) == 100 and seeds == [sample_seed(0, i) for i in range(100)]
    assert sample_seed(1, 0) != sample_seed(0, 1)
