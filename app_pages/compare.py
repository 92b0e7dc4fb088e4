"""Compare: for one image, the captum maps in a grid (one colour scale, signed or absolute), with an MLP's
training-trajectory maps (XtrAIn, XtrAIn+, Xstep) beside them, and Eve's score bars for the same model; model
vs model score bars; the maps' sanity-check and infidelity numbers."""

import pandas as pd
import streamlit as st

from components import colors, compare_maps, errors, loaders, progress, score_bars, sidebar, state
from engine.data.slicing import PLANES, cube_planes
from engine.options import SCORE

REGION_LABELS = {"grid": "grid cells", "anatomy": "anatomy", "aal": "AAL atlas", "aicha": "AICHA atlas"}

sel = sidebar.current()
st.title("Compare: pixel maps and feature scores")
st.caption("Pixel maps say *where* the model looks on one image; Eve's scores say *which human feature* drives it.")
if sel.source is None or sel.model_ref is None:
    st.info(sel.model_note or "Choose a dataset and a model in the sidebar.")
    st.stop()

ds = sel.dataset
table = loaders.feature_table(sel.source)
palette = colors.feature_colors(ds.features)
split = loaders.default_split(sel.source)
rows = loaders.split_rows(sel.source, split)

# -- 1. maps for one image, full width (three tiles a row: >= 256 px each on a laptop), then the score bars
subjects = table["subject"].iloc[rows].tolist()
c = st.columns([2, 1])
subject = c[0].selectbox(f"Image ({split} split)", subjects, key=state.keyed(state.COMPARE_SUBJECT, sel.source))
signed = c[1].segmented_control("Maps", ["absolute", "signed"], key=state.COMPARE_SIGNED, required=True) == "signed"
row = ds.index_of(subject)

st.subheader("Pixel attribution maps")
spec = loaders.card(sel.model_ref, sel.device).spec
image = loaders.model_inputs(sel.source, spec)[row, 0]
plane = None
if spec.is_volume:  # a 3D map is shown by one plane through the cube's centre
    plane = st.segmented_control("Plane", list(PLANES), key=state.COMPARE_PLANE, required=True)
    image = cube_planes(image)[plane][1]
kinds = loaders.region_kinds(sel.model_ref, sel.device)
region_kind = st.segmented_control(
    "Regions of the region methods",
    kinds,
    format_func=REGION_LABELS.get,
    key=state.keyed(state.COMPARE_REGIONS, sel.model_ref),
    required=True,
    default=kinds[1] if len(kinds) > 1 else kinds[0],
    help="Feature ablation, Shapley values, LIME and KernelSHAP explain the output by regions of the image: "
    "square cells, SynthBrain's anatomy, or a real atlas's labels in the model's slice.",
)


compare_maps.draw(sel, row, subject, image, signed=signed, plane=plane, region_kind=region_kind)
st.subheader("Eve's scores for this model")
with errors.shown("The scores"):
    scores = loaders.data_scores(
        sel.source, sel.model_ref, sel.device, sel.output, split, tuple(ds.features), SCORE.n_boot
    )
    st.plotly_chart(score_bars.score_bars(scores.assign(source="data"), palette), key="compare_scores")
    st.caption(f"From data: {len(rows)} {split} images, 95% bootstrap intervals.")

# -- 2. model vs model -------------------------------------------------------------------
st.subheader("Model vs model")
others = [n for n in loaders.cards_offered(sel.dataset_name, ds.is_3d) if n != sel.model_ref.name]
if not others:
    st.info("No other built-in model for this dataset to compare with.")
else:
    default = loaders.contrasting_model(sel.model_ref, others)
    if st.session_state.get(state.COMPARE_OTHER_MODEL) not in others:
        st.session_state[state.COMPARE_OTHER_MODEL] = default
    other = st.selectbox("Compare with", others, key=state.COMPARE_OTHER_MODEL)
    with errors.shown("The comparison"):
        both = [
            loaders.data_scores(
                sel.source, sel.model_ref, sel.device, sel.output, split, tuple(ds.features), SCORE.n_boot
            ).assign(model=sel.model_label),
            loaders.data_scores(
                sel.source,
                loaders.same_explained(other, sel.model_ref),
                sel.device,
                0,
                split,
                tuple(ds.features),
                SCORE.n_boot,
            ).assign(model=other),
        ]
        st.plotly_chart(
            score_bars.score_bars(pd.concat(both, ignore_index=True), palette, group_by="model"), key="compare_models"
        )
        st.caption(
            "Plain bars: the selected model; the second model's bars follow it. A model that leans on a "
            "shortcut (e.g. head size, icv) shows a large score for that feature."
        )

# -- 3. quality of the maps --------------------------------------------------------------
st.subheader("How trustworthy are the maps?")
key = state.result_key("map-quality", sel, tuple(int(r) for r in rows[:4]))
quality = state.results().get(key)
if st.button("Compute the quality checks (slow)", key=state.COMPARE_QUALITY_RUN):
    with st.status("Randomising the model layer by layer and scoring each method...", expanded=True) as status:
        bar = st.progress(0.0)
        done = False
        with errors.shown("The map quality check"):
            quality = loaders.map_quality(
                sel.source,
                sel.model_ref,
                sel.device,
                sel.output,
                tuple(int(r) for r in rows[:4]),
                progress=progress.on(bar, "Maps, randomisation, perturbation and deletion checks"),
            )
            state.results()[key] = quality
            done = True
        status.update(label="Map quality done" if done else "Map quality failed", state="complete" if done else "error")
if quality is not None:
    st.dataframe(
        quality,
        hide_index=True,
        column_config={c: st.column_config.NumberColumn(format="%.3g") for c in quality.columns if c != "method"},
    )
    st.caption(
        "Randomisation check (Adebayo et al.): rank correlation of each map before and after randomising the "
        "trained weights — a map that barely changes does not depend on what the model learned. "
        "Infidelity and max-sensitivity (captum): lower is better. Deletion AUC (Samek et al.; Petsiuk et al.): "
        "the output as the most relevant pixels go black, lower is better; insertion AUC: as they come back, higher "
        "is better; ROAD (Rong et al.): deletion with the removed pixels filled in from their neighbours, so holes "
        "do not fool the model, lower is better; completeness gap (IG, DeepLift, LRP): how far the map's sum is "
        "from f(x) − f(black), lower is better; sparseness higher and complexity lower: a more concentrated map. "
        "For a glass-box model, relevance mass and rank accuracy: the share of the map inside the pixels it reads."
    )
else:
    st.caption("Not computed yet in this session.")
