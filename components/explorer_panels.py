"""The feature explorer's panels around the samples: how they were drawn, the model's outputs at the
chosen value against E[f | A = a] from data, two values side by side, and the pre-computed bank of slider
positions."""

from __future__ import annotations

import numpy as np
import streamlit as st

from components import curves, errors, loaders, samples, scrubber, state


def _data_mean(curve, value, categorical: bool) -> float | None:
    """E[f | A = value] read off the data's curve (None where the curve has no such point)."""
    if curve.status != "ok":
        return None
    if categorical:
        hits = [i for i, g in enumerate(curve.grid) if g == value]
        return float(curve.mean[hits[0]]) if hits else None
    return float(np.interp(value, curve.grid, curve.mean))


def model_at_value(sel, feature: str, value, n: int, seed: int, guidance: float, categorical: bool, color: str) -> None:
    """The violin of the model's outputs on the n samples and the data's conditional curve."""
    st.subheader("The model at this value")
    if sel.model_ref is None:
        problem = sel.model_note or "Choose a model in the sidebar."
    else:
        problem = loaders.diffusion_compatibility(sel.generator, sel.model_ref, sel.device)
    if problem is not None:
        st.info(problem)
        return
    with errors.shown("Evaluating the model on the samples"):
        y = loaders.sample_outputs(
            sel.generator, feature, value, n, seed, guidance, sel.model_ref, sel.device, sel.output
        )
        split = loaders.default_split(sel.source)
        curve, _, _ = loaders.curve(sel.source, sel.model_ref, sel.device, sel.output, split, feature)
        violin, line = st.columns(2)
        violin.plotly_chart(
            curves.output_distribution(
                y,
                label=f"{feature} = {value}",
                color=color,
                mean_line=_data_mean(curve, value, categorical),
                height=260,
                bounds=loaders.card(sel.model_ref, sel.device).output_range,
            ),
            key="explorer_violin",
        )
        figure = loaders.curve_figure(
            sel.source, sel.model_ref, sel.device, sel.output, split, feature, sel.output_short, color
        )
        marked = curves.prebuilt(figure["data"], figure["layout"]) if categorical else curves.marked(figure, value)
        line.plotly_chart(marked, key="explorer_curve")
        st.caption(
            f"Violin: {sel.output_name} on the {n} samples. Dotted line and curve: E[f | A = a] from the "
            f"{split} images, the dashed line marks a."
        )


def precompute(sel, feature: str, options: list, n: int, seed: int, guidance: float) -> None:
    """An expander that samples every slider position once, so later moves come from the cache."""
    with st.expander("Pre-compute every slider position (for instant moves)"):
        if st.button("Pre-compute", key=state.keyed(state.EXPLORER_STEP, "bank")):
            bar = st.progress(0.0)
            for i, v in enumerate(options):
                loaders.conditional_samples(sel.generator, feature, v, n, seed, guidance)
                bar.progress((i + 1) / len(options), text=f"{i + 1}/{len(options)}")
            st.success(f"All {len(options)} positions of {feature} are cached for seed {seed}, {n} samples.")


def samples_caption(sel, feature: str, value, measured, n: int, guidance: float, live: bool, elapsed: float) -> None:
    """How the samples above were drawn, what their captions read, and how they differ from a score's."""
    categorical = loaders.diffusion(sel.generator).feature(feature).is_categorical
    mae = "" if measured is None or categorical else f" Mean |measured − a| = {np.mean(np.abs(measured - value)):.3g}."
    if live:
        mae = mae and f" At a = {scrubber.label(value)}:{mae[1:].replace('Mean', ' mean', 1)}"
        how = (
            f"Drag the slider or press Play: the images are swapped in your browser from a bank of every value's "
            f"{n} samples (WebP, quality {samples.WEBP_QUALITY}, for display), drawn in the background nearest "
            f"first; until a value is drawn the nearest drawn one stands in, and the strip under the slider shows "
            f"which are ready. Release the slider, step, or pause Play to move a = {scrubber.label(value)} and update "
            f"the model's panels below. Each tile keeps its own noise seed, so the same {n} subjects morph; "
        )
    else:
        how = (
            f"Each tile keeps its own noise seed, so moving the slider morphs the same {n} subjects (to enlarge, "
            "hover the tiles and click the full-screen button at their top right); "
        )
    st.caption(
        f"{how}every other "
        f"feature follows its distribution given {feature} as the generator learned it. Captions: "
        f"{feature} read back from each image by Eve's probe.{mae}{'' if live else f' Drawn in {elapsed:.2f} s.'} "
        f"How these are drawn — {loaders.explorer_sampler(float(guidance)).description} Scores are drawn "
        f"another way, which pins each sample's other features to a real subject's — "
        f"{loaders.score_sampler(sel.generator).description}"
    )


def two_values(sel, feature: str, value, options: list, value_b_key: str, images, n: int, seed: int, guidance: float):
    """The same sample at `value` and at a second value, and their difference."""
    st.subheader("Two values side by side")
    c = st.columns([3, 1])
    value_b = c[0].select_slider(
        f"Compare {feature} = {value} with",
        options,
        key=value_b_key,
        format_func=lambda v: f"{v:.4g}" if isinstance(v, float) else str(v),
    )
    which = c[1].number_input("Sample", 1, n, 1, key=state.keyed(state.EXPLORER_STEP, "which", n)) - 1
    with errors.shown("Sampling the second value"):
        images_b, _ = loaders.conditional_samples(sel.generator, feature, value_b, n, seed, guidance)
        st.plotly_chart(
            samples.difference_figure(
                images[which], images_b[which], (f"{feature} = {value}", f"{feature} = {value_b}")
            ),
            key="explorer_difference",
        )
        st.caption("The same sample (same noise) at the two values: the difference shows what the feature changes.")
