"""The conditional curve E[f | A = a] with its band, over the scatter of outputs vs feature,
and the distribution of outputs at one feature value."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go


def _rgba(hex_color: str, alpha: float) -> str:
    h = hex_color.lstrip("#")
    r, g, b = (int(h[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def conditional_curve_figure(
    curve, outputs: np.ndarray, feature_values: np.ndarray, *, feature: str, output_name: str, color: str,
    categorical: bool = False, marker_at: float | None = None, height: int = 360,
) -> go.Figure:  # fmt: skip
    """Scatter of (a_i, y_i), E[Y | A = a] as a line with its pointwise band, Var(Y|A) in hover.

    `curve` is an engine.tvd.CurveResult; `marker_at` draws a vertical line at one value
    (the feature explorer's slider).
    """
    fig = go.Figure()
    if categorical:
        fig.add_trace(
            go.Box(x=feature_values.astype(str), y=outputs, name="outputs", boxpoints="all", jitter=0.4,
                   pointpos=0, marker=dict(color=_rgba(color, 0.35), size=4), line=dict(color=color))
        )  # fmt: skip
        if curve.status == "ok":
            fig.add_trace(
                go.Scatter(
                    x=np.asarray(curve.grid).astype(str), y=curve.mean, mode="markers", name="E[f | A = a]",
                    marker=dict(color="black", size=10, symbol="diamond"),
                    error_y=dict(type="data", symmetric=False, array=curve.band_high - curve.mean,
                                 arrayminus=curve.mean - curve.band_low),
                )
            )  # fmt: skip
    else:
        fig.add_trace(
            go.Scatter(x=feature_values, y=outputs, mode="markers", name="outputs",
                         marker=dict(color=_rgba(color, 0.35), size=5),
                         hovertemplate=f"{feature} %{{x:.3g}}<br>{output_name} %{{y:.3g}}<extra></extra>")
        )  # fmt: skip
        if curve.status == "ok":
            fig.add_trace(
                go.Scatter(x=np.r_[curve.grid, curve.grid[::-1]], y=np.r_[curve.band_high, curve.band_low[::-1]],
                           fill="toself", fillcolor=_rgba(color, 0.2), line=dict(width=0), name="95% band",
                           hoverinfo="skip")
            )  # fmt: skip
            fig.add_trace(
                go.Scatter(
                    x=curve.grid, y=curve.mean, mode="lines", name="E[f | A = a]", line=dict(color=color, width=3),
                    customdata=np.c_[np.sqrt(curve.variance), curve.count],
                    hovertemplate=f"{feature} %{{x:.3g}}<br>E[f|A] %{{y:.3g}}<br>sd(f|A) %{{customdata[0]:.3g}}"
                    "<br>effective n %{customdata[1]:.0f}<extra></extra>",
                )
            )  # fmt: skip
        if marker_at is not None:
            fig.add_vline(x=marker_at, line=dict(color="black", dash="dash"))
    fig.update_layout(
        height=height, margin=dict(l=8, r=8, t=8, b=8), legend=dict(orientation="h", y=-0.25),
        xaxis_title=feature, yaxis_title=output_name,
    )  # fmt: skip
    return fig


def output_distribution(outputs: np.ndarray, *, label: str, color: str, mean_line: float | None = None,
                        others: dict[str, np.ndarray] | None = None, height: int = 300) -> go.Figure:  # fmt: skip
    """Violin of model outputs at one feature value (and optional others), E[f|A=a] marked."""
    fig = go.Figure()
    for name, values, c in [(label, outputs, color), *((k, v, "#888888") for k, v in (others or {}).items())]:
        fig.add_trace(
            go.Violin(y=values, name=name, box_visible=True, meanline_visible=True, points="all",
                      line_color=c, fillcolor=_rgba(c, 0.25), marker=dict(size=5))
        )  # fmt: skip
    if mean_line is not None:
        fig.add_hline(y=mean_line, line=dict(color="black", dash="dot"), annotation_text="E[f | A = a] (data)")
    fig.update_layout(height=height, margin=dict(l=8, r=8, t=8, b=8), showlegend=False, yaxis_title="model output")
    return fig
