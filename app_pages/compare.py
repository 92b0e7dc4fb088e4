"""Compare: for one image, the captum maps in a grid (one colour scale, signed or absolute), with an MLP's
training-trajectory maps (XtrAIn, XtrAIn+, Xstep) beside them, and Eve's score bars for the same model; model
vs model score bars; the maps' sanity-check and infidelity numbers."""

import pandas as pd
import streamlit as st

from components import colors, errors, loaders, maps, score_bars, sidebar, state
from engine.data.slicing import PLANES, cube_planes
from engine.regions import region_shares

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
methods = loaders.baseline_methods(sel.model_ref, sel.device)
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


def compute_maps(names: list[str], progress=None) -> dict:
    found = {}
    for i, method in enumerate(names):
        with errors.shown(f"The {method} map"):
            found[method] = loaders.attribution(
                sel.source, sel.model_ref, sel.device, row, method, sel.output, region_kind
            )
        if progress:
            progress(i + 1, len(names), method)
    return found


def show_maps(found: dict, key: str) -> None:
    if found:
        shown = loaders.display_maps(found, signed)
        if plane is not None:
            shown = {method: cube_planes(m)[plane][1] for method, m in shown.items()}
        st.plotly_chart(maps.map_grid(shown, image, signed=signed), key=key)


# an MLP's maps from its training trajectory (engine.xtrain): XtrAIn and XtrAIn+ stored by training for the
# images it tracked, Xstep for any image
tracking = loaders.xtrain_tracking(sel.model_ref, sel.device)
trained = loaders.training_methods(sel.model_ref, sel.device, subject)
with st.status(f"Computing {len(methods) + len(trained)} maps...", expanded=False) as status:
    found = compute_maps(methods + trained)
    status.update(label=f"{len(found)} maps", state="complete")
show_maps(found, "compare_maps")
if tracking is not None:
    shown = ", ".join(m for m in trained if m in tracking.stored) or "none for this image"
    st.caption(
        f"From the training trajectory (XtrAIn, Lymperopoulos et al.): XtrAIn sums, over all {tracking.steps} SGD "
        "steps, how the output changed when only each pixel's first-layer weights took the step; XtrAIn+ keeps the "
        "steps that raised it. Training stored them for its tracked test images "
        f"({', '.join(tracking.images)}); stored maps shown: {shown}. Xstep maps any image: {tracking.xstep}."
    )
st.caption(
    f"Each map is scaled by its own 99th percentile of |attribution|, then all share one colour scale "
    f"({'red = raises, blue = lowers the output' if signed else 'brighter = larger |attribution|'}). "
    "Region methods give one value per region. To enlarge, hover the maps and click the full-screen button at "
    "their top right."
)
missing = loaders.unavailable_methods(sel.model_ref, sel.device)
if missing:
    st.caption("Not available for this model: " + "; ".join(f"{m}: {why}" for m, why in missing.items()) + ".")

slow = [m for m in loaders.baseline_methods(sel.model_ref, sel.device, slow=True) if m not in methods]
slow_key = ("slow-maps", sel.source, sel.model_ref, sel.output, row, region_kind)
if slow:
    st.markdown("**Sampling-based maps**: " + ", ".join(slow) + " (hundreds of forward passes an image).")
    if st.button(f"Compute {len(slow)} sampling maps", key=state.COMPARE_SLOW_RUN):
        state.results()[slow_key] = True
    if state.results().get(slow_key):
        bar = st.progress(0.0, text="Sampling...")
        sampled = compute_maps(slow, lambda done, total, m: bar.progress(done / total, text=f"{m} done"))
        bar.empty()
        show_maps(sampled, "compare_slow_maps")
        found |= sampled

regional = [m for m in ("ShapleyValueSampling", "FeatureAblation") if m in found]
if regional:
    chosen = loaders.regions(spec, region_kind)
    difference = loaders.output_difference(sel.source, sel.model_ref, sel.device, row, sel.output)
    table = region_shares(found[regional[0]], chosen, regional=True, whole=difference)
    st.markdown(f"**By region ({chosen.source}), from {regional[0]}**")
    st.dataframe(
        table.head(8),
        hide_index=True,
        column_config={
            "share": st.column_config.NumberColumn("share of f(x) − f(black)", format="percent"),
            "attribution": st.column_config.NumberColumn(format="%.3g"),
        },
    )
    top = table.iloc[0]
    how = (
        "Shapley values add up to it; regions of the opposite sign offset the rest"
        if regional[0] == "ShapleyValueSampling"
        else "each region blacked out alone, so the parts need not add up to it"
    )
    st.caption(
        f"{top['region'].capitalize()} contributes {top['attribution']:+.3g} ({top['share']:.0%}) of the "
        f"{difference:+.3g} by which this image's output differs from a black image's ({regional[0]}: {how})."
    )
st.subheader("Eve's scores for this model")
with errors.shown("The scores"):
    scores = loaders.data_scores(sel.source, sel.model_ref, sel.device, sel.output, split, tuple(ds.features), 200)
    st.plotly_chart(score_bars.score_bars(scores.assign(source="data"), palette), key="compare_scores")
    st.caption(f"From data: {len(rows)} {split} images, 95% bootstrap intervals.")

# -- 2. model vs model -------------------------------------------------------------------
st.subheader("Model vs model")
others = [n for n in loaders.cards_offered(sel.dataset_name, ds.is_3d) if n != sel.model_ref.name]
if not others:
    st.info("No other built-in model for this dataset to compare with.")
else:
    default = next((n for n in others if "shortcut" in n), others[0])
    if st.session_state.get(state.COMPARE_OTHER_MODEL) not in others:
        st.session_state[state.COMPARE_OTHER_MODEL] = default
    other = st.selectbox("Compare with", others, key=state.COMPARE_OTHER_MODEL)
    with errors.shown("The comparison"):
        both = [
            loaders.data_scores(
                sel.source, sel.model_ref, sel.device, sel.output, split, tuple(ds.features), 200
            ).assign(model=sel.model_label),
            loaders.data_scores(
                sel.source, loaders.same_explained(other, sel.model_ref), sel.device, 0, split, tuple(ds.features), 200
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
key = ("map-quality", sel.source, sel.model_ref, sel.output)
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
                progress=lambda f, text: bar.progress(f, text=text),
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
