"""The features together from a generator (`engine.scores.debias.debiased_effects`, issue 36): joint, first-order,
added and Shapley scores debiased by the real subjects cover closed-form truths over replicates where a biased
generator's own numbers do not; a correlated bystander the real model never reads gets an added score of 0 even
when the generator reads it; lambda 0 is the data path; bad input comes back as a status with the fix."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_joint import SIGMA3, effects_truth, linear_truth

from engine.scores.debias import MIN_REAL, debiased_effects
from engine.scores.joint import shapley_effects

BETA = np.array([1.0, 0.0, 0.5])  # the real model: reads a1 and a3, never a2 (corr(a1, a2) = 0.8)
BIASED = np.array([0.6, 0.4, 0.5])  # the generator's world: it moves part of a1's effect onto a2
NOISE = 0.4


def _gaussian(rng, n):
    return rng.normal(size=(n, 3)) @ np.linalg.cholesky(SIGMA3).T


def _replicate(seed, n=200, m=512, generator=BIASED):
    """Real outputs y = BETA'x + noise; each twin and generated subject's output from the generator's world."""
    rng = np.random.default_rng(seed)
    x, x_gen = _gaussian(rng, n), _gaussian(rng, m)
    y = x @ BETA + NOISE * rng.normal(size=n)
    twin = x @ generator + NOISE * rng.normal(size=n)
    gen = x_gen @ generator + NOISE * rng.normal(size=m)
    names = ("a1", "a2", "a3")
    return y, twin, dict(zip(names, x.T, strict=True)), gen, dict(zip(names, x_gen.T, strict=True))


def _numbers(r):
    """(estimates, lows, highs) of the 10 numbers: joint, then first-order, added and Shapley per feature."""
    e = r.effects
    est = np.r_[r.joint.score, [x.score for x in e], [x.added for x in e], [x.shapley for x in e]]
    low = np.r_[r.joint.ci_low, [x.ci_low for x in e], [x.added_ci_low for x in e], [x.shapley_ci_low for x in e]]
    high = np.r_[r.joint.ci_high, [x.ci_high for x in e], [x.added_ci_high for x in e], [x.shapley_ci_high for x in e]]
    return est, low, high


def _truth(beta=BETA):
    return np.concatenate([np.atleast_1d(t) for t in effects_truth(linear_truth(beta, SIGMA3, NOISE**2), 3)])


def test_debiased_sets_cover_the_truth_where_the_biased_generator_does_not():
    """30 replicates, N = 200 real subjects, 512 generated: the debiased 95% intervals of all 10 numbers hold the
    closed-form truth in >= 90% of the 300 cases; the generator's own (model-based) in far fewer; the debiased
    estimate is unbiased (mean error <= 0.02 per number), the generator's own estimates its world's truth (a1's
    added score 0.079 against the real 0.208)."""
    truth = _truth()
    pp, own = [], []
    for rep in range(30):
        found = debiased_effects(*_replicate(100 + rep), n_boot=100, seed=rep)
        pp.append(_numbers(found.results[0]))
        own.append(_numbers(found.generator[0]))

    def coverage(runs):
        est, low, high = (np.array([r[k] for r in runs]) for k in range(3))
        return ((low <= truth + 1e-9) & (truth - 1e-9 <= high)).mean(0), (est - truth).mean(0)

    pp_cover, pp_bias = coverage(pp)
    own_cover, _ = coverage(own)
    assert pp_cover.mean() >= 0.90 and pp_cover.min() >= 0.8, pp_cover
    assert np.abs(pp_bias).max() <= 0.02, pp_bias
    assert own_cover.mean() <= 0.6, own_cover  # the generator alone is confidently wrong
    own_mean = np.array([r[0] for r in own]).mean(0)
    assert np.abs(own_mean - _truth(BIASED)).max() <= 0.03  # the generator's world, estimated right
    assert own_mean[1 + 3] - truth[1 + 3] < -0.1  # ... and a1's added score far below the real one


def test_a_bystander_the_generator_reads_adds_nothing_once_debiased():
    """The real model reads a1 and a3 only: a2's added score is 0 (truth) and the debiased one is near 0 with its
    interval reaching 0, although the biased generator reads a2 (its own added score > 0.05); a2's own score
    stays high (0.8 correlation with a1)."""
    y, twin, features, gen, gen_features = _replicate(7, n=1000, m=1000, generator=np.array([0.3, 0.7, 0.5]))
    found = debiased_effects(y, twin, features, gen, gen_features, n_boot=200, seed=0)
    bystander, own = found.results[0].effect("a2"), found.generator[0].effect("a2")
    assert bystander.added < 0.02 and bystander.added_ci_low == 0.0
    assert own.added > 0.05
    assert bystander.score > 0.3  # on its own it still explains a lot
    r = found.results[0]
    assert sum(e.shapley for e in r.effects) == pytest.approx(r.joint.score)


