"""The Compare page sets an MLP's XtrAIn, XtrAIn+ and Xstep maps beside captum's (AppTest, real engine)."""

from __future__ import annotations

import json

from streamlit.testing.v1 import AppTest
from test_app import APP, TIMEOUT

from components import state

MLP = "shapes-elongated-mlp"


def _tiles(at: AppTest) -> set[str]:
    figures = [json.loads(el.proto.spec) for el in at.get("plotly_chart")]
    return {a.get("text") for f in figures for a in f["layout"].get("annotations", [])}


def test_compare_shows_the_mlps_xtrain_maps_beside_captums_for_a_tracked_image_and_xstep_for_any():
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.session_state[state.DATASET] = "shapes"
    at.run()
    at.selectbox(key=state.keyed(state.MODEL, "shapes")).set_value(MLP).run()
    at.switch_page("app_pages/compare.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert {"XtrAIn", "XtrAIn+", "Xstep", "IntegratedGradients", "LRP"} <= _tiles(at)
    [note] = [c.value for c in at.caption if c.value.startswith("From the training trajectory")]
    assert "stored maps shown: XtrAIn, XtrAIn+" in note
    subject = at.selectbox(key=state.keyed(state.COMPARE_SUBJECT, "shapes"))
    untracked = subject.options[20]  # the first 8 test images are the tracked ones
    subject.set_value(untracked).run()
    assert not at.exception, [e.value for e in at.exception]
    assert "Xstep" in _tiles(at) and "XtrAIn" not in _tiles(at)
    assert any("stored maps shown: none for this image" in c.value for c in at.caption)


def test_compare_says_why_a_cnn_has_no_xtrain_maps():
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.session_state[state.DATASET] = "shapes"
    at.run()
    at.switch_page("app_pages/compare.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert "XtrAIn" not in _tiles(at)
    [missing] = [c.value for c in at.caption if c.value.startswith("Not available for this model")]
    assert "Xstep: it swaps a fully connected first layer's per-pixel weights" in missing
