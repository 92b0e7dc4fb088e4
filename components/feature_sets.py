"""The scores page's three views of the features: each on its own (S(A), today's bars), added to the others
(S(all) − S(all but A)) and their fair shares (Shapley effects stacked up to the joint score S(all)), with the
words for each.

Nothing is computed here: the numbers come from `loaders.set_scores` (`engine.scores.service.set_scores`), the
figures from `engine.reports.figures`, and the rule for "explains the decision only through features correlated
with it" from `engine.reports.prose.through_others`, which the HTML report's sentences use too.
"""

from __future__ import annotations

import math

import pandas as pd
import streamlit as st

from components import errors, loaders, score_bars, state
from engine.reports import figures, prose
from engine.scores import service

VIEWS = ("on its own", "added to the others", "fair share")
VIEW_HELP = (
    "On its own: how much each feature explains alone (correlated features each count what they share). "
    "Added to the others: what a feature explains beyond all the other features. "
    "Fair share: the Shapley effects, shares of what the features explain together that add up to it."
)
SHAPLEY_NOTE = (
    "A fair share is not proof that the model reads a feature: a feature correlated with one the model reads keeps "
    "part of the variance they share, by the definition of a fair share. The view that reads about 0 for such a "
    "feature is “added to the others”."
)


def view() -> str:
    """The view switch (a horizontal radio)."""
    return st.radio("View", VIEWS, horizontal=True, key=state.SCORES_VIEW, help=VIEW_HELP)


def together(sel, split: str, features: tuple[str, ...], n_boot: int) -> service.SetScores | None:
    """The features scored together for the selected model and output (cached), or None (no model, or it failed:
    then the reason is on the page)."""
    if sel.model_ref is None:
        return None
    with errors.shown("The features scored together"), st.spinner("Scoring the features together..."):
        return loaders.set_scores(sel.source, sel.model_ref, sel.device, sel.output, split, features, n_boot)
    return None


def _pct(value, low=math.nan, high=math.nan) -> str:
    return f"{value:.0%}" + ("" if math.isnan(low) else f" ({low:.0%}–{high:.0%})")


def _label(feature: str) -> str:
    return feature.replace("_", " ")


def failure(scored: service.SetScores | None) -> str | None:
    """Why the features have no joint score (None when they have one)."""
    if scored is None:
        return "Choose a model in the sidebar to score the features together."
    joint = scored.joint.iloc[0]
    if joint["status"] == "ok":
        return None
    return (
        f"The features could not be scored together ({joint['status']}): {joint['message']} Deselect a feature, "
        "or score all images (“Images”). The bars “on its own” are unaffected."
    )


def generated(rows: pd.DataFrame | None) -> service.SetScores | None:
    """The generator path's features together, debiased, read back from its rows (`loaders.generator_scores`:
    the set columns and the joint score on every row), or None before it was computed."""
    if rows is None or "joint_score" not in rows.columns:
        return None
    part = rows[rows["source"] == "debiased"]
    if part.empty:
        return None
    first = part.iloc[0]
    ok = not math.isnan(first["joint_score"])
    joint = pd.DataFrame(
        [
            {
                "output": first["output"],
                "score": first["joint_score"],
                "ci_low": first["joint_ci_low"],
                "ci_high": first["joint_ci_high"],
                "n": first["n"],
                "status": "ok" if ok else first["joint_status"],
                "message": "" if ok else first["joint_message"],
            }
        ]
    )
    return service.SetScores(part[["feature", "output", *service.JOINT_COLUMNS]], joint, {"path": "debiased"})


