"""The features scored together in the CLI, the reports and the app (issue 36): the joint score S(all), what each
feature adds to the others and its Shapley effect, checked against a glass box whose truth is known
(`synthbrain-glass-ventricles` reads the ventricles only: age, correlated with them, adds nothing), and bad input.
The estimators themselves are tested in test_joint.py."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

import engine.cli.score as score_command
from components import state
from engine.cards import ModelRef
from engine.cli.main import main
from engine.models import load
from engine.reports import figures, prose, writers
from engine.reports import html as report
from engine.scores import joint, service
from engine.scores.tvd import score_table

ROOT = Path(__file__).resolve().parents[1]
GLASS = "synthbrain-glass-ventricles"  # its output is a function of ventricle volume only


@pytest.fixture()
def preloaded(monkeypatch, synthbrain):
    """`--data synthbrain` without re-reading its headers: the CLI gets the session's dataset."""
    real = score_command.open_dataset
    monkeypatch.setattr(score_command, "open_dataset", lambda s: synthbrain if s == "synthbrain" else real(s))


@pytest.fixture(scope="module")
def glass_report(synthbrain):
    """The glass box on all 400 SynthBrain subjects (it was trained on none), with the features together."""
    model, card = load(ModelRef.builtin(GLASS))
    return service.with_joint(service.data_scores(model, card, synthbrain, split="all", n_boot=50))


def _row(table: pd.DataFrame, feature: str) -> pd.Series:
    return table[table["feature"] == feature].iloc[0]


# 1. against the truth: the glass box reads the ventricles only ------------------------------------------------


def test_cli_glass_box_age_adds_nothing_though_it_scores_high_on_its_own(preloaded, tmp_path, capsys):
    out = tmp_path / "glass.json"
    argv = ["score", "--data", "synthbrain", "--model", GLASS, "--split", "all", "--n-boot", "50", "--out", str(out)]
    assert main(argv) == 0
    doc = json.loads(out.read_text())
    scores = pd.DataFrame(doc["scores"])
    age, ventricles = _row(scores, "age"), _row(scores, "ventricle_volume")
    assert age["score"] > 0.4  # on its own: age shares the ventricles' variance (Spearman 0.8)
    assert age["added"] < 0.03 and age["added_ci_high"] < 0.05  # added to the others: nothing
    assert ventricles["added"] > 0.15 and ventricles["shapley"] > age["shapley"]
    assert age["shapley"] > 0.1  # a fair share: the unread, correlated feature keeps part of the shared variance
    together = doc["joint"]  # the top-level entry: how, and S(all) per output
    assert together["exact"] and together["n_subsets"] == 2**9 and together["categorical"] == ["sex"]
    (total,) = together["scores"]
    assert total["status"] == "ok" and total["score"] > 0.9 and total["ci_low"] <= total["score"] <= total["ci_high"]
    assert scores["shapley"].sum() == pytest.approx(total["score"], abs=1e-9)  # the shares add up to S(all)
    csv = pd.read_csv(tmp_path / "glass.csv")  # the joint score on every row: a CSV travels without its JSON
    assert {"added", "added_ci_low", "shapley", "shapley_ci_high", "joint_score", "joint_ci_low"} <= set(csv.columns)
    assert np.allclose(csv["joint_score"], total["score"]) and np.allclose(csv["added"], scores["added"])
    printed = capsys.readouterr().out
    assert "together, dark_pixels:  S(all) = " in printed and re.search(r"age\s+added = 0\.00", printed)


def test_the_report_says_age_explains_the_output_only_through_features_correlated_with_it(glass_report):
    sentences = " ".join(prose.results_sentences(glass_report))
    assert "Together the recorded features explain 99%" in sentences
    assert "age explains" in sentences and "only through features correlated with it" in sentences
    assert "need not add up" not in sentences  # the joint score says how much they explain together
    assert "Fair shares (Shapley effects, adding up to 99%)" in sentences
    methods = " ".join(prose.methods_paragraphs(glass_report))
    assert "S(all) − S(all but A)" in methods and "not evidence that the model reads the feature" in methods
    assert "every subset of the features was scored (512 subsets)" in methods and "Categorical feature (sex)" in methods
    page = report.html_report(glass_report)
    assert "Added to the others" in page and "Shapley effect" in page and "Fair shares of what the features" in page
    assert "Features together" in page and "Other details" not in page  # its metadata is shown in words


