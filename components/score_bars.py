"""Score bars: S(A) per feature with confidence intervals, from data, diffusion and truth.

Input is a long table with columns `feature`, `source` ("data" | "diffusion" | "truth"),
`score`, `ci_low`, `ci_high`, `status`, `message` (the engine's `score_table` rows plus a
`source` column). Rows whose status is not "ok" are drawn as an empty slot and named in
the hover text, never as a number.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from components.colors import SOURCE_COLORS, SOURCE_LABELS, SOURCE_PATTERNS

AGREE_TOLERANCE = 0.05  # |data - diffusion| within this, or overlapping CIs, counts as agreement


def score_bars(
    scores: pd.DataFrame, colors: dict[str, str], *, title: str = "", height: int | None = None,
    group_by: str = "source",
) -> go.Figure:  # fmt: skip
    """Horizontal bars, one group per feature, one bar per `group_by` value (source or model).

    Bars take the feature's colour; sources differ by pattern (data plain, diffusion
    hatched, truth dotted) and are named in the legend.
    """
    features = list(dict.fromkeys(scores["feature"]))
    fig = go.Figure()
    for i, group in enumerate(dict.fromkeys(scores[group_by])):
        part = scores[scores[group_by] == group].set_index("feature").reindex(features)
        ok = part["status"].eq("ok").to_numpy()
        score = part["score"].to_numpy(dtype=float)
        low, high = part["ci_low"].to_numpy(dtype=float), part["ci_high"].to_numpy(dtype=float)
        hover = [
            f"{f}: {s:.0%} ({lo:.0%}-{hi:.0%})" if k and not math.isnan(lo)
            else f"{f}: {s:.0%}" if k
            else f"{f}: no score ({m})"
            for f, s, lo, hi, k, m in zip(features, score, low, high, ok, part["message"].fillna(""), strict=True)
        ]  # fmt: skip
        # sources have fixed patterns; other groups (models) take them in order
        source = group if group in SOURCE_COLORS else list(SOURCE_COLORS)[i % len(SOURCE_COLORS)]
        fig.add_trace(
            go.Bar(
                y=features, x=np.where(ok, score, 0.0), orientation="h",
                name=SOURCE_LABELS.get(group, str(group)),
                marker=dict(
                    color=[colors.get(f, "#888") for f in features],
                    pattern=dict(shape=SOURCE_PATTERNS.get(source, ""), fgcolor="white", solidity=0.35),
                    line=dict(color=SOURCE_COLORS.get(source, "#333"), width=1.5),
                ),
                error_x=dict(
                    type="data", symmetric=False, array=np.nan_to_num(high - score),
                    arrayminus=np.nan_to_num(score - low),
                    color="#333", thickness=1.2, width=4,
                ),
                hovertext=hover, hoverinfo="text", showlegend=False,
            )
        )  # fmt: skip
        # legend entry in neutral grey: bar colours belong to the features, patterns to the groups
        fig.add_trace(
            go.Bar(
                x=[None], y=[None], orientation="h", name=SOURCE_LABELS.get(group, str(group)),
                marker=dict(color="#9a9a9a", pattern=dict(shape=SOURCE_PATTERNS.get(source, ""), fgcolor="white",
                            solidity=0.35), line=dict(color=SOURCE_COLORS.get(source, "#333"), width=1.5)),
            )
        )  # fmt: skip
    fig.update_layout(
        barmode="group", title=dict(text=title, font=dict(size=14)),
        height=height or max(260, 60 + 34 * len(features) * max(1, scores[group_by].nunique()) ** 0.6),
        margin=dict(l=8, r=8, t=36 if title else 8, b=8), legend=dict(orientation="h", y=-0.18),
        xaxis=dict(title="explained variance S(A)", range=[0, 1.04], tickvals=[0, 0.2, 0.4, 0.6, 0.8, 1.0],
                   tickformat=".0%"),
        yaxis=dict(autorange="reversed"),
    )  # fmt: skip
    return fig


def caption(feature: str, row: pd.Series, output_name: str) -> str:
    """'ventricle_volume explains 41% (35-47%) of the variation in this model's output ...'."""
    label = feature.replace("_", " ")
    if row["status"] != "ok":
        return f"{label}: no score — {row['message']}"
    ci = "" if math.isnan(row["ci_low"]) else f" ({row['ci_low']:.0%}–{row['ci_high']:.0%})"
    return f"{label} explains {row['score']:.0%}{ci} of the variation in this model's output ({output_name})."


def agreement(data_row: pd.Series | None, diffusion_row: pd.Series | None) -> tuple[str, str] | None:
    """(badge text, colour) when both estimates exist, else None.

    "agree": within AGREE_TOLERANCE; "within noise": further apart but the intervals
    overlap (more samples would tell); "disagree": the intervals do not overlap.
    """
    if data_row is None or diffusion_row is None or data_row["status"] != "ok" or diffusion_row["status"] != "ok":
        return None
    diff = abs(data_row["score"] - diffusion_row["score"])
    bounds = [data_row["ci_low"], data_row["ci_high"], diffusion_row["ci_low"], diffusion_row["ci_high"]]
    overlap = not any(math.isnan(b) for b in bounds) and not (
        data_row["ci_high"] < diffusion_row["ci_low"] or diffusion_row["ci_high"] < data_row["ci_low"]
    )
    if diff <= AGREE_TOLERANCE:
        return f"agree (Δ {diff:.0%})", "green"
    if overlap:
        return f"within noise (Δ {diff:.0%})", "blue"
    return f"disagree (Δ {diff:.0%})", "orange"


LOOSE_CONSTRAINT = 0.10  # samples' mean |measured - asked| / SD above this: the issue's constraint target


def diffusion_clause(row: pd.Series) -> str:
    """' From diffusion samples: 58% (40-71%).' for the plain-language caption, with a caution
    when the samples held the feature loosely: a blurred condition flattens E[f | A = a], so
    the score then reads low."""
    if row["status"] != "ok":
        return f" From diffusion samples: no score ({row['message']})."
    ci = "" if math.isnan(row["ci_low"]) else f" ({row['ci_low']:.0%}–{row['ci_high']:.0%})"
    text = f" From diffusion samples: {row['score']:.0%}{ci}."
    loose = row.get("constraint_mae_over_sd", float("nan"))
    if isinstance(loose, float) and loose > LOOSE_CONSTRAINT:
        text += (f" Caution: the samples missed the asked value by {loose:.2f} SD on average (the probe's "
                 f"reading; target ≤ {LOOSE_CONSTRAINT:.2f}), so this estimate likely reads low.")  # fmt: skip
    return text
