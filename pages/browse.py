"""Browse MRIs: the cohort as a filterable, sortable table; one subject's volume in three
planes with slice sliders, orientation toggle and voxel hover; the model's prediction for
that subject; an optional baseline map over the model's input slice."""

import numpy as np
import streamlit as st

from components import anchors_panel, cohort_filter, counterfactual_panel, errors, loaders, sidebar, slice_viewer, state
from engine.data.slicing import PLANE_AXIS, PLANES, cube_planes, peak_voxel, slice_index

sel = sidebar.current()
st.title("Browse MRIs")
if sel.source is None:
    st.info("No dataset loaded: choose one in the sidebar.")
    st.stop()

ds = sel.dataset
table = loaders.feature_table(sel.source)
ds_key = sel.source

# -- 1. filter and choose a subject ------------------------------------------------------
shown = cohort_filter.draw(table, ds, ds_key)

if shown.empty:
    st.warning("No subject matches the filter: widen the range or clear the filter.")
    st.stop()

subject_key = state.keyed(state.BROWSE_SUBJECT, ds_key)
subjects = shown["subject"].tolist()
if st.session_state.get(subject_key) not in subjects:
    st.session_state[subject_key] = subjects[0]


def _pick_row():
    rows = st.session_state[state.BROWSE_TABLE].selection.rows
    if rows:
        st.session_state[subject_key] = subjects[rows[0]]


st.dataframe(
    shown,
    hide_index=True,
    height=220,
    key=state.BROWSE_TABLE,
    on_select=_pick_row,
    selection_mode="single-row",
    column_config={f: st.column_config.NumberColumn(format="%.3g") for f in ds.numeric_features},
)
st.caption(f"{len(shown)} of {len(table)} images. Click a column header to sort, a row to choose the subject.")

c = st.columns([2, 2, 3])
subject = c[0].selectbox("Subject", subjects, key=subject_key)
orientation = c[1].segmented_control("Orientation", state.ORIENTATIONS, key=state.BROWSE_ORIENTATION, required=True)
radiological = orientation == "radiological"
row = ds.index_of(subject)

# -- 2. prediction -----------------------------------------------------------------------
with c[2]:
    if sel.model_ref is None:
        st.caption(sel.model_note or "No model selected: choose one in the sidebar for a prediction.")
    else:
        with errors.shown("The prediction"):
            card = loaders.card(sel.model_ref, sel.device)
            names = [card.describe_output(i) for i in range(len(card.output_names))]
            with st.spinner("Running the model over the dataset (once)..."):
                y = loaders.model_outputs(sel.source, sel.model_ref, sel.device)[row]
            cols = st.columns(min(3, len(names)))
            for i, (name, value) in enumerate(list(zip(names, y, strict=True))[:3]):
                cols[i].metric(name[0].upper() + name[1:], f"{value:.3f}")
            labels = {k: table.loc[row, k] for k in ds.label_columns}
            if labels:
                st.caption(
                    "Recorded "
                    + ", ".join(f"{k} = {v:g}" if isinstance(v, float) else f"{k} = {v}" for k, v in labels.items())
                )

# -- 3. the volume in three planes -------------------------------------------------------
vol = None
with errors.shown("Reading the volume"):
    registered = sel.model_ref is not None and sel.model_ref.spec is not None and sel.model_ref.spec.register
    vol, affine = loaders.volume(sel.source, subject, registered)
if vol is None:
    st.stop()

