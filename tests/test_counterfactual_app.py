"""Browse's "What if …?" (AppTest, real engine): off until asked, then the subject's counterfactual with
the model's output before and after, a new value changing what is shown."""

from __future__ import annotations

import json

import pytest
from test_app import _app, _no_exception, _texts

from components import state


def _whatif_figure(at) -> dict | None:
    for chart in at.get("plotly_chart"):
        spec = json.loads(chart.proto.spec)
        titles = [a.get("text", "") for a in spec["layout"].get("annotations", [])]
        if any("difference" in t for t in titles):
            return spec
    return None


def test_what_if_shows_the_counterfactual_and_a_new_value_changes_it():
    at = _app()
    at.switch_page("app_pages/browse.py").run()
    _no_exception(at)
    assert "What if" in "\n".join(h.value for h in at.subheader)
    assert _whatif_figure(at) is None  # nothing loaded until asked
    at.toggle(key=state.BROWSE_WHATIF).set_value(True).run()
    _no_exception(at)
    figure = _whatif_figure(at)
    assert figure is not None and "ventricle_volume" in json.dumps(figure["layout"]["annotations"])
    labels = [m.label for m in at.metric]
    assert "ventricle_volume, read from the image" in labels and "Change near the ventricles" in labels
    assert "round trip" in _texts(at)
    value_key = state.keyed(state.BROWSE_WHATIF_VALUE, "synthbrain", "sub-0000", "ventricle_volume")
    slider = at.slider(key=value_key)
    assert slider.value == pytest.approx(13.7057 + 10, abs=0.01)  # the suggested edit: ventricles +10 mL
    before = figure["data"][2]["z"]
    slider.set_value(40.0).run()
    _no_exception(at)
    assert _whatif_figure(at)["data"][2]["z"] != before
    assert "40" in json.dumps(_whatif_figure(at)["layout"]["annotations"])


def test_what_if_on_a_dataset_without_a_generator_gives_the_training_command(monkeypatch):
    at = _app()
    at.switch_page("app_pages/browse.py").run()
    at.toggle(key=state.BROWSE_WHATIF).set_value(True)
    monkeypatch.setattr("components.loaders.diffusion_unavailable", lambda sel: "No generator: run `train-diffusion`.")
    at.run()
    _no_exception(at)
    assert "train-diffusion" in "\n".join(i.value for i in at.info)