def test_the_app_switches_between_the_views_and_notes_what_a_feature_adds():
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=600)
    at.session_state[state.DATASET] = "synthbrain"
    at.run()
    at.switch_page("app_pages/scores.py").run()
    at.sidebar.selectbox(key=state.keyed(state.MODEL, "synthbrain")).set_value(GLASS).run()
    at.radio(key=state.SCORES_VIEW).set_value("added to the others").run()
    assert not at.exception, [e.value for e in at.exception]
    # 9 features on the 120 test images: a line per numeric feature (the spline curves need 160), scored
    assert not any("too_many_features" in w.value for w in at.warning)
    at.selectbox(key=state.keyed(state.SCORES_SPLIT, "synthbrain")).set_value("all").run()
    assert not at.exception, [e.value for e in at.exception]
    words = [m.value for m in at.markdown if m.value.startswith("•")]
    age = next(w for w in words if w.startswith("• age adds"))
    assert "age adds 0%" in age and "only through features correlated with it" in age
    assert any(c.value.startswith("Bars: what each feature adds") for c in at.caption)
    at.radio(key=state.SCORES_VIEW).set_value("fair share").run()
    words = [m.value for m in at.markdown if m.value.startswith("•")]
    assert re.match(
        r"• The recorded features explain 9\d% .*of the decision together; the image carries the rest", words[0]
    )
    assert any("not proof that the model reads a feature" in c.value for c in at.caption)
    at.radio(key=state.SCORES_VIEW).set_value("on its own").run()
    words = [m.value for m in at.markdown if m.value.startswith("•")]
    age = next(w for w in words if w.startswith("• age explains"))
    assert "But it adds only 0% to the other features" in age


# 2. bad input: data problems come back as statuses and messages, never as silent numbers ----------------------


def _report(y, features: dict, categorical=(), n_boot=0) -> service.ScoreReport:
    """A data report of outputs y (n,) on synthetic features, as `data_report` builds one."""
    table = score_table(y, features, categorical=categorical, output_names=["y"], n_boot=n_boot, seed=0)
    meta = {"method": "data", "n_boot": n_boot, "seed": 0, "ci_level": 0.95, "n": len(y)}
    return service.ScoreReport(table, ["y"], features, tuple(categorical), meta, outputs=np.asarray(y)[:, None])


def _linear(n=300, seed=0):
    rng = np.random.default_rng(seed)
    a1 = rng.normal(size=n)
    a2 = 0.8 * a1 + 0.6 * rng.normal(size=n)
    return a1 + 0.3 * rng.normal(size=n), {"a1": a1, "a2": a2}


def test_a_constant_feature_is_left_out_and_said_so():
    y, features = _linear()
    rep = service.with_joint(_report(y, {**features, "flat": np.ones(len(y))}))
    flat = _row(rep.table, "flat")
    assert flat["joint_status"] == "single_value" and "single value" in flat["joint_message"]
    assert np.isnan(flat["added"]) and np.isnan(flat["shapley"])
    assert (rep.table[rep.table["feature"] != "flat"]["joint_status"] == "ok").all()
    assert rep.joint["status"].iloc[0] == "ok" and "Left out 'flat'" in rep.joint["message"].iloc[0]
    assert "all features together / y" in report.html_report(rep)  # listed under Problems
    doc = json.loads(writers.json_text(rep))
    assert doc["joint"]["together"] == ["a1", "a2"]


def test_a_constant_output_gives_a_status_on_every_row():
    _, features = _linear()
    rep = service.with_joint(_report(np.zeros(300), features))
    assert set(rep.table["joint_status"]) == {"constant_output"} and rep.joint["status"].iloc[0] == "constant_output"
    sentences = prose.results_sentences(rep)
    assert not any("Together" in s for s in sentences)
    assert "not scored together (constant_output)" in " ".join(prose.methods_paragraphs(rep))


