"""Attribution scores: S(A) per feature with confidence intervals — from data, from diffusion
samples and (on synthetic data) the truth — beside the feature correlation matrix, with a
plain-language caption per feature, the conditional curve E[f | A = a], the rules that keep the model's
decision (anchors), and downloads."""

import pandas as pd
import streamlit as st

from components import (
    anchors_panel,
    colors,
    correlation,
    curves,
    diffusion_panel,
    errors,
    feature_sets,
    loaders,
    score_bars,
    score_downloads,
    sidebar,
    state,
)

sel = sidebar.page_with_dataset("Attribution scores")

ds = sel.dataset
table = loaders.feature_table(sel.source)
palette = colors.feature_colors(ds.features)

# -- 1. what to score --------------------------------------------------------------------
c = st.columns([3, 1, 1])
features = c[0].multiselect(
    "Features", ds.features, default=ds.features, key=state.keyed(state.SCORES_FEATURES, sel.source)
)
splits = [s for s in ("test", "train") if "split" in table.columns and (table["split"] == s).any()]
split_options = [*splits, "all"] if len(splits) > 1 else ["all"]
split = c[1].selectbox(
    "Images",
    split_options,
    key=state.keyed(state.SCORES_SPLIT, sel.source),  # per dataset: a folder without splits offers "all" only
    help="Scores on held-out images describe the model, not what it memorised.",
)
n_boot = c[2].select_slider("Bootstrap draws", [0, 50, 100, 200, 500, 1000], key=state.SCORES_N_BOOT)
if not features:
    st.info("Choose at least one feature.")
    st.stop()
rows = loaders.split_rows(sel.source, split)

# -- 2. data-based scores ----------------------------------------------------------------
scores = None
if sel.model_ref is None:
    st.info(sel.model_note or "Choose a model in the sidebar to score it.")
else:
    with errors.shown("The data-based scores"), st.spinner("Running the model and computing the scores..."):
        scores = loaders.data_scores(
            sel.source, sel.model_ref, sel.device, sel.output, split, tuple(features), int(n_boot)
        ).assign(source="data")

# -- 3. diffusion-based scores (kept in the session once computed) -----------------------
diffusion_scores = diffusion_panel.draw(sel, features, split)

truth = loaders.truth_scores(sel, tuple(features)) if sel.model_ref is not None else None

# -- 4. bars beside the correlation matrix: each feature on its own, added to the others, or its fair share --
chosen = feature_sets.view()
together = feature_sets.together(sel, split, tuple(features), int(n_boot))
left, right = st.columns([3, 2])
parts = [p for p in (scores, diffusion_scores, truth) if p is not None]
combined = pd.concat(parts, ignore_index=True) if parts else None
if combined is not None:
    combined = combined[combined["feature"].isin(features)]
images = f"{len(rows)} images" if split == "all" else f"{len(rows)} {split} images"
draws = f"95% bootstrap intervals ({int(n_boot)} bootstrap draws)" if n_boot else "no intervals (0 bootstrap draws)"
with left:
    other = feature_sets.generated(diffusion_scores)
    feature_sets.draw(chosen, sel, combined, together, palette, f"{draws} on {images}", other)
with right:
    st.subheader("Feature correlation")
    corr = correlation.correlation_matrix(table.iloc[rows], features)
    st.plotly_chart(correlation.correlation_figure(corr), key="scores_corr")
    st.caption("Spearman ρ on the same images. Correlated features share explained variance.")

# -- 5. sentences for the view: one per feature ---------------------------------------------
joined = None if scores is None else feature_sets.joined(scores, together)
if scores is not None:
    st.subheader("In words")
if scores is not None and not feature_sets.write_words(chosen, joined, together, sel.output_name, other):
    for _, row in scores.iterrows():
        diff = None
        if diffusion_scores is not None:
            debiased = diffusion_scores[diffusion_scores["source"] == "debiased"]
            match = debiased[debiased["feature"] == row["feature"]]
            diff = match.iloc[0] if len(match) else None
        badge = score_bars.agreement(row, diff)
        c = st.columns([6, 1])
        text = score_bars.caption(row["feature"], row, sel.output_name)
        if diff is not None:
            text += score_bars.diffusion_clause(diff)
        if joined is not None:
            text += feature_sets.shared_clause(joined[joined["feature"] == row["feature"]].iloc[0])
        c[0].markdown("• " + text.replace("*", r"\*"))
        if badge:
            with c[1]:
                st.badge(badge[0], color=badge[1])

# -- 6. the conditional curve ------------------------------------------------------------
if sel.model_ref is not None:
    st.subheader("The conditional curve E[f | A = a]")
    feature = st.selectbox("Feature", features, key=state.keyed(state.SCORES_CURVE_FEATURE, sel.source))
    with errors.shown("The conditional curve"):
        curve, y, a = loaders.curve(sel.source, sel.model_ref, sel.device, sel.output, split, feature)
        if curve.status != "ok":
            st.warning(curve.message)
        st.plotly_chart(
            curves.conditional_curve_figure(
                curve,
                y,
                a,
                feature=feature,
                output_name=sel.output_short,
                color=palette[feature],
                categorical=feature in ds.categorical_features,
                bounds=loaders.card(sel.model_ref, sel.device).output_range,
            ),
            key="scores_curve",
        )
        st.caption(
            "Dots: one image each. Line: the smoothed mean output at each feature value, with its 95% band. "
            "The score is the variance of this line relative to the variance of the dots."
        )

# -- 7. rules that keep the model's decision (anchors, on request) ----------------------
if sel.model_ref is not None:
    anchors_panel.show_cohort_rules(sel, split, tuple(features))

# -- 8. downloads: the CLI's files of this view ---------------------------------------------
if scores is not None:
    score_downloads.draw(sel, split, tuple(features), int(n_boot), diffusion_scores)
