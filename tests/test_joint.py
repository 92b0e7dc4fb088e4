"""Tests for engine/joint.py: closed-form truths, a glass box, coverage, properties, bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.scores.joint import (
    METHODS,
    FeatureEffect,
    JointResult,
    ShapleyResult,
    joint_score,
    score_table,
    shapley_effects,
)
from engine.scores.tvd import explained_variance

TOL = 0.03  # estimates against closed forms at n = 2,000 (issue 36)


# ---- linear models with correlated Gaussian features: truths in closed form -----------------


def linear_truth(beta, sigma, noise_var):
    """S(u) for every mask u of Y = beta' X + eps, X ~ N(0, Sigma): Var(E[Y|X_u]) =
    beta' Sigma_.u Sigma_uu^-1 Sigma_u. beta (Owen & Prieur 2017; Iooss & Prieur 2019)."""
    beta, d = np.asarray(beta, float), len(beta)
    total = beta @ sigma @ beta + noise_var
    s = np.zeros(2**d)
    for m in range(1, 2**d):
        u = [j for j in range(d) if m >> j & 1]
        c = sigma[:, u]
        s[m] = beta @ c @ np.linalg.solve(sigma[np.ix_(u, u)], c.T @ beta) / total
    return s


def effects_truth(s, d):
    """(joint, first-order (d,), added (d,), Shapley (d,)) from S over all masks."""
    from math import factorial

    full = 2**d - 1
    first = np.array([s[1 << j] for j in range(d)])
    added = np.array([s[full] - s[full & ~(1 << j)] for j in range(d)])
    phi = np.zeros(d)
    for j in range(d):
        for m in range(2**d):
            if not m >> j & 1:
                k = bin(m).count("1")
                phi[j] += factorial(k) * factorial(d - k - 1) / factorial(d) * (s[m | 1 << j] - s[m])
    return s[full], first, added, phi


SIGMA3 = np.array([[1.0, 0.8, 0.3], [0.8, 1.0, 0.3], [0.3, 0.3, 1.0]])
BETA3 = np.array([1.0, 0.0, 0.5])


def linear_data(n, seed, beta=BETA3, sigma=SIGMA3, noise=1.0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(beta))) @ np.linalg.cholesky(sigma).T
    y = x @ beta + noise * rng.normal(size=n)
    return y, {f"a{j + 1}": x[:, j] for j in range(len(beta))}


def as_arrays(r: ShapleyResult):
    e = r.effects
    return (
        r.joint.score,
        np.array([x.score for x in e]),
        np.array([x.added for x in e]),
        np.array([x.shapley for x in e]),
    )


@pytest.mark.parametrize(
    "beta, sigma",
    [
        (BETA3, SIGMA3),
        (np.array([1.0, -0.5, 0.5, 0.0]), np.full((4, 4), 0.5) + 0.5 * np.eye(4)),
    ],
    ids=["d3-rho0.8", "d4-rho0.5"],
)
def test_linear_gaussian_matches_closed_form(beta, sigma):
    """Joint, first-order, added and Shapley scores at n = 2,000 against closed forms.

    One data set's first-order and joint scores scatter by about 0.02 (sd over seeds; the sample
    R^2 of the true model scatters by 0.017 here), so a single data set's tolerance of 0.03 would be
    a 1.5-sd coin flip: the mean of 4 data sets must lie within 0.03 and each within 0.06 (3 sd).
    """
    truth = np.concatenate([np.atleast_1d(t) for t in effects_truth(linear_truth(beta, sigma, 1.0), len(beta))])
    errors = []
    for seed in range(4):
        y, features = linear_data(2000, seed, beta, sigma)
        est = as_arrays(shapley_effects(y, features, n_boot=0, seed=seed))
        errors.append(np.concatenate([np.atleast_1d(e) for e in est]) - truth)
    errors = np.array(errors)
    assert np.abs(errors.mean(0)).max() < TOL, errors.mean(0)
    assert np.abs(errors).max() < 2 * TOL, errors


