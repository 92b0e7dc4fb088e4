"""Anchors (engine/explanations/anchors.py): the Bernoulli KL bounds, KL-LUCB, the beam search, and the dataset layer.

Truth: a glass-box model on a tiny folder whose images encode one feature (each image is uniformly that
brightness), deciding `brightness > t`; the anchor must name brightness and cut it at t. Real data: the zoo's
`synthbrain-diagnosis` on the embedded SynthBrain cohort, its outputs computed once for the module.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import brentq
from test_data import write_folder
from test_messages import assert_whole
from torch import nn

from engine.cards import ModelCard, ModelRef
from engine.cli.main import main
from engine.data import SliceSpec, load_dataset
from engine.data.defaults import open_dataset
from engine.errors import DatasetError, EveInputError
from engine.explanations import anchors
from engine.explanations.anchors import (
    AnchorConfig,
    DecisionRule,
    Predicate,
    anchor_array,
    cohort,
    cohort_anchor,
    global_anchors,
    kl_bernoulli,
    kl_bounds,
    subject_anchor,
)
from engine.models import load
from engine.models.zoo import read_card
from engine.scores.service import model_outputs

SIZE = 8  # the glass-box images' side
SPEC = SliceSpec("axial", None, SIZE, "raw")  # fed as stored: the model sees the brightness itself
N_GLASS = 200  # large enough that no nuisance feature lends a chance rule to subjects near t
BRIGHTNESS = np.linspace(0.2, 0.8, N_GLASS)  # quartiles 0.35, 0.5, 0.65


# ---------------------------------------------------------------- fixtures


class Brightness(nn.Module):
    """Glass box: logit = mean pixel - t, so the decision is brightness > t exactly."""

    def __init__(self, t: float):
        super().__init__()
        self.t = t

    def forward(self, x):
        return x.mean(dim=(1, 2, 3))[:, None] - self.t


def _card(t: float) -> ModelCard:
    return ModelCard(f"brightness > {t}", "torchscript", SPEC, ("logit P(bright)",), outputs="logit")


@pytest.fixture(scope="module")
def glass_folder(tmp_path_factory):
    """200 images, each uniformly its brightness (shuffled rows), with two features the model ignores."""
    rng = np.random.default_rng(0)
    order = rng.permutation(N_GLASS)
    volumes, rows = {}, []
    for i, b in enumerate(BRIGHTNESS[order]):
        volumes[f"s{i:02d}.nii.gz"] = np.full((SIZE, SIZE), b, dtype=np.float32)
        rows.append({"file": f"s{i:02d}.nii.gz", "brightness": b, "age": rng.uniform(50, 90), "site": "AB"[i % 2]})
    return write_folder(tmp_path_factory.mktemp("glass") / "cohort", volumes, rows)


@pytest.fixture(scope="module")
def glass(glass_folder):
    return load_dataset(glass_folder)


@pytest.fixture(scope="module")
def synthbrain():
    """(dataset, card, outputs of every row) for the zoo's diagnosis CNN: one forward pass for the module."""
    dataset = open_dataset("synthbrain")
    model, card = load(ModelRef.builtin("synthbrain-diagnosis"), "cpu")
    return dataset, card, model_outputs(model, dataset, card.spec)


@pytest.fixture(scope="module")
def synthbrain_cohort(synthbrain):
    dataset, card, outputs = synthbrain
    return cohort(None, card, dataset, outputs=outputs)


def _exact_precision(anchor, found) -> float:
    """prec(A) over the cohort itself: the share of the rows the rule holds for with the anchor's decision."""
    holds = anchor.holds(found.cohort_values())
    return float((found.decisions[found.rows][holds] == anchor.decision).mean())


# ---------------------------------------------------------------- Bernoulli KL bounds


def test_kl_bounds_at_the_edges_have_closed_forms():
    """KL(1, q) = -log q and KL(0, q) = -log(1 - q): lower(1) = exp(-level), upper(0) = 1 - exp(-level)."""
    level = np.array([0.01, 0.1, 1.0, 5.0])
    low, high = kl_bounds(np.ones(4), level)
    np.testing.assert_allclose(low, np.exp(-level), atol=1e-9)
    np.testing.assert_array_equal(high, 1.0)
    low, high = kl_bounds(np.zeros(4), level)
    np.testing.assert_allclose(high, 1 - np.exp(-level), atol=1e-9)
    np.testing.assert_array_equal(low, 0.0)