def test_more_features_than_the_subjects_support_say_the_limit_and_keep_the_one_at_a_time_scores():
    rng = np.random.default_rng(1)
    features = {f"a{j}": rng.normal(size=40) for j in range(12)}  # a line each needs 65 subjects
    y = features["a0"] + rng.normal(size=40)
    rep = service.with_joint(_report(y, features))
    assert set(rep.table["joint_status"]) == {"too_many_features"}
    assert "40 subjects support at most 8" in rep.joint["message"].iloc[0]
    assert (rep.table["status"] == "ok").all() and rep.table["score"].notna().all()  # the fallback: one at a time
    sentences = " ".join(prose.results_sentences(rep))
    assert "need not add up" in sentences and "Together" not in sentences
    assert "The features were not scored together (too_many_features): 12 features need" in " ".join(
        prose.methods_paragraphs(rep)
    )
    assert "not scored together: too_many_features" in report.html_report(rep)


def test_beyond_the_exact_limit_the_shapley_effects_are_sampled_and_said_so():
    rng = np.random.default_rng(2)
    d = joint.MAX_EXACT + 1
    features = {f"a{j}": rng.normal(size=240) for j in range(d)}
    y = features["a0"] + 0.5 * features["a1"] + 0.3 * rng.normal(size=240)
    rep = service.with_joint(_report(y, features))
    about = rep.metadata["joint"]
    assert not about["exact"] and about["n_perm"] == joint.N_PERM
    assert rep.table["shapley"].sum() == pytest.approx(rep.joint["score"].iloc[0], abs=1e-9)
    methods = " ".join(prose.methods_paragraphs(rep))
    assert f"averaged over {joint.N_PERM} random orders of the features (sampled, not exact" in methods


def test_a_categorical_feature_beside_numeric_ones_is_scored_by_its_levels_and_said_so():
    y, features = _linear()
    group = np.where(np.arange(300) % 3 == 0, "x", "y")
    y = y + (group == "x")
    rep = service.with_joint(_report(y, {**features, "group": group}, categorical=("group",)))
    assert _row(rep.table, "group")["joint_status"] == "ok" and _row(rep.table, "group")["added"] > 0.05
    assert rep.metadata["joint"]["categorical"] == ["group"]
    methods = " ".join(prose.methods_paragraphs(rep))
    assert "Categorical feature (group): one column per level but one" in methods


