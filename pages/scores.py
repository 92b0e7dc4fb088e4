"""Attribution scores: S(A) per feature with confidence intervals — from data, from diffusion
samples and (on synthetic data) the truth — beside the feature correlation matrix, with a
plain-language caption per feature, the conditional curve E[f | A = a], and downloads."""

import json

import pandas as pd
import streamlit as st

from components import colors, correlation, curves, loaders, score_bars, sidebar, state

sel = sidebar.current()
st.title("Attribution scores")
if sel.source is None:
    st.info("No dataset loaded: choose one in the sidebar.")
    st.stop()

ds = sel.dataset
table = loaders.feature_table(sel.source)
palette = colors.feature_colors(ds.features)

# -- 1. what to score --------------------------------------------------------------------
c = st.columns([3, 1, 1])
features = c[0].multiselect(
    "Features", ds.features, default=ds.features, key=state.keyed(state.SCORES_FEATURES, sel.source)
)
has_split = "split" in table.columns and table["split"].nunique() > 1
split = c[1].selectbox(
    "Images", ["test", "train", "all"] if has_split else ["all"], key=state.SCORES_SPLIT,
    help="Scores on held-out images describe the model, not what it memorised.",
)  # fmt: skip
n_boot = c[2].select_slider("Bootstrap draws", [0, 50, 100, 200, 500, 1000], key=state.SCORES_N_BOOT)
if not features:
    st.info("Choose at least one feature.")
    st.stop()
rows = loaders.split_rows(sel.source, split)

# -- 2. data-based scores ----------------------------------------------------------------
scores = None
if sel.model_id is None:
    st.info(sel.model_note or "Choose a model in the sidebar to score it.")
else:
    try:
        with st.spinner("Running the model and computing the scores..."):
            scores = loaders.data_scores(
                sel.source, sel.model_id, sel.device, sel.output, split, tuple(features), int(n_boot)
            )
        scores = scores.assign(source="data")
    except Exception as exc:
        st.error(f"The data-based scores failed: {exc}")

# -- 3. diffusion-based scores (kept in the session once computed) -----------------------
diffusion_key = ("diffusion-scores", sel.source, sel.model_id, sel.output)
diffusion_scores = state.results().get(diffusion_key)
diffusion_note = loaders.engine_status("engine.diffusion") or loaders.diffusion_score_status(sel.dataset_name)
if diffusion_note is None and sel.model_id is not None:
    diffusion_note = loaders.diffusion_compatibility(sel.dataset_name, sel.model_id, sel.device)
with st.expander("Diffusion-based scores (for scarce data)", expanded=diffusion_scores is not None):
    if sel.model_id is None:
        st.info("Choose a model first.")
    elif diffusion_note is not None:
        st.info(diffusion_note)
    else:
        c = st.columns([1, 1, 2])
        k_values = c[0].number_input("Feature values K", 3, 20, key=state.SCORES_DIFFUSION_K)
        n_per = c[1].number_input("Samples per value N", 2, 64, key=state.SCORES_DIFFUSION_N)
        usable = [f for f in features if f in loaders.diffusion_features(sel.dataset_name)]
        c[2].caption(
            f"{k_values * n_per} samples per feature for {len(usable)} feature(s), at guidance 1 (the plain "
            "conditional model) with independent seeds per value; each sample's other features come from a "
            "training subject near the value, and the model's feature read-out steers each sample to the "
            "features it was given; the noise of small N is subtracted."
        )
        if st.button("Compute diffusion-based scores", key=state.SCORES_DIFFUSION_RUN, disabled=not usable):
            found = []
            with st.status("Sampling from the diffusion model...", expanded=True) as status:
                bar = st.progress(0.0)
                for i, feature in enumerate(usable):
                    st.write(f"{feature}: {k_values} values × {n_per} samples")

                    def tick(done, total, i=i):
                        bar.progress(min(1.0, (i + done / total) / len(usable)))

                    try:
                        row, _ = loaders.diffusion_score_row(sel, feature, int(k_values), int(n_per), progress=tick)
                        found.append(row)
                    except Exception as exc:
                        st.error(f"{feature}: {exc}")
                status.update(label="Diffusion-based scores done", state="complete", expanded=False)
            if found:
                diffusion_scores = pd.DataFrame(found).assign(source="diffusion")
                state.results()[diffusion_key] = diffusion_scores
        if diffusion_scores is not None:
            st.caption(f"Computed this session for {len(diffusion_scores)} feature(s); kept while you explore.")