@pytest.mark.parametrize(("p", "level"), [(0.7, 0.05), (0.3, 0.2), (0.95, 0.01), (0.5, 0.5)])
def test_kl_bounds_solve_kl_equal_to_the_level(p, level):
    """Against scipy's root finder: the q on each side with KL(p, q) = level."""
    lower = brentq(lambda q: kl_bernoulli(p, q) - level, 1e-12, p, xtol=1e-15)
    upper = brentq(lambda q: kl_bernoulli(p, q) - level, p, 1 - 1e-12, xtol=1e-15)
    low, high = kl_bounds(p, level)
    assert low == pytest.approx(lower, abs=1e-9) and high == pytest.approx(upper, abs=1e-9)
    assert kl_bernoulli(p, low) >= level and kl_bernoulli(p, high) >= level  # the outer ends: never inside


@settings(max_examples=200, deadline=None)
@given(
    p=st.floats(0, 1),
    n=st.integers(1, 100_000),
    more=st.integers(1, 100_000),
    beta=st.floats(0.01, 30),
)
def test_kl_bounds_contain_the_mean_sit_inside_pinsker_and_tighten_with_n(p, n, more, beta):
    low, high = (float(b) for b in kl_bounds(p, beta / n))
    assert 0 <= low <= p <= high <= 1
    reach = np.sqrt(beta / n / 2) + 1e-12  # Pinsker: KL >= 2 (p - q)^2
    assert p - low <= reach and high - p <= reach
    tighter_low, tighter_high = (float(b) for b in kl_bounds(p, beta / (n + more)))
    assert low <= tighter_low + 1e-12 and tighter_high <= high + 1e-12


def test_kl_lower_bound_covers_the_true_mean_at_its_confidence():
    """Chernoff: P(p > lower) >= 1 - exp(-n KL) = 1 - delta at level log(1 / delta) / n; 4,000 runs of n = 50."""
    rng = np.random.default_rng(0)
    p, n, delta = 0.8, 50, 0.1
    means = rng.binomial(n, p, size=4000) / n
    low, high = kl_bounds(means, np.log(1 / delta) / n)
    assert (low > p).mean() <= delta and (high < p).mean() <= delta


def test_kl_lucb_keeps_the_most_precise_rules():
    """Six rules of known precision (the share of their rows with the target decision): B = 2 keeps the two best."""
    precisions = [0.5, 0.6, 0.98, 0.7, 0.9, 0.4]
    n = 1000
    correct = np.concatenate([np.arange(n) < p * n for p in precisions])  # rule i's rows: block i
    holds = np.stack([np.repeat(np.arange(len(precisions)) == i, n) for i in range(len(precisions))])
    arms = anchors._Arms(holds, correct, np.random.default_rng(0))
    rules = [(i,) for i in range(len(precisions))]
    for rule in rules:
        arms.add(rule)
    kept = anchors._kl_lucb(arms, rules, 2, AnchorConfig(epsilon=0.05))
    assert sorted(kept) == [(2,), (4,)]


# ---------------------------------------------------------------- predicates and decisions


def test_predicates_are_the_subjects_side_of_each_quartile_and_read_in_units():
    values = {"volume": np.arange(1.0, 101.0), "sex": np.array(["F", "M"] * 50)}
    found = anchors.subject_predicates(values, {"volume": 60.0, "sex": "M"}, ("sex",), {"volume": "mL"})
    assert [p.text for p in found] == ["volume > 25.8 mL", "volume > 50.5 mL", "volume <= 75.2 mL", "sex = M"]
    interval = anchors._rule_text((found[1], found[2]))
    assert interval == "50.5 mL < volume <= 75.2 mL"
    assert Predicate("icv", ">", 1898.35, "mL").text == "icv > 1,898 mL"


def test_the_decision_follows_the_cards_outputs():
    logit = DecisionRule.for_card(_card(0.5))
    assert logit.threshold == 0.0 and logit.labels == ("logit P(bright) <= 0", "logit P(bright) > 0")
    np.testing.assert_array_equal(logit.decide(np.array([[-1.0], [0.0], [2.0]])), [0, 0, 1])
    probability = DecisionRule.for_card(read_card_named("synthbrain-diagnosis", explain="probability"))
    assert probability.threshold == 0.5
    classes = ModelCard("k", "torchscript", SPEC, ("a", "b", "c"), outputs="logit")
    np.testing.assert_array_equal(DecisionRule.for_card(classes).decide(np.array([[0, 3, 1], [5, 0, 0]])), [1, 0])
    readout = read_card_named("synthbrain-glass-ventricles")
    assert DecisionRule.for_card(readout, threshold=40).decide(np.array([[39.0], [41.0]])).tolist() == [0, 1]


