"""Generators trained on a user's cohort alone: the linear-Gaussian floor against its analytic
conditional, the bootstrap interval, the cohort trainer's refusals, atomic saving, the CLI.

The cohort is a user-style folder of 2D images (16 x 16, float32) whose brightness is a known
function of two features: x = 0.2 + 0.3 a + 0.2 b + noise in a central block, with a ~ U(0, 1),
b ~ U(0, 1) and a categorical `site` that changes nothing.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from engine.cards import ModelCard
from engine.cli.main import main
from engine.data import SliceSpec, load_dataset
from engine.diffusion import SamplerConfig, load_diffusion
from engine.diffusion.cohort import MIN_SUBJECTS, CohortRecipe, check_cohort, save_cohort_model, train_on_cohort
from engine.diffusion.gaussian import LatentGaussian
from engine.errors import EveInputError
from engine.scores.generator import diffusion_score, generator_bootstrap_score

SIZE, N = 16, 120
SPEC = SliceSpec("axial", None, SIZE, "raw")


def _write_cohort(folder, n=N, seed=0, **constant):
    rng = np.random.default_rng(seed)
    table = pd.DataFrame({"a": rng.uniform(0, 1, n), "b": rng.uniform(0, 1, n), "site": rng.choice(["X", "Y"], n)})
    for name, value in constant.items():
        table[name] = value
    files = []
    for i, row in table.iterrows():
        image = np.zeros((SIZE, SIZE), np.float32)
        image[4:12, 4:12] = 0.2 + 0.3 * row["a"] + 0.2 * row["b"] + 0.02 * rng.standard_normal((8, 8))
        nib.save(nib.Nifti1Image(image[:, :, None], np.eye(4)), folder / f"s{i:03d}.nii.gz")
        files.append(f"s{i:03d}.nii.gz")
    table.insert(0, "file", files)
    table.to_csv(folder / "features.csv", index=False)
    return load_dataset(folder)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return _write_cohort(tmp_path_factory.mktemp("scarce"))


class BlockMean(nn.Module):
    def forward(self, x):
        return x[:, 0, 4:12, 4:12].mean(dim=(1, 2))[:, None]


def _card() -> ModelCard:
    return ModelCard(name="block-mean", kind="glass-box", spec=SPEC, output_names=("mean",), dataset=None)


# 1. the linear-Gaussian model is the exact Gaussian conditional ---------------------------------


def test_the_gaussian_conditional_matches_the_regression_it_was_fitted_on():
    g = torch.Generator().manual_seed(0)
    c = torch.randn(20_000, 2, generator=g)
    weights = torch.tensor([[1.0, -0.5], [0.0, 2.0], [0.3, 0.3]])  # z (3) from c (2)
    z = c @ weights.T + 0.1 * torch.randn(20_000, 3, generator=g)
    model = LatentGaussian.fit(c, z)
    asked = torch.tensor([[0.5, -1.0]]).repeat(5000, 1)
    draws = model.sample(asked, torch.ones(5000, 2), torch.randn(5000, 3, generator=g))
    torch.testing.assert_close(draws.mean(0), (asked[0] @ weights.T), atol=0.01, rtol=0)
    assert draws.std(0).sub(0.1).abs().max() < 0.01
    # with only c_0 asked, c_1 is marginalised: z_1 = 2 c_1 + noise has its full spread
    only_first = model.sample(asked, torch.tensor([[1.0, 0.0]]).repeat(5000, 1), torch.randn(5000, 3, generator=g))
    assert only_first[:, 1].std() == pytest.approx((4 + 0.01) ** 0.5, rel=0.05)


def test_a_bootstrap_refit_resamples_subjects_and_keeps_the_shape():
    c, z = torch.randn(50, 2), torch.randn(50, 3)
    model = LatentGaussian.fit(c, z)
    refit, index = model.bootstrap(seed=1)
    assert refit.rows.shape == model.rows.shape and len(torch.unique(index)) < 50
    assert not torch.allclose(refit.covariance, model.covariance)
    assert torch.equal(model.bootstrap(seed=1)[1], index)  # seeded


# 2. the cohort trainer ----------------------------------------------------------------------------


def test_a_gaussian_generator_from_the_cohort_alone_scores_near_the_data(cohort, tmp_path):
    generator = train_on_cohort(cohort, SPEC, features=["a", "b", "site"], recipe=CohortRecipe(kind="linear-gaussian"))
    training = generator.card.training
    assert len(training["rows_trained"]) + len(training["rows_held_out"]) == N
    assert not set(training["rows_trained"]) & set(training["rows_held_out"])
    assert training["dataset_fingerprint"] and training["wall_time_seconds"] >= 0
    path = save_cohort_model(generator, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name, path.with_suffix(".safetensors").name]
    loaded = load_diffusion(path)
    images = loaded.sample({"a": 0.9}, 64, 0, SamplerConfig.for_scores(loaded))
    assert images.shape == (64, 1, SIZE, SIZE)
    bright = loaded.sample({"a": 0.1}, 64, 0, SamplerConfig.for_scores(loaded))
    assert images[:, 0, 4:12, 4:12].mean() > bright[:, 0, 4:12, 4:12].mean() + 0.15  # 0.3 x (0.9 - 0.1) = 0.24
    model, card = BlockMean().eval(), _card()
    sampler = SamplerConfig.for_scores(loaded)
    plain, _ = diffusion_score(model, card, loaded, "a", k_values=6, n_per_value=16, sampler=sampler)
    honest, _ = generator_bootstrap_score(
        model, card, loaded, "a", k_values=6, n_per_value=16, replicates=12, sampler=sampler
    )
    truth = 0.09 / (0.09 + 0.04)  # Var(0.3 a) / (Var(0.3 a) + Var(0.2 b)), the noise averaged out
    assert honest.score == plain.score and abs(honest.score - truth) < 0.12
    # the interval is the spread of refitted, resampled generators' scores: around the point, near the truth
    assert honest.ci_low < honest.score < honest.ci_high and honest.ci_high - honest.ci_low > 0.02
    assert honest.ci_low - 0.05 <= truth <= honest.ci_high + 0.05
    assert "bootstrap resamples of the" in honest.message


@pytest.mark.parametrize(
    "constant, features, message",
    [
        ({"flat": 3.0}, ["a", "flat"], "'flat' is constant"),
        ({"scanner": "S1"}, ["a", "scanner"], "'scanner' has one level"),
    ],
)
def test_what_the_recipe_cannot_learn_is_refused_before_training(tmp_path, constant, features, message):
    dataset = _write_cohort(tmp_path, n=MIN_SUBJECTS, **constant)
    with pytest.raises(EveInputError, match=message):
        check_cohort(dataset, SPEC, features, np.arange(len(dataset)))


def test_too_few_subjects_and_a_volume_input_are_refused(cohort):
    with pytest.raises(EveInputError, match=f"at least {MIN_SUBJECTS}"):
        check_cohort(cohort, SPEC, ["a"], np.arange(MIN_SUBJECTS - 1))
    with pytest.raises(EveInputError, match="whole volume"):
        check_cohort(cohort, SliceSpec(size=16, input="volume"), ["a"], np.arange(N))


def test_a_failed_save_leaves_no_half_written_card(cohort, tmp_path, monkeypatch):
    generator = train_on_cohort(cohort, SPEC, features=["a"], recipe=CohortRecipe(kind="linear-gaussian"))
    import safetensors.torch

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", broken)
    with pytest.raises(OSError):
        save_cohort_model(generator, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_the_cli_trains_a_diffusion_model_on_a_folder_and_the_score_command_uses_it(cohort, tmp_path, capsys):
    out = tmp_path / "generators"
    argv = ["train-diffusion", "--data", str(cohort.root), "--features", "a,b", "--size", str(SIZE)]
    assert main([*argv, "--intensity", "raw", "--steps", "40", "--out", str(out)]) == 0
    card = json.loads((out / f"{cohort.name}-diffusion.json").read_text())
    # a user model's default contract: the middle slice of the stored arrays, raw (`engine.cards.USER_DEFAULT`)
    assert card["spec"] == {"plane": "axial", "index": None, "size": SIZE, "intensity": "raw", "orientation": "stored"}
    assert card["training"]["steps_run"] <= 40 and card["training"]["recipe"]["kind"] == "diffusion"
    assert "wrote" in capsys.readouterr().out
    model = tmp_path / "block_mean.pt"
    torch.jit.save(torch.jit.script(BlockMean().eval()), str(model))
    report = tmp_path / "r.json"
    score = ["score", "--data", str(cohort.root), "--model", str(model), "--size", str(SIZE), "--features", "a"]
    diffusion = ["--method", "diffusion", "--diffusion", str(out / f"{cohort.name}-diffusion.json")]
    small = ["--k-values", "4", "--n-per-value", "8", "--out", str(report)]
    assert main([*score, *diffusion, "--generator-only", *small]) == 0
    assert json.loads(report.read_text())["method"] == "diffusion"
    # debiasing by the same images would need twins of images this diffusion generator learnt: refused with the fix
    assert main([*score, *diffusion, "--split", "all", *small]) == 2
    assert "--folds 5" in capsys.readouterr().err
    assert main(["train-diffusion", "synthbrain", "--data", str(cohort.root)]) == 2
    assert "not both" in capsys.readouterr().err