def test_no_joint_flag_leaves_the_report_as_it_was(preloaded, tmp_path):
    out = tmp_path / "alone.json"
    argv = ["score", "--data", "synthbrain", "--model", GLASS, "--features", "age,ventricle_volume", "--n-boot", "0"]
    assert main([*argv, "--no-joint", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert "joint" not in doc and "added" not in doc["scores"][0]
    assert "joint_score" not in pd.read_csv(tmp_path / "alone.csv").columns


def test_the_default_command_on_the_test_split_scores_the_features_together_with_lines(preloaded, tmp_path):
    """9 features on the 120 test subjects: too few for a spline curve per feature (160 needed), enough for a
    line each (the neighbour step carries the curvature): scored, and the method says so."""
    out = tmp_path / "glass.json"
    assert main(["score", "--data", "synthbrain", "--model", GLASS, "--n-boot", "0", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["joint"]["scores"][0]["status"] == "ok" and doc["n"] == 120
    assert "lines only" in json.dumps(doc["joint"])
    age = next(r for r in doc["scores"] if r["feature"] == "age")
    assert age["score"] > 0.4 and age["added"] < 0.05  # reads only the ventricles: age adds nothing


# 3. the pieces ----------------------------------------------------------------------------------------------


def test_the_cli_help_states_the_exact_limit_of_the_joint_module(capsys):
    assert main(["score", "--help"]) == 0
    assert f"up to {joint.MAX_EXACT} features" in re.sub(r"\s+", " ", capsys.readouterr().out)


def test_the_fair_shares_stack_up_to_the_joint_score_and_a_failure_draws_no_number():
    y, features = _linear()
    rep = service.with_joint(_report(y, features))
    colors = figures.feature_colors(list(features))
    fig = figures.shapley_stack(rep.table, rep.joint, colors)
    widths = [float(t.x[0]) for t in fig.data]
    assert sum(widths[:-1]) == pytest.approx(rep.joint["score"].iloc[0]) and sum(widths) == pytest.approx(1.0)
    failed = rep.joint.assign(status="too_many_features", score=np.nan)
    assert all(float(t.x[0]) == 0 for t in figures.shapley_stack(rep.table, failed, colors).data)
    bars = figures.added_bars(rep.table.assign(joint_status="single_value"), colors)
    assert all(float(x) == 0 for t in bars.data if t.x is not None and t.x[0] is not None for x in t.x)


def test_through_others_needs_a_high_own_score_and_an_added_score_near_zero():
    row = pd.Series({"status": "ok", "joint_status": "ok", "score": 0.6, "added": 0.0})
    assert prose.through_others(row)
    assert not prose.through_others(row.copy().replace({0.6: 0.1}))
    assert not prose.through_others(pd.Series({**row, "added": 0.2}))
    assert not prose.through_others(pd.Series({**row, "joint_status": "too_many_features"}))


def test_the_apps_report_with_the_features_together_has_the_numbers_on_screen_on_its_data_rows_only():
    """`loaders.score_report_with_joint` outside a session: the downloads' report with the joint part, the same
    numbers as the page's view (`loaders.set_scores`), and none on the ground truth's rows."""
    from types import SimpleNamespace

    from components import loaders

    ref, features = ModelRef.builtin("shapes-glass-background"), ("size", "background", "intensity")
    sel = SimpleNamespace(source="shapes", model_ref=ref, device="cpu", output=0, generator=None)
    rep = loaders.score_report_with_joint(sel, "test", features, 50)
    data = rep.table[rep.table["source"] == "data"]
    assert (data["joint_status"] == "ok").all() and rep.table[rep.table["source"] != "data"]["added"].isna().all()
    shown = loaders.set_scores("shapes", ref, "cpu", 0, "test", features, 50)
    np.testing.assert_allclose(data["shapley"], shown.effects["shapley"])
    np.testing.assert_allclose(rep.joint["score"], shown.joint["score"])
    csv = pd.read_csv(io.StringIO(writers.csv_text(rep)))
    assert csv[csv["source"] == "data"]["joint_score"].notna().all()
    assert csv[csv["source"] != "data"]["joint_score"].isna().all()


def test_the_generator_path_scores_the_glass_box_together_and_age_adds_nothing(synthbrain):
    """The glass box reads the ventricles only; on the generator path (the committed generator, debiased by the 120
    test images) age still explains much on its own, adds about nothing to the others, and the debiased numbers
    agree with the data path on all 400 images (benchmarks/results/joint-generator.json has the full run)."""
    model, card = load(ModelRef.builtin(GLASS))
    features = ["ventricle_volume", "age", "hippocampal_volume"]
    report = service.debiased_scores(model, card, synthbrain, features, split="test", n_boot=100, joint=True)
    assert report.metadata["joint"]["path"] == "debiased" and report.joint.iloc[0]["status"] == "ok"
    age = _row(report.table, "age")
    assert age["score"] > 0.4 and age["added"] < 0.03 and age["added_ci_low"] == 0.0
    reference = service.with_joint(service.data_scores(model, card, synthbrain, features, split="all", n_boot=0))
    for column in ("added", "shapley"):
        np.testing.assert_allclose(report.table[column], reference.table[column], atol=0.05)
    assert report.table["shapley"].sum() == pytest.approx(report.joint.iloc[0]["score"])


def test_the_apps_downloads_carry_the_generator_paths_features_together_on_its_rows():
    """`loaders.score_report_with_joint` with the page's generator rows: the debiased and the generator-alone rows
    keep their own added scores, Shapley effects and joint score in the report and its CSV (they were dropped)."""
    from types import SimpleNamespace

    from components import loaders

    ref, features = ModelRef.builtin("shapes-size-texture"), ("size", "texture", "background")
    sel = SimpleNamespace(source="shapes", model_ref=ref, device="cpu", output=0, generator="shapes")
    rows = loaders.generator_scores(sel, features, 4, 16, "test")
    rep = loaders.score_report_with_joint(sel, "test", features, 50, rows)
    for source in ("debiased", "diffusion"):
        part = rep.table[rep.table["source"] == source].set_index("feature")
        assert (part["joint_status"] == "ok").all()
        mine = rows[rows["source"] == source].set_index("feature")
        np.testing.assert_allclose(part["shapley"], mine.loc[part.index, "shapley"])
    csv = pd.read_csv(io.StringIO(writers.csv_text(rep)))
    debiased = csv[csv["source"] == "debiased"]
    assert debiased["joint_score"].notna().all() and debiased["shapley"].sum() == pytest.approx(
        debiased["joint_score"].iloc[0], abs=1e-4
    )
    assert csv[csv["source"] == "truth"]["joint_score"].isna().all()
