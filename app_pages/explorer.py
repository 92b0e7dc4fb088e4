"""Feature explorer (live): slide one feature's value and watch conditional samples morph
(fixed seeds), each captioned with its probe-measured value; the model's outputs at that
value against E[f | A = a] from data; two values side by side with their difference."""

import time

import numpy as np
import streamlit as st

from components import (
    cohort_training,
    colors,
    errors,
    explorer_panels,
    loaders,
    samples,
    scrubber,
    share,
    sidebar,
    state,
)
from engine.diffusion.banks import positions

sel = sidebar.page_with_dataset("Feature explorer (live)")
if loaders.diffusion_unavailable(sel) is not None:
    cohort_training.offer(sel, "explorer")
    st.stop()

ds = sel.dataset
dm = None
with errors.shown("Loading the generator"):
    dm = loaders.diffusion(sel.generator)
if dm is None:
    st.stop()
palette = colors.feature_colors(ds.features)

# -- 1. controls -------------------------------------------------------------------------
c = st.columns([2, 1, 1, 1, 1.4], vertical_alignment="bottom")
feature = c[0].selectbox("Feature", dm.features, key=state.keyed(state.EXPLORER_FEATURE, sel.source))
n = c[1].select_slider("Samples", [4, 8, 12, 16], key=state.EXPLORER_N)
seed = int(c[2].number_input("Seed", 0, 9999, key=state.EXPLORER_SEED, help="Same seed, same subjects."))
guidance = c[3].select_slider(
    "Guidance",
    [1.0, 1.5, 2.0, 3.0],
    key=state.EXPLORER_GUIDANCE,
    help="Classifier-free guidance for display only: > 1 makes samples more typical. Scores always use 1.",
)
live = c[4].toggle(
    "Live scrubbing",
    key=state.EXPLORER_LIVE,
    help="Drag through the values with the images swapped in your browser, no server round trip: every "
    "value's samples are drawn in the background (nearest first) and sent once. Releasing the slider updates "
    "the model's panels.",
)

info = dm.feature(feature)
categorical = info.is_categorical
options = positions(dm, feature)  # the banks' positions (each one cached once drawn)
lo, hi = (None, None) if categorical else dm.feature_range(feature)
value_key = state.keyed(state.EXPLORER_VALUE, sel.source, feature)
value_b_key = state.keyed(state.EXPLORER_VALUE_B, sel.source, feature)


def _nearest(percentile: int):
    """The option nearest to a percentile of the feature in the data (the middle one if unknown)."""
    if categorical or info.data_percentiles is None:
        return options[len(options) // 2] if percentile == 50 else options[-1]
    target = info.data_percentiles[percentile]
    return min(options, key=lambda v: abs(v - target))


asked = share.pending_value(feature, options, lo, hi)
if asked is not None:  # a shared link's value, at the nearest slider position
    st.session_state[value_key] = asked
# start at the data's median, and compare with its 95th percentile (the range ends are rare)
if st.session_state.get(value_key) not in options:
    st.session_state[value_key] = _nearest(50)
if st.session_state.get(value_b_key) not in options:
    st.session_state[value_b_key] = _nearest(95)


def _step(delta: int) -> None:
    i = options.index(st.session_state[value_key])
    st.session_state[value_key] = options[int(np.clip(i + delta, 0, len(options) - 1))]


if live:  # the scrubber has its own slider, steps and Play; the value is plain state it moves on release
    st.session_state[value_key] = value = st.session_state[value_key]
    play = False
else:
    c = st.columns([8, 1, 1, 1])
    value = c[0].select_slider(f"{feature} = a", options, key=value_key, format_func=scrubber.label)
    c[1].button("◀", key=state.keyed(state.EXPLORER_STEP, "back"), on_click=_step, args=(-1,), help="One step down")
    c[2].button("▶", key=state.keyed(state.EXPLORER_STEP, "fwd"), on_click=_step, args=(1,), help="One step up")
    play = c[3].button("Play", key=state.keyed(state.EXPLORER_STEP, "play"), help="Sweep the whole range")
share.write_url(sel, feature=feature, value=scrubber.label(value), seed=seed)


def _captions(measured: np.ndarray | None, k: int) -> list[str]:
    if measured is None:
        return [f"sample {i + 1}" for i in range(k)]
    return [f"measured {m:.3g}" for m in measured]


def _draw(target, v) -> tuple[np.ndarray, np.ndarray | None]:
    images, measured = loaders.conditional_samples(sel.generator, feature, v, n, seed, float(guidance))
    target.plotly_chart(samples.sample_grid(images, _captions(measured, len(images))), key=None)
    return images, measured


# -- 2. the grid of conditional samples, full width (three tiles a row: >= 256 px each on a laptop) --
st.subheader(f"Samples of p(x | {feature} = {'a' if live else scrubber.label(value)})")
if live:
    bank = scrubber.BankSpec(sel.generator, feature, tuple(options), n, seed, float(guidance))
    scrubber.live_samples(bank, value_key)
grid = st.empty()
if play:
    bar = st.progress(0.0, text="Sweeping the range (each value is cached once drawn)...")
    for i, v in enumerate(options):
        _draw(grid, v)
        bar.progress((i + 1) / len(options), text=f"{feature} = {v}")
        time.sleep(0.05)
    bar.empty()
images = None
t0 = time.perf_counter()
with errors.shown("Sampling"), st.spinner("Sampling..."):
    if live:  # the page's value, for the panels below (the scrubber drew it first: cached)
        images, measured = loaders.conditional_samples(sel.generator, feature, value, n, seed, float(guidance))
    else:
        images, measured = _draw(grid, value)
elapsed = time.perf_counter() - t0
if images is None:
    st.stop()
explorer_panels.samples_caption(sel, feature, value, measured, n, float(guidance), live, elapsed)

# -- 3. the model's outputs at this value ------------------------------------------------
explorer_panels.model_at_value(
    sel, feature, value, n, seed, float(guidance), categorical, palette.get(feature, "#0072B2")
)

# -- 4. two values side by side ----------------------------------------------------------
explorer_panels.two_values(sel, feature, value, options, value_b_key, images, n, seed, float(guidance))

if not live:  # the scrubber fills the same cache on its own
    explorer_panels.precompute(sel, feature, options, n, seed, float(guidance))
