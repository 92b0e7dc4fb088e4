"""The scores page's diffusion panel: K values x N samples per feature, scored on request and
kept in the session (`state.results()`), so a rerun or an error elsewhere loses nothing."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from components import cohort_training, errors, loaders, state


def draw(sel, features: list[str]) -> pd.DataFrame | None:
    """The expander with K, N and the button; returns the diffusion scores computed this session."""
    diffusion_key = ("diffusion-scores", sel.source, sel.model_ref, sel.output)
    diffusion_scores = state.results().get(diffusion_key)
    missing = loaders.diffusion_unavailable(sel)
    incompatible = None
    if missing is None and sel.model_ref is not None:
        incompatible = loaders.diffusion_compatibility(sel.generator, sel.model_ref, sel.device)
    with st.expander("Diffusion-based scores (for scarce data)", expanded=diffusion_scores is not None):
        if sel.model_ref is None:
            st.info("Choose a model first.")
        elif missing is not None:
            cohort_training.offer(sel, "scores")
        elif incompatible is not None:
            st.info(incompatible)
        else:
            c = st.columns([1, 1, 2])
            k_values = c[0].number_input("Feature values K", 3, 20, key=state.SCORES_DIFFUSION_K)
            n_per = c[1].number_input("Samples per value N", 2, 64, key=state.SCORES_DIFFUSION_N)
            usable = [f for f in features if f in loaders.diffusion_features(sel.generator)]
            c[2].caption(
                f"{k_values * n_per} samples per feature for {len(usable)} feature(s), with independent seeds per "
                f"value and the noise of small N subtracted. {loaders.score_sampler(sel.generator).description}"
            )
            trust = loaders.generator_trust(sel.generator)
            if trust:
                st.warning(trust)
            if st.button("Compute diffusion-based scores", key=state.SCORES_DIFFUSION_RUN, disabled=not usable):
                found = []
                with st.status("Sampling from the generator...", expanded=True) as status:
                    bar = st.progress(0.0)
                    for i, feature in enumerate(usable):
                        st.write(f"{feature}: {k_values} values × {n_per} samples")

                        def tick(done, total, i=i):
                            bar.progress(min(1.0, (i + done / total) / len(usable)))

                        with errors.shown(f"The diffusion score of {feature}"):
                            row, _ = loaders.diffusion_score_row(sel, feature, int(k_values), int(n_per), progress=tick)
                            found.append(row)
                    status.update(label="Diffusion-based scores done", state="complete", expanded=False)
                if found:
                    diffusion_scores = pd.DataFrame(found).assign(source="diffusion")
                    state.results()[diffusion_key] = diffusion_scores
            if diffusion_scores is not None:
                st.caption(f"Computed this session for {len(diffusion_scores)} feature(s); kept while you explore.")
    return diffusion_scores
