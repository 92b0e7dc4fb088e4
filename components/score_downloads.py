"""The scores page's downloads: the view as the CLI's files (JSON, CSV, the standalone HTML report), from one
`ScoreReport` (`loaders.score_report_with_joint`: the joint, added and Shapley scores too), so a download and
`python -m engine score` share their schema."""

from __future__ import annotations

import streamlit as st

from components import errors, loaders
from engine.reports import writers
from engine.reports.html import html_report


def draw(sel, split: str, features: tuple[str, ...], n_boot: int, diffusion_rows) -> None:
    report = None
    with errors.shown("The downloads"):
        report = loaders.score_report_with_joint(sel, split, features, n_boot, diffusion_rows)
    if report is None:
        return
    c = st.columns(3)
    c[0].download_button("Download CSV", writers.csv_text(report), "eve-scores.csv", "text/csv")
    c[1].download_button("Download JSON", writers.json_text(report), "eve-scores.json", "application/json")
    c[2].download_button(
        "Download HTML report",
        lambda: html_report(report),  # the 5 MB page is written only when asked for
        "eve-report.html",
        "text/html",
        help="This view as a standalone report (methods, figures, table): opens offline, prints to PDF.",
    )
