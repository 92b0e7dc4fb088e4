"""Generator scores debiased by the real subjects (`engine.scores.debias`): the interval covers the truth over
replicates where the generator-only one does not, lambda spans the data path and the plain debiased
estimate, twins of a real cohort are drawn from a real generator, and bad input is refused with the fix."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from engine.errors import EveInputError
from engine.scores.debias import MIN_REAL, cross_fitted_draws, debiased_score, draw, twin_conditions
from engine.scores.tvd import explained_variance


def _world(rng, n):
    """Two correlated features; the output's mean m(a, b) = tanh(1.5 a) + 0.5 b."""
    a = rng.standard_normal(n)
    b = 0.6 * a + 0.8 * rng.standard_normal(n)
    return a, b, np.tanh(1.5 * a) + 0.5 * b


SIGMA, BIAS = 0.11, 0.05  # outputs 99% explained by the features; the generator's mean off by 0.05 per SD of A


def _truth() -> float:
    rng = np.random.default_rng(123)
    a, _, mean = _world(rng, 400_000)
    return float(np.var(np.tanh(1.5 * a) + 0.3 * a) / (np.var(mean) + SIGMA**2))


def _replicate(rng, n=100, m=500):
    a, _, mean = _world(rng, n)
    y = mean + SIGMA * rng.standard_normal(n)
    twin = mean + BIAS * a + SIGMA * rng.standard_normal(n)  # the twin shares the subject's features
    a_gen, _, mean_gen = _world(rng, m)
    gen = mean_gen + BIAS * a_gen + SIGMA * rng.standard_normal(m)
    return y, twin, a, gen, a_gen


@pytest.mark.slow
def test_the_debiased_interval_covers_the_truth_where_the_generator_alone_does_not():
    """40 replicates at N = 100 (M = 500, 100 bootstrap draws): coverage >= 0.85 for the debiased interval
    (at a true 0.95, P(<= 33 of 40) < 0.03), and its RMSE below the data path's. The generator-only
    interval, model-based, covers far less (it holds the sampling noise, not the generator's bias)."""
    truth, rng = _truth(), np.random.default_rng(0)
    debiased, data, generator = [], [], []
    for r in range(40):
        y, twin, a, gen, a_gen = _replicate(rng)
        d = debiased_score(y, twin, a, gen, a_gen, n_boot=100, seed=r)
        debiased.append((d.result.score, d.result.ci_low, d.result.ci_high))
        generator.append((d.gen.score, d.gen.ci_low, d.gen.ci_high))
        data.append(explained_variance(y, a, n_boot=0).score)
    debiased, generator = np.array(debiased), np.array(generator)
    covered = np.mean((debiased[:, 1] <= truth) & (truth <= debiased[:, 2]))
    assert covered >= 0.85, covered
    rmse = np.sqrt(np.mean((debiased[:, 0] - truth) ** 2))
    assert rmse < 0.8 * np.sqrt(np.mean((np.array(data) - truth) ** 2))
    assert np.mean((generator[:, 1] <= truth) & (truth <= generator[:, 2])) < covered


def test_lambda_zero_is_the_data_path_and_one_the_plain_debiased_estimate():
    y, twin, a, gen, a_gen = _replicate(np.random.default_rng(1))
    zero = debiased_score(y, twin, a, gen, a_gen, n_boot=0, lam=0.0)
    assert zero.result.score_unclipped == pytest.approx(explained_variance(y, a, n_boot=0).score_unclipped)
    one = debiased_score(y, twin, a, gen, a_gen, n_boot=0, lam=1.0)
    assert one.result.score_unclipped == pytest.approx(one.real + one.gen.score_unclipped - one.twin)
    tuned = debiased_score(y, twin, a, gen, a_gen, n_boot=100)
    assert 0.0 <= tuned.lam <= 1.0 and tuned.twin_correlation > 0.9
    assert "debiased: data" in tuned.result.message


