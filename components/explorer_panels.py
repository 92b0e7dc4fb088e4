"""The feature explorer's panels below the samples: the model's outputs at the
chosen value against E[f | A = a] from data, and the pre-computed bank of slider positions."""

from __future__ import annotations

import numpy as np
import streamlit as st

from components import curves, errors, loaders, state


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
