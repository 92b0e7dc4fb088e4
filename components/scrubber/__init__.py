"""Scrubbing conditional samples in the browser: a Streamlit components-v2 element that holds a
bank of frames (every slider position × the n samples, each a WebP image with its probe-measured
value) and swaps them client-side while the user drags its own range input, with no server round trip.

* The bank fills progressively: `live_samples` is an `st.fragment(run_every=FILL_EVERY_S)` whose runs
  each draw the positions nearest the page's value first, for about FILL_BUDGET_S of sampling, and
  re-send the bank; the component shows which positions are ready and falls back to the nearest one.
* Releasing the slider (or pausing Play) sends the position back as a trigger value (`released`): the
  page's value moves there and the whole page reruns, so the model's panels follow.
* Sessions' fills take turns (`FILL_SLOTS` at once on the whole server), so page runs keep a core.
* The fragment's timer lives in the browser (Streamlit's auto-rerun): a session whose browser has gone
  sends no more runs, so at most one run's budget is spent after a disconnect; the full bank ends the
  timer (a whole-page rerun re-registers the fragment without `run_every`).

The front end is plain JS, CSS and HTML in this folder (no build step); `scrubber.js` says how it draws.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from components import errors, loaders, state

HERE = Path(__file__).parent
FILL_EVERY_S = 0.5  # the fragment's auto-rerun interval while the bank is incomplete
FILL_BUDGET_S = 0.4  # sampling time one run may spend before it sends what it has (a release waits at most this)
SPEEDS = (5, 10, 20, 40)  # Play's speeds, slider positions per second
FILL_SLOTS = max(1, (os.cpu_count() or 2) - 1)  # sessions' fills sampling at once, server-wide
_FILLING = threading.BoundedSemaphore(FILL_SLOTS)

_component = st.components.v2.component(
    "eve_scrubber",
    html=(HERE / "scrubber.html").read_text(),
    css=(HERE / "scrubber.css").read_text(),
    js=(HERE / "scrubber.js").read_text(),
)


@dataclass(frozen=True)
class BankSpec:
    """Everything a bank of frames depends on (`loaders.conditional_frames`' key, less the value)."""

    generator: str
    feature: str
    options: tuple  # the slider positions, in order
    n: int  # samples per position
    seed: int
    guidance: float

    @property
    def key(self) -> str:
        """Names the bank in the browser: a new key empties the component's frames."""
        return f"{self.generator}|{self.feature}|{self.n}|{self.seed}|{self.guidance}|{len(self.options)}"


def fill_order(k: int, center: int) -> list[int]:
    """Positions 0..k-1 nearest `center` first (below before above at equal distance)."""
    return sorted(range(k), key=lambda i: (abs(i - center), i))


def fill(spec: BankSpec, center: int, ready: set[int], budget_s: float | None = None) -> set[int]:
    """`ready` plus the positions drawn now, nearest `center` first, until `budget_s` (default
    FILL_BUDGET_S) of sampling is spent; one position at least. Drawn positions are cached
    (`loaders.conditional_frames`), so one another session drew cost nothing here; a bank drawn
    beforehand (`loaders.bank_drawn`) is read whole, with no sampling.

    Sessions' fills take turns (FILL_SLOTS at once, server-wide): while another one samples, this run
    takes only the page's own position (its panels need it anyway) and the next run tries again, so the
    fills never hold more than FILL_SLOTS cores and page runs keep the rest."""
    budget_s = FILL_BUDGET_S if budget_s is None else budget_s
    ready = set(ready)
    if loaders.bank_drawn(spec.generator, spec.feature, spec.n, spec.seed, spec.guidance):
        return ready | set(_draw(spec, fill_order(len(spec.options), center), ready, float("inf")))
    if not _FILLING.acquire(blocking=False):
        return ready | set(_draw(spec, [center], ready, 0.0))
    try:
        return ready | set(_draw(spec, fill_order(len(spec.options), center), ready, budget_s))
    finally:
        _FILLING.release()


def _draw(spec: BankSpec, order: list[int], ready: set[int], budget_s: float) -> list[int]:
    drawn = []
    t0 = time.perf_counter()
    for i in order:
        if i in ready:
            continue
        if drawn and time.perf_counter() - t0 >= budget_s:
            break
        loaders.conditional_frames(spec.generator, spec.feature, spec.options[i], spec.n, spec.seed, spec.guidance)
        drawn.append(i)
    return drawn


def label(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def payload(spec: BankSpec, center: int, ready: set[int]) -> dict:
    """What the component is sent: the positions' labels, the page's position, and the ready
    positions' frames (WebP data URLs) with their probe-measured values (None where not probed)."""
    frames, measured = {}, {}
    for i in sorted(ready):
        urls, values = loaders.conditional_frames(
            spec.generator, spec.feature, spec.options[i], spec.n, spec.seed, spec.guidance
        )
        frames[str(i)] = list(urls)
        measured[str(i)] = None if values is None else [round(float(v), 4) for v in values]
    return {
        "bank": spec.key,
        "feature": spec.feature,
        "labels": [label(v) for v in spec.options],
        "index": center,
        "n": spec.n,
        "speeds": list(SPEEDS),
        "frames": frames,
        "measured": measured,
    }


def bank_bytes(data: dict) -> int:
    """Bytes of the encoded images in a payload (as sent: base64 in the data URLs)."""
    return sum(len(url) for urls in data["frames"].values() for url in urls)


def take_release(released, options: list, value_key: str, session) -> bool:
    """A `released` trigger (a position index) into the page's value; True when it moved it."""
    if released is None or not 0 <= int(released) < len(options):
        return False
    value = options[int(released)]
    if session.get(value_key) == value:
        return False
    session[value_key] = value
    return True


def live_samples(spec: BankSpec, value_key: str) -> None:
    """The component with the bank so far; a fragment that draws more until the bank is full."""
    banks = st.session_state[state.EXPLORER_BANK]
    complete = len(banks.get(spec.key, ())) == len(spec.options)

    @st.fragment(run_every=None if complete else FILL_EVERY_S)
    def _scrubber() -> None:
        if st.session_state.pop(state.EXPLORER_RELEASED, False):
            st.rerun(scope="app")  # the value moved: redraw the page's panels first, fill after
        center = spec.options.index(st.session_state[value_key])
        ready = st.session_state[state.EXPLORER_BANK].get(spec.key, set())
        with errors.shown("Drawing the scrubber's samples"):  # its own runs are outside the page's blocks
            ready = fill(spec, center, ready)
        st.session_state[state.EXPLORER_BANK] = {spec.key: ready}  # only the bank on screen is kept
        key = state.keyed(state.EXPLORER_SCRUB, spec.generator, spec.feature)

        def _released() -> None:
            moved = take_release(st.session_state[key].released, list(spec.options), value_key, st.session_state)
            st.session_state[state.EXPLORER_RELEASED] = moved

        _component(key=key, data=payload(spec, center, ready), on_released_change=_released)
        if len(ready) == len(spec.options) and not complete:
            st.rerun(scope="app")  # full: a page run re-registers this fragment without its timer

    _scrubber()