def test_lambda_zero_is_the_data_path_and_a_good_generator_narrows_the_intervals():
    y, twin, features, gen, gen_features = _replicate(3, generator=BETA)
    data = shapley_effects(y, features, n_boot=100, seed=5)
    at_zero = debiased_effects(y, twin, features, gen, gen_features, n_boot=100, seed=5, lam=0.0).results[0]
    assert np.allclose(_numbers(at_zero)[0], _numbers(data)[0])  # the same estimates: S_real(u) alone
    tuned = debiased_effects(y, twin, features, gen, gen_features, n_boot=100, seed=5)
    assert 0 < tuned.lam[0] <= 1 and tuned.twin_correlation[0] > 0.8
    width = lambda r: np.nanmean(_numbers(r)[2] - _numbers(r)[1])  # noqa: E731
    assert width(tuned.results[0]) < width(data)


def test_several_outputs_each_get_their_own_lambda():
    y, twin, features, gen, gen_features = _replicate(4)
    found = debiased_effects(
        np.c_[y, -2 * y], np.c_[twin, -2 * twin], features, np.c_[gen, -2 * gen], gen_features, n_boot=50, seed=1
    )
    assert len(found.results) == 2 and len(found.lam) == 2
    # a scaled output explains the same shares
    assert found.results[1].joint.score == pytest.approx(found.results[0].joint.score, abs=1e-9)


def test_bad_input_comes_back_as_a_status_with_the_fix():
    y, twin, features, gen, gen_features = _replicate(5)
    few = debiased_effects(y[:20], twin[:20], {k: v[:20] for k, v in features.items()}, gen, gen_features, n_boot=0)
    assert few.results[0].joint.status == "too_few_samples" and str(MIN_REAL) in few.results[0].joint.message
    # a feature single-valued among the real subjects: left out of both sets, its row says so
    one_valued = dict(features, a2=np.zeros_like(y))
    left = debiased_effects(y, twin, one_valued, gen, gen_features, n_boot=0).results[0]
    assert left.ok and left.effect("a2").status == "single_value" and left.joint.features == ("a1", "a3")
    # the generated subjects hold one value of a feature the real ones vary: the generator cannot speak to it
    flat = dict(gen_features, a3=np.ones_like(gen))
    lost = debiased_effects(y, twin, features, gen, flat, n_boot=0).results[0]
    assert not lost.ok and "a3" in lost.joint.message and "deselect" in lost.joint.message
    constant = debiased_effects(np.ones_like(y), twin, features, gen, gen_features, n_boot=0).results[0]
    assert constant.joint.status == "constant_output"
    with pytest.raises(ValueError, match="same features"):
        debiased_effects(y, twin, features, gen, {"a1": gen_features["a1"]})
    with pytest.raises(ValueError, match="share their outputs"):
        debiased_effects(y, twin[:-1], features, gen, gen_features)


