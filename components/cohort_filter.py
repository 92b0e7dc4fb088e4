"""Browse's cohort filter: a split, and a range (numeric) or levels (categorical) of one feature."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from components import state


def draw(table: pd.DataFrame, ds, ds_key: str) -> pd.DataFrame:
    """The filter widgets in an expander; returns the rows of `table` they keep."""
    with st.expander("Filter the cohort", expanded=False):
        c = st.columns([1, 1, 2])
        splits = ["all", *sorted(table["split"].unique())] if "split" in table.columns else ["all"]
        split = c[0].selectbox("Split", splits, key=state.keyed(state.BROWSE_SPLIT, ds_key))
        filters = ["(none)", *ds.features]
        feature = c[1].selectbox("Filter by", filters, key=state.keyed(state.BROWSE_FILTER_FEATURE, ds_key))
        shown = table if split == "all" else table[table["split"] == split]
        if feature in ds.numeric_features:
            lo, hi = float(table[feature].min()), float(table[feature].max())
            if hi > lo:
                rng = c[2].slider(
                    feature, lo, hi, (lo, hi), key=state.keyed(state.BROWSE_FILTER_RANGE, ds_key, feature)
                )
                shown = shown[shown[feature].between(*rng)]
        elif feature in ds.categorical_features:
            cats = sorted(table[feature].unique())
            keep = c[2].multiselect(feature, cats, cats, key=state.keyed(state.BROWSE_FILTER_RANGE, ds_key, feature))
            shown = shown[shown[feature].isin(keep)]
    return shown