def test_joint_score_of_a_set_matches_closed_form_and_shapley_joint():
    y, features = linear_data(2000, 1)
    truth = linear_truth(BETA3, SIGMA3, 1.0)
    pair = joint_score(y, {k: features[k] for k in ("a2", "a3")})
    assert isinstance(pair, JointResult) and pair.ok and pair.features == ("a2", "a3")
    assert abs(pair.score - truth[0b110]) < TOL
    assert pair.ci_low <= pair.score <= pair.ci_high
    whole = joint_score(y, features, seed=3)
    assert whole.score == pytest.approx(shapley_effects(y, features, seed=3).joint.score)


def test_intervals_cover_closed_form_at_least_90_percent():
    """Over 30 replicate data sets, the 95% intervals of all 10 numbers (joint, and per feature
    first-order, added and Shapley) hold the truth in >= 90% of the 300 cases (the fuller study:
    benchmarks/validate_joint.py)."""
    truth = np.concatenate([np.atleast_1d(t) for t in effects_truth(linear_truth(BETA3, SIGMA3, 1.0), 3)])
    hits = []
    for rep in range(30):
        y, features = linear_data(1000, 100 + rep)
        r = shapley_effects(y, features, n_boot=100, seed=rep)
        e = r.effects
        low = np.r_[r.joint.ci_low, [x.ci_low for x in e], [x.added_ci_low for x in e], [x.shapley_ci_low for x in e]]
        high = np.r_[
            r.joint.ci_high, [x.ci_high for x in e], [x.added_ci_high for x in e], [x.shapley_ci_high for x in e]
        ]
        hits.append((low <= truth + 1e-12) & (truth - 1e-12 <= high))
    hits = np.array(hits)
    assert hits.mean() >= 0.90, hits.mean(0)
    assert hits.mean(0).min() >= 0.8  # no single number far off


# ---- a glass box: Y reads A1 only, A2 is correlated with A1 -------------------------------


def test_glass_box_correlated_bystander_adds_nothing():
    """Y = A1 + eps, corr(A1, A2) = 0.8, Var(eps) = 0.5: S(A1) = S(all) = 2/3, S(A2) = 0.64 * 2/3.

    A2's added score is 0, while its first-order score stays high. Its Shapley share is NOT 0:
    in the order (A2, A1) it comes first and takes S(A2), so phi_2 = S(A2) / 2 = 0.213
    (Iooss & Prieur 2019: a correlated input the model does not read gets rho^2 / 2 of it).
    """
    rng = np.random.default_rng(7)
    n, rho = 2000, 0.8
    a1 = rng.normal(size=n)
    a2 = rho * a1 + np.sqrt(1 - rho**2) * rng.normal(size=n)
    y = a1 + np.sqrt(0.5) * rng.normal(size=n)
    r = shapley_effects(y, {"a1": a1, "a2": a2}, seed=0)
    s1, s2 = 2 / 3, rho**2 * 2 / 3
    bystander, reader = r.effect("a2"), r.effect("a1")
    assert abs(bystander.score - s2) < TOL  # first-order stays high
    assert bystander.added < 0.01 and bystander.added_ci_low == 0.0
    assert abs(bystander.shapley - s2 / 2) < TOL
    assert abs(reader.added - (s1 - s2)) < TOL
    assert abs(reader.shapley - (s1 - s2 / 2)) < TOL
    assert abs(r.joint.score - s1) < TOL


def test_independent_additive_shapley_equals_first_order():
    """Independent features, Y = A1 + sin(2 A2) + 0.5 A3 + eps: no shared variance, so first-order,
    added and Shapley scores agree."""
    rng = np.random.default_rng(11)
    n = 2000
    a = rng.normal(size=(n, 3))
    y = a[:, 0] + np.sin(2 * a[:, 1]) + 0.5 * a[:, 2] + rng.normal(size=n)
    var_sin = (1 - np.exp(-8)) / 2
    total = 1 + var_sin + 0.25 + 1
    truth = np.array([1, var_sin, 0.25]) / total
    _, first, added, phi = as_arrays(shapley_effects(y, {"a1": a[:, 0], "a2": a[:, 1], "a3": a[:, 2]}, n_boot=0))
    np.testing.assert_allclose(phi, first, atol=0.02)
    np.testing.assert_allclose(added, first, atol=0.02)
    np.testing.assert_allclose(phi, truth, atol=TOL)


