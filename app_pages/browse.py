"""Browse MRIs: the cohort as a filterable, sortable table; one subject's volume in three
planes with slice sliders, a linked crosshair (click a plane: the others follow), orientation
toggle, contrast window and voxel hover; the model's prediction for that subject; an optional
baseline map over the model's input slice (a 3D model's cube in three planes at the crosshair)."""

import functools

import numpy as np
import streamlit as st

from components import anchors_panel, cohort_filter, counterfactual_panel, errors, loaders, sidebar, slice_viewer, state
from engine.data.slicing import (
    PLANE_AXIS,
    PLANES,
    cube_planes,
    cube_voxel,
    peak_voxel,
    pixel_of_voxel,
    point_of_voxel,
    volume_voxel,
    voxel_of_click,
)

sel = sidebar.page_with_dataset("Browse MRIs")

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

# -- 3. the volume in three planes, with a linked crosshair -----------------------------
vol = None
with errors.shown("Reading the volume"):
    registered = sel.model_ref is not None and sel.model_ref.spec is not None and sel.model_ref.spec.register
    vol, affine = loaders.volume(sel.source, subject, registered)
if vol is None:
    st.stop()

c = st.columns([4, 1])
window = c[0].slider(
    "Contrast window",
    0.0,
    1.0,
    key=state.BROWSE_WINDOW,
    step=0.01,
    help="The intensities shown from black to white (window/level), on the volume's 0-1 scale (its 99th "
    "percentile = 1). Narrow it to bring out grey against white matter, or the ventricles against tissue.",
)
point, show_lines = None, False  # the crosshair's voxel (i, j, k): the three slices' indices
if vol.ndim == 3:
    show_lines = c[1].toggle("Crosshair", key=state.BROWSE_CROSSHAIR, help="Draw the lines through the chosen point.")
    slider_keys = {plane: state.keyed(state.BROWSE_SLICE, ds_key, plane) for plane in PLANES}
    for plane, key in slider_keys.items():  # start in the middle; keep in range when the volume's shape changes
        if not 0 <= st.session_state.get(key, -1) < vol.shape[PLANE_AXIS[plane]]:
            st.session_state[key] = vol.shape[PLANE_AXIS[plane]] // 2

    def _follow_click(plane: str, shape: tuple[int, ...], radiological: bool) -> None:
        """A click in one plane moves the crosshair there: every slider takes the clicked voxel's index."""
        points = st.session_state[state.keyed(state.BROWSE_VIEW, ds_key, plane)].selection.points
        points = [p for p in points if p.get("curve_number") == 1]  # the click layer (trace 1)
        if points:
            x, y = points[-1]["x"], points[-1]["y"]
            voxel = voxel_of_click(shape, plane, st.session_state[slider_keys[plane]], x, y, radiological=radiological)
            for other, key in slider_keys.items():
                st.session_state[key] = voxel[PLANE_AXIS[other]]

    point = tuple(st.session_state[slider_keys[plane]] for plane in ("sagittal", "coronal", "axial"))  # (i, j, k)
    here = point_of_voxel(vol, affine, point)
    st.markdown(
        f"**Crosshair** at voxel ({', '.join(map(str, here.voxel))}): "
        + ", ".join(f"{name} {mm:+.1f} mm" for name, mm in zip("xyz", here.world, strict=True))
        + f" · intensity **{here.intensity:.3f}** (1 = the volume's 99th percentile). "
        + "Click a point in any plane to move the crosshair, and the other two planes, there."
    )
    for col, plane in zip(st.columns(3), PLANES, strict=True):
        k = point[PLANE_AXIS[plane]]
        col.slider(f"{plane} slice", 0, vol.shape[PLANE_AXIS[plane]] - 1, key=slider_keys[plane])
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
            crosshair=pixel_of_voxel(vol.shape, plane, point, radiological=radiological) if show_lines else None,
            clickable=True,
        )
        col.plotly_chart(
            fig,
            key=state.keyed(state.BROWSE_VIEW, ds_key, plane),
            on_select=functools.partial(_follow_click, plane, vol.shape, radiological),
            selection_mode="points",
            config={"displayModeBar": False},
        )
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
    where = loaders.input_location(sel.source, row, spec)
    st.caption(f"The model is fed: {spec.describe()}{f' ({where})' if where else ''}.")
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
if spec.is_volume:  # the model's cube in three planes, crossing at the crosshair (mapped into the cube)
    cube = inputs[row, 0]
    cube_grid = (vol.shape, np.linalg.norm(np.asarray(affine, float)[:3, :3], axis=0), int(spec.size), spec.spacing)
    # a stored cube keeps the files' voxel order: the RAS+ crosshair does not map into it
    ras_cube = spec.orientation == "ras"
    at = None if point is None or not ras_cube else cube_voxel(*cube_grid, point)
    with c[1]:
        if at is not None:
            st.caption(f"The planes cross at the crosshair (the cube's voxel {at}).")
        else:
            st.caption(
                "The crosshair is outside the model's field of view (its cube): planes through the centre."
                if ras_cube
                else "The cube keeps your files' stored voxel order: its planes are cut along its stored axes, "
                "through the centre, and named by the RAS+ plane they would be for RAS-stored files."
            )
        if overlay is not None:
            peak = peak_voxel(overlay)
            target = volume_voxel(*cube_grid, peak) if ras_cube else None

            def _to_peak(target: tuple[int, int, int]) -> None:
                for plane, key in slider_keys.items():
                    st.session_state[key] = target[PLANE_AXIS[plane]]

            if not ras_cube:
                st.caption(f"The map's largest value is at the cube's voxel {peak} (stored axes).")
            elif target is None:
                st.caption(f"The map's largest value is at the cube's voxel {peak}, in its padding: outside the scan.")
            else:
                world = point_of_voxel(vol, affine, target).world
                mm = ", ".join(f"{name} {v:+.0f} mm" for name, v in zip("xyz", world, strict=True))
                st.caption(f"The map's largest value is at the cube's voxel {peak}: the scan's voxel {target} ({mm}).")
                st.button(
                    "Move the crosshair to the map's largest value",
                    key=state.BROWSE_TO_PEAK,
                    on_click=_to_peak,
                    args=(target,),
                    disabled=at == peak,
                )
    planes = cube_planes(cube, at)
    maps = {} if overlay is None else cube_planes(overlay, at)
    for col, (plane, (k, image)) in zip(st.columns(3), planes.items(), strict=True):
        lines = None
        if at is not None and show_lines:
            lines = pixel_of_voxel(cube.shape, plane, at, radiological=radiological)
        col.plotly_chart(
            slice_viewer.model_slice_figure(
                image,
                overlay=maps[plane][1] if maps else None,
                title=f"{plane} · cube voxel {k}",
                height=300,
                crosshair=lines,
                limit=None if overlay is None else float(np.nanmax(np.abs(overlay))),  # one scale, three planes
                **looks,
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
