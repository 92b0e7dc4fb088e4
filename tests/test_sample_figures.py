"""The explorer's figures (`components.samples`, `engine.reports.figures`) are built from layouts cached per shape
and not
validated again: each must equal the figure plotly's own calls build, whatever came before it."""

from __future__ import annotations

import json

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
import pytest
from plotly.subplots import make_subplots

from components.samples import difference_figure, sample_grid
from engine.reports.figures import conditional_curve_figure, marked, output_distribution
from engine.scores.tvd import conditional_curve


def _plain_tiles(traces, titles, rows, cols, spacing, height) -> dict:
    """The same figure the plain way: make_subplots, add_trace per tile, then the axis and layout updates."""
    fig = make_subplots(
        rows=rows, cols=cols, subplot_titles=titles, horizontal_spacing=spacing[0], vertical_spacing=spacing[1]
    )
    for i, trace in enumerate(traces):
        fig.add_trace(trace, row=i // cols + 1, col=i % cols + 1)
    fig.update_xaxes(visible=False, constrain="domain")
    fig.update_yaxes(visible=False, autorange="reversed", constrain="domain")
    for i in range(1, len(traces) + 1):
        fig.update_yaxes(scaleanchor=f"x{'' if i == 1 else i}", row=(i - 1) // cols + 1, col=(i - 1) % cols + 1)
    fig.update_annotations(font_size=12)
    fig.update_layout(height=height, margin=dict(l=4, r=4, t=28, b=4))
    return json.loads(pio.to_json(fig))


def _grey(z, **extra):
    return go.Heatmap(z=z, colorscale="gray", zmin=0, zmax=1, showscale=False, zsmooth="best", **extra)


@pytest.mark.parametrize("n", [4, 8, 12, 16])
def test_a_sample_grid_is_the_plain_subplot_figure(n):
    images = np.random.default_rng(n).random((n, 32, 32)).astype(np.float32)
    captions = [f"measured {i / 7:.3g}" for i in range(n)]
    sample_grid(images[::-1], captions[::-1])  # an earlier figure of the same shape must leave nothing behind
    traces = [
        _grey(image, hovertemplate=f"{c}<br>intensity %{{z:.3f}}<extra></extra>")
        for image, c in zip(images, captions, strict=True)
    ]
    rows = -(-n // 3)
    expected = _plain_tiles(traces, captions, rows, 3, (0.01, 0.06), rows * 310 + 20)
    assert json.loads(pio.to_json(sample_grid(images, captions))) == expected


def test_a_difference_figure_is_the_plain_subplot_figure():
    a, b = np.random.default_rng(0).random((2, 32, 32)).astype(np.float32)
    limit = float(np.abs(b - a).max())
    scale = dict(thickness=10, len=0.9, title=dict(text="intensity, right − left", side="right"))
    diff = go.Heatmap(z=b - a, colorscale="RdBu_r", zmin=-limit, zmax=limit, zsmooth="best", colorbar=scale)
    titles = ["ventricle_volume = 20", "ventricle_volume = 40", "difference (right − left)"]
    expected = _plain_tiles([_grey(a), _grey(b), diff], titles, 1, 3, (0.02, None), 330)
    assert json.loads(pio.to_json(difference_figure(a, b, tuple(titles[:2])))) == expected


def _plain_violins(outputs, label, color, mean_line, others, height) -> dict:
    """`output_distribution` the plain way: add_trace per violin, add_hline, update_layout."""
    fig = go.Figure()
    for name, values, c in [(label, outputs, color), *((k, v, "#888888") for k, v in others.items())]:
        red, green, blue = (int(c[i : i + 2], 16) for i in (1, 3, 5))
        fig.add_trace(
            go.Violin(
                y=values,
                name=name,
                box_visible=True,
                meanline_visible=True,
                points="all",
                line_color=c,
                fillcolor=f"rgba({red},{green},{blue},0.25)",
                marker=dict(size=5),
            )
        )
    if mean_line is not None:
        fig.add_hline(y=mean_line, line=dict(color="black", dash="dot"), annotation_text="E[f | A = a] (data)")
    fig.update_layout(height=height, margin=dict(l=8, r=8, t=8, b=8), showlegend=False, yaxis_title="model output")
    return json.loads(pio.to_json(fig))


@pytest.mark.parametrize("mean_line", [None, 0.42])
def test_the_violins_are_the_plain_figure(mean_line):
    rng = np.random.default_rng(3)
    y, other = rng.random(8), rng.random(5)
    output_distribution(rng.random(8), label="x", color="#E69F00", mean_line=0.9, height=260)  # leaves nothing behind
    got = output_distribution(y, label="size = 3", color="#0072B2", mean_line=mean_line, others={"b": other})
    assert json.loads(pio.to_json(got)) == _plain_violins(y, "size = 3", "#0072B2", mean_line, {"b": other}, 300)


def test_a_marked_curve_is_the_plain_figure_and_leaves_the_shared_one_unchanged():
    rng = np.random.default_rng(4)
    a = rng.uniform(size=60)
    y = a + rng.normal(0, 0.1, 60)
    args = (conditional_curve(y, a), y, a)
    style = dict(feature="size", output_name="p", color="#0072B2", height=280)
    shared = conditional_curve_figure(*args, **style).to_dict()
    before = json.loads(pio.to_json(go.Figure(shared)))
    for x in (0.2, 0.7):
        plain = conditional_curve_figure(*args, **style)
        plain.add_vline(x=x, line=dict(color="black", dash="dash"))
        assert json.loads(pio.to_json(marked(shared, x))) == json.loads(pio.to_json(plain))
    assert json.loads(pio.to_json(go.Figure(shared))) == before