# ---- properties ---------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(70, 150),  # 5 subjects a column: d = 4 numeric features need 65
    d=st.integers(1, 4),
    rho=st.floats(-0.3, 0.95),
    signal=st.floats(0.0, 3.0),
    method=st.sampled_from(METHODS),
    sampled=st.booleans(),
)
def test_shapley_effects_sum_to_joint_and_are_non_negative(seed, n, d, rho, signal, method, sampled):
    """Exact (all subsets) or sampled orders, any estimator: phi_j >= 0 and sum_j phi_j = S(all)."""
    rng = np.random.default_rng(seed)
    sigma = np.full((d, d), rho) + (1 - rho) * np.eye(d)
    if d > 1 and np.linalg.eigvalsh(sigma).min() <= 1e-3:
        sigma = np.eye(d)
    x = rng.normal(size=(n, d)) @ np.linalg.cholesky(sigma).T
    y = signal * np.tanh(x).sum(1) + rng.normal(size=n)
    r = shapley_effects(
        y,
        {f"a{j}": x[:, j] for j in range(d)},
        n_boot=20,
        seed=seed % 1000,
        method=method,
        max_exact=max(1, d - 1) if sampled else 10,
        n_perm=8,
    )
    assert r.ok and r.exact == (not sampled or d == 1)
    phi = np.array([e.shapley for e in r.effects])
    assert (phi >= 0).all()
    assert phi.sum() == pytest.approx(r.joint.score, abs=1e-12)
    for e in r.effects:
        assert 0 <= e.score <= 1 and 0 <= e.added <= 1
        for low, high in ((e.ci_low, e.ci_high), (e.shapley_ci_low, e.shapley_ci_high)):
            assert 0 <= low <= high <= 1


def test_inputs_unchanged_and_seeded():
    y, features = linear_data(300, 5)
    copies = (y.copy(), {k: v.copy() for k, v in features.items()})
    first = shapley_effects(y, features, n_boot=30, seed=4)
    again = shapley_effects(y, features, n_boot=30, seed=4)
    assert first == again
    np.testing.assert_array_equal(y, copies[0])
    for k in features:
        np.testing.assert_array_equal(features[k], copies[1][k])


def test_sampled_orders_agree_with_all_subsets():
    beta, sigma = np.array([1.0, -0.5, 0.5, 0.0]), np.full((4, 4), 0.5) + 0.5 * np.eye(4)
    y, features = linear_data(1000, 2, beta, sigma)
    exact = shapley_effects(y, features, n_boot=50)
    sampled = shapley_effects(y, features, n_boot=50, max_exact=3, n_perm=64)
    assert exact.exact and exact.n_subsets == 16 and not sampled.exact and sampled.n_perm == 64
    phi_e, phi_s = (np.array([e.shapley for e in r.effects]) for r in (exact, sampled))
    np.testing.assert_allclose(phi_s, phi_e, atol=0.02)
    assert sampled.joint.score == pytest.approx(exact.joint.score)
    for e in sampled.effects:  # its own interval: subjects and orders resampled together
        assert e.shapley_ci_low <= e.shapley <= e.shapley_ci_high


@pytest.mark.parametrize("method", METHODS)
def test_every_method_estimates_the_linear_case(method):
    y, features = linear_data(2000, 3)
    joint, first, added, phi = as_arrays(shapley_effects(y, features, n_boot=0, method=method))
    truth = effects_truth(linear_truth(BETA3, SIGMA3, 1.0), 3)
    assert abs(joint - truth[0]) < 0.04
    np.testing.assert_allclose(phi, truth[3], atol=0.04)


# ---- categorical features -----------------------------------------------------------------


