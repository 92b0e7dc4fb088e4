"""Anchors in the app (AppTest, real engine): the scores page's cohort rules behind a button, and the Browse
panel's rule for one subject (`components.anchors_panel.show_subject_anchor`, run here in a script of its own)."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest
from test_app import TIMEOUT, _app, _no_exception, _texts

from components import anchors_panel, state


def _subject_panel(model: str, subject: str) -> None:
    """The Browse page's call, with the sidebar's selection built by hand."""
    from components import anchors_panel
    from components.sidebar import Selection
    from engine.cards import ModelRef

    sel = Selection(
        source="synthbrain",
        dataset_label="SynthBrain",
        model_ref=ModelRef.builtin(model),
        model_label=model,
        output=0,
        output_name="the model's output",
        device="cpu",
    )
    anchors_panel.show_subject_anchor(sel, subject)


def _panel(model: str, subject: str = "sub-0007") -> AppTest:
    return AppTest.from_function(_subject_panel, args=(model, subject), default_timeout=TIMEOUT).run()


def test_the_scores_page_finds_the_cohorts_rules_on_request():
    at = _app()
    at.switch_page("app_pages/scores.py").run()
    _no_exception(at)
    assert not [d for d in at.dataframe if "rule" in d.value.columns]
    assert "the paper's submodular pick" in _texts(at)
    at.button(key=state.SCORES_ANCHORS_RUN).click().run()
    _no_exception(at)
    [rules] = [d.value for d in at.dataframe if "rule" in d.value.columns]
    assert 1 <= len(rules) <= anchors_panel.RULES_PICKED
    assert (rules["precision"] >= 0.95).all() and rules["explained so far"].is_monotonic_increasing
    assert any("ventricle_volume" in rule for rule in rules["rule"])  # the feature the diagnosis reads most
    assert "sampled images have a rule with precision ≥ 0.95" in _texts(at)
    at.switch_page("app_pages/overview.py").run()
    at.switch_page("app_pages/scores.py").run()
    assert [d for d in at.dataframe if "rule" in d.value.columns], "the rules are kept for the session"


def test_the_browse_panel_shows_the_subjects_rule():
    at = _panel("synthbrain-diagnosis")
    _no_exception(at)
    text = _texts(at)
    assert "**IF** ventricle_volume > 15.0 mL" in text and "**THEN** the model says **logit P(label=1) > 0**" in text
    assert [m.label for m in at.metric] == ["Precision", "Bounds", "Coverage"]
    assert "Anchors (Ribeiro, Singh & Guestrin, AAAI 2018)" in text and not at.warning
    other = _panel("synthbrain-diagnosis", "sub-0001")
    assert _texts(other) != text


def test_the_browse_panel_says_a_read_out_has_no_decision_to_explain():
    at = _panel("synthbrain-glass-ventricles")
    _no_exception(at)
    assert not at.error and not at.metric
    [note] = [i.value for i in at.info]
    assert note.startswith("No rule to find:") and "give a threshold" in note