def _beside(scored: service.SetScores, other: service.SetScores | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(effects, joint) of the data and, when computed, the debiased generator path, the output named by source."""
    parts = [("data", scored)] + ([("debiased", other)] if other is not None else [])
    effects = pd.concat(
        [s.effects.assign(source=k, output=figures.SOURCE_LABELS[k]) for k, s in parts], ignore_index=True
    )
    joint = pd.concat([s.joint.assign(output=figures.SOURCE_LABELS[k]) for k, s in parts], ignore_index=True)
    return effects, joint


def draw(chosen: str, sel, combined: pd.DataFrame | None, scored, palette: dict, intervals: str, other=None) -> None:
    """The bars of the chosen view with their caption; `combined` holds the one-at-a-time rows of every source,
    `other` the generator path's features together (`generated`), drawn beside the data's."""
    st.subheader(f"How much of the variation in {sel.output_name} each feature explains")
    if chosen == VIEWS[0]:
        if combined is None or combined.empty:
            st.info("No scores yet.")
            return
        st.plotly_chart(score_bars.score_bars(combined, palette), key="scores_bars")
        st.caption(
            f"Bars: bias-corrected S(A), each feature on its own, with {intervals}. Pattern: plain = data, hatched = "
            "generator debiased by the real images, cross-hatched = the generator alone (model-based), dotted = "
            "ground truth. Correlated features each count the variance they share, so the bars need not add up: "
            "see “added to the others” and “fair share”."
        )
        return
    if (why := failure(scored)) is not None:
        st.warning(why)
        return
    effects, joint = _beside(scored, other)
    also = (
        " Hatched: the generator path, debiased by the real images, for the features the generator conditions on."
        if other is not None
        else ""
    )
    if chosen == VIEWS[1]:
        st.plotly_chart(figures.added_bars(effects, palette, group_by="source"), key="scores_added")
        st.caption(
            f"Bars: what each feature adds to all the others, S(all) − S(all but A), with {intervals} (from the data). "
            f"Near 0 for a feature that explains the decision only through features correlated with it.{also}"
        )
        return
    rest = "the image carries the rest"
    st.plotly_chart(figures.shapley_stack(effects, joint, palette, rest=rest), key="scores_shares")
    st.caption(
        f"Fair shares (Shapley effects) stacked up to what the features explain together; grey: the rest. One bar "
        f"from the data{', one from the generator path (debiased by the real images)' if other is not None else ''}. "
        f"{_how(scored.about)} {SHAPLEY_NOTE}"
    )


def _how(about: dict) -> str:
    if about.get("exact", True):
        return f"Exact: all {about.get('n_subsets', 0):,} subsets of the features scored."
    return (
        f"More than {about.get('max_exact')} features: averaged over {about.get('n_perm')} random orders of the "
        "features (sampled; the intervals include the orders' noise)."
    )


def joined(scores: pd.DataFrame, scored: service.SetScores | None) -> pd.DataFrame | None:
    """The page's data rows with the joint columns beside them (None without a joint score)."""
    if scored is None or failure(scored) is not None:
        return None
    return scores.drop(columns=["source"], errors="ignore").merge(scored.effects, on=["feature", "output"])


def shared_clause(row) -> str:
    """' But it adds only 0% to the other features: ...' for a row of `joined` whose feature explains much on its
    own and adds almost nothing (`engine.reports.prose.through_others`); else ''."""
    if not prose.through_others(row):
        return ""
    return (
        f" But it adds only {row.added:.0%} to the other features: it explains the decision only through features "
        "correlated with it."
    )


def _added_line(r, output_name: str) -> str:
    line = f"{_label(r.feature)} adds {_pct(r.added, r.added_ci_low, r.added_ci_high)} to what all the other features "
    line += f"explain of {output_name}."
    if prose.through_others(r):
        line += (
            f" On its own it explains {r.score:.0%}: it explains the decision only through features correlated with it."
        )
    return line


def words(chosen: str, rows: pd.DataFrame, scored: service.SetScores, output_name: str, other=None) -> list[str]:
    """Plain-language sentences of the added and fair-share views (`rows`: `joined`), one per feature; with the
    generator path's features together (`other`: `generated`), one sentence of its own."""
    left_out = [f"{_label(r.feature)}: {r.joint_message}" for r in rows.itertuples() if r.joint_status != "ok"]
    ok = rows[rows["joint_status"] == "ok"]
    if chosen == VIEWS[1]:
        return [_added_line(r, output_name) for r in ok.sort_values("added", ascending=False).itertuples()] + left_out
    joint = scored.joint.iloc[0]
    lines = [
        f"The recorded features explain {_pct(joint['score'], joint['ci_low'], joint['ci_high'])} of the decision "
        f"together; the image carries the rest ({1 - joint['score']:.0%})."
    ]
    lines += [
        f"{_label(r.feature)}'s fair share: {_pct(r.shapley, r.shapley_ci_low, r.shapley_ci_high)}."
        for r in ok.sort_values("shapley", ascending=False).itertuples()
    ]
    return lines + left_out + _generator_line(other)


def _generator_line(other: service.SetScores | None) -> list[str]:
    """The generator path's joint score and largest fair share, or why it has none."""
    if other is None:
        return []
    joint = other.joint.iloc[0]
    if joint["status"] != "ok":
        return [f"The generator path could not score the features together: {joint['message']}"]
    ok = other.effects[other.effects["joint_status"] == "ok"].sort_values("shapley", ascending=False)
    top = ok.iloc[0]
    return [
        f"From the generator path, debiased by the real images: the {len(ok)} features it conditions on explain "
        f"{_pct(joint['score'], joint['ci_low'], joint['ci_high'])} together; the largest fair share is "
        f"{_label(top['feature'])}'s, {_pct(top['shapley'], top['shapley_ci_low'], top['shapley_ci_high'])}."
    ]


def write_words(chosen: str, rows: pd.DataFrame | None, scored, output_name: str, other=None) -> bool:
    """Write the added or fair-share view's sentences (`words`); False in the view "on its own" or without a
    joint score, where the page writes its one-at-a-time sentences instead."""
    if rows is None or chosen == VIEWS[0]:
        return False
    for line in words(chosen, rows, scored, output_name, other):
        st.markdown("• " + line.replace("*", r"\*"))
    return True
