"""The committed diffusion models (`assets/diffusion/`): speed, self-description, constraint and
scores against the data. Skip when the assets (or the zoo classifiers) are missing; the long
ones are marked `slow`."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import pytest
import torch
from test_diffusion_toys import committed, committed_model

from engine.diffusion import READOUT_GUIDANCE, FeatureClampWarning, SamplerConfig
from engine.scores.generator import constraint_errors, diffusion_score

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_CONDITIONS = {"synthbrain": {"ventricle_volume": 15.0}, "shapes": {"size": 10.0}}


@pytest.mark.parametrize("dataset", ["synthbrain", "shapes"])
def test_committed_model_same_seed_identical_and_fast(dataset):
    """The issue's budget: 8 samples at 64x64 in under 2 s on this CPU (measured in the benchmark;
    asserted here only as a gross-regression guard)."""
    torch.set_num_threads(1)
    model = committed_model(dataset)
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


@pytest.mark.parametrize(
    "dataset, plane, features",
    [
        ("synthbrain", "coronal", {"ventricle_volume", "hippocampal_volume", "icv", "age", "sex"}),
        ("shapes", "axial", {"size", "aspect", "intensity", "pos_x", "pos_y", "texture", "background"}),
    ],
)
def test_committed_model_describes_itself(dataset, plane, features):
    model = committed_model(dataset)
    assert model.dataset == dataset and model.spec.plane == plane
    assert features <= set(model.features)
    card = model.card
    for key in ("wall_time_seconds", "final_loss", "sources"):
        assert key in card.training
    assert card.command.startswith(f"python -m engine train-diffusion {dataset}")
    assert model.probe is not None and model.readout is not None and model.table is not None


@pytest.mark.parametrize("dataset", ["synthbrain", "shapes"])
def test_committed_feature_table_is_the_training_rows_inside_the_training_range(dataset):
    """Every stored row encodes without a clamp warning (float32 storage rounds the extremes)."""
    model = committed_model(dataset)
    table = model.feature_table
    assert (
        len(table)
        == model.card.feature_table["rows"]
        == sum(n for source, n in model.card.training["sources"].items() if "validation" not in source)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", FeatureClampWarning)
        model.conditions.encode({name: table[name].tolist() for name in table}, len(table))


# measured constraint error (probe MAE / SD, K=8 x N=256; the probe's own held-out error is
# part of it), one feature asked and the others free by the model / drawn from the training
# table (joint condition): ventricle 0.071 / 0.063, icv 0.043 / 0.033, noise_sd 0.040 / 0.042,
# gm 0.104 / 0.072, hippocampal 0.138 / 0.106 (0.110 with read-out guidance). These bounds, ~1.5x
# the measurements (K=4 x N=32 here is noisier), guard against regressions.
CONSTRAINT_BOUNDS = {
    "icv": 0.07,
    "noise_sd": 0.09,
    "ventricle_volume": 0.11,
    "gm_volume": 0.17,
    "hippocampal_volume": 0.26,
}
TABLE_CONSTRAINT_BOUNDS = {
    "icv": 0.06,
    "noise_sd": 0.07,
    "ventricle_volume": 0.10,
    "gm_volume": 0.11,
    "hippocampal_volume": 0.16,
}
# read-out guidance (strength 100), K=8 x N=256: SynthBrain by the model ventricle 0.052, GM 0.068;
# from the table (the score's default) hippocampal 0.093 (0.106 unguided); shapes from the table
# (the MLP read-out) aspect 0.070, intensity 0.081, texture 0.089 (0.210, 0.112, 0.145 unguided)
GUIDED_BOUNDS = {
    ("synthbrain", "model", "ventricle_volume"): 0.09,
    ("synthbrain", "model", "gm_volume"): 0.10,
    ("synthbrain", "table", "hippocampal_volume"): 0.14,
    ("shapes", "table", "aspect"): 0.11,
    ("shapes", "table", "intensity"): 0.12,
    ("shapes", "table", "texture"): 0.13,
}


# shapes (measured K=8 x N=256, by the model / from the table): pos_x 0.048 / 0.028, background
# 0.049 / 0.044, size 0.192 / 0.082, aspect 0.461 / 0.210, texture 0.214 / 0.145, intensity 0.117 /
# 0.112 (0.190 / 0.185 before the flat-pair noise estimate; texture 0.662 / 0.622 before the
# stripes' phase was centred on the object); ~1.5x guards
SHAPES_CONSTRAINT_BOUNDS = {
    "pos_x": 0.09,
    "background": 0.08,
    "size": 0.29,
    "aspect": 0.70,
    "texture": 0.33,
    "intensity": 0.18,
}
SHAPES_TABLE_CONSTRAINT_BOUNDS = {
    "pos_x": 0.06,
    "background": 0.08,
    "size": 0.13,
    "aspect": 0.32,
    "texture": 0.22,
    "intensity": 0.17,
}
BOUNDS = {
    ("synthbrain", "model"): CONSTRAINT_BOUNDS,
    ("synthbrain", "table"): TABLE_CONSTRAINT_BOUNDS,
    ("shapes", "model"): SHAPES_CONSTRAINT_BOUNDS,
    ("shapes", "table"): SHAPES_TABLE_CONSTRAINT_BOUNDS,
}


@pytest.mark.slow
@pytest.mark.parametrize(
    "dataset, free_features, feature", [(d, w, f) for (d, w), bounds in BOUNDS.items() for f in sorted(bounds)]
)
def test_committed_model_meets_the_constraint(dataset, free_features, feature):
    """Probe-measured value vs the asked value (K=4, N=32), against the bounds above."""
    bound = BOUNDS[dataset, free_features][feature]
    row = constraint_errors(
        committed_model(dataset),
        k_values=4,
        n_per_value=32,
        sampler=SamplerConfig(free_features=free_features),
        features=[feature],
    ).iloc[0]
    assert row["mae_over_sd"] <= bound, row.to_dict()
    assert abs(row["bias_over_sd"]) <= 0.1, row.to_dict()


@committed
@pytest.mark.slow
@pytest.mark.parametrize("dataset, free_features, feature", sorted(GUIDED_BOUNDS))
def test_readout_guidance_tightens_the_constraint(dataset, free_features, feature):
    """Read-out guidance (the optional gradient guidance) beats conditioning alone."""
    model, plain = committed_model(dataset), SamplerConfig(free_features=free_features)
    unguided = constraint_errors(model, k_values=4, n_per_value=32, sampler=plain, features=[feature]).iloc[0]
    guided = constraint_errors(
        model, k_values=4, n_per_value=32, features=[feature], sampler=plain.override(readout_guidance=READOUT_GUIDANCE)
    ).iloc[0]
    assert guided["mae_over_sd"] <= GUIDED_BOUNDS[dataset, free_features, feature], guided.to_dict()
    assert guided["mae_over_sd"] < unguided["mae_over_sd"], (unguided.to_dict(), guided.to_dict())


def _zoo_has(*names):
    from engine.models.zoo import models_dir

    return all((models_dir() / f"{n}.json").is_file() for n in names)


def _zoo_outputs(name: str, dataset):
    """Zoo classifier `name`, its card, the dataset's committed diffusion model and the
    classifier's outputs on every image of `dataset` (fails when either is missing: they are committed)."""
    if not _zoo_has(name):
        pytest.fail(f"zoo model {name} is missing from assets/models/: rebuild it (train-classifier {name})")
    from engine.models.zoo import load_model

    torch.set_num_threads(1)
    model, card = load_model(name)
    diffusion = committed_model(dataset.truth["dataset"])
    with torch.inference_mode():
        y = model(dataset.model_inputs(diffusion.spec))[:, 0].numpy()
    return model, card, diffusion, y


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, feature",
    [
        ("shapes-glass-background", "background"),
        ("shapes-glass-area", "size"),
        ("shapes-size-texture", "size"),
        ("shapes-size-texture", "texture"),
        ("shapes-elongated", "aspect"),
    ],
)
def test_shapes_diffusion_score_matches_the_data_score(shapes, name, feature):
    """Within the issue's 0.05 of all 3,000 images (measured, K=8 x N=256, free features from the
    table, read-out guidance by default: -0.014, +0.002, -0.013, +0.004, -0.007; unguided the
    elongated model's aspect read -0.056, and texture -0.249 before the stripes' phase was centred
    and the codec's targets unclipped; at N=64 the 95% CI is about +-0.05 wide, too wide for this
    check)."""
    from engine.scores.tvd import explained_variance

    model, card, diffusion, y = _zoo_outputs(name, shapes)
    data = explained_variance(y, shapes.feature_values(feature), n_boot=0).score
    diff, _ = diffusion_score(model, card, diffusion, feature, k_values=8, n_per_value=256, n_boot=0)
    assert abs(diff.score - data) <= 0.05, (data, diff.score)


