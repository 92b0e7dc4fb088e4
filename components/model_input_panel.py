"""Browse's model-input panel: what the model is fed for the subject (its slice, or its cube in three
planes at the crosshair), with a baseline map over it on request."""

from __future__ import annotations

import numpy as np
import streamlit as st

from components import errors, loaders, slice_viewer, state
from components.volume_viewer import Viewed
from engine.data.slicing import (
    PLANE_AXIS,
    cube_planes,
    cube_voxel,
    peak_voxel,
    pixel_of_voxel,
    point_of_voxel,
    volume_voxel,
)


def draw(sel, row: int, subject: str, viewed: Viewed, radiological: bool) -> None:
    vol, affine, point, show_lines, slider_keys = (
        viewed.vol,
        viewed.affine,
        viewed.point,
        viewed.show_lines,
        viewed.slider_keys,
    )
    st.subheader("What the model sees")
    if sel.model_ref is None:
        st.caption(sel.model_note or "Choose a model in the sidebar.")
        return
    spec = loaders.card(sel.model_ref, sel.device).spec
    inputs = None
    with errors.shown("Slicing the model's input"):
        inputs = loaders.model_inputs(sel.source, spec)
    if inputs is None:
        return
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
                    st.caption(
                        f"The map's largest value is at the cube's voxel {peak}, in its padding: outside the scan."
                    )
                else:
                    world = point_of_voxel(vol, affine, target).world
                    mm = ", ".join(f"{name} {v:+.0f} mm" for name, v in zip("xyz", world, strict=True))
                    st.caption(
                        f"The map's largest value is at the cube's voxel {peak}: the scan's voxel {target} ({mm})."
                    )
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
