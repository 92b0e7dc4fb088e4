"""The Overview's answer at a glance: the default view's top scores with their intervals, the reading in
one sentence, and one generated subject morphing across the strongest feature (frames of the explorer's bank)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from components import colors, errors, loaders, samples, score_bars, state
from engine.options import EXPLORER

TOP = 5  # features shown


def top_scores(sel) -> pd.DataFrame | None:
    """The Scores page's first view (every feature, its split and bootstrap: the same cached numbers), best
    first; None without a model."""
    if sel.model_ref is None:
        return None
    split = loaders.default_split(sel.source)
    n_boot = int(st.session_state.get(state.SCORES_N_BOOT, state.DEFAULTS[state.SCORES_N_BOOT]))
    with errors.shown("The data-based scores"), st.spinner("Running the model and computing the scores..."):
        scores = loaders.data_scores(
            sel.source, sel.model_ref, sel.device, sel.output, split, tuple(sel.dataset.features), n_boot
        )
        return scores.sort_values("score", ascending=False, na_position="last").assign(source="data")
    return None


def reading(scores: pd.DataFrame, sel) -> str:
    """The one sentence: the strongest feature's score and interval, and the next one's."""
    ok = scores[scores["status"] == "ok"]
    if ok.empty:
        return "No feature could be scored: see the Scores page for why."
    text = score_bars.caption(ok.iloc[0]["feature"], ok.iloc[0], sel.output_name)
    if len(ok) > 1:
        second = ok.iloc[1]
        ci = "" if np.isnan(second["ci_low"]) else f" ({second['ci_low']:.0%}–{second['ci_high']:.0%})"
        text += f" Next: {second['feature'].replace('_', ' ')}, {second['score']:.0%}{ci}."
    return text


def bars(scores: pd.DataFrame, sel, split_words: str) -> None:
    shown = scores[scores["status"] == "ok"].head(TOP)
    palette = colors.feature_colors(sel.dataset.features)
    figure = score_bars.score_bars(shown, palette, height=60 + 38 * len(shown)).update_layout(showlegend=False)
    st.plotly_chart(figure, key="overview_bars")
    st.caption(f"S(A) from the data, each feature on its own, with 95% bootstrap intervals, on {split_words}.")


def morph(sel, scores: pd.DataFrame) -> None:
    """One generated subject (the explorer's first sample, its seed) as the strongest feature the generator
    knows sweeps its range; nothing when the dataset has no generator."""
    if sel.generator is None or loaders.diffusion_unavailable(sel) is not None:
        return
    from engine.diffusion.banks import morph_values

    model = loaders.diffusion(sel.generator)
    known = [f for f in scores[scores["status"] == "ok"]["feature"] if f in model.features]
    if not known:
        return
    feature = known[0]
    values = morph_values(model, feature)
    with errors.shown("Drawing the morph"), st.spinner(f"Drawing one subject across {feature}..."):
        frames = np.stack(
            [
                loaders.conditional_samples(sel.generator, feature, v, EXPLORER.n, EXPLORER.seed, EXPLORER.guidance)[0][
                    0
                ]
                for v in values
            ]
        )
        st.html(  # 64 px frames shown at 288 px, smoothed by the browser
            f'<img src="{samples.morph_image(frames)}" alt="one generated subject as {feature} changes" '
            'style="width:288px;height:288px;image-rendering:auto;border-radius:4px">'
        )
    span = f"{values[0]:.3g} to {values[-1]:.3g}" if isinstance(values[0], float) else " / ".join(map(str, values))
    st.caption(
        f"One generated subject as {feature.replace('_', ' ')} goes {span}, everything else held by its seed. "
        "Drag it yourself in the Feature explorer."
    )
