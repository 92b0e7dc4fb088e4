"""Two sessions on one server (AppTest, real engine, one process as on a server): what one uploads and
computes stays its own, while the embedded data and models are shared."""

from __future__ import annotations

from test_app import _app, _no_exception, _shapes_cohort_zip, _texts, _upload_app

from components import loaders, state


def test_a_session_never_sees_another_sessions_upload_or_results(tmp_path):
    mine = _upload_app()
    upload = ("my-discs.zip", _shapes_cohort_zip(tmp_path, False), "application/zip")
    mine.sidebar.file_uploader(key=state.DATASET_UPLOAD).set_value([upload]).run()
    _no_exception(mine)
    folder = mine.session_state[state.USER_DATASET]
    assert folder is not None and "my-discs" in folder
    mine.session_state[state.RESULTS]["scores of my discs"] = 0.5  # what this session computed

    theirs = _app("synthbrain")
    theirs.sidebar.radio(key=state.DATASET).set_value("upload").run()
    _no_exception(theirs)
    assert theirs.session_state[state.USER_DATASET] is None
    assert "Upload a folder to use your own cohort." in "\n".join(i.value for i in theirs.sidebar.info)
    assert "my-discs" not in _texts(theirs) + "\n".join(c.value for c in theirs.sidebar.caption)
    assert "scores of my discs" not in theirs.session_state[state.RESULTS]
    theirs.sidebar.radio(key=state.DATASET).set_value("synthbrain").run()
    _no_exception(theirs)
    assert "synthbrain" in theirs.session_state[state.SELECTION].source

    # the first session still has its own folder and results after the other's runs
    mine.run()
    assert mine.session_state[state.USER_DATASET] == folder
    assert mine.session_state[state.RESULTS]["scores of my discs"] == 0.5


def test_embedded_data_and_models_are_shared_across_sessions():
    """One object per server for what every session reads and none changes (st.cache_resource)."""
    first, second = _app("synthbrain"), _app("synthbrain")
    for at in (first, second):
        _no_exception(at)
    assert loaders.dataset("synthbrain") is loaders.dataset("synthbrain")
    ref = first.session_state[state.SELECTION].model_ref
    assert ref == second.session_state[state.SELECTION].model_ref
    assert loaders.model(ref)[0] is loaders.model(ref)[0]