def test_too_few_real_subjects_get_no_debiased_score_and_say_the_minimum():
    y, twin, a, gen, a_gen = _replicate(np.random.default_rng(2), n=MIN_REAL - 1)
    d = debiased_score(y, twin, a, gen, a_gen, n_boot=50)
    assert d.result.status == "too_few_samples" and f"at least {MIN_REAL}" in d.result.message
    assert np.isnan(d.result.score) and np.isnan(d.result.ci_low)  # never a silently narrower interval


class _Generator:
    """The bits of a generator `twin_conditions` reads."""

    features = ["age", "sex"]

    class _Info:
        def __init__(self, categorical, **kw):
            self.is_categorical, self.__dict__ = categorical, {**kw, "is_categorical": categorical}

    def feature(self, name):
        if name == "age":
            return self._Info(False, min=50.0, max=80.0)
        return self._Info(True, levels=("F", "M"))


def test_twins_clamp_out_of_range_values_with_a_count_and_refuse_an_unseen_level():
    table = pd.DataFrame({"age": [45.0, 60.0, 90.0], "sex": ["F", "M", "F"]})
    condition, clamped = twin_conditions(_Generator(), table)
    assert clamped == {"age": 2} and list(condition["age"]) == [50.0, 60.0, 80.0]
    with pytest.raises(EveInputError, match=r"sex = X \(rows 3\) is a level the generator never saw.*score from data"):
        twin_conditions(_Generator(), pd.DataFrame({"age": [60.0, 61.0], "sex": ["F", "X"]}))


@pytest.mark.slow
def test_a_linear_gaussian_generator_cross_fitted_on_the_cohort_debiases_its_score(tmp_path):
    """On a user-style cohort (tests/test_scarce.py's: a central block's brightness 0.2 + 0.3 a + 0.2 b), a
    generator learnt from the same subjects, cross-fitted in 4 folds: the twins track the real outputs, and
    the debiased score lies near the data path's and the truth 0.09 / 0.13."""
    from test_scarce import SPEC, BlockMean, _write_cohort

    from engine.diffusion.cohort import CohortRecipe, train_on_cohort
    from engine.scores.service import model_outputs

    dataset = _write_cohort(tmp_path, n=120)
    model = BlockMean().eval()
    y = model_outputs(model, dataset, SPEC)[:, 0]
    features = ["a", "b", "site"]

    def fit(rows):
        return train_on_cohort(
            dataset, SPEC, features=features, rows=rows, recipe=CohortRecipe(kind="linear-gaussian"), log=lambda _: None
        )

    drawn = cross_fitted_draws(model, fit, dataset.table[features], folds=4, m_generated=400, seed=0)
    # each real feature vector conditions one generated subject at most: 400 asked, 120 drawn
    assert drawn.twin.shape == (120, 1) and drawn.gen.shape == (120, 1) and drawn.cross_fitted == 4
    assert not drawn.gen_features.duplicated().any()
    assert np.corrcoef(y, drawn.twin[:, 0])[0, 1] > 0.9
    a = dataset.table["a"].to_numpy()
    d = debiased_score(y, drawn.twin[:, 0], a, drawn.gen[:, 0], drawn.gen_features["a"].to_numpy(), n_boot=100)
    assert d.result.ok and d.result.ci_low <= 0.09 / 0.13 + 0.05 and d.result.ci_high >= 0.09 / 0.13 - 0.05
    plain = draw(model, fit(np.arange(120)), dataset.table[features], m_generated=50, seed=1)
    assert plain.gen.shape == (50, 1) and "training subjects" in plain.pool
    # the sampler of a committed generator (read-out guidance 100) on folds Eve trains without a read-out: each
    # fold samples as it can, and says so (it crashed with "no feature read-out to guide by: retrain it")
    from engine.diffusion.sampler import READOUT_GUIDANCE, SamplerConfig

    asked = SamplerConfig(free_features="table", readout_guidance=READOUT_GUIDANCE)
    seen = []
    folded = cross_fitted_draws(
        model,
        fit,
        dataset.table[features],
        folds=2,
        m_generated=20,
        seed=0,
        sampler=asked,
        progress=lambda *a: seen.append(a),
    )
    assert folded.twin.shape == (120, 1) and "no read-out guidance" in folded.sampler
    assert seen == [(70, 140), (140, 140)]  # a step after each fold: its twins and generated subjects
