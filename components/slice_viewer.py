"""Slice viewer: a 2D slice of a RAS+ volume as a plotly heatmap with voxel hover.

Orientation follows `engine.data.slicing`: images come in neurological convention
(patient left on image left); `radiological=True` flips left-right for display.
Hover shows the intensity and the voxel's world (mm) coordinates.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from engine.data.slicing import DISPLAY_AXES, PLANE_AXIS, extract_slice, slice_index

# display-edge letters (left, right, top, bottom) in neurological convention
EDGES = {"axial": ("L", "R", "A", "P"), "coronal": ("L", "R", "S", "I"), "sagittal": ("P", "A", "S", "I")}


def world_grid(shape: tuple[int, ...], affine: np.ndarray, plane: str, index: int) -> np.ndarray:
    """(rows, cols, 3) world coordinates in mm of each displayed pixel of a slice."""
    if len(shape) == 2:
        i, j = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
        vox = np.stack([i, j, np.zeros_like(i)], -1).astype(float)
    else:
        axis = PLANE_AXIS[plane]
        others = [a for a in range(3) if a != axis]
        u, v = np.meshgrid(np.arange(shape[others[0]]), np.arange(shape[others[1]]), indexing="ij")
        vox = np.zeros((*u.shape, 3))
        vox[..., others[0]], vox[..., others[1]], vox[..., axis] = u, v, index
    world = vox @ affine[:3, :3].T + affine[:3, 3]  # (a, b, 3)
    # same display transform as extract_slice: transpose, top row first
    return np.ascontiguousarray(world.transpose(1, 0, 2)[::-1])


def slice_figure(
    volume: np.ndarray,
    affine: np.ndarray,
    plane: str,
    index: int,
    *,
    radiological: bool = False,
    title: str = "",
    height: int = 320,
    window: tuple[float, float] = (0.0, 1.0),
    crosshair: tuple[int, int] | None = None,
    clickable: bool = False,
) -> go.Figure:
    """A grey-scale slice with hover (intensity, x/y/z mm) and edge letters (L/R, A/P, S/I); `window`
    is the displayed intensity range (window/level: black at its low end, white at its high end).

    `crosshair`: a displayed pixel (column, row), e.g. from `slicing.pixel_of_voxel`, where two lines
    cross. `clickable`: an invisible marker at every pixel (trace 1), so that a click selects a point
    that `st.plotly_chart(on_select=...)` returns (it returns none for a heatmap, streamlit#8760);
    its x/y are the displayed column/row (`slicing.voxel_of_click` turns them into a voxel)."""
    image = extract_slice(volume, affine, plane, index)
    k = slice_index(volume.shape, affine, plane, index) if volume.ndim == 3 else 0
    world = world_grid(volume.shape, affine, plane, k)
    left, right, top, bottom = EDGES[plane] if volume.ndim == 3 else ("", "", "", "")
    if radiological:
        image, world = image[:, ::-1], world[:, ::-1]
        left, right = right, left
    where = "x %{customdata[0]:.1f} mm, y %{customdata[1]:.1f} mm, z %{customdata[2]:.1f} mm<extra></extra>"
    fig = go.Figure(
        go.Heatmap(
            z=image,
            colorscale="gray",
            zmin=float(window[0]),
            zmax=float(window[1]),
            showscale=False,
            # a clickable view's hover (mm included) comes from the click layer above, which would hide this one's
            customdata=None if clickable else world.astype(np.float32),
            hoverinfo="skip" if clickable else None,
            hovertemplate="intensity %{z:.3f}" + ("<extra></extra>" if clickable else "<br>" + where),
        )
    )
    if clickable:
        rows, cols = np.indices(image.shape)
        grid = np.uint8 if max(image.shape) <= 256 else np.uint16  # compact arrays in the figure's JSON
        fig.add_trace(
            go.Scatter(
                x=cols.ravel().astype(grid),
                y=rows.ravel().astype(grid),
                mode="markers",
                # invisible, and drawn once: plotly hovers and selects over all the points, drawn or not
                # (drawing ~10k SVG markers per plane took ~0.4 s each in Chromium)
                marker=dict(size=6, opacity=0, color="white", maxdisplayed=1),
                selected=dict(marker=dict(opacity=0)),
                unselected=dict(marker=dict(opacity=0)),
                # (x, y, z mm, intensity) per pixel: the heatmap's hover, carried by the click layer
                customdata=np.concatenate([world, image[..., None]], -1).reshape(-1, 4).astype(np.float32),
                hovertemplate="intensity %{customdata[3]:.3f}<br>" + where,
                showlegend=False,
            )
        )
        fig.update_layout(clickmode="event+select", dragmode=False, hovermode="closest")
    _image_layout(fig, image.shape, title, height, aspect=_pixel_aspect(affine, plane) if volume.ndim == 3 else 1.0)
    if crosshair is not None:
        _crosshair(fig, crosshair, image.shape)
    for text, x, y in ((left, 0.0, 0.5), (right, 1.0, 0.5), (top, 0.5, 1.0), (bottom, 0.5, 0.0)):
        if text:
            fig.add_annotation(
                text=text,
                x=x,
                y=y,
                xref="x domain",
                yref="y domain",
                showarrow=False,
                font=dict(color="#ffd400", size=13),
                xanchor="center",
                yanchor="middle",
            )
    return fig


def model_slice_figure(
    image: np.ndarray,
    *,
    overlay: np.ndarray | None = None,
    opacity: float = 0.5,
    colorscale: str = "Hot",
    signed: bool = False,
    radiological: bool = False,
    title: str = "",
    height: int = 320,
    crosshair: tuple[int, int] | None = None,
    limit: float | None = None,
) -> go.Figure:
    """The model's (S, S) input (the values it is fed), optionally with an attribution map over it;
    `crosshair`: a displayed pixel (column, row, after the radiological flip) where two lines cross;
    `limit`: the map's colour-scale end (None: this slice's largest |value|; pass a 3D map's own, so
    its three planes share one scale)."""
    if radiological:
        image = image[:, ::-1]
        overlay = None if overlay is None else overlay[:, ::-1]
    # an input in [0, 1] (p99, minmax) on that scale; raw or z-scored values on their own range
    low, high = (0.0, 1.0) if image.min() >= 0 and image.max() <= 1 else (float(image.min()), float(image.max()))
    fig = go.Figure(
        go.Heatmap(
            z=image,
            colorscale="gray",
            zmin=low,
            zmax=high,
            showscale=False,
            zsmooth="best",
            hovertemplate="row %{y}, col %{x}<br>intensity %{z:.3g}<extra></extra>",
        )
    )
    if overlay is not None:
        limit = (float(np.nanmax(np.abs(overlay))) if limit is None else float(limit)) or 1.0
        fig.add_trace(
            go.Heatmap(
                z=overlay,
                colorscale=colorscale,
                opacity=opacity,
                zmin=-limit if signed else 0,
                zmax=limit,
                zsmooth="best",
                colorbar=dict(
                    thickness=10, len=0.8, title=dict(text="attribution" if signed else "|attribution|", side="right")
                ),
                hovertemplate="attribution %{z:.3g}<extra></extra>",
            )
        )
    _image_layout(fig, image.shape, title, height)
    if crosshair is not None:
        _crosshair(fig, crosshair, image.shape)
    return fig


CROSSHAIR_COLOUR = "rgba(0, 230, 255, 0.75)"


def _crosshair(fig: go.Figure, point: tuple[int, int], shape: tuple[int, int]) -> None:
    """Two lines through pixel `point` (column, row), broken around it so the voxel itself stays visible,
    and stopping short of the image's edges, where the orientation letters are."""
    col, row = point
    gap = max(2.0, 0.04 * max(shape))
    line = dict(color=CROSSHAIR_COLOUR, width=1.5)
    inset = 0.06 * max(shape)
    low_x, high_x, low_y, high_y = inset - 0.5, shape[1] - 0.5 - inset, inset - 0.5, shape[0] - 0.5 - inset
    for x0, x1 in ((low_x, col - gap), (col + gap, high_x)):
        if x1 > x0:
            fig.add_shape(type="line", x0=x0, x1=x1, y0=row, y1=row, line=line, layer="above")
    for y0, y1 in ((low_y, row - gap), (row + gap, high_y)):
        if y1 > y0:
            fig.add_shape(type="line", x0=col, x1=col, y0=y0, y1=y1, line=line, layer="above")


def _pixel_aspect(affine: np.ndarray, plane: str) -> float:
    """A pixel's height over its width in mm, so anisotropic voxels (e.g. 2 x 2 x 3 mm) keep the anatomy's shape."""
    rows, cols = DISPLAY_AXES[plane]
    spacing = np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)
    return float(spacing[rows] / spacing[cols])


def _image_layout(fig: go.Figure, shape: tuple[int, int], title: str, height: int, aspect: float = 1.0) -> None:
    fig.update_layout(
        title=dict(text=title, font=dict(size=13)),
        height=height,
        margin=dict(l=4, r=4, t=28 if title else 4, b=4),
        plot_bgcolor="black",
        paper_bgcolor="rgba(0,0,0,0)",
    )
    fig.update_xaxes(visible=False, range=[-0.5, shape[1] - 0.5], constrain="domain")
    # row 0 is the top of the image; a fixed range, so a click layer's markers add no margin; an image
    # wider than its plot hangs from the top, so planes side by side line up under their titles
    fig.update_yaxes(
        visible=False,
        range=[shape[0] - 0.5, -0.5],
        scaleanchor="x",
        scaleratio=aspect,
        constrain="domain",
        constraintoward="top",
    )
