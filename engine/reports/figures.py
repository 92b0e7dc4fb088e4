"""Plotly figures of scores and conditional curves, shared by the app and the HTML report.

Pure functions: arrays and tables in, a `go.Figure` out; no streamlit, no file I/O. The
app's `components/` add widgets and captions around them; `engine.reports.html.write_html`
inlines them in the standalone report.

* `score_bars(scores, colors, group_by=...)`: S(A) per feature with its CI, one bar per
  source (data / diffusion / truth), model or output;
* `conditional_curve_figure(curve, outputs, feature_values, ...)`: E[Y | A = a] with its
  band over the scatter of outputs, for one feature (`curve_traces` draws it into any figure);
* `curves_grid(table, output, features, ...)`: one such panel per feature, from data
  outputs or from diffusion's per-value tables (`value_table_curve`);
* `output_distribution(outputs, ...)`: violins of outputs at one feature value;
* `added_bars(table, colors)` and `shapley_stack(table, joint, colors)`: the features together, what each
  adds to the others and their Shapley effects stacked up to the joint score.

Colours: one per feature (`feature_colors`, by position in the dataset's feature list) and
one outline and pattern per score source (`SOURCE_COLORS`, `SOURCE_PATTERNS`).
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Collection
from dataclasses import replace

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from engine.scores.tvd import CurveResult, conditional_curve

# Okabe-Ito (colour-blind safe) first, then Plotly's Dark24 for longer feature lists.
PALETTE = (
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#CC79A7",
    "#56B4E9",
    "#D55E00",
    "#F0E442",
    "#000000",
    "#2E91E5",
    "#E15F99",
    "#1CA71C",
    "#FB0D0D",
    "#DA16FF",
    "#B68100",
    "#750D86",
    "#EB663B",
)

# how a score was obtained -> bar outline/pattern
SOURCE_COLORS = {"data": "#0072B2", "debiased": "#009E73", "diffusion": "#E69F00", "truth": "#555555"}
SOURCE_PATTERNS = {"data": "", "debiased": "/", "diffusion": "x", "truth": "."}
SOURCE_LABELS = {
    "data": "from data",
    "debiased": "generator, debiased by the real images",
    "diffusion": "generator alone (model-based)",
    "truth": "ground truth",
}
# groups that are not sources (models, outputs) take these in order; the first three are the sources'
GROUP_PATTERNS = ("", "/", ".", "x", "\\", "+", "-", "|")

MAX_SCATTER = 2000  # points drawn per curves_grid panel (a fixed random subset beyond)


def feature_colors(features: list[str]) -> dict[str, str]:
    """Feature name -> colour, by the feature's position in the dataset's feature list.

    Every page passes the dataset's own `Dataset.features` list, so a feature keeps its
    colour across pages for a dataset.
    """
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(features)}


def _rgba(hex_color: str, alpha: float) -> str:
    h = hex_color.lstrip("#")
    r, g, b = (int(h[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


# score bars ---------------------------------------------------------------------------------


def score_bars(
    scores: pd.DataFrame,
    colors: dict[str, str],
    *,
    title: str = "",
    height: int | None = None,
    group_by: str = "source",
) -> go.Figure:
    """Horizontal bars of S(A), one group per feature, one bar per `group_by` value.

    Args:
        scores: long table with columns `feature`, `score`, `ci_low`, `ci_high`, `status`,
            `message` and the `group_by` column (`engine.scores.tvd.score_table` rows plus e.g. a
            `source` column: "data" | "diffusion" | "truth"; or its own `output` column).
            At most one row per (feature, group).
        colors: feature -> colour (`feature_colors`); a feature not in it is grey.
        title: figure title (none by default).
        height: pixels; default grows with the number of bars.
        group_by: the column whose values get one bar each per feature.

    Bars take the feature's colour; groups differ by pattern and outline (sources: data
    plain, debiased generator hatched, generator alone cross-hatched, truth dotted) and are named
    in the legend. A row whose status
    is not "ok" is an empty slot (a zero-length bar, no error bar) and its hover text says
    why; it is never drawn as a number. The error bars are the CI [ci_low, ci_high].
    """
    features = list(dict.fromkeys(scores["feature"]))
    fig = go.Figure()
    for i, group in enumerate(dict.fromkeys(scores[group_by])):
        part = scores[scores[group_by] == group].set_index("feature").reindex(features)
        ok = part["status"].eq("ok").to_numpy()
        score = part["score"].to_numpy(dtype=float)
        low, high = part["ci_low"].to_numpy(dtype=float), part["ci_high"].to_numpy(dtype=float)
        hover = [
            f"{f}: {s:.0%} ({lo:.0%}-{hi:.0%})"
            if k and not math.isnan(lo)
            else f"{f}: {s:.0%}"
            if k
            else f"{f}: no score ({m})"
            for f, s, lo, hi, k, m in zip(features, score, low, high, ok, part["message"].fillna(""), strict=True)
        ]
        if group in SOURCE_COLORS:
            pattern, outline = SOURCE_PATTERNS[group], SOURCE_COLORS[group]
        else:
            pattern = GROUP_PATTERNS[i % len(GROUP_PATTERNS)]
            outline = list(SOURCE_COLORS.values())[i % len(SOURCE_COLORS)]
        name = SOURCE_LABELS.get(group, str(group))
        fig.add_trace(
            go.Bar(
                y=features,
                x=np.where(ok, score, 0.0),
                orientation="h",
                name=name,
                marker=dict(
                    color=[colors.get(f, "#888") for f in features],
                    pattern=dict(shape=pattern, fgcolor="white", solidity=0.35),
                    line=dict(color=outline, width=1.5),
                ),
                error_x=dict(
                    type="data",
                    symmetric=False,
                    array=np.nan_to_num(np.where(ok, high - score, 0.0)),
                    arrayminus=np.nan_to_num(np.where(ok, score - low, 0.0)),
                    color="#333",
                    thickness=1.2,
                    width=4,
                ),
                hovertext=hover,
                hoverinfo="text",
                showlegend=False,
            )
        )
        # legend entry in neutral grey: bar colours belong to the features, patterns to the groups
        fig.add_trace(
            go.Bar(
                x=[None],
                y=[None],
                orientation="h",
                name=name,
                marker=dict(
                    color="#9a9a9a",
                    pattern=dict(shape=pattern, fgcolor="white", solidity=0.35),
                    line=dict(color=outline, width=1.5),
                ),
            )
        )
    fig.update_layout(
        barmode="group",
        title=dict(text=title, font=dict(size=14)),
        height=height or max(260, 60 + 34 * len(features) * max(1, scores[group_by].nunique()) ** 0.6),
        margin=dict(l=8, r=8, t=36 if title else 8, b=8),
        legend=dict(orientation="h", y=-0.18),
        xaxis=dict(
            title="explained variance S(A)", range=[0, 1.04], tickvals=[0, 0.2, 0.4, 0.6, 0.8, 1.0], tickformat=".0%"
        ),
        yaxis=dict(autorange="reversed"),
    )
    return fig


# conditional curves -------------------------------------------------------------------------


def curve_traces(
    curve: CurveResult,
    outputs: np.ndarray | None,
    feature_values: np.ndarray | None,
    *,
    feature: str,
    output_name: str,
    color: str,
    categorical: bool = False,
    bounds: tuple[float, float] | None = None,
) -> list[go.Box | go.Scatter]:
    """The traces of one conditional-curve panel, to add to a figure or a subplot.

    Outputs (a box with every point for a categorical feature, else a scatter) when given,
    then, if `curve.status == "ok"`, E[Y | A = a]: black diamonds with error bars at each
    category, or a line with its band (the band first, so the line is on top). `bounds` is
    the output's range where it has one (a probability's [0, 1], `ModelCard.output_range`):
    the band is clipped to it, as no mean can leave it.
    """
    traces: list[go.Box | go.Scatter] = []
    if bounds is not None and curve.status == "ok":
        curve = replace(curve, band_low=np.clip(curve.band_low, *bounds), band_high=np.clip(curve.band_high, *bounds))
    has_points = outputs is not None and feature_values is not None and len(outputs) > 0
    if categorical:
        if has_points:
            traces.append(
                go.Box(
                    x=np.asarray(feature_values).astype(str),
                    y=outputs,
                    name="outputs",
                    boxpoints="all",
                    jitter=0.4,
                    pointpos=0,
                    marker=dict(color=_rgba(color, 0.35), size=4),
                    line=dict(color=color),
                )
            )
        if curve.status == "ok":
            traces.append(
                go.Scatter(
                    x=np.asarray(curve.grid).astype(str),
                    y=curve.mean,
                    mode="markers",
                    name="E[f | A = a]",
                    marker=dict(color="black", size=10, symbol="diamond"),
                    error_y=dict(
                        type="data",
                        symmetric=False,
                        array=curve.band_high - curve.mean,
                        arrayminus=curve.mean - curve.band_low,
                    ),
                )
            )
        return traces
    if has_points:
        traces.append(
            go.Scatter(
                x=feature_values,
                y=outputs,
                mode="markers",
                name="outputs",
                marker=dict(color=_rgba(color, 0.35), size=5),
                hovertemplate=f"{feature} %{{x:.3g}}<br>{output_name} %{{y:.3g}}<extra></extra>",
            )
        )
    if curve.status == "ok":
        traces.append(
            go.Scatter(
                x=np.r_[curve.grid, curve.grid[::-1]],
                y=np.r_[curve.band_high, curve.band_low[::-1]],
                fill="toself",
                fillcolor=_rgba(color, 0.2),
                line=dict(width=0),
                name="95% band",
                hoverinfo="skip",
            )
        )
        traces.append(
            go.Scatter(
                x=curve.grid,
                y=curve.mean,
                mode="lines",
                name="E[f | A = a]",
                line=dict(color=color, width=3),
                customdata=np.c_[np.sqrt(curve.variance), curve.count],
                hovertemplate=f"{feature} %{{x:.3g}}<br>E[f|A] %{{y:.3g}}<br>sd(f|A) %{{customdata[0]:.3g}}"
                "<br>effective n %{customdata[1]:.0f}<extra></extra>",
            )
        )
    return traces


def conditional_curve_figure(
    curve: CurveResult,
    outputs: np.ndarray,
    feature_values: np.ndarray,
    *,
    feature: str,
    output_name: str,
    color: str,
    categorical: bool = False,
    marker_at: float | None = None,
    height: int = 360,
    bounds: tuple[float, float] | None = None,
) -> go.Figure:
    """Scatter of (a_i, y_i), E[Y | A = a] as a line with its pointwise band (clipped to `bounds`, the
    output's range where it has one), Var(Y|A) in hover.

    `curve` is an `engine.scores.tvd.CurveResult` (`conditional_curve(outputs, feature_values)`);
    `marker_at` draws a vertical line at one value (the feature explorer's slider; numeric
    features only).
    """
    fig = go.Figure(
        curve_traces(
            curve,
            outputs,
            feature_values,
            feature=feature,
            output_name=output_name,
            color=color,
            categorical=categorical,
            bounds=bounds,
        )
    )
    if categorical and curve.status == "ok":  # categories in the curve's (sorted) order, not the data's
        fig.update_xaxes(categoryorder="array", categoryarray=np.asarray(curve.grid).astype(str))
    fig.update_layout(
        height=height,
        margin=dict(l=8, r=8, t=8, b=8),
        legend=dict(orientation="h", y=-0.25),
        xaxis_title=feature,
        yaxis_title=output_name,
    )
    return fig if marker_at is None or categorical else marked(fig.to_dict(), marker_at)


def marked(figure: dict, x: float) -> go.Figure:
    """A conditional-curve figure (as `conditional_curve_figure(...).to_dict()` gives it, not changed)
    with the dashed vertical line at x: the explorer keeps the figure of its data and marks each value."""
    line = dict(_vertical_line(), x0=x, x1=x)
    return prebuilt(figure["data"], {**figure["layout"], "shapes": [*figure["layout"].get("shapes", ()), line]})


@functools.lru_cache(maxsize=1)
def _vertical_line() -> dict:
    return go.Figure().add_vline(x=0, line=dict(color="black", dash="dash")).layout.shapes[0].to_plotly_json()


def prebuilt(data: list[dict], layout: dict) -> go.Figure:
    """A figure from trace and layout dicts shaped as plotly itself writes them (a validated figure's
    `to_dict`, with other arrays and numbers in the same places), without validating each property again:
    that costs 5-15 ms a figure, and the explorer draws four on every value move. Their tests compare
    such figures' JSON with the validated build's."""
    return go.Figure(data=data, layout=layout, _validate=False)


def value_table_curve(values: pd.DataFrame, *, categorical: bool = False) -> CurveResult:
    """E[Y | A = a] at the values a diffusion score sampled, with a normal-theory 95% band.

    `values` is the per-value table of `engine.diffusion.diffusion_score` (columns `value`,
    `mean`, `variance`, `n`); the band is mean +- 1.96 sqrt(variance / n). Numeric values
    are sorted so the line runs left to right.
    """
    if values is None or len(values) == 0:
        empty = np.array([], dtype=float)
        return CurveResult(empty, empty, empty, empty, empty, empty, np.nan, "no_values", "No sampled values.")
    if not categorical:
        values = values.sort_values("value")
    mean, var, n = (values[c].to_numpy(float) for c in ("mean", "variance", "n"))
    half = 1.96 * np.sqrt(var / n)
    grid = values["value"].to_numpy() if categorical else values["value"].to_numpy(float)
    return CurveResult(grid, mean, mean - half, mean + half, var, n)


def _panel_title(scores: pd.DataFrame, feature: str) -> str:
    match = scores[scores["feature"] == feature]
    if match.empty:
        return feature
    r = match.iloc[0]
    if r["status"] != "ok":
        return f"{feature}: {r['status']}"
    ci = "" if math.isnan(r["ci_low"]) else f" [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"
    return f"{feature}: S = {r['score']:.3f}{ci}"


def curves_grid(
    table: pd.DataFrame,
    output: str,
    features: dict[str, np.ndarray],
    *,
    outputs: np.ndarray | None = None,
    categorical: Collection[str] = (),
    value_tables: dict | None = None,
    colors: dict[str, str] | None = None,
    max_scatter: int = MAX_SCATTER,
    n_cols: int = 3,
) -> go.Figure:
    """One panel per feature: E[output | A = a] with its 95% band (`curve_traces` in each).

    Args:
        table: score table (`engine.scores.tvd.score_table` columns; rows of other outputs are
            ignored when it has an `output` column): each panel's title gives S and its CI,
            or the status when there is no score.
        output: the output's name, as in `table["output"]` and `value_tables`' keys.
        features: feature name -> (N,) values on the scored rows; one panel each, in order.
        outputs: (N,) this output's values on the same rows (data method): drawn as points
            (at most `max_scatter`, a fixed random subset) with `engine.scores.tvd.conditional_curve`
            over all N. None for the diffusion method.
        categorical: features grouped exactly (boxes and diamonds instead of a line).
        value_tables: (feature, output) -> per-value table (diffusion method, see
            `value_table_curve`); used when `outputs` is None.
        colors: feature -> colour; default `feature_colors(list(features))`.
        max_scatter: points drawn per panel.
        n_cols: panels per row (fewer with fewer features).

    A panel with no curve (a failed curve, no value table) keeps its points, or stays empty.
    """
    names = list(features)
    colors = feature_colors(names) if colors is None else colors
    scores = table[table["output"] == output] if "output" in table.columns else table
    n_cols = max(1, min(n_cols, len(names)))
    n_rows = max(1, math.ceil(len(names) / n_cols))
    fig = make_subplots(
        rows=n_rows,
        cols=n_cols,
        subplot_titles=[_panel_title(scores, f) for f in names],
        horizontal_spacing=0.07,
        vertical_spacing=0.5 / n_rows,
    )
    y = None if outputs is None else np.asarray(outputs, dtype=float)
    keep = None if y is None else np.sort(np.random.default_rng(0).permutation(len(y))[:max_scatter])
    for i, f in enumerate(names):
        row, col = i // n_cols + 1, i % n_cols + 1
        is_cat = f in categorical
        if y is not None:
            a = np.asarray(features[f])
            curve = conditional_curve(y, a, categorical=is_cat)
            points, values = y[keep], a[keep]
        else:  # diffusion: the per-value means, no points
            curve = value_table_curve((value_tables or {}).get((f, output)), categorical=is_cat)
            points = values = None
        for trace in curve_traces(
            curve, points, values, feature=f, output_name=output, color=colors.get(f, "#888888"), categorical=is_cat
        ):
            fig.add_trace(trace, row=row, col=col)
        fig.update_xaxes(title_text=f, row=row, col=col)
        if is_cat and curve.status == "ok":
            fig.update_xaxes(categoryorder="array", categoryarray=np.asarray(curve.grid).astype(str), row=row, col=col)
        if col == 1:
            fig.update_yaxes(title_text=output, row=row, col=col)
    fig.update_layout(title=f"E[{output} | A = a] with its 95% band", height=320 * n_rows, showlegend=False)
    return fig


# distributions ------------------------------------------------------------------------------


def output_distribution(
    outputs: np.ndarray,
    *,
    label: str,
    color: str,
    mean_line: float | None = None,
    others: dict[str, np.ndarray] | None = None,
    height: int = 300,
    bounds: tuple[float, float] | None = None,
) -> go.Figure:
    """Violin of model outputs at one feature value (and optional others, in grey), E[f|A=a] marked. With
    `bounds` (the output's range, e.g. a probability's [0, 1]) the density ends there instead of spreading
    past it (a kernel density knows no bounds)."""
    span = {} if bounds is None else dict(spanmode="manual", span=list(bounds))
    traces = [
        dict(
            type="violin",
            y=values,
            name=name,
            box=dict(visible=True),
            meanline=dict(visible=True),
            points="all",
            line=dict(color=c),
            fillcolor=_rgba(c, 0.25),
            marker=dict(size=5),
            **span,
        )
        for name, values, c in [(label, outputs, color), *((k, v, "#888888") for k, v in (others or {}).items())]
    ]
    layout = copy.deepcopy(_violin_layout(height, mean_line is not None))
    if mean_line is not None:
        layout["shapes"][0].update(y0=mean_line, y1=mean_line)
        layout["annotations"][0].update(y=mean_line)
    return prebuilt(traces, layout)


@functools.lru_cache(maxsize=8)
def _violin_layout(height: int, with_mean: bool) -> dict:
    """The violins' layout as plotly builds it, the mean line (if any) at y = 0 for the caller to move."""
    fig = go.Figure()
    if with_mean:
        fig.add_hline(y=0, line=dict(color="black", dash="dot"), annotation_text="E[f | A = a] (data)")
    fig.update_layout(height=height, margin=dict(l=8, r=8, t=8, b=8), showlegend=False, yaxis_title="model output")
    return fig.layout.to_plotly_json()


# the features together: added scores and Shapley effects (engine.scores.service.with_joint) ----------------


def added_bars(table: pd.DataFrame, colors: dict[str, str], *, title: str = "", group_by: str = "output") -> go.Figure:
    """Horizontal bars of each feature's added score S(all) − S(all but A) with its CI, one bar per output (or
    per value of `group_by`, e.g. "source": the data beside the generator path).

    `table` has the score table's `feature` and `output` and the joint columns (`added`, `added_ci_low`,
    `added_ci_high`, `joint_status`, `joint_message`); drawn as `score_bars` draws S(A), a row whose
    `joint_status` is not "ok" an empty slot.
    """
    rows = table.assign(
        score=table["added"],
        ci_low=table["added_ci_low"],
        ci_high=table["added_ci_high"],
        status=table["joint_status"],
        message=table["joint_message"],
    )
    fig = score_bars(rows, colors, title=title, group_by=group_by)
    fig.update_layout(xaxis_title="added to all the other features: S(all) − S(all but A)", showlegend=False)
    return fig


REST_COLOR = "#e6e6e6"  # the variance the recorded features do not explain together


def shapley_stack(
    table: pd.DataFrame, joint: pd.DataFrame, colors: dict[str, str], *, title: str = "", rest: str = "the rest"
) -> go.Figure:
    """One horizontal bar per output: the features' Shapley effects stacked, adding up to the joint score S(all),
    then the rest of the variance (light grey) to 100%.

    Args:
        table: rows with `feature`, `output`, `shapley`, `shapley_ci_low`, `shapley_ci_high`, `joint_status`.
        joint: one row per output with `output`, `score` (S(all)), `ci_low`, `ci_high`, `status`, `message`.
        colors: feature -> colour (`feature_colors`).
        rest: the legend's name for the part no recorded feature explains.

    An output whose joint score has no number (status not "ok") gets an empty bar and says why on hover.
    """
    outputs = [str(o) for o in joint["output"]]
    by_output = joint.set_index(joint["output"].astype(str))
    ok = by_output["status"].eq("ok").reindex(outputs).to_numpy()
    fig = go.Figure()
    for feature in dict.fromkeys(table["feature"]):
        part = table[table["feature"] == feature]
        part = part.set_index(part["output"].astype(str)).reindex(outputs)
        good = ok & part["joint_status"].eq("ok").to_numpy()
        share = np.where(good, part["shapley"].to_numpy(dtype=float), 0.0)
        low, high = part["shapley_ci_low"].to_numpy(dtype=float), part["shapley_ci_high"].to_numpy(dtype=float)
        hover = [
            f"{feature}: {s:.0%}" + ("" if math.isnan(lo) else f" ({lo:.0%}-{hi:.0%})") if g else f"{feature}: no share"
            for s, lo, hi, g in zip(share, low, high, good, strict=True)
        ]
        fig.add_trace(
            go.Bar(
                y=outputs,
                x=share,
                orientation="h",
                name=str(feature),
                marker=dict(color=colors.get(feature, "#888"), line=dict(color="white", width=1)),
                hovertext=hover,
                hoverinfo="text",
            )
        )
    total = by_output["score"].reindex(outputs).to_numpy(dtype=float)
    fig.add_trace(
        go.Bar(
            y=outputs,
            x=np.where(ok, 1 - np.nan_to_num(total), 0.0),
            orientation="h",
            name=rest,
            marker=dict(color=REST_COLOR, line=dict(color="white", width=1)),
            hovertext=[
                f"{rest}: {1 - t:.0%}" if k else f"no joint score ({m})"
                for t, k, m in zip(total, ok, by_output["message"].reindex(outputs).fillna(""), strict=True)
            ],
            hoverinfo="text",
        )
    )
    # each bar's name says what its features explain together; the legend sits below the axis, in rows
    names = [
        f"{_wrapped(o)}<br>together: {t:.0%}" if k else _wrapped(o) for o, t, k in zip(outputs, total, ok, strict=True)
    ]
    plot = 56 * len(outputs) + 24
    rows = math.ceil((table["feature"].nunique() + 1) / LEGEND_PER_ROW)
    below = 76 + 22 * rows
    fig.update_layout(
        barmode="stack",
        title=dict(text=title, font=dict(size=14)),
        height=(40 if title else 12) + plot + below,
        margin=dict(l=8, r=8, t=36 if title else 8, b=below),
        legend=dict(orientation="h", x=0, xanchor="left", y=-68 / plot, yanchor="top", traceorder="normal"),
        xaxis=dict(
            title="share of the output's variance",
            range=[0, 1.0],
            tickvals=[0, 0.2, 0.4, 0.6, 0.8, 1.0],
            tickformat=".0%",
        ),
        yaxis=dict(autorange="reversed", tickvals=outputs, ticktext=names),
    )
    return fig


LEGEND_PER_ROW = 4  # legend entries a row of a half-page chart holds


def _wrapped(label: str, width: int = 22) -> str:
    """A long bar name on two lines (at the last space before `width`)."""
    if len(label) <= width or " " not in label[:width]:
        return label
    cut = label[:width].rindex(" ")
    return f"{label[:cut]}<br>{label[cut + 1 :]}"
