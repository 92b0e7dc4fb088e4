"""Browse MRIs: the cohort as a filterable, sortable table; one subject's volume in three
planes with slice sliders, a linked crosshair (click a plane: the others follow), orientation
toggle, contrast window and voxel hover; the model's prediction for that subject; an optional
baseline map over the model's input slice (a 3D model's cube in three planes at the crosshair)."""

import streamlit as st

from components import (
    anchors_panel,
    cohort_filter,
    counterfactual_panel,
    errors,
    loaders,
    model_input_panel,
    sidebar,
    state,
    volume_viewer,
)

sel = sidebar.page_with_dataset("Browse MRIs")

ds = sel.dataset
table = loaders.feature_table(sel.source)
ds_key = sel.source

# -- 1. filter and choose a subject ------------------------------------------------------
shown = cohort_filter.draw(table, ds, ds_key)

if shown.empty:
    st.warning("No subject matches the filter: widen the range or clear the filter.")
    st.stop()

subject_key = state.keyed(state.BROWSE_SUBJECT, ds_key)
subjects = shown["subject"].tolist()
if st.session_state.get(subject_key) not in subjects:
    st.session_state[subject_key] = subjects[0]


def _pick_row():
    rows = st.session_state[state.BROWSE_TABLE].selection.rows
    if rows:
        st.session_state[subject_key] = subjects[rows[0]]


st.dataframe(
    shown,
    hide_index=True,
    height=220,
    key=state.BROWSE_TABLE,
    on_select=_pick_row,
    selection_mode="single-row",
    column_config={f: st.column_config.NumberColumn(format="%.3g") for f in ds.numeric_features},
)
st.caption(f"{len(shown)} of {len(table)} images. Click a column header to sort, a row to choose the subject.")

c = st.columns([2, 2, 3])
subject = c[0].selectbox("Subject", subjects, key=subject_key)
orientation = c[1].segmented_control("Orientation", state.ORIENTATIONS, key=state.BROWSE_ORIENTATION, required=True)
radiological = orientation == "radiological"
row = ds.index_of(subject)

# -- 2. prediction -----------------------------------------------------------------------
with c[2]:
    if sel.model_ref is None:
        st.caption(sel.model_note or "No model selected: choose one in the sidebar for a prediction.")
    else:
        with errors.shown("The prediction"):
            card = loaders.card(sel.model_ref, sel.device)
            names = [card.describe_output(i) for i in range(len(card.output_names))]
            with st.spinner("Running the model over the dataset (once)..."):
                y = loaders.model_outputs(sel.source, sel.model_ref, sel.device)[row]
            cols = st.columns(min(3, len(names)))
            for i, (name, value) in enumerate(list(zip(names, y, strict=True))[:3]):
                cols[i].metric(name[0].upper() + name[1:], f"{value:.3f}")
            labels = {k: table.loc[row, k] for k in ds.label_columns}
            if labels:
                st.caption(
                    "Recorded "
                    + ", ".join(f"{k} = {v:g}" if isinstance(v, float) else f"{k} = {v}" for k, v in labels.items())
                )

# -- 3. the volume in three planes, with a linked crosshair -----------------------------
viewed = volume_viewer.draw(sel, subject, radiological)
if viewed is None:
    st.stop()

# -- 4. the model's input with a baseline map --------------------------------------------
model_input_panel.draw(sel, row, subject, viewed, radiological)

# -- 5. the rule on the features that keeps the model's decision (an anchor) ---------------
anchors_panel.show_subject_anchor(sel, subject)

# -- 6. what if one feature were different -----------------------------------------------
counterfactual_panel.draw(sel, subject, radiological)