def test_categorical_interaction_found_by_exact_matching():
    """Y = s_c A + eps with slope s = +1 / -1 by level c (equally likely): E[Y|A] = E[Y|c] = 0, so
    S(A) = S(c) = 0 and S(A, c) = 1 / (1 + 0.5). The regression has no category x numeric
    column; only neighbours matched exactly on the level see it (method="splines" does not)."""
    rng = np.random.default_rng(5)
    n = 2000
    c = rng.choice(np.array(["left", "right"]), size=n)
    a = rng.normal(size=n)
    y = np.where(c == "left", 1.0, -1.0) * a + np.sqrt(0.5) * rng.normal(size=n)
    features = {"a": a, "side": c}
    r = shapley_effects(y, features, categorical=("side",), seed=1)
    assert abs(r.joint.score - 2 / 3) < 0.05
    assert r.effect("side").score < 0.01  # the level means, fitted exactly
    assert r.effect("a").score < 0.05  # E[Y|A] = 0, but Var(Y|A) = A^2 + 0.5 makes the neighbour step noisy
    for name in features:
        assert abs(r.effect(name).shapley - 1 / 3) < 0.05
    splines_only = joint_score(y, features, categorical=("side",), method="splines", n_boot=0)
    assert splines_only.score < 0.05


def test_categorical_first_order_agrees_with_tvd():
    rng = np.random.default_rng(9)
    n = 1500
    site = rng.choice(np.array(["A", "B", "C"]), size=n, p=[0.5, 0.3, 0.2])
    age = rng.normal(size=n) + (site == "B")
    y = 0.8 * (site == "A") + 0.5 * age + rng.normal(size=n)
    r = shapley_effects(y, {"site": site, "age": age}, categorical=("site",), n_boot=0)
    one = explained_variance(y, site, categorical=True, n_boot=0)
    assert abs(r.effect("site").score - one.score) < 0.01


def test_mixed_labels_need_categorical():
    rng = np.random.default_rng(2)
    mixed = np.array([1, "two", 3.0] * 40, dtype=object)
    y = (mixed == "two") + rng.normal(size=120) * 0.5
    with pytest.raises(ValueError, match="categorical"):
        shapley_effects(y, {"mixed": mixed, "x": rng.normal(size=120)})
    r = shapley_effects(y, {"mixed": mixed, "x": rng.normal(size=120)}, categorical=("mixed",), n_boot=0)
    assert r.ok and r.effect("mixed").score > 0.4


# ---- bad input: a status and a message, never a silent number -----------------------------


def test_constant_feature_is_left_out_with_its_own_status():
    y, features = linear_data(400, 8)
    with_constant = {**features, "scanner": np.full(400, 3.0)}
    r = shapley_effects(y, with_constant, n_boot=20)
    assert r.ok and r.joint.features == ("a1", "a2", "a3")
    assert "scanner" in r.joint.message
    e = r.effect("scanner")
    assert e.status == "single_value" and np.isnan(e.shapley) and "single value" in e.message
    phi = sum(x.shapley for x in r.effects if x.ok)
    assert phi == pytest.approx(r.joint.score)
    only = joint_score(y, {"scanner": np.full(400, 3.0), "site": np.array(["x"] * 400)}, categorical=("site",))
    assert only.status == "single_value" and np.isnan(only.score)


@pytest.mark.parametrize(
    "change, status",
    [
        (lambda y, f: (np.full_like(y, 0.3), f), "constant_output"),
        (lambda y, f: (y, {**f, "a1": np.where(np.arange(len(y)) == 7, np.nan, f["a1"])}), "non_finite"),
        (lambda y, f: (np.where(np.arange(len(y)) == 3, np.inf, y), f), "non_finite"),
        (lambda y, f: (y[:8], {k: v[:8] for k, v in f.items()}), "too_few_samples"),
    ],
    ids=["constant-output", "nan-feature", "inf-output", "eight-samples"],
)
def test_bad_data_returns_status(change, status):
    y, features = linear_data(200, 4)
    y, features = change(y, features)
    r = shapley_effects(y, features)
    assert r.joint.status == status and r.joint.message and np.isnan(r.joint.score)
    assert all(e.status == status and np.isnan(e.shapley) for e in r.effects)
    assert joint_score(y, features).status == status


