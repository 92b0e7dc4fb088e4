"""Overview: the answer at a glance (the default model's top features with their intervals, the reading in
one sentence, one generated subject morphing across the strongest feature), then the dataset and model card
and where to go next."""

import streamlit as st

from components import errors, loaders, overview_panels, sidebar

sel = sidebar.current()

st.title("Eve — the Explained-Variance Explorer")
st.markdown(
    "**How much of this model's decision is explained by a feature people understand?** Eve scores each feature "
    "by the share of the variation in the model's output that it explains, S(A) = Var(E[f(X) | A]) / Var(f(X)), "
    "from real images (or a conditional diffusion model when they are few), beside the usual pixel-attribution maps."
)

scores = None if sel.source is None else overview_panels.top_scores(sel)
if scores is not None:
    st.markdown(f"##### {overview_panels.reading(scores, sel)}")
    answer, morph = st.columns([3, 2])
    with answer:
        split = loaders.default_split(sel.source)
        overview_panels.bars(scores, sel, f"{len(loaders.split_rows(sel.source, split))} {split} images")
    with morph:
        overview_panels.morph(sel, scores)

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