def read_card_named(name: str, explain: str = "output") -> ModelCard:
    from engine.models.zoo import explained, models_dir

    card = read_card(models_dir() / f"{name}.json")
    return card if explain == "output" else explained(nn.Identity(), card, explain)[1]


# ---------------------------------------------------------------- truth: the glass box


def test_the_anchor_of_a_glass_box_is_its_threshold(glass):
    """t at the cohort's median: every subject's anchor is brightness on its side of t, cut within 0.01 of t
    (the tolerance: the median cut equals t here up to float32 rounding), with exact precision 1."""
    t = 0.5
    outputs = model_outputs(Brightness(t).eval(), glass, SPEC)
    found = cohort(None, _card(t), glass, outputs=outputs)
    for row in range(0, N_GLASS, 4):
        anchor = cohort_anchor(found, row)
        [predicate] = anchor.predicates
        bright = glass.feature_values("brightness")[row] > t
        assert predicate.feature == "brightness" and predicate.op == (">" if bright else "<=")
        assert abs(predicate.value - t) <= 0.01
        assert anchor.reaches_tau and _exact_precision(anchor, found) == 1.0
        assert anchor.decision == int(bright) and anchor.coverage == 0.5


def test_a_glass_box_threshold_between_cuts_is_bracketed_and_the_rest_said_to_fall_short(glass):
    """t = 0.6 lies between the cuts 0.5 and 0.65: subjects beyond them get brightness at the cut nearest t on
    their side (within one quartile bin, 0.15, of t); subjects between the cuts get no anchor, and say so. On
    brightness alone: with the nuisance features too, a finite cohort can lend one of them a chance rule for a
    subject near t (e.g. 20 of 21 rows, precision 0.952), which is an anchor of this cohort, not of the model."""
    t = 0.6
    outputs = model_outputs(Brightness(t).eval(), glass, SPEC)
    found = cohort(None, _card(t), glass, features=["brightness"], outputs=outputs)
    values = glass.feature_values("brightness")
    for row in range(0, N_GLASS, 2):
        anchor = cohort_anchor(found, row)
        if 0.5 < values[row] <= 0.65:
            assert not anchor.reaches_tau and "does not reach the precision threshold 0.95" in anchor.text
            continue
        assert anchor.reaches_tau
        assert {p.feature for p in anchor.predicates} == {"brightness"}
        cut = anchor.predicates[-1].value
        assert abs(cut - t) <= 0.15 and cut == pytest.approx(0.65 if values[row] > t else 0.5)


# ---------------------------------------------------------------- the search on real data


def test_the_rule_holds_for_its_subject_and_its_bounds_hold_the_exact_precision(synthbrain, synthbrain_cohort):
    """50 SynthBrain subjects: each rule holds for its subject; the cohort's exact precision lies within the bounds
    (each holds with probability >= 1 - delta = 0.9, so at most 10% may miss; none do here)."""
    dataset, _, _ = synthbrain
    found = synthbrain_cohort
    missed = 0
    for row in range(0, 400, 8):
        anchor = cohort_anchor(found, row)
        subject = {f: found.values[f][row : row + 1] for f in found.features}
        assert anchor.holds(subject)[0], anchor.text
        assert anchor.subject == dataset.subjects[row]
        assert anchor.decision == found.decisions[row]
        exact = _exact_precision(anchor, found)
        missed += not anchor.precision_low <= exact <= anchor.precision_high
        assert anchor.n_covered >= AnchorConfig().min_rows
        assert anchor.coverage == pytest.approx(anchor.n_covered / 400)
    assert missed <= 5


def test_the_same_seed_gives_the_same_anchor(synthbrain):
    dataset, card, outputs = synthbrain
    first = subject_anchor(None, card, dataset, "sub-0007", outputs=outputs, seed=3)
    again = subject_anchor(None, card, dataset, "sub-0007", outputs=outputs, seed=3)
    assert first == again and first.text == again.text
    assert first.reaches_tau and first.predicates