@committed
@pytest.mark.slow
@pytest.mark.parametrize("name", ["synthbrain-diagnosis", "synthbrain-shortcut"])
def test_diffusion_score_matches_the_data_score(synthbrain, name):
    """Diffusion (free features from the training table, read-out guidance, K=8 x N=256) vs the data-based
    score (400 subjects) for the volumes: inside the data path's 95% interval, within the issue's 0.05 of the
    16,000-subject reference (assets/diffusion/synthbrain-validation.json), and the same top feature. (The
    plain |diffusion - data| <= 0.05 this test asked before the data path's local-linear estimator measured
    0.054 for diagnosis x gm_volume: data 0.141 [its 400 subjects' chance; 0.150 by the binned estimator],
    diffusion 0.195, reference 0.181.)"""
    import json

    from engine.scores.tvd import explained_variance

    rows = json.loads((ROOT / "assets" / "diffusion" / "synthbrain-validation.json").read_text())["scores"]
    reference = {r["feature"]: r["generator_ref"] for r in rows if r["model"] == name}
    model, card, diffusion, y = _zoo_outputs(name, synthbrain)
    scores = {}
    for feature in ("ventricle_volume", "hippocampal_volume", "gm_volume"):
        data = explained_variance(y, synthbrain.feature_values(feature), n_boot=200)
        diff, table = diffusion_score(model, card, diffusion, feature, k_values=8, n_per_value=256, n_boot=0)
        assert set(table["free_features"]) == {"table"}
        assert data.ci_low <= diff.score <= data.ci_high, (feature, data, diff.score)
        assert abs(diff.score - reference[feature]) <= 0.05, (feature, reference[feature], diff.score)
        scores[feature] = (data.score, diff.score)
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
    dropout, _ = diffusion_score(
        model, card, diffusion, "age", k_values=8, n_per_value=256, n_boot=0, free_features="model"
    )
    assert abs(table.score - AMPLE_DIAGNOSIS_AGE) <= 0.05, table.score
    assert table.score > dropout.score, (table.score, dropout.score)