def test_beyond_the_exact_limit_the_orders_are_shared_and_a_categorical_feature_is_scored_by_its_levels():
    """With max_exact below d the real, twin and generated sets score the same random orders (the Shapley effects
    still add up to the joint score and agree with all subsets); a categorical feature enters by its levels."""
    y, twin, features, gen, gen_features = _replicate(9, n=400)
    rng = np.random.default_rng(0)
    site, site_gen = rng.choice(["a", "b", "c"], len(y)), rng.choice(["a", "b", "c"], len(gen))
    y = y + 0.5 * (site == "a")
    twin, gen = twin + 0.5 * (site == "a"), gen + 0.5 * (site_gen == "a")
    features, gen_features = dict(features, site=site), dict(gen_features, site=site_gen)
    exact = debiased_effects(y, twin, features, gen, gen_features, categorical=("site",), n_boot=50, seed=2)
    sampled = debiased_effects(
        y, twin, features, gen, gen_features, categorical=("site",), n_boot=50, seed=2, max_exact=2, n_perm=64
    )
    e, s = exact.results[0], sampled.results[0]
    assert e.exact and not s.exact and s.n_perm == 64
    assert sum(x.shapley for x in s.effects) == pytest.approx(s.joint.score)
    assert e.joint.score == pytest.approx(s.joint.score, abs=1e-4)  # S(all) is scored either way (ties aside)
    for a, b in zip(e.effects, s.effects, strict=True):
        assert abs(a.shapley - b.shapley) < 0.03, (a.feature, a.shapley, b.shapley)
    assert e.effect("site").added > 0.02 and e.effect("site").status == "ok"


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(5, 160),
    m=st.integers(5, 300),
    d=st.integers(1, 4),
    rho=st.floats(-0.3, 0.95),
    bias=st.floats(-1.0, 1.0),
    flat=st.sampled_from(["none", "real feature", "generated feature", "real output", "twin", "generated output"]),
    sampled=st.booleans(),
)
def test_any_cohort_gives_numbers_that_add_up_or_a_status_with_a_message(seed, n, m, d, rho, bias, flat, sampled):
    """Whatever the sizes, correlation, generator error and flat parts: never an exception; each output either
    scores (every number in [0, 1], intervals ordered, Shapley effects adding up to the joint score) or says why."""
    rng = np.random.default_rng(seed)
    sigma = np.full((d, d), rho) + (1 - rho) * np.eye(d)
    if d > 1 and np.linalg.eigvalsh(sigma).min() <= 1e-3:
        sigma = np.eye(d)
    chol = np.linalg.cholesky(sigma).T
    x, x_gen = rng.normal(size=(n, d)) @ chol, rng.normal(size=(m, d)) @ chol
    beta = rng.normal(size=d)
    y = np.tanh(x) @ beta + 0.3 * rng.normal(size=n)
    twin = np.tanh(x) @ (beta + bias) + 0.3 * rng.normal(size=n)
    gen = np.tanh(x_gen) @ (beta + bias) + 0.3 * rng.normal(size=m)
    features = {f"a{j}": x[:, j] for j in range(d)}
    gen_features = {f"a{j}": x_gen[:, j] for j in range(d)}
    if flat == "real feature":
        features["a0"] = np.zeros(n)
    elif flat == "generated feature":
        gen_features["a0"] = np.zeros(m)
    elif flat == "real output":
        y = np.ones(n)
    elif flat == "twin":
        twin = np.ones(n)
    elif flat == "generated output":
        gen = np.ones(m)
    found = debiased_effects(
        y, twin, features, gen, gen_features, n_boot=20, seed=seed % 1000, max_exact=max(1, d - 1) if sampled else 10
    )
    for r in (*found.results, *found.generator):
        if not r.ok:
            assert r.joint.status and r.joint.message
            continue
        phi = np.array([e.shapley for e in r.effects if e.ok])
        assert phi.sum() == pytest.approx(r.joint.score, abs=1e-9)
        assert 0 <= r.joint.score <= 1
        for e in r.effects:
            if not e.ok:
                assert e.status == "single_value" and e.message
                continue
            for value, low, high in (
                (e.score, e.ci_low, e.ci_high),
                (e.added, e.added_ci_low, e.added_ci_high),
                (e.shapley, e.shapley_ci_low, e.shapley_ci_high),
            ):
                assert 0 <= value <= 1
                assert np.isnan(low) or 0 <= low <= high <= 1
    if n < 30:
        assert found.results[0].joint.status == "too_few_samples"


@pytest.mark.slow
def test_a_user_cohort_with_a_feature_the_generator_does_not_condition_on(tmp_path):
    """A cohort written by plain `nib.save` (tests/test_scarce.py's: the block's brightness 0.2 + 0.3 a + 0.2 b) and
    a linear-Gaussian generator conditioned on a and b only: the debiased set scores cover a and b (their Shapley
    effects add up to the joint score, b's added share near its truth), and site gets a row that says why it has
    no number."""
    from test_scarce import BlockMean, _card, _write_cohort

    from engine.diffusion.cohort import CohortRecipe, train_on_cohort
    from engine.scores.service import debiased_scores

    dataset = _write_cohort(tmp_path, n=150)
    generator = train_on_cohort(
        dataset, _card().spec, features=["a", "b"], recipe=CohortRecipe(kind="linear-gaussian"), log=lambda _: None
    )
    report = debiased_scores(
        BlockMean().eval(),
        _card(),
        dataset,
        ["a", "b", "site"],
        diffusion=generator,
        split="all",
        n_boot=50,
        joint=True,
    )
    rows = report.table.set_index("feature")
    assert report.metadata["joint"]["path"] == "debiased" and report.metadata["joint"]["not_conditioned"] == ["site"]
    assert (
        rows.loc["site", "joint_status"] == "not_conditioned"
        and "does not condition on site" in rows.loc["site", "joint_message"]
    )
    assert (rows.loc[["a", "b"], "joint_status"] == "ok").all()
    assert rows.loc[["a", "b"], "shapley"].sum() == pytest.approx(report.joint.iloc[0]["score"])
    # a and b independent, uniform: b's added share is 0.2^2 / (0.3^2 + 0.2^2) of the explained variance
    assert abs(rows.loc["b", "added"] - 0.04 / 0.13 * report.joint.iloc[0]["score"]) < 0.08