def test_rare_level_names_the_level():
    y, features = linear_data(100, 6)
    site = np.array(["a"] * 50 + ["b"] * 49 + ["c"])
    r = joint_score(y, {**features, "site": site}, categorical=("site",))
    assert r.status == "too_few_samples" and "'c'" in r.message


def test_too_many_features_for_n():
    """The all-feature regression needs ROWS_PER_COLUMN subjects a column: pairs go first, then the curves,
    then a status."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(60, 12))
    y = x.sum(1) + rng.normal(size=60)
    features = {f"a{j}": x[:, j] for j in range(12)}
    r = joint_score(y, features)  # a line each: 1 + 12 columns need 65 subjects
    assert r.status == "too_many_features" and "60 subjects" in r.message
    six = {f"a{j}": x[:, j] for j in range(6)}
    lines = joint_score(y, six)  # 1 + 6 x 3 = 19 spline columns need 95 subjects; 7 lines fit
    assert lines.ok and lines.method == "splines+neighbours, lines only, no pairs" and lines.n_params == 7
    fewer = joint_score(y, {k: features[k] for k in ("a0", "a1", "a2")})  # 10 columns fit, 13 with pairs do not
    assert fewer.ok and fewer.method == "splines+neighbours, no pairs" and fewer.n_params == 10
    assert joint_score(y, features, method="neighbours").ok  # no regression, no limit


def test_programming_errors_raise():
    y, features = linear_data(100, 0)
    with pytest.raises(ValueError, match="method"):
        shapley_effects(y, features, method="kernel")
    with pytest.raises(ValueError, match="not among the features"):
        shapley_effects(y, features, categorical=("age",))
    with pytest.raises(ValueError, match="must be"):
        shapley_effects(y, {**features, "a1": features["a1"][:50]})
    with pytest.raises(ValueError, match="non-empty"):
        joint_score(y, {})
    with pytest.raises(ValueError):
        shapley_effects(y[:, None, None], features)


# ---- several outputs and the table ---------------------------------------------------------


def test_several_outputs_match_one_at_a_time():
    y, features = linear_data(500, 12)
    both = np.column_stack([y, np.full(500, 2.0), y**2])
    results = shapley_effects(both, features, n_boot=40, seed=2)
    assert [r.joint.status for r in results] == ["ok", "constant_output", "ok"]
    alone = shapley_effects(y, features, n_boot=40, seed=2)
    assert results[0].joint.score == pytest.approx(alone.joint.score)
    assert [e.shapley for e in results[0].effects] == pytest.approx([e.shapley for e in alone.effects])


def test_score_table_columns_and_joint():
    y, features = linear_data(400, 13)
    outputs = pd.DataFrame({"logit": y, "square": y**2})
    table = score_table(outputs, {**features, "flat": np.zeros(400)}, n_boot=30)
    assert list(table.columns) == [
        "feature",
        "output",
        "score",
        "ci_low",
        "ci_high",
        "added",
        "added_ci_low",
        "added_ci_high",
        "shapley",
        "shapley_ci_low",
        "shapley_ci_high",
        "status",
        "message",
    ]
    assert len(table) == 8 and set(table.output) == {"logit", "square"}
    assert (table.loc[table.feature == "flat", "status"] == "single_value").all()
    joint = table.attrs["joint"]
    assert list(joint.output) == ["logit", "square"] and (joint.status == "ok").all()
    ok = table[table.status == "ok"]
    np.testing.assert_allclose(ok.groupby("output").shapley.sum().loc[["logit", "square"]], joint.score, atol=1e-12)
    with pytest.raises(ValueError, match="output names"):
        score_table(y, features, output_names=["a", "b"])


def test_result_types_are_frozen():
    y, features = linear_data(200, 1)
    r = shapley_effects(y, features, n_boot=0)
    assert isinstance(r.effects[0], FeatureEffect)
    with pytest.raises(AttributeError):
        r.joint.score = 1.0  # type: ignore[misc]
    with pytest.raises(KeyError, match="a1"):
        r.effect("nope")
