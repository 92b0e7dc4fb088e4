"""engine.reports.figures: score bars, conditional curves and the report's curves grid, from hand-made tables."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from engine.reports import figures
from engine.scores.tvd import conditional_curve

NAN = float("nan")


def _row(feature, group, score, low, high, status="ok", message="", column="source"):
    return {
        "feature": feature,
        column: group,
        "score": score,
        "ci_low": low,
        "ci_high": high,
        "status": status,
        "message": message,
    }


@pytest.fixture
def two_sources():
    return pd.DataFrame(
        [
            _row("a", "data", 0.40, 0.30, 0.50),
            _row("b", "data", NAN, NAN, NAN, "single_value", "The feature takes a single value."),
            _row("a", "diffusion", 0.55, 0.41, 0.62),
            _row("b", "diffusion", 0.10, 0.02, 0.20),
        ]
    )


def test_score_bars_draw_one_bar_and_one_legend_entry_per_source(two_sources):
    fig = figures.score_bars(two_sources, {"a": "#000000", "b": "#111111"})
    assert len(fig.data) == 4  # (bars, legend entry) per source
    bars = [t for t in fig.data if t.showlegend is False]
    assert [t.name for t in bars] == ["from data", "generator alone (model-based)"]
    assert [t.marker.pattern.shape for t in bars] == ["", "x"]
    assert list(bars[0].y) == ["a", "b"] and list(bars[0].marker.color) == ["#000000", "#111111"]


def test_score_bars_draw_a_failed_score_as_an_empty_slot(two_sources):
    data = figures.score_bars(two_sources, {}).data[0]
    assert list(data.x) == [0.4, 0.0]
    assert data.error_x.array[1] == 0 and data.error_x.arrayminus[1] == 0
    assert data.hovertext[1] == "b: no score (The feature takes a single value.)"


def test_score_bars_error_bars_are_the_tables_interval(two_sources):
    fig = figures.score_bars(two_sources, {})
    for trace, source in zip(fig.data[::2], ("data", "diffusion"), strict=True):
        part = two_sources[(two_sources["source"] == source) & (two_sources["status"] == "ok")]
        ok = [list(trace.y).index(f) for f in part["feature"]]
        x, plus, minus = (np.asarray(v, float)[ok] for v in (trace.x, trace.error_x.array, trace.error_x.arrayminus))
        np.testing.assert_allclose(x + plus, part["ci_high"])
        np.testing.assert_allclose(x - minus, part["ci_low"])


def test_score_bars_group_by_output_gives_each_output_its_own_pattern():
    outputs = [f"y{j}" for j in range(5)]
    table = pd.DataFrame([_row("a", o, 0.1 * (j + 1), 0.0, 0.6, column="output") for j, o in enumerate(outputs)])
    fig = figures.score_bars(table, figures.feature_colors(["a"]), group_by="output", title="S(A)")
    bars = fig.data[::2]
    assert [t.name for t in bars] == outputs
    assert len({t.marker.pattern.shape for t in bars}) == 5
    assert fig.layout.title.text == "S(A)"


@pytest.fixture
def data_inputs():
    rng = np.random.default_rng(0)
    n = 300
    features = {
        "size": rng.uniform(0, 1, n),
        "texture": rng.integers(0, 3, n),
        "noise": rng.normal(size=n),
        "flat": np.ones(n),
    }
    y = 2 * features["size"] + 0.5 * features["texture"] + rng.normal(0, 0.1, n)
    table = pd.DataFrame(
        [
            _row("size", "y", 0.80, 0.75, 0.85, column="output"),
            _row("texture", "y", 0.15, 0.10, 0.20, column="output"),
            _row("noise", "y", 0.00, 0.00, 0.01, column="output"),
            _row("flat", "y", NAN, NAN, NAN, "single_value", "The feature takes a single value.", column="output"),
            _row("size", "other", 0.0, 0.0, 0.0, column="output"),
        ]
    )
    return table, y, features


def _panels(fig):
    """x axis name -> the traces drawn on it."""
    panels = {}
    for trace in fig.data:
        panels.setdefault(trace.xaxis or "x", []).append(trace)
    return panels


def test_curves_grid_has_one_panel_per_feature(data_inputs):
    table, y, features = data_inputs
    fig = figures.curves_grid(table, "y", features, outputs=y, categorical=("texture",))
    titles = [a.text for a in fig.layout.annotations]
    assert titles == [
        "size: S = 0.800 [0.750, 0.850]",
        "texture: S = 0.150 [0.100, 0.200]",
        "noise: S = 0.000 [0.000, 0.010]",
        "flat: single_value",
    ]
    panels = _panels(fig)
    assert len(panels) == len(features)
    assert [len(panels[k]) for k in ("x", "x2", "x3", "x4")] == [3, 2, 3, 1]  # flat: points, no curve
    assert fig.layout.title.text == "E[y | A = a] with its 95% band"


def test_curves_grid_draws_the_engines_curve_and_categories_as_markers(data_inputs):
    table, y, features = data_inputs
    fig = figures.curves_grid(table, "y", features, outputs=y, categorical=("texture",), max_scatter=100)
    panels = _panels(fig)
    points, band, line = panels["x"]
    curve = conditional_curve(y, features["size"])
    np.testing.assert_allclose(line.y, curve.mean)
    np.testing.assert_allclose(band.y, np.r_[curve.band_high, curve.band_low[::-1]])
    assert len(points.x) == 100  # a subset of the points; the curve uses all of them
    box, means = panels["x2"]
    assert box.type == "box" and means.mode == "markers"
    assert list(means.x) == ["0", "1", "2"]
    assert list(fig.layout.xaxis2.categoryarray) == ["0", "1", "2"]  # sorted, not in the data's order
    cat = conditional_curve(y, features["texture"], categorical=True)
    np.testing.assert_allclose(np.asarray(means.y) + np.asarray(means.error_y.array), cat.band_high)


def test_curves_grid_from_diffusion_value_tables_draws_means_with_a_normal_band():
    values = pd.DataFrame(
        {"value": [0.9, 0.1, 0.5], "mean": [3.0, 1.0, 2.0], "variance": [4.0, 1.0, 0.25], "n": [16, 16, 16]}
    )
    shape = pd.DataFrame({"value": ["disc", "square"], "mean": [0.2, 0.7], "variance": [0.04, 0.09], "n": [4, 4]})
    table = pd.DataFrame(
        [_row("size", "y", 0.5, 0.4, 0.6, column="output"), _row("shape", "y", 0.3, 0.2, 0.4, column="output")]
    )
    fig = figures.curves_grid(
        table,
        "y",
        {"size": np.zeros(3), "shape": np.zeros(2)},
        categorical=("shape",),
        value_tables={("size", "y"): values, ("shape", "y"): shape},
    )
    panels = _panels(fig)
    band, line = panels["x"]  # no points for diffusion
    assert list(line.x) == [0.1, 0.5, 0.9]  # sorted by value
    half = 1.96 * np.sqrt(np.array([1.0, 0.25, 4.0]) / 16)
    np.testing.assert_allclose(band.y, np.r_[[1, 2, 3] + half, ([1, 2, 3] - half)[::-1]])
    (means,) = panels["x2"]
    assert means.mode == "markers" and list(means.x) == ["disc", "square"]
    np.testing.assert_allclose(means.error_y.arrayminus, 1.96 * np.sqrt(np.array([0.04, 0.09]) / 4))


def test_curves_grid_leaves_a_feature_without_value_table_empty():
    table = pd.DataFrame([_row("size", "y", 0.5, 0.4, 0.6, column="output")])
    fig = figures.curves_grid(table, "y", {"size": np.zeros(3), "age": np.zeros(3)}, value_tables={})
    assert len(fig.data) == 0 and len(fig.layout.annotations) == 2


def test_conditional_curve_figure_marks_the_slider_value():
    rng = np.random.default_rng(1)
    a = rng.uniform(size=50)
    y = a + rng.normal(0, 0.1, 50)
    fig = figures.conditional_curve_figure(
        conditional_curve(y, a), y, a, feature="size", output_name="y", color="#0072B2", marker_at=0.5
    )
    assert [t.name for t in fig.data] == ["outputs", "95% band", "E[f | A = a]"]
    assert fig.layout.shapes[0].x0 == 0.5


def test_components_use_the_engine_builders():
    from components import colors, curves, score_bars

    assert score_bars.score_bars is figures.score_bars
    assert curves.conditional_curve_figure is figures.conditional_curve_figure
    assert curves.output_distribution is figures.output_distribution
    assert colors.feature_colors is figures.feature_colors and colors.SOURCE_COLORS is figures.SOURCE_COLORS


def test_engine_figures_does_not_import_streamlit():
    code = "import sys, engine.reports.figures; print('streamlit' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert result.stdout.strip() == "False"
