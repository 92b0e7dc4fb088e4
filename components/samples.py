"""Sample grids and image comparisons for generated (or real) 2D images."""

from __future__ import annotations

import base64
import copy
import functools
import io

import numpy as np
import plotly.graph_objects as go
from PIL import Image
from plotly.subplots import make_subplots

from engine.reports.figures import prebuilt


def _colorscale(name: str) -> list:
    """A colour scale as validation writes it: these figures are not validated (`engine.reports.figures.prebuilt`),
    and plotly.js does not know Python-side names such as "gray" or "RdBu_r"."""
    return [list(stop) for stop in go.Heatmap(colorscale=name).colorscale]


_GREY = dict(type="heatmap", colorscale=_colorscale("gray"), zmin=0, zmax=1, showscale=False, zsmooth="best")
_RED_BLUE = _colorscale("RdBu_r")
WEBP_QUALITY = 90  # lossy: ~1.2 kB a 64 x 64 frame, at most ~10 grey levels off (lossless WebP/PNG: ~2.6 kB)


def sample_grid(images: np.ndarray, captions: list[str], *, cols: int = 3, height_per_row: int = 310) -> go.Figure:
    """(n, S, S) images in [0, 1] as a grid of grey-scale tiles, each with a caption; three a row, so
    a tile is about 290 px wide on a laptop, smoothed for display only."""
    n = len(images)
    rows = int(np.ceil(n / cols))
    traces = [
        dict(
            _GREY,
            z=image,
            hovertemplate=f"{captions[i]}<br>intensity %{{z:.3f}}<extra></extra>",
        )
        for i, image in enumerate(images)
    ]
    return _tiles(traces, captions, rows, cols, (0.01, 0.06), height=rows * height_per_row + 20)


def difference_figure(a: np.ndarray, b: np.ndarray, titles: tuple[str, str], height: int = 330) -> go.Figure:
    """Image a, image b, and b - a on a symmetric red-blue scale."""
    diff = b - a
    limit = float(np.abs(diff).max()) or 1.0
    scale = dict(thickness=10, len=0.9, title=dict(text="intensity, right − left", side="right"))
    traces = [
        dict(_GREY, z=a),
        dict(_GREY, z=b),
        dict(type="heatmap", z=diff, colorscale=_RED_BLUE, zmin=-limit, zmax=limit, zsmooth="best", colorbar=scale),
    ]
    return _tiles(traces, [*titles, "difference (right − left)"], 1, 3, (0.02, None), height=height)


def _tiles(traces: list[dict], titles: list[str], rows: int, cols: int, spacing, height: int) -> go.Figure:
    """Square image tiles on hidden axes (y down), one title each: make_subplots' layout, built once per
    shape (`_tile_layout`), with this figure's titles, not validated again (`engine.reports.figures.prebuilt`;
    plotly's subplot and layout updates cost 20-50 ms a figure, and the explorer draws two on every
    value move)."""
    layout = copy.deepcopy(_tile_layout(rows, cols, len(traces), spacing))
    for annotation, title in zip(layout["annotations"], titles, strict=True):
        annotation["text"] = title
    layout.update(height=height, margin=dict(l=4, r=4, t=28, b=4))
    for i, trace in enumerate(traces):
        suffix = "" if i == 0 else str(i + 1)
        trace.update(xaxis=f"x{suffix}", yaxis=f"y{suffix}")
    return prebuilt(traces, layout)


@functools.lru_cache(maxsize=16)
def _tile_layout(rows: int, cols: int, n: int, spacing: tuple[float, float | None]) -> dict:
    horizontal, vertical = spacing
    fig = make_subplots(
        rows=rows,
        cols=cols,
        subplot_titles=[f"title {i}" for i in range(n)],  # placeholders: `_tiles` writes each figure's own
        horizontal_spacing=horizontal,
        vertical_spacing=vertical,
    )
    fig.update_xaxes(visible=False, constrain="domain")
    fig.update_yaxes(visible=False, autorange="reversed", constrain="domain")
    for i in range(1, n + 1):  # square pixels in every tile
        fig.update_yaxes(scaleanchor=f"x{'' if i == 1 else i}", row=(i - 1) // cols + 1, col=(i - 1) % cols + 1)
    fig.update_annotations(font_size=12)
    return fig.layout.to_plotly_json()


def encoded_frames(images: np.ndarray, quality: int = WEBP_QUALITY) -> list[str]:
    """(n, S, S) images in [0, 1] as grey-scale WebP data URLs (8 bits, for display only)."""
    urls = []
    for image in np.clip(images, 0, 1):
        buffer = io.BytesIO()
        Image.fromarray((image * 255 + 0.5).astype(np.uint8)).save(buffer, "WEBP", quality=quality, method=4)
        urls.append("data:image/webp;base64," + base64.b64encode(buffer.getvalue()).decode("ascii"))
    return urls


def morph_image(images: np.ndarray, frame_ms: int = 180) -> str:
    """(k, S, S) images in [0, 1] as one looping animated WebP data URL, played forward then back."""
    frames = [Image.fromarray((image * 255 + 0.5).astype(np.uint8)) for image in np.clip(images, 0, 1)]
    frames = frames + frames[-2:0:-1]
    buffer = io.BytesIO()
    frames[0].save(buffer, "WEBP", save_all=True, append_images=frames[1:], duration=frame_ms, loop=0, quality=90)
    return "data:image/webp;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def decoded_frame(url: str) -> np.ndarray:
    """A data URL from `encoded_frames` back to an (S, S) array in [0, 1]."""
    data = base64.b64decode(url.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(data)).convert("L"), dtype=np.float32) / 255
