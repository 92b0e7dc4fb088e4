"""Where a user's folder has no generator yet: why, the command for either kind, and a button that
learns the linear-Gaussian one from the folder's own subjects (about a second) and saves it beside
them (`<folder>/eve-generators/`, what `python -m engine train-diffusion --kind linear-gaussian` writes)."""

from __future__ import annotations

import streamlit as st

from components import errors, loaders, state


def offer(sel, where: str) -> None:
    """The note of `loaders.diffusion_unavailable` and, with a model chosen, the button that trains;
    `where` keys the button (one per section that offers it)."""
    st.info(loaders.diffusion_unavailable(sel))
    if sel.model_ref is None or sel.source in loaders.EMBEDDED:
        return
    n = len(sel.dataset)
    if st.button(
        f"Learn a linear-Gaussian generator from your {n} subjects (about a second)",
        key=state.keyed(state.GENERATOR_TRAIN, where),
        help="Fitted on this folder's subjects alone and saved in its eve-generators/ folder; the app then uses "
        "it for the feature explorer, the what-if edits and the diffusion scores.",
    ):
        with errors.shown("Learning the generator"), st.spinner("Learning the generator from your subjects..."):
            loaders.train_linear_gaussian(sel.source, sel.model_ref, sel.device)
            st.rerun()  # the sidebar finds it (`loaders.cohort_generator`) and names it