def test_the_cohorts_rules_are_the_sampled_subjects_anchors(synthbrain, synthbrain_cohort):
    dataset, card, outputs = synthbrain
    table = global_anchors(None, card, dataset, outputs=outputs, n_subjects=10, n_rules=3, seed=1)
    assert 1 <= len(table.anchors) <= 3 and table.n_reaching >= len(table.anchors)
    assert list(table.explained) == sorted(table.explained) and 0 < table.explained[-1] <= 1
    frame = table.table
    assert list(frame["rule"]) == [a.rule for a in table.anchors] and (frame["precision_low"] >= 0.95).all()
    rows = [dataset.index_of(s) for s in table.sampled]
    alone = {cohort_anchor(synthbrain_cohort, row, seed=1).predicates for row in rows}
    assert {a.predicates for a in table.anchors} <= alone  # seeded by (seed, row): the same as found alone
    assert table == global_anchors(None, card, dataset, outputs=outputs, n_subjects=10, n_rules=3, seed=1)


def test_a_cohort_that_decides_alike_needs_no_condition():
    values = {"x": np.arange(40.0)}
    anchor = anchor_array(values, np.ones(40, dtype=int), {"x": 3.0}, 1, labels=("no", "yes"))
    assert anchor.predicates == () and anchor.coverage == 1 and anchor.reaches_tau
    assert anchor.text.startswith("For every subject the model says yes")


# ---------------------------------------------------------------- bad input


def test_bad_input_names_the_problem_and_the_fix(synthbrain, glass):
    dataset, card, outputs = synthbrain
    with pytest.raises(DatasetError, match="Unknown subject 'nobody'") as raised:
        subject_anchor(None, card, dataset, "nobody", outputs=outputs)
    assert_whole(str(raised.value))
    with pytest.raises(EveInputError, match="Unknown feature 'height'") as raised:
        subject_anchor(None, card, dataset, "sub-0000", outputs=outputs, features=["height"])
    assert_whole(str(raised.value))
    with pytest.raises(EveInputError, match="is a regression, not a class score") as raised:
        subject_anchor(None, read_card_named("synthbrain-glass-ventricles"), dataset, "sub-0000", outputs=outputs)
    assert_whole(str(raised.value))
    with pytest.raises(EveInputError, match="threshold tau = 1.5 is not between 0 and 1") as raised:
        AnchorConfig(tau=1.5)
    assert_whole(str(raised.value))
    few = load_dataset(write_folder(glass.root.parent / "few", *_few_rows(12)))
    with pytest.raises(EveInputError, match="has 12 rows, fewer than the 20") as raised:
        cohort(None, _card(0.5), few, outputs=np.zeros((12, 1)))
    assert_whole(str(raised.value))


def _few_rows(n: int):
    volumes = {f"s{i}.nii.gz": np.full((SIZE, SIZE), 0.5, np.float32) for i in range(n)}
    return volumes, [{"file": f"s{i}.nii.gz", "brightness": i} for i in range(n)]


def test_inputs_are_left_unchanged(synthbrain):
    dataset, card, outputs = synthbrain
    before, table = outputs.copy(), dataset.table.copy()
    subject_anchor(None, card, dataset, "sub-0001", outputs=outputs)
    np.testing.assert_array_equal(outputs, before)
    assert dataset.table.equals(table)


# ---------------------------------------------------------------- the command


def test_the_anchors_command_writes_a_subjects_rule(glass_folder, tmp_path, capsys):
    model = torch.jit.script(Brightness(0.5).eval())
    path = tmp_path / "bright.pt"
    torch.jit.save(model, path)
    (tmp_path / "bright.json").write_text(
        json.dumps({"input": {"kind": "slice", "size": SIZE}, "outputs": {"names": ["logit b"], "kind": "logit"}})
    )
    out = tmp_path / "anchor.json"
    args = ["anchors", "--data", str(glass_folder), "--model", str(path), "--subject", "s03", "--out", str(out)]
    assert main([*args, "--device", "cpu"]) == 0
    written = json.loads(out.read_text())
    assert written["anchor"]["predicates"][0]["feature"] == "brightness"
    assert written["decision"] == "whether logit b > 0 (1) or not (0)" and written["n_cohort"] == N_GLASS
    assert "IF brightness" in capsys.readouterr().out
    assert main(["anchors", "--data", str(glass_folder), "--model", str(path), "--out", str(out)]) == 0
    assert json.loads(out.read_text())["rules"][0]["predicates"][0]["feature"] == "brightness"
    assert main([*args[:-2], "--out", str(out), "--features", "height"]) == 2
    assert "Unknown feature 'height'" in capsys.readouterr().err
