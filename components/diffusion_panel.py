"""The scores page's generator panel: the generator path's scores on request, debiased by the real images
(the default estimate) beside the generator's own (model-based), kept in the session (`state.results()`)
so a rerun or an error elsewhere loses nothing."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from components import cohort_training, errors, loaders, progress, state


def draw(sel, features: list[str], split: str) -> pd.DataFrame | None:
    """The expander with K, N and the button; returns the generator scores computed this session for this
    selection, split, features, K and N (rows of sources "debiased" and "diffusion")."""
    k_values, n_per = st.session_state[state.SCORES_DIFFUSION_K], st.session_state[state.SCORES_DIFFUSION_N]
    key = state.result_key("generator-scores", sel, split, tuple(features), k_values, n_per)
    found = state.results().get(key)
    missing = loaders.diffusion_unavailable(sel)
    incompatible = None
    if missing is None and sel.model_ref is not None:
        incompatible = loaders.diffusion_compatibility(sel.generator, sel.model_ref, sel.device)
    with st.expander("Generator-based scores (for scarce data)", expanded=found is not None):
        if sel.model_ref is None:
            st.info("Choose a model first.")
        elif missing is not None:
            cohort_training.offer(sel, "scores")
        elif incompatible is not None:
            st.info(incompatible)
        else:
            c = st.columns([1, 1, 2])
            c[0].number_input("Feature values K", 3, 20, key=state.SCORES_DIFFUSION_K)
            c[1].number_input("Samples per value N", 2, 64, key=state.SCORES_DIFFUSION_N)
            usable = [f for f in features if f in loaders.diffusion_features(sel.generator)]
            c[2].caption(
                f"K × N = {k_values * n_per} generated subjects and a twin of each of the {split} images (generated "
                f"under that image's recorded features), for {len(usable)} feature(s). The score shown is debiased "
                "by the real images: the generator's score corrected by how far its twins' score sits from the real "
                f"images' (prediction-powered inference). {loaders.score_sampler(sel.generator).description}"
            )
            trust = loaders.generator_trust(sel.generator)
            if trust:
                st.warning(trust)
            if st.button("Compute generator-based scores", key=state.SCORES_DIFFUSION_RUN, disabled=not usable):
                with st.status("Sampling twins and generated subjects...", expanded=True) as status:
                    bar = st.progress(0.0)
                    with errors.shown("The generator-based scores"):
                        found = loaders.generator_scores(
                            sel, tuple(usable), int(k_values), int(n_per), split, progress.on(bar, "images drawn")
                        )
                        state.results()[key] = found
                    status.update(label="Generator-based scores done", state="complete", expanded=False)
            if found is not None:
                st.caption(
                    "Hatched bars: debiased by the real images (the estimate, with an interval that holds). Dotted "
                    "outline: the generator's own score, model-based; its interval holds the sampling noise, not "
                    "the generator's error, so it is no 95% interval for the truth."
                )
    return found
