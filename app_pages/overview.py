"""Overview: what Eve does, the current dataset and model card, where to go next. Kept light:
it reads the feature table and the model card only (no model outputs, no sampling)."""

import streamlit as st

from components import errors, loaders, sidebar

sel = sidebar.current()

st.title("Eve — the Explained-Variance Explorer")
st.markdown(
    "**How much of this model's decision is explained by a feature people understand?** "
    "Eve splits the variance of a classifier's output into the part explained by one feature "
    "(ventricle volume, hippocampal volume, head size, age...) and the rest. "
    "The score is estimated from real images when they are plentiful and from a conditional "
    "diffusion model when they are scarce, and it is shown beside the usual pixel-attribution maps."
)
st.latex(r"S(A) = \frac{\operatorname{Var}(\mathbb{E}[f(X) \mid A])}{\operatorname{Var}(f(X))} \in [0, 1]")

left, right = st.columns(2)
with left:
    st.subheader("Dataset")
    if sel.source is None:
        st.info("No dataset loaded: choose an embedded one or upload a folder in the sidebar.")
    else:
        with errors.shown("Reading the dataset"):
            ds = sel.dataset
            st.text(sel.dataset_label)
            c = st.columns(3)
            c[0].metric("Images", len(ds))
            c[1].metric("Features", len(ds.features))
            c[2].metric("Kind", "3D MRI" if ds.is_3d else "2D")
            st.caption("Features: " + ", ".join(ds.features))
            if ds.truth is not None:
                st.caption("Synthetic set with known ground truth (truth.json): see the Ground truth page.")

with right:
    st.subheader("Model")
    if sel.model_ref is None:
        st.info(sel.model_note or "No model selected.")
    else:
        with errors.shown("Loading the model"):
            card = loaders.card(sel.model_ref, sel.device)
            st.text(f"{sel.model_label} — explaining {sel.output_name}")
            metrics = card.metrics
            shown = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            held_out = metrics.get("split", "held-out")
            if shown:
                cols = st.columns(min(4, len(shown)))
                for i, (name, value) in enumerate(list(shown.items())[:4]):
                    label = f"{held_out} images" if name == "n" else name.replace("_", " ")
                    cols[i].metric(label, f"{value:.3f}" if isinstance(value, float) else str(value))
            spec = card.spec
            st.caption(
                (f"Metrics on the held-out {held_out} split. " if shown else "")
                + f"Trained on {card.dataset or '?'} to predict {card.target or '?'}; "
                f"what it is fed: {spec.describe()}."
            )
            with st.expander("Full model card"):
                st.json(card.to_json(), expanded=False)

st.subheader("Where to go next")
nav = st.columns(5)
nav[0].page_link("app_pages/browse.py", label="Browse MRIs", icon=":material/view_in_ar:")
nav[1].page_link("app_pages/scores.py", label="Attribution scores", icon=":material/bar_chart:")
nav[2].page_link("app_pages/explorer.py", label="Feature explorer", icon=":material/tune:")
nav[3].page_link("app_pages/compare.py", label="Compare", icon=":material/compare:")
nav[4].page_link("app_pages/truth.py", label="Ground truth", icon=":material/verified:")
