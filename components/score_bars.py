"""Score bars and the words beside them: S(A) per feature from data, diffusion and truth.

The bars are `engine.reports.figures.score_bars` (the HTML report draws the same figure), re-exported
here for the pages. This module adds the text: a plain-language `caption` per score, the
`agreement` badge between data and diffusion, and the `diffusion_clause`.

Rows are the engine's `score_table` rows (plus a `source` column): `feature`, `score`,
`ci_low`, `ci_high`, `status`, `message`.
"""

from __future__ import annotations

import math

import pandas as pd

from engine.reports.figures import score_bars

__all__ = ["AGREE_TOLERANCE", "LOOSE_CONSTRAINT", "agreement", "caption", "diffusion_clause", "score_bars"]

AGREE_TOLERANCE = 0.05  # |data - diffusion| within this, or overlapping CIs, counts as agreement


def caption(feature: str, row: pd.Series, output_name: str) -> str:
    """'ventricle volume explains 41% (35–47%) of the variation in the model's probability that ...'."""
    label = feature.replace("_", " ")
    if row["status"] != "ok":
        return f"{label}: no score — {row['message']}"
    ci = "" if math.isnan(row["ci_low"]) else f" ({row['ci_low']:.0%}–{row['ci_high']:.0%})"
    return f"{label} explains {row['score']:.0%}{ci} of the variation in {output_name}."


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
        return f" From the generator, debiased by the real images: no score ({row['message']})."
    ci = "" if math.isnan(row["ci_low"]) else f" ({row['ci_low']:.0%}–{row['ci_high']:.0%})"
    text = f" From the generator, debiased by the real images: {row['score']:.0%}{ci}."
    loose = row.get("constraint_mae_over_sd", float("nan"))
    if isinstance(loose, float) and loose > LOOSE_CONSTRAINT:
        text += (
            f" Caution: the samples missed the asked value by {loose:.2f} SD on average (the probe's "
            f"reading; target ≤ {LOOSE_CONSTRAINT:.2f}), so this estimate likely reads low."
        )
    return text