window = st.slider(
    "Contrast window",
    0.0,
    1.0,
    key=state.BROWSE_WINDOW,
    step=0.01,
    help="The intensities shown from black to white (window/level), on the volume's 0-1 scale (its 99th "
    "percentile = 1). Narrow it to bring out grey against white matter, or the ventricles against tissue.",
)
if vol.ndim == 3:
    cols = st.columns(3)
    for col, plane in zip(cols, PLANES, strict=True):
        n = vol.shape[PLANE_AXIS[plane]]
        with col:
            k = st.slider(f"{plane} slice", 0, n - 1, n // 2, key=state.keyed(state.BROWSE_SLICE, ds_key, plane))
            mm = (affine @ np.r_[np.eye(3)[PLANE_AXIS[plane]] * k, 1.0])[PLANE_AXIS[plane]]
            fig = slice_viewer.slice_figure(
                vol,
                affine,
                plane,
                k,
                radiological=radiological,
                title=f"{plane} · voxel {k} ({mm:+.0f} mm)",
                height=380,  # a portrait axial plane then fills its column: >= 256 px each way on a laptop
                window=window,
            )
            st.plotly_chart(fig, key=f"browse_view_{plane}")
else:
    st.plotly_chart(
        slice_viewer.slice_figure(
            vol, affine, "axial", 0, radiological=radiological, title=subject, height=380, window=window
        ),
        key="browse_view_2d",
    )
st.caption(
    f"{orientation.capitalize()} convention: "
    + ("the patient's left is on the image's right." if radiological else "the patient's left is on the image's left.")
    + " Hover a voxel for its intensity and world (mm) coordinates."
)

# -- 4. the model's input with a baseline map --------------------------------------------
st.subheader("What the model sees")
if sel.model_ref is None:
    st.caption(sel.model_note or "Choose a model in the sidebar.")
    st.stop()
spec = loaders.card(sel.model_ref, sel.device).spec
inputs = None
with errors.shown("Slicing the model's input"):
    inputs = loaders.model_inputs(sel.source, spec)
if inputs is None:
    st.stop()
c = st.columns([1, 2])
with c[0]:
    where = (
        "" if spec.is_volume or vol.ndim != 3 else f" (voxel {slice_index(vol.shape, affine, spec.plane, spec.index)})"
    )
    st.caption(f"The model is fed: {spec.describe()}{where}.")
    overlay_on = st.toggle("Overlay a baseline map", key=state.BROWSE_OVERLAY)
    method = opacity = cmap = None
    if overlay_on:
        method = st.selectbox(
            "Method", loaders.baseline_methods(sel.model_ref, sel.device), key=state.BROWSE_OVERLAY_METHOD
        )
        opacity = st.slider("Opacity", 0.0, 1.0, key=state.BROWSE_OVERLAY_OPACITY, step=0.05)
        cmap = st.selectbox("Colour map", state.OVERLAY_CMAPS, key=state.BROWSE_OVERLAY_CMAP)
overlay = None
if method is not None:
    with errors.shown(f"The {method} map"), st.spinner(f"Computing {method}..."):
        raw = loaders.attribution(sel.source, sel.model_ref, sel.device, row, method, sel.output)
        overlay = loaders.display_maps({method: raw}, signed=cmap == "RdBu_r")[method]
looks = dict(opacity=opacity or 0.5, colorscale=cmap or "Hot", signed=cmap == "RdBu_r", radiological=radiological)
if spec.is_volume:  # the model's cube in three planes, crossing at the map's peak
    planes = cube_planes(inputs[row, 0], None if overlay is None else peak_voxel(overlay))
    maps = {} if overlay is None else cube_planes(overlay, peak_voxel(overlay))
    with c[1]:
        st.caption(
            "The planes cross at the map's largest value." if overlay is not None else "Planes through the centre."
        )
    for col, (plane, (k, image)) in zip(st.columns(3), planes.items(), strict=True):
        col.plotly_chart(
            slice_viewer.model_slice_figure(
                image, overlay=maps[plane][1] if maps else None, title=f"{plane} · voxel {k}", height=300, **looks
            ),
            key=f"browse_model_input_{plane}",
        )
else:
    with c[1]:
        st.plotly_chart(
            slice_viewer.model_slice_figure(
                inputs[row, 0], overlay=overlay, title=f"model input · {subject}", height=360, **looks
            ),
            key="browse_model_input",
        )

# -- 5. the rule on the features that keeps the model's decision (an anchor) ---------------
anchors_panel.show_subject_anchor(sel, subject)

# -- 6. what if one feature were different -----------------------------------------------
counterfactual_panel.draw(sel, subject, radiological)
