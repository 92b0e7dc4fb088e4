"""Pixel-attribution maps in a grid on one colour scale (signed or absolute)."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

MAP_SCALE = {  # what a display-normalised map's colour means
    True: "attribution / its 99th pct |attribution| (red raises, blue lowers the output)",
    False: "|attribution| / its 99th percentile",
}


def map_grid(
    maps: dict[str, np.ndarray],
    image: np.ndarray,
    *,
    signed: bool = False,
    cols: int = 3,
    height_per_row: int = 340,
) -> go.Figure:
    """One tile per method: the image in grey under its map (red-blue if signed, hot if absolute).

    `maps` are display-normalised (engine.pixelmaps.methods.display_normalise): [-1, 1] signed or
    [0, 1] absolute, so every tile shares one colour scale, whose bar says what it means. Tiles are
    smoothed for display only (the browser interpolates; the maps are unchanged).
    """
    shown, limit = maps, 1.0
    n = len(shown) + 1
    rows = int(np.ceil(n / cols))
    fig = make_subplots(
        rows=rows, cols=cols, subplot_titles=["image", *shown], horizontal_spacing=0.01, vertical_spacing=0.05
    )
    fig.add_trace(go.Heatmap(z=image, colorscale="gray", zmin=0, zmax=1, showscale=False, zsmooth="best"), row=1, col=1)
    for i, (name, m) in enumerate(shown.items(), start=1):
        fig.add_trace(
            go.Heatmap(z=image, colorscale="gray", zmin=0, zmax=1, showscale=False, hoverinfo="skip", zsmooth="best"),
            row=i // cols + 1,
            col=i % cols + 1,
        )
        fig.add_trace(
            go.Heatmap(
                z=np.clip(m, -limit, limit),
                colorscale="RdBu_r" if signed else "Hot",
                opacity=0.75,
                zmin=-limit if signed else 0,
                zmax=limit,
                showscale=i == 1,
                zsmooth="best",
                colorbar=dict(thickness=10, len=0.5, y=0.8, title=dict(text=MAP_SCALE[signed], side="right")),
                hovertemplate=f"{name}<br>%{{z:.3g}}<extra></extra>",
            ),
            row=i // cols + 1,
            col=i % cols + 1,
        )
    fig.update_xaxes(visible=False, constrain="domain")
    fig.update_yaxes(visible=False, autorange="reversed", constrain="domain")
    for i in range(1, n + 1):
        fig.update_yaxes(scaleanchor=f"x{'' if i == 1 else i}", row=(i - 1) // cols + 1, col=(i - 1) % cols + 1)
    fig.update_annotations(font_size=12)
    fig.update_layout(height=rows * height_per_row + 20, margin=dict(l=4, r=4, t=28, b=4))
    return fig
