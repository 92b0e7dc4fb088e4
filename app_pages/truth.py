"""Ground truth (synthetic datasets): Eve's estimated S(A) vs the true dependence per feature,
with pass/fail against a stated tolerance."""

import pandas as pd
import streamlit as st

from components import colors, errors, loaders, score_bars, sidebar, state
from engine.scores.truth import against_truth

sel = sidebar.page_with_dataset("Ground truth")
ds = sel.dataset
if ds.truth is None:
    st.info(
        "This dataset has no truth.json, so there is no known answer to check against. "
        "Choose SynthBrain or Shapes in the sidebar."
    )
    st.stop()
if sel.model_ref is None:
    st.info(sel.model_note or "Choose a model in the sidebar.")
    st.stop()

palette = colors.feature_colors(ds.features)
features = tuple(ds.features)
found = loaders.truth_table(sel.source, sel.model_ref, sel.device, features)
if found is None:
    st.info("This model's target is not a known function of the features (an uploaded model?): no truth to compare.")
    st.stop()
truth, definition = found

c = st.columns([3, 1])
c[0].markdown(f"**True target of {sel.model_label}:** {definition}")
tolerance = c[1].select_slider(
    "Tolerance |estimate − truth|",
    [0.02, 0.05, 0.10, 0.15, 0.20],
    key=state.TRUTH_TOLERANCE,
    help="A feature passes when the estimate is within this of the truth, or its interval covers the truth.",
)
st.caption(
    "Truth: S(A) of the exact target function g(features) on every image — what a perfect model of the target "
    "would score. Estimate: S(A) of this model's output on the held-out images. A trained model only "
    "approximates its target, so small gaps are expected; large ones flag either the model or the estimator."
)

split = loaders.default_split(sel.source)
estimate = None
with errors.shown("The estimated scores"):
    estimate = loaders.data_scores(sel.source, sel.model_ref, sel.device, sel.output, split, features, 200)
if estimate is None:
    st.stop()

both = pd.concat([estimate.assign(source="data"), truth.assign(source="truth")], ignore_index=True)
left, right = st.columns([1, 1])
with left:
    st.plotly_chart(score_bars.score_bars(both, palette), key="truth_bars")
with right:
    report = against_truth(estimate, truth, tolerance)
    st.dataframe(
        report,
        hide_index=True,
        column_config={"result": st.column_config.TextColumn(help="within tolerance, or the interval covers truth")},
    )
    passed = int((report["result"] == "pass").sum())
    (st.success if passed == len(report) else st.warning)(
        f"{passed} of {len(report)} features pass at tolerance {tolerance:.2f}."
    )
    st.download_button("Download CSV", report.to_csv(index=False), "eve-ground-truth.csv", "text/csv")
