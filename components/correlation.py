"""The feature correlation matrix (Spearman), shown next to the score bars."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go


def correlation_matrix(table: pd.DataFrame, features: list[str]) -> pd.DataFrame:
    """Spearman correlation of the features; a categorical feature enters by its category codes
    (meaningful for two categories such as sex)."""
    coded = pd.DataFrame(
        {
            f: table[f] if pd.api.types.is_numeric_dtype(table[f]) else pd.factorize(table[f], sort=True)[0]
            for f in features
        }
    )
    return coded.corr(method="spearman")


def correlation_figure(corr: pd.DataFrame, height: int = 470) -> go.Figure:
    labels = list(corr.columns)
    values = corr.to_numpy()
    fig = go.Figure(
        go.Heatmap(
            z=values,
            x=labels,
            y=labels,
            zmin=-1,
            zmax=1,
            colorscale="RdBu_r",
            text=np.vectorize(lambda v: f"{v:.1f}")(values),
            texttemplate="%{text}",
            textfont=dict(size=9),
            hovertemplate="%{y} vs %{x}: ρ = %{z:.2f}<extra></extra>",
            colorbar=dict(thickness=10),
        )
    )
    fig.update_layout(
        height=height,
        margin=dict(l=8, r=8, t=8, b=8),
        yaxis=dict(autorange="reversed"),
        xaxis=dict(tickangle=-45),
    )
    return fig
