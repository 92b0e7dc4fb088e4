"""The feature explorer's live scrubbing, Python side (`components.scrubber`): the order the bank fills in,
the frames' encoding, what the component is sent, and the page with the scrubber on (AppTest).

What the browser does with the bank (swapping frames while dragging, no rerun) is tests/test_browser.py's.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_app import _app, _figures, _no_exception

from components import loaders, samples, scrubber, state


def _spec(k: int = 41, n: int = 4) -> scrubber.BankSpec:
    return scrubber.BankSpec("shapes", "size", tuple(float(v) for v in np.linspace(6, 14, k)), n, 0, 1.0)


@pytest.fixture
def fake_frames(monkeypatch):
    """`loaders.conditional_frames` recorded, with n one-pixel "frames" named by their value."""
    calls = []

    def frames(generator, feature, value, n, seed, guidance):
        calls.append(value)
        return tuple(f"data:image/webp;base64,{value}/{i}" for i in range(n)), tuple(value + i for i in range(n))

    monkeypatch.setattr(scrubber.loaders, "conditional_frames", frames)
    monkeypatch.setattr(scrubber.loaders, "bank_drawn", lambda *a: False)
    return calls


def test_fill_order_starts_at_the_value_and_alternates_outwards():
    assert scrubber.fill_order(41, 20)[:5] == [20, 19, 21, 18, 22]
    assert sorted(scrubber.fill_order(41, 20)) == list(range(41))
    assert scrubber.fill_order(5, 0) == [0, 1, 2, 3, 4]
    assert scrubber.fill_order(5, 4) == [4, 3, 2, 1, 0]


def test_fill_draws_the_nearest_positions_first_and_stops_at_its_budget(fake_frames):
    spec = _spec()
    assert scrubber.fill(spec, 10, set(), budget_s=0) == {10}  # one position at least, the value's
    assert fake_frames == [spec.options[10]]
    ready = scrubber.fill(spec, 10, {10, 9}, budget_s=60)
    assert ready == set(range(41))
    assert fake_frames[1:4] == [spec.options[11], spec.options[8], spec.options[12]]  # 9 and 10 not redrawn
    assert len(fake_frames) == 1 + 39


def test_while_another_session_fills_a_run_takes_only_the_pages_position(fake_frames):
    spec = _spec()
    assert scrubber._FILLING.acquire(blocking=False)  # another session is sampling
    try:
        assert scrubber.fill(spec, 10, set(), budget_s=60.0) == {10}
        assert scrubber.fill(spec, 10, {10}, budget_s=60.0) == {10}  # nothing more until its turn
    finally:
        scrubber._FILLING.release()
    assert len(scrubber.fill(spec, 10, {10}, budget_s=60.0)) == 41  # its turn: the rest


def test_a_bank_drawn_beforehand_is_read_whole_in_one_run(fake_frames, monkeypatch):
    monkeypatch.setattr(scrubber.loaders, "bank_drawn", lambda *a: True)
    spec = _spec()
    assert scrubber.fill(spec, 10, set(), budget_s=0.0) == set(range(41))


def test_payload_sends_every_ready_position_with_n_frames_and_their_measured_values(fake_frames):
    spec = _spec(k=5, n=3)
    data = scrubber.payload(spec, 2, {1, 2})
    assert data["labels"] == ["6", "8", "10", "12", "14"] and data["index"] == 2 and data["n"] == 3
    assert sorted(data["frames"]) == ["1", "2"] and all(len(f) == 3 for f in data["frames"].values())
    assert data["measured"]["2"] == [10.0, 11.0, 12.0]
    assert data["bank"] == spec.key and data["feature"] == "size"
    json.dumps(data)  # what the component's JSON carries
    assert scrubber.bank_bytes(data) == sum(len(u) for f in data["frames"].values() for u in f)


def test_a_bank_key_changes_with_everything_the_frames_depend_on():
    base = _spec()
    keys = {base.key}
    for changed in ({"n": 8}, {"seed": 1}, {"guidance": 2.0}, {"feature": "aspect"}, {"generator": "synthbrain"}):
        keys.add(scrubber.BankSpec(**{**base.__dict__, **changed}).key)
    assert len(keys) == 6


def test_encoded_frames_round_trip_within_a_few_grey_levels():
    yy, xx = np.mgrid[0:64, 0:64] / 63
    images = np.stack([np.clip(0.2 + 0.6 * np.exp(-((xx - 0.5) ** 2 + (yy - c) ** 2) * 8), 0, 1) for c in (0.3, 0.7)])
    urls = samples.encoded_frames(images.astype(np.float32))
    assert len(urls) == 2 and all(u.startswith("data:image/webp;base64,") for u in urls)
    back = np.stack([samples.decoded_frame(u) for u in urls])
    assert back.shape == images.shape
    assert np.abs(back - images).max() <= 12 / 255 and np.abs(back - images).mean() <= 2 / 255
    assert all(len(u) < 3000 for u in urls)  # ~1 kB of WebP a 64 x 64 frame, base64


def test_a_release_moves_the_page_value_once():
    options = [1.0, 2.0, 3.0]
    session = {"v": 2.0}
    assert scrubber.take_release(0, options, "v", session) and session["v"] == 1.0
    assert not scrubber.take_release(0, options, "v", session)  # already there: no page rerun
    assert not scrubber.take_release(None, options, "v", session)
    assert not scrubber.take_release(7, options, "v", session) and session["v"] == 1.0


def _scrubber_data(at) -> dict:
    [element] = at.get("bidi_component")
    return json.loads(element.proto.json)


def test_the_live_explorer_sends_the_values_frames_and_follows_a_release():
    at = _app("shapes")
    at.switch_page("app_pages/explorer.py").run()
    _no_exception(at)
    assert at.toggle(key=state.EXPLORER_LIVE).value  # on by default
    assert _scrubber_data(at)["frames"]  # the first page run sent frames already
    at.toggle(key=state.EXPLORER_LIVE).set_value(False).run()
    value_key = state.keyed(state.EXPLORER_VALUE, "shapes", "size")
    start = at.select_slider(key=value_key).value
    slider = at.select_slider(key=value_key)
    slider.set_value(slider.options[-1]).run()
    last = at.select_slider(key=value_key).value
    at.toggle(key=state.EXPLORER_LIVE).set_value(True).run()
    _no_exception(at)
    assert value_key not in [s.key for s in at.select_slider]  # the scrubber has its own slider ...
    data = _scrubber_data(at)
    i = data["index"]
    assert i == len(data["labels"]) - 1 and data["labels"][i] == scrubber.label(last)
    assert data["n"] == 8 and str(i) in data["frames"]
    images, measured = loaders.conditional_samples("shapes", "size", last, 8, 0, 1.0)
    decoded = np.stack([samples.decoded_frame(u) for u in data["frames"][str(i)]])
    assert np.abs(decoded - images).mean() < 2 / 255  # ... showing the page value's samples
    assert data["measured"][str(i)] == pytest.approx(measured, abs=1e-3)
    assert at.query_params["value"] == scrubber.label(last)
    violin = _figures(at)[0]["data"][0]["y"]

    at.session_state[value_key] = start  # what a release at the median does (`scrubber.take_release`)
    at.run()
    _no_exception(at)
    moved = _scrubber_data(at)
    assert moved["labels"][moved["index"]] == scrubber.label(start) and str(moved["index"]) in moved["frames"]
    assert _figures(at)[0]["data"][0]["y"] != violin  # the model's panels follow
    assert at.query_params["value"] == scrubber.label(start)  # and the shareable URL
    at.run()
    assert _scrubber_data(at)["index"] == moved["index"]  # plain state: kept with no slider owning it

    at.toggle(key=state.EXPLORER_LIVE).set_value(False).run()
    _no_exception(at)
    assert at.select_slider(key=value_key).value == start  # the slider path again, at the same value


def test_a_full_bank_is_all_sent(monkeypatch):
    """A two-level feature (SynthBrain's sex) fills in one run with a generous budget."""
    monkeypatch.setattr(scrubber, "FILL_BUDGET_S", 60.0)
    at = _app("synthbrain")
    at.switch_page("app_pages/explorer.py").run()
    at.selectbox(key=state.keyed(state.EXPLORER_FEATURE, "synthbrain")).set_value("sex").run()
    at.select_slider(key=state.EXPLORER_N).set_value(4)
    at.toggle(key=state.EXPLORER_LIVE).set_value(True).run()
    _no_exception(at)
    data = _scrubber_data(at)
    assert data["labels"] == ["F", "M"] and sorted(data["frames"]) == ["0", "1"]
    assert all(len(f) == 4 for f in data["frames"].values())
    assert data["measured"]["0"] is None  # sex is not probed: the tiles are captioned "sample i"
    assert at.session_state[state.EXPLORER_BANK] == {data["bank"]: {0, 1}}
