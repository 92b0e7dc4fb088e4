"""`engine/scores/generator.py`: the feature values, compatibility, the score and its estimators."""

from __future__ import annotations

import numpy as np
import pytest
from test_diffusion_toys import (
    SIZE,
    classifier,
    classifier_card,
    with_mlp_readout,
)

from engine.data.slicing import SliceSpec
from engine.diffusion import READOUT_GUIDANCE, SamplerConfig
from engine.errors import EveInputError
from engine.scores.generator import (
    block_score_stats,
    check_compatible,
    constraint_errors,
    diffusion_score,
    feature_values,
    quantile_bin_means,
)


@pytest.mark.parametrize("k_values", [2, 3, 8, 16])
def test_feature_values_are_the_means_of_equal_mass_bins(k_values):
    """Quantile function Q(u) = u^2 on [0, 1] (101 percentiles): bin k's mean is
    K ((k+1)^3 - k^3) / (3 K^3) (up to the linear interpolation between percentiles)."""
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
    with pytest.raises(EveInputError, match="at least 2 feature values"):
        feature_values(tiny, "size", 1)


def test_score_needs_the_same_slice_not_the_same_training_dataset(tiny):
    card = classifier_card
    # a zoo model scored on another cohort through that cohort's generator: the score describes the model there
    result, _ = diffusion_score(classifier(), card("synthbrain"), tiny, "size", k_values=3, n_per_value=4)
    assert result.ok
    with pytest.raises(EveInputError, match="sees the coronal slice.*generates the axial slice"):
        check_compatible(classifier_card(spec=SliceSpec("coronal", None, SIZE)), tiny)
    with pytest.raises(EveInputError, match="takes whole volumes.*method data"):
        check_compatible(classifier_card(spec=SliceSpec(size=SIZE, input="volume")), tiny)
    check_compatible(card(), tiny)  # the same dataset and slice


def test_score_unknown_feature_and_output(tiny):
    card = classifier_card
    with pytest.raises(EveInputError, match="Unknown feature 'age'"):
        diffusion_score(classifier(), card(), tiny, "age")
    with pytest.raises(EveInputError, match="Unknown output"):
        diffusion_score(classifier(), card(), tiny, "size", output="logit")
    with pytest.raises(EveInputError, match="at least 2 samples"):
        diffusion_score(classifier(), card(), tiny, "size", n_per_value=1)


def test_score_draws_free_features_from_the_table_when_the_model_has_one(tiny, tabled):
    clf, card = classifier(), classifier_card()
    _, with_table_ = diffusion_score(clf, card, tabled, "size", k_values=2, n_per_value=3, steps=2, n_boot=0)
    _, without = diffusion_score(clf, card, tiny, "size", k_values=2, n_per_value=3, steps=2, n_boot=0)
    _, asked = diffusion_score(
        clf,
        card,
        tabled,
        "size",
        k_values=2,
        n_per_value=3,
        n_boot=0,
        sampler=SamplerConfig(steps=2, free_features="model"),
    )
    _, shorthand = diffusion_score(
        clf,
        card,
        tabled,
        "size",
        k_values=2,
        n_per_value=3,
        steps=2,
        n_boot=0,
        free_features="model",
        readout_guidance=None,
    )
    assert set(with_table_["free_features"]) == {"table"} and set(without["free_features"]) == {"model"}
    np.testing.assert_allclose(asked["mean"], without["mean"])
    np.testing.assert_array_equal(shorthand["mean"], asked["mean"])


def test_score_guides_by_the_readout_when_the_model_has_one(tiny):
    clf, card = classifier(), classifier_card()
    guided = with_mlp_readout(tiny)
    off = SamplerConfig.for_scores(guided).override(readout_guidance=0.0, steps=3)
    runs = {
        name: diffusion_score(clf, card, model, "size", k_values=2, n_per_value=3, n_boot=0, **kw)[1]
        for name, model, kw in [
            ("plain", tiny, {"steps": 3}),
            ("default", guided, {"steps": 3}),
            ("off", guided, {"sampler": off}),
        ]
    }
    assert set(runs["plain"]["readout_guidance"]) == {0.0} and set(runs["off"]["readout_guidance"]) == {0.0}
    assert set(runs["default"]["readout_guidance"]) == {READOUT_GUIDANCE}
    np.testing.assert_allclose(runs["off"]["mean"], runs["plain"]["mean"])
    assert not np.allclose(runs["default"]["mean"], runs["plain"]["mean"])


def test_score_refuses_classifier_free_guidance(tiny):
    with pytest.raises(EveInputError, match="guidance = 2.*inflates"):
        diffusion_score(classifier(), classifier_card(), tiny, "size", sampler=SamplerConfig(guidance=2.0))


def test_score_runs_with_progress_and_independent_seeds(tiny):
    calls = []
    result, table = diffusion_score(
        classifier(),
        classifier_card(),
        tiny,
        "size",
        k_values=3,
        n_per_value=4,
        steps=3,
        progress=lambda i, n: calls.append((i, n)),
    )
    assert calls == [(1, 3), (2, 3), (3, 3)]
    assert result.ok and result.n == 12 and 0 <= result.score <= 1
    assert table["seed"].nunique() == 3 and list(table["n"]) == [4, 4, 4]


def test_shared_seeds_use_the_block_estimate(tiny):
    result, table = diffusion_score(
        classifier(), classifier_card(), tiny, "size", k_values=3, n_per_value=4, steps=2, shared_seeds=True
    )
    assert table["seed"].nunique() == 1 and np.isnan(result.ci_low) and "randomized-block" in result.message


def test_a_batch_split_does_not_change_the_score(tiny):
    clf = classifier()
    one, _ = diffusion_score(clf, classifier_card(), tiny, "size", k_values=2, n_per_value=5, steps=2, n_boot=0)
    split, _ = diffusion_score(
        clf, classifier_card(), tiny, "size", k_values=2, n_per_value=5, steps=2, n_boot=0, batch_size=2
    )
    assert split.score == pytest.approx(one.score, abs=1e-5)  # the same seeds; batched float sums differ


def test_block_estimate_removes_subject_effects():
    """y_ki = mu_k + b_i + e_ki: the explained variance is Var(mu) whatever the subject spread."""
    rng = np.random.default_rng(0)
    mu = np.array([0.0, 1.0, 2.0, 3.0])
    y = mu[:, None] + rng.normal(0, 3, 400)[None, :] + rng.normal(0, 0.1, (4, 400))
    stats = block_score_stats(y, np.full(4, 0.25))
    assert stats["explained_var"] == pytest.approx(mu.var(), rel=0.02)
    assert stats["score"] == pytest.approx(mu.var() / (mu.var() + 9.01), abs=0.03)


def test_constraint_errors_need_a_probe(tiny):
    assert constraint_errors(tiny, k_values=2, n_per_value=2).empty  # no probed features
    with pytest.raises(EveInputError, match="no feature probe"):
        constraint_errors(tiny, k_values=2, n_per_value=2, features=["size"])
