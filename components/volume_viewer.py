"""Browse's volume viewer: one subject's volume in three planes with slice sliders, a linked crosshair
(click a plane: the other two follow), a contrast window and voxel hover. The planes and their
read-outs are `components.slice_viewer`'s figures; the voxel maths is `engine.data.slicing`'s."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import streamlit as st

from components import errors, loaders, slice_viewer, state
from engine.data.slicing import PLANE_AXIS, PLANES, pixel_of_voxel, point_of_voxel, voxel_of_click


@dataclass
class Viewed:
    """What the viewer shows: the volume, its affine, the crosshair's voxel (None for a 2D image), whether its
    lines are drawn, and the slice sliders' keys (plane -> key) that move it."""

    vol: np.ndarray
    affine: np.ndarray
    point: tuple[int, int, int] | None
    show_lines: bool
    slider_keys: dict[str, str]


def draw(sel, subject: str, radiological: bool) -> Viewed | None:
    """The viewer for `subject` (None, with the message shown, when its volume cannot be read)."""
    ds_key = sel.source
    slider_keys: dict[str, str] = {}
    vol = None
    with errors.shown("Reading the volume"):
        registered = sel.model_ref is not None and sel.model_ref.spec is not None and sel.model_ref.spec.register
        vol, affine = loaders.volume(sel.source, subject, registered)
    if vol is None:
        return None

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
        show_lines = c[1].toggle(
            "Crosshair", key=state.BROWSE_CROSSHAIR, help="Draw the lines through the chosen point."
        )
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
                voxel = voxel_of_click(
                    shape, plane, st.session_state[slider_keys[plane]], x, y, radiological=radiological
                )
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
        (
            "Radiological convention: the patient's left is on the image's right."
            if radiological
            else "Neurological convention: the patient's left is on the image's left."
        )
        + " Hover a voxel for its intensity and world (mm) coordinates."
    )
    return Viewed(vol, affine, point, show_lines, slider_keys)
