"""Eve, the Explained-Variance Explorer: navigation and the shared sidebar, nothing else.

Run with `make run` (or `streamlit run app.py`).
"""

import os
import sys

# One torch thread per run: Streamlit runs each session's script in a thread of its own, and two torch threads
# per run spin-wait for a core whenever another session (or a browser on this machine) holds one, which cost
# 3-4x the server CPU per first page (benchmarks/bench_load.py). Read once, when torch is first imported: a
# process that imported it already (a test's AppTest) is left as it is, and a value the user exported is kept.
if "torch" not in sys.modules:
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import streamlit as st  # noqa: E402

from components import housekeeping, share, sidebar, state  # noqa: E402

st.set_page_config(page_title="Eve: Explained-Variance Explorer", page_icon=":material/insights:", layout="wide")
housekeeping.start()  # a full garbage collection whenever sessions end (their objects are cycles)
state.init_state()
share.apply_url()  # a shared link's view, before any widget is drawn

PAGES = [
    st.Page("app_pages/overview.py", title="Overview", icon=":material/home:", default=True),
    st.Page("app_pages/browse.py", title="Browse MRIs", icon=":material/view_in_ar:"),
    st.Page("app_pages/scores.py", title="Attribution scores", icon=":material/bar_chart:"),
    st.Page("app_pages/explorer.py", title="Feature explorer (live)", icon=":material/tune:"),
    st.Page("app_pages/compare.py", title="Compare", icon=":material/compare:"),
    st.Page("app_pages/truth.py", title="Ground truth", icon=":material/verified:"),
]

page = st.navigation(PAGES)
selection = sidebar.draw()
share.write_url(selection)  # the explorer adds its feature, value and seed when it runs
page.run()
sidebar.share_view()
