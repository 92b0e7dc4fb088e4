"""Eve, the Explained-Variance Explorer: navigation and the shared sidebar, nothing else.

Run with `make run` (or `streamlit run app.py`).
"""

import streamlit as st

from components import share, sidebar, state

st.set_page_config(page_title="Eve: Explained-Variance Explorer", page_icon=":material/insights:", layout="wide")
state.init_state()
share.apply_url()  # a shared link's view, before any widget is drawn

PAGES = [
    st.Page("pages/overview.py", title="Overview", icon=":material/home:", default=True),
    st.Page("pages/browse.py", title="Browse MRIs", icon=":material/view_in_ar:"),
    st.Page("pages/scores.py", title="Attribution scores", icon=":material/bar_chart:"),
    st.Page("pages/explorer.py", title="Feature explorer (live)", icon=":material/tune:"),
    st.Page("pages/compare.py", title="Compare", icon=":material/compare:"),
    st.Page("pages/truth.py", title="Ground truth", icon=":material/verified:"),
]

page = st.navigation(PAGES)
# after st.navigation: drawn before it, the sidebar's widgets lose the first change of a fresh server's
# first session (Streamlit's legacy pages/ folder mode runs that first script run)
selection = sidebar.draw()
share.write_url(selection)  # the explorer adds its feature, value and seed when it runs
page.run()
sidebar.share_view()
