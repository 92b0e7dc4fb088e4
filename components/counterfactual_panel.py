"""Browse's "What if …?": the chosen subject's slice with one feature changed, the others held, and the
model's output before and after (`engine.explanations.counterfactual`)."""

from __future__ import annotations

import numpy as np
import streamlit as st

from components import cohort_training, errors, loaders, samples, state


def _features(sel) -> list[str]:
    """The numeric features the generator conditions on and the dataset records."""
    generated = loaders.diffusion(sel.generator).numeric_features
    return [f for f in generated if f in sel.dataset.numeric_features]


def draw(sel, subject: str, radiological: bool) -> None:
    """The section, for the sidebar's model and the selection's generator."""
    st.subheader("What if …?")
    if not st.toggle(
        "Change one of this subject's features and see the scan and the model's output change",
        key=state.BROWSE_WHATIF,
        help="Loads the dataset's generator (a few seconds the first time); each edit then takes well under a second.",
    ):
        return
    if loaders.diffusion_unavailable(sel) is not None:
        cohort_training.offer(sel, "whatif")
        return
    incompatible = loaders.diffusion_compatibility(sel.generator, sel.model_ref, sel.device)
    if incompatible is not None:
        st.info(f"No counterfactual for this model: {incompatible}")
        return
    features = _features(sel)
    if not features:
        st.info(
            "The generator conditions on none of the numeric features this dataset records: retrain it with "
            "`python -m engine train-diffusion --data YOUR_FOLDER --features a,b`."
        )
        return
    table = loaders.feature_table(sel.source)
    row = sel.dataset.index_of(subject)
    c = st.columns([2, 3])
    feature = c[0].selectbox("Change", features, key=state.keyed(state.BROWSE_WHATIF_FEATURE, sel.source))
    before = float(table[feature].iloc[row])
    low, high = (float(v) for v in loaders.diffusion(sel.generator).feature_range(feature))
    value_key = state.keyed(state.BROWSE_WHATIF_VALUE, sel.source, subject, feature)
    if value_key not in st.session_state:
        st.session_state[value_key] = loaders.suggested_value(sel.generator, feature, before)
    value = c[1].slider(
        f"New {feature} (now {before:.4g}; the others held at this subject's values)",
        low,
        high,
        key=value_key,
        step=float(10 ** np.floor(np.log10((high - low) / 200))),
        help="The range is the generator's training range: a value beyond it would be extrapolation.",
    )
    result = None
    with errors.shown("The counterfactual"), st.spinner("Inverting the slice and regenerating it..."):
        result = loaders.counterfactual(
            sel.source, sel.generator, sel.model_ref, sel.device, subject, feature, float(value), sel.output
        )
    if result is None:
        return
    if result.clamped:
        st.warning(result.clamped)
    flip = (lambda a: a[:, ::-1]) if radiological else (lambda a: a)
    st.plotly_chart(
        samples.difference_figure(
            flip(result.original), flip(result.counterfactual), (f"{subject} as scanned", f"{feature} = {value:.4g}")
        ),
        key="browse_whatif_figure",
    )
    m = st.columns(3)
    m[0].metric(
        sel.output_short[0].upper() + sel.output_short[1:],
        f"{result.output_after:.3f}",
        f"{result.output_change:+.3f} from {result.output_before:.3f}",
        delta_color="off",
    )
    if result.probe_after is not None:
        m[1].metric(
            f"{feature}, read from the image",
            f"{result.probe_after:.4g}",
            f"{result.probe_error_sd:.2f} SD from the asked {result.value_asked:.4g}",
            delta_color="off",
            delta_arrow="off",
        )
    if result.locality:
        where = result.locality
        m[2].metric(
            f"Change near the {where['structure']}",
            f"{where['share_near']:.0%}",
            f"a random edit: {where['random_share_near']:.0%}",
            delta_color="off",
            delta_arrow="off",
            help=f"The share of the squared difference in or within 2 pixels of the template {where['structure']}, "
            f"which cover {where['near_area']:.0%} of the slice.",
        )
    st.caption(
        f"The slice is inverted into the generator under this subject's recorded features (deterministic DDIM), "
        f"{feature} is changed and the slice regenerated. With no change the round trip returns the slice to "
        f"within RMS {result.reconstruction_rms:.4f} and the model's output to within "
        f"{abs(result.output_reconstruction - result.output_before):.3f}: changes smaller than that are noise."
    )
