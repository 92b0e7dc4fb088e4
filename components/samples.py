"""Sample grids and image comparisons for generated (or real) 2D images."""

from __future__ import annotations

import base64
import io

import numpy as np
import plotly.graph_objects as go
from PIL import Image
from plotly.subplots import make_subplots

WEBP_QUALITY = 90  # lossy: ~1.2 kB a 64 x 64 frame, at most ~10 grey levels off (lossless WebP/PNG: ~2.6 kB)


def sample_grid(images: np.ndarray, captions: list[str], *, cols: int = 3, height_per_row: int = 310) -> go.Figure:
    """(n, S, S) images in [0, 1] as a grid of grey-scale tiles, each with a caption; three a row, so
    a tile is about 290 px wide on a laptop, smoothed for display only."""
    n = len(images)
    rows = int(np.ceil(n / cols))
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=captions, horizontal_spacing=0.01, vertical_spacing=0.06)
    for i, image in enumerate(images):
        fig.add_trace(
            go.Heatmap(
                z=image,
                colorscale="gray",
                zmin=0,
                zmax=1,
                showscale=False,
                zsmooth="best",
                hovertemplate=f"{captions[i]}<br>intensity %{{z:.3f}}<extra></extra>",
            ),
            row=i // cols + 1,
            col=i % cols + 1,
        )
    fig.update_xaxes(visible=False, constrain="domain")
    fig.update_yaxes(visible=False, autorange="reversed", constrain="domain")
    for i in range(1, n + 1):  # square pixels in every tile
        fig.update_yaxes(scaleanchor=f"x{'' if i == 1 else i}", row=(i - 1) // cols + 1, col=(i - 1) % cols + 1)
    fig.update_annotations(font_size=12)
    fig.update_layout(height=rows * height_per_row + 20, margin=dict(l=4, r=4, t=28, b=4))
    return fig


def difference_figure(a: np.ndarray, b: np.ndarray, titles: tuple[str, str], height: int = 330) -> go.Figure:
    """Image a, image b, and b - a on a symmetric red-blue scale."""
    diff = b - a
    limit = float(np.abs(diff).max()) or 1.0
    fig = make_subplots(rows=1, cols=3, subplot_titles=[*titles, "difference (right − left)"], horizontal_spacing=0.02)
    grey = dict(colorscale="gray", zmin=0, zmax=1, showscale=False, zsmooth="best")
    fig.add_trace(go.Heatmap(z=a, **grey), row=1, col=1)
    fig.add_trace(go.Heatmap(z=b, **grey), row=1, col=2)
    scale = dict(thickness=10, len=0.9, title=dict(text="intensity, right − left", side="right"))
    fig.add_trace(
        go.Heatmap(z=diff, colorscale="RdBu_r", zmin=-limit, zmax=limit, zsmooth="best", colorbar=scale),
        row=1,
        col=3,
    )
    fig.update_xaxes(visible=False, constrain="domain")
    fig.update_yaxes(visible=False, autorange="reversed", constrain="domain")
    for i in (1, 2, 3):
        fig.update_yaxes(scaleanchor=f"x{'' if i == 1 else i}", row=1, col=i)
    fig.update_annotations(font_size=12)
    fig.update_layout(height=height, margin=dict(l=4, r=4, t=28, b=4))
    return fig


def encoded_frames(images: np.ndarray, quality: int = WEBP_QUALITY) -> list[str]:
    """(n, S, S) images in [0, 1] as grey-scale WebP data URLs (8 bits, for display only)."""
    urls = []
    for image in np.clip(images, 0, 1):
        buffer = io.BytesIO()
        Image.fromarray((image * 255 + 0.5).astype(np.uint8)).save(buffer, "WEBP", quality=quality, method=4)
        urls.append("data:image/webp;base64," + base64.b64encode(buffer.getvalue()).decode("ascii"))
    return urls


def decoded_frame(url: str) -> np.ndarray:
    """A data URL from `encoded_frames` back to an (S, S) array in [0, 1]."""
    data = base64.b64decode(url.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(data)).convert("L"), dtype=np.float32) / 255
