"""Shareable views: the dataset, model, what is explained, the output and, on the feature explorer,
the feature, its value and the seed live in the URL (`st.query_params`; the page is the URL's path).

A session's first run reads them into the widgets' state before any widget is drawn (`apply_url`);
every run writes the current view back (`write_url`), so the address bar is always a link to what is
on screen, and the sidebar shows it to copy (`link`). A URL naming what this server does not have —
an unknown dataset or model, an output or a feature it lacks, a value outside the feature's range, a
seed that is not a number in range — opens the default instead, with a note naming what was ignored.
An upload is never in a URL: it belongs to its session.
"""

from __future__ import annotations

import math
from dataclasses import replace
from urllib.parse import urlencode

import streamlit as st

from components import loaders, state
from engine.cards import ModelRef

APPLIED = "share_applied"  # the URL has been read for this session
NOTES = "share_notes"  # what the URL asked for and did not get, in words
PENDING = "share_pending"  # {feature: value} asked for the explorer, applied when it knows the range
SEED_RANGE = (0, 9999)  # the explorer's seed input


def apply_url() -> None:
    """On a session's first run: the URL's view into the widgets' state (call before the sidebar)."""
    if st.session_state.get(APPLIED):
        return
    st.session_state[APPLIED] = True
    asked = {k: str(v) for k, v in st.query_params.to_dict().items()}
    notes: list[str] = []
    dataset = asked.get("dataset")
    if dataset is not None and dataset not in loaders.EMBEDDED:
        notes.append(f"dataset {dataset!r} is not on this server (uploads are not shared by links)")
        dataset = None
    if dataset is not None:
        st.session_state[state.DATASET] = dataset
    name = st.session_state.get(state.DATASET, state.DEFAULTS[state.DATASET])
    model = asked.get("model")
    if model is not None and name in loaders.EMBEDDED:
        offered = loaders.cards_offered(name, loaders.dataset(name).is_3d)
        if model not in offered:
            notes.append(f"model {model!r} is not offered for {name}")
        else:
            st.session_state[state.keyed(state.MODEL, name)] = model
            notes += _apply_model_view(ModelRef.builtin(model), asked)
    notes += _apply_explorer(name, asked)
    st.session_state[NOTES] = notes


def _apply_model_view(ref: ModelRef, asked: dict) -> list[str]:
    notes = []
    explain = asked.get("explain", "output")
    card = loaders.card(ref)
    if explain not in ("output", "probability") or (explain == "probability" and card.output_kind != "logit"):
        notes.append(f"explain {explain!r} does not apply to {ref.name}")
        explain = "output"
    elif card.output_kind == "logit":
        st.session_state[state.keyed(state.EXPLAIN, ref)] = explain
    output = asked.get("output")
    if output is not None:
        names = list(card.output_names)
        if output.isdigit() and int(output) < len(names):
            explained = replace(ref, explain=explain)  # the sidebar keys the output by the explained model
            st.session_state[state.keyed(state.OUTPUT, explained)] = int(output)
        else:
            notes.append(f"output {output!r} is not one of {ref.name}'s {len(names)}")
    return notes


def _apply_explorer(name: str, asked: dict) -> list[str]:
    notes = []
    feature = asked.get("feature")
    if feature is not None:
        if name not in loaders.EMBEDDED or feature not in loaders.dataset(name).features:
            notes.append(f"feature {feature!r} is not in {name}")
        else:
            st.session_state[state.keyed(state.EXPLORER_FEATURE, name)] = feature
            if "value" in asked:
                st.session_state[PENDING] = {feature: asked["value"]}
    seed = asked.get("seed")
    if seed is not None:
        if seed.isdigit() and SEED_RANGE[0] <= int(seed) <= SEED_RANGE[1]:
            st.session_state[state.EXPLORER_SEED] = int(seed)
        else:
            notes.append(f"seed {seed!r} is not a whole number from {SEED_RANGE[0]} to {SEED_RANGE[1]}")
    return notes


def pending_value(feature: str, options: list, low, high):
    """The explorer value the URL asked for `feature`, snapped to the nearest slider position; None
    if none was asked, or (with a note) if it is not a number inside [low, high]. Read once."""
    asked = st.session_state.get(PENDING, {}).get(feature)
    if asked is None:
        return None
    st.session_state[PENDING] = {}
    if isinstance(options[0], str):  # a categorical feature: one of its levels
        if asked in options:
            return asked
    else:
        try:
            value = float(asked)
        except ValueError:
            value = math.nan
        if math.isfinite(value) and low <= value <= high:
            return min(options, key=lambda v: abs(v - value))
    st.session_state.setdefault(NOTES, []).append(
        f"value {asked!r} of {feature} is outside the model's range {low:.4g} to {high:.4g}"
        if not isinstance(options[0], str)
        else f"value {asked!r} is not a level of {feature}"
    )
    return None


def write_url(sel, **view) -> None:
    """The current view into the URL: the sidebar's selection, plus a page's own (`view`)."""
    params = {}
    if sel.source in loaders.EMBEDDED:
        params["dataset"] = sel.source
        if sel.model_ref is not None and not sel.model_ref.is_torchscript:
            params |= {"model": sel.model_ref.name, "explain": sel.model_ref.explain, "output": str(sel.output)}
    params |= {k: str(v) for k, v in view.items() if v is not None}
    if params != st.query_params.to_dict():
        st.query_params.from_dict(params)


def notes() -> list[str]:
    return st.session_state.get(NOTES, [])


def link() -> str:
    """This view's link: the page's address with the current parameters."""
    base = (st.context.url or "").split("?")[0]
    query = urlencode(st.query_params.to_dict())
    return f"{base}?{query}" if query else base