truth = loaders.truth_scores(sel, tuple(features)) if sel.model_id is not None else None

# -- 4. bars beside the correlation matrix -----------------------------------------------
left, right = st.columns([3, 2])
parts = [p for p in (scores, diffusion_scores, truth) if p is not None]
combined = pd.concat(parts, ignore_index=True) if parts else None
if combined is not None:
    combined = combined[combined["feature"].isin(features)]
with left:
    st.subheader(f"How much of {sel.output_name} each feature explains")
    if combined is not None and not combined.empty:
        st.plotly_chart(score_bars.score_bars(combined, palette), key="scores_bars")
        st.caption(
            f"Bars: bias-corrected S(A) with {int(0.95 * 100)}% bootstrap intervals on {len(rows)} {split} images. "
            "Pattern: plain = data, hatched = diffusion, dotted = ground truth."
        )
    else:
        st.info("No scores yet.")
with right:
    st.subheader("Feature correlation")
    corr = correlation.correlation_matrix(table.iloc[rows], features)
    st.plotly_chart(correlation.correlation_figure(corr), key="scores_corr")
    st.caption(
        "Spearman ρ on the same images. Correlated features share explained variance, so their "
        "scores need not add up to the total (nor to 100%)."
    )

# -- 5. one sentence per feature ---------------------------------------------------------
if scores is not None:
    st.subheader("In words")
    for _, row in scores.iterrows():
        diff = None
        if diffusion_scores is not None:
            match = diffusion_scores[diffusion_scores["feature"] == row["feature"]]
            diff = match.iloc[0] if len(match) else None
        badge = score_bars.agreement(row, diff)
        c = st.columns([6, 1])
        text = score_bars.caption(row["feature"], row, sel.output_name)
        if diff is not None:
            text += score_bars.diffusion_clause(diff)
        c[0].markdown("• " + text.replace("*", r"\*"))
        if badge:
            with c[1]:
                st.badge(badge[0], color=badge[1])

# -- 6. the conditional curve ------------------------------------------------------------
if sel.model_id is not None:
    st.subheader("The conditional curve E[f | A = a]")
    feature = st.selectbox("Feature", features, key=state.keyed(state.SCORES_CURVE_FEATURE, sel.source))
    try:
        curve, y, a = loaders.curve(sel.source, sel.model_id, sel.device, sel.output, split, feature)
        if curve.status != "ok":
            st.warning(curve.message)
        st.plotly_chart(
            curves.conditional_curve_figure(
                curve, y, a, feature=feature, output_name=sel.output_name, color=palette[feature],
                categorical=feature in ds.categorical_features,
            ),
            key="scores_curve",
        )  # fmt: skip
        st.caption(
            "Dots: one image each. Line: the smoothed mean output at each feature value, with its 95% band. "
            "The score is the variance of this line relative to the variance of the dots."
        )
    except Exception as exc:
        st.error(f"The conditional curve failed: {exc}")

# -- 7. downloads ------------------------------------------------------------------------
if combined is not None and not combined.empty:
    meta = dict(dataset=sel.dataset_label, model=sel.model_label, output=sel.output_name, images=split, n=len(rows))
    c = st.columns(2)
    c[0].download_button("Download CSV", combined.to_csv(index=False), "eve-scores.csv", "text/csv")
    c[1].download_button(
        "Download JSON", json.dumps({**meta, "scores": json.loads(combined.to_json(orient="records"))}, indent=2),
        "eve-scores.json", "application/json",
    )  # fmt: skip
