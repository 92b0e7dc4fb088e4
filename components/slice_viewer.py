"""Slice viewer: a 2D slice of a RAS+ volume as a plotly heatmap with voxel hover.

Orientation follows `engine.data.slicing`: images come in neurological convention
(patient left on image left); `radiological=True` flips left-right for display.
Hover shows the intensity and the voxel's world (mm) coordinates.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from engine.data.slicing import PLANE_AXIS, extract_slice, slice_index

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
) -> go.Figure:
    """A grey-scale slice with hover (intensity, x/y/z mm) and edge letters (L/R, A/P, S/I); `window`
    is the displayed intensity range (window/level: black at its low end, white at its high end)."""
    image = extract_slice(volume, affine, plane, index)
    k = slice_index(volume.shape, affine, plane, index) if volume.ndim == 3 else 0
    world = world_grid(volume.shape, affine, plane, k)
    left, right, top, bottom = EDGES[plane] if volume.ndim == 3 else ("", "", "", "")
    if radiological:
        image, world = image[:, ::-1], world[:, ::-1]
        left, right = right, left
    fig = go.Figure(
        go.Heatmap(
            z=image,
            customdata=world.astype(np.float32),
            colorscale="gray",
            zmin=float(window[0]),
            zmax=float(window[1]),
            showscale=False,
            hovertemplate="intensity %{z:.3f}<br>x %{customdata[0]:.1f} mm, y %{customdata[1]:.1f} mm, "
            "z %{customdata[2]:.1f} mm<extra></extra>",
        )
    )
    _image_layout(fig, image.shape, title, height, aspect=_pixel_aspect(affine, plane) if volume.ndim == 3 else 1.0)
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
) -> go.Figure:
    """The model's (S, S) input (the values it is fed), optionally with an attribution map over it."""
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
        limit = float(np.nanmax(np.abs(overlay))) or 1.0
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
    return fig


# voxel axes (RAS) along a slice's (rows, columns), as `extract_slice` lays them out
SLICE_AXES = {"axial": (1, 0), "coronal": (2, 0), "sagittal": (2, 1)}


def _pixel_aspect(affine: np.ndarray, plane: str) -> float:
    """A pixel's height over its width in mm, so anisotropic voxels (e.g. 2 x 2 x 3 mm) keep the anatomy's shape."""
    rows, cols = SLICE_AXES[plane]
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
    # row 0 is the top of the image
    fig.update_yaxes(visible=False, autorange="reversed", scaleanchor="x", scaleratio=aspect, constrain="domain")
