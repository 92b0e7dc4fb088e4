"""Anchors in the app: the chosen subject's rule (Browse) and the cohort's rules (Attribution scores).

The rules come from `engine.explanations.anchors` on the cached model outputs (`loaders.model_outputs`, every row once
per dataset and model); the results are cached here keyed like the loaders' (dataset source, `ModelRef`,
device, split, features), so a subject's rule is found once and comes back at once. Nothing is computed here.
"""

from __future__ import annotations

import streamlit as st

from components import errors, loaders, state
from engine.cards import ModelRef
from engine.errors import EveInputError
from engine.explanations import anchors

SUBJECTS_SAMPLED = 20  # cohort rules: the anchors of this many sampled subjects, then the submodular pick
RULES_PICKED = 5
METHOD_NOTE = (
    "Anchors (Ribeiro, Singh & Guestrin, AAAI 2018): the shortest rule on the features (quartile cuts of each "
    "numeric feature, levels of a categorical one) under which the model keeps this decision, its precision's "
    "lower bound ≥ {tau:g}: precision estimated from the cohort's rows under the rule, drawn with replacement, "
    "with KL-LUCB bounds at confidence 1 − δ = {confidence:g}. Coverage: the share of the cohort's {n} images the "
    "rule holds for. The decision: {decision}."
)


def decision_problem(ref: ModelRef, device: str = "cpu") -> str | None:
    """Why the model's outputs name no decision (a regression, an output kind not stated); None for a classifier."""
    try:
        anchors.DecisionRule.for_card(loaders.card(ref, device))
    except EveInputError as exc:
        return str(exc)
    return None


@st.cache_data(show_spinner=False, max_entries=256)
def subject_anchor(source: str, ref: ModelRef, device: str, subject: str, split: str = "all") -> anchors.Anchor:
    """The subject's anchor over the split's rows (`engine.explanations.anchors.subject_anchor`, seed 0)."""
    outputs = loaders.model_outputs(source, ref, device)
    return anchors.subject_anchor(
        None, loaders.card(ref, device), loaders.dataset(source), subject, split=split, outputs=outputs
    )


@st.cache_data(show_spinner=False, max_entries=32)
def cohort_rules(source: str, ref: ModelRef, device: str, split: str, features: tuple[str, ...]) -> anchors.AnchorTable:
    """The cohort's rules on `features` (`engine.explanations.anchors.global_anchors`, seed 0)."""
    outputs = loaders.model_outputs(source, ref, device)
    return anchors.global_anchors(
        None,
        loaders.card(ref, device),
        loaders.dataset(source),
        split=split,
        features=list(features),
        outputs=outputs,
        n_subjects=SUBJECTS_SAMPLED,
        n_rules=RULES_PICKED,
    )


def _note(anchor: anchors.Anchor, ref: ModelRef, device: str) -> str:
    rule = anchors.DecisionRule.for_card(loaders.card(ref, device))
    config = anchors.AnchorConfig()
    return (
        METHOD_NOTE.format(tau=anchor.tau, confidence=1 - anchor.delta, n=anchor.n_cohort, decision=rule.description)
        + f" Precision from {anchor.n_samples:,} draws; KL-LUCB's ε = {config.epsilon:g}, beam width "
        f"{config.beam_width}."
    )


def show_subject_anchor(sel, subject: str) -> None:
    """The subject's rule: 'IF ... THEN the model says ...', its precision with bounds and its coverage."""
    st.subheader("The rule behind this decision")
    if sel.model_ref is None:
        st.info(sel.model_note or "Choose a model in the sidebar to explain its decision.")
        return
    problem = decision_problem(sel.model_ref, sel.device)
    if problem is not None:
        st.info(f"No rule to find: {problem}")
        return
    with errors.shown("The subject's rule"), st.spinner("Finding the rule (anchor)..."):
        anchor = subject_anchor(sel.source, sel.model_ref, sel.device, subject)
        if anchor.predicates:
            st.markdown(f"**IF** {anchor.rule} **THEN** the model says **{anchor.decision_text}**")
        else:
            st.markdown(f"For every subject (no condition), the model says **{anchor.decision_text}**")
        c = st.columns(3)
        c[0].metric("Precision", f"{anchor.precision:.2f}", help="share of draws under the rule with this decision")
        c[1].metric("Bounds", f"{anchor.precision_low:.2f} – {anchor.precision_high:.2f}")
        c[2].metric("Coverage", f"{anchor.coverage:.0%}", help=f"{anchor.n_covered} of {anchor.n_cohort} images")
        if not anchor.reaches_tau:
            st.warning(
                f"No rule reaches precision {anchor.tau:g} for {subject}: this is the most precise one found. "
                "The features do not pin this decision down."
            )
        st.caption(_note(anchor, sel.model_ref, sel.device))


def show_cohort_rules(sel, split: str, features: tuple[str, ...]) -> None:
    """The scores page's table of rules that together explain the cohort's decisions, found on request and kept
    in the session (`state.results()`)."""
    st.subheader("Rules that keep the model's decision (anchors)")
    problem = decision_problem(sel.model_ref, sel.device)
    if problem is not None:
        st.info(f"No rules to find: {problem}")
        return
    key = state.result_key("anchor-rules", sel, split, features)
    found = state.results().get(key)
    timing = "about 1.5 s for 20 subjects on a 2-core CPU (benchmarks/results/anchors.json)"
    asked = st.button(
        "Find rules", key=state.SCORES_ANCHORS_RUN, help=f"The anchors of {SUBJECTS_SAMPLED} subjects: {timing}"
    )
    if asked:
        with errors.shown("The cohort's rules"), st.spinner(f"Finding the anchors of {SUBJECTS_SAMPLED} subjects..."):
            found = cohort_rules(sel.source, sel.model_ref, sel.device, split, features)
            state.results()[key] = found
    if found is None:
        st.caption(
            f"The anchors of {SUBJECTS_SAMPLED} randomly drawn images, then up to {RULES_PICKED} of them picked "
            "greedily to explain as many of the cohort's decisions as possible (the paper's submodular pick)."
        )
        return
    if not found.anchors:
        st.info(f"None of the {len(found.sampled)} sampled images has a rule reaching the precision threshold.")
        return
    table = found.table.rename(columns={"explained_so_far": "explained so far", "subjects": "sampled images"})
    st.dataframe(
        table.drop(columns=["precision_low", "precision_high"]).assign(
            bounds=[f"{a.precision_low:.2f} – {a.precision_high:.2f}" for a in found.anchors]
        ),
        hide_index=True,
        column_config={
            "precision": st.column_config.NumberColumn(format="%.2f"),
            "coverage": st.column_config.NumberColumn(format="percent"),
            "explained so far": st.column_config.NumberColumn(format="percent"),
        },
        key="scores_anchor_rules",
    )
    st.caption(
        f"{found.n_reaching} of {len(found.sampled)} sampled images have a rule with precision ≥ "
        f"{found.anchors[0].tau:g} (lower bound). 'Explained so far': the share of the {found.anchors[0].n_cohort} "
        "images whose decision one of the rules above holds for and states."
    )
