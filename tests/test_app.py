"""App tests with `streamlit.testing.v1.AppTest` on the real engine and the embedded defaults.

One smoke test per page and dataset, then interactions that must change what is shown
(subject, slice slider, orientation, feature slider, model, overlay method), then bad
uploads that must give a clear message and keep the session's earlier results.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from components import loaders, state
from engine.cards import ModelRef
from engine.models import list_cards

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
PAGES = [
    "app_pages/overview.py",
    "app_pages/browse.py",
    "app_pages/scores.py",
    "app_pages/explorer.py",
    "app_pages/compare.py",
    "app_pages/truth.py",
]
TIMEOUT = 600  # first runs read every volume once (then disk-cached) on a shared 2-core CPU


def _app(dataset: str = "synthbrain") -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.session_state[state.DATASET] = dataset
    return at.run()


def _no_exception(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def _figures(at: AppTest) -> list[dict]:
    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]


def _figure_titles(at: AppTest) -> list[str]:
    return [f["layout"].get("title", {}).get("text", "") for f in _figures(at)]


def _texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption] + [t.value for t in at.text]
    parts += [str(m.value) for m in at.metric] + [e.value for e in at.error] + [i.value for i in at.info]
    return "\n".join(parts)


def _zoo_names(dataset: str) -> list[str]:
    return [c.name for c in list_cards() if c.dataset == dataset]


# -- every page renders ------------------------------------------------------------------


@pytest.mark.parametrize("dataset", ["synthbrain", "shapes"])
def test_every_page_renders_without_exception(dataset):
    at = _app(dataset)
    _no_exception(at)
    for page in PAGES[1:]:
        at.switch_page(page).run()
        _no_exception(at)
        assert at.title, f"{page} shows no title"


def test_overview_names_dataset_and_model():
    at = _app()
    text = _texts(at)
    assert "SynthBrain" in text
    assert "400" in text  # images in the embedded cohort
    names = _zoo_names("synthbrain")
    if names:
        assert names[0] in text or "explaining output" in text
    else:
        assert at.info, "with no model the overview says so"


# -- interactions change what is shown ---------------------------------------------------


def test_choosing_a_subject_changes_the_volume_shown():
    at = _app()
    at.switch_page("app_pages/browse.py").run()
    before = _figures(at)[0]["data"][0]["z"]
    subject = at.selectbox(key=state.keyed(state.BROWSE_SUBJECT, "synthbrain"))
    assert subject.value == "sub-0000"
    subject.set_value("sub-0007").run()
    _no_exception(at)
    assert at.selectbox(key=state.keyed(state.BROWSE_SUBJECT, "synthbrain")).value == "sub-0007"
    assert _figures(at)[0]["data"][0]["z"] != before


def test_moving_the_slice_slider_changes_the_slice():
    at = _app()
    at.switch_page("app_pages/browse.py").run()
    key = state.keyed(state.BROWSE_SLICE, "synthbrain", "axial")
    before_title, before_z = _figure_titles(at)[0], _figures(at)[0]["data"][0]["z"]
    at.slider(key=key).set_value(30).run()
    _no_exception(at)
    assert "voxel 30" in _figure_titles(at)[0] and "voxel 30" not in before_title
    assert _figures(at)[0]["data"][0]["z"] != before_z


def test_orientation_toggle_flips_left_and_right():
    at = _app()
    at.switch_page("app_pages/browse.py").run()
    axial = _figures(at)[0]
    letters = [a["text"] for a in axial["layout"]["annotations"]]
    assert letters[:2] == ["L", "R"]
    at.button_group(key=state.BROWSE_ORIENTATION).set_value("radiological").run()
    _no_exception(at)
    letters = [a["text"] for a in _figures(at)[0]["layout"]["annotations"]]
    assert letters[:2] == ["R", "L"]
    assert "radiological" in _texts(at).lower()


def test_filter_narrows_the_table_and_subjects():
    at = _app()
    at.switch_page("app_pages/browse.py").run()
    at.selectbox(key=state.keyed(state.BROWSE_SPLIT, "synthbrain")).set_value("test").run()
    _no_exception(at)
    assert "120 of 400 images" in _texts(at)
    assert len(at.selectbox(key=state.keyed(state.BROWSE_SUBJECT, "synthbrain")).options) == 120


def test_switching_dataset_changes_every_page():
    at = _app("shapes")
    assert "Shapes" in _texts(at)
    at.switch_page("app_pages/browse.py").run()
    _no_exception(at)
    assert "3000 of 3000 images" in _texts(at)


def test_switching_model_changes_the_scores():
    names = _zoo_names("synthbrain")
    if len(names) < 2:
        pytest.fail(
            "fewer than two built-in synthbrain models in assets/models/: rebuild them (train-classifier --all)"
        )
    at = _app()
    at.switch_page("app_pages/scores.py").run()
    _no_exception(at)
    first = [m.value for m in at.markdown if "explains" in m.value]
    at.selectbox(key=state.keyed(state.MODEL, "synthbrain")).set_value(names[1]).run()
    _no_exception(at)
    second = [m.value for m in at.markdown if "explains" in m.value]
    assert first and second and first != second


def test_a_classifier_explains_its_probability_first_and_its_logit_one_click_away():
    at = _app()
    at.switch_page("app_pages/scores.py").run()
    model = at.sidebar.selectbox(key=state.keyed(state.MODEL, "synthbrain")).value
    probability = [m.value for m in at.markdown if "explains" in m.value]
    radio = at.sidebar.radio(key=state.keyed(state.EXPLAIN, ModelRef.builtin(model)))
    assert radio.value == "probability" and radio.options[:2] == ["probability", "logit (log-odds)"]
    assert "of the variation in the model's probability that label = 1" in probability[0]
    radio.set_value("output").run()
    _no_exception(at)
    logit = [m.value for m in at.markdown if "explains" in m.value]
    assert logit != probability and "the model's logit (log-odds) that label = 1" in logit[0]


def test_switching_overlay_method_changes_the_map():
    at = _app()
    at.switch_page("app_pages/browse.py").run()
    at.toggle(key=state.BROWSE_OVERLAY).set_value(True).run()
    _no_exception(at)
    methods = at.selectbox(key=state.BROWSE_OVERLAY_METHOD).options
    first = _figures(at)[-1]["data"][-1]["z"]
    at.selectbox(key=state.BROWSE_OVERLAY_METHOD).set_value(methods[1]).run()
    _no_exception(at)
    assert _figures(at)[-1]["data"][-1]["z"] != first


@pytest.mark.parametrize("dataset", ["synthbrain", "shapes"])
def test_moving_the_feature_slider_changes_the_samples(dataset):
    at = _app(dataset)
    at.session_state[state.EXPLORER_LIVE] = False  # the server-drawn path (live scrubbing: test_scrubber.py)
    at.switch_page("app_pages/explorer.py").run()
    _no_exception(at)
    assert "not ready" not in _texts(at)
    feature = at.selectbox(key=state.keyed(state.EXPLORER_FEATURE, dataset)).value
    slider = at.select_slider(key=state.keyed(state.EXPLORER_VALUE, dataset, feature))
    before = _figures(at)[0]["data"][0]["z"]
    slider.set_value(slider.options[-1]).run()
    _no_exception(at)
    assert _figures(at)[0]["data"][0]["z"] != before


def test_step_buttons_move_the_feature_value():
    at = _app()
    at.session_state[state.EXPLORER_LIVE] = False
    at.switch_page("app_pages/explorer.py").run()
    feature = at.selectbox(key=state.keyed(state.EXPLORER_FEATURE, "synthbrain")).value
    key = state.keyed(state.EXPLORER_VALUE, "synthbrain", feature)
    start = at.select_slider(key=key).value
    if not isinstance(start, float):
        pytest.skip(f"{feature} is categorical")
    at.button(key=state.keyed(state.EXPLORER_STEP, "fwd")).click().run()
    _no_exception(at)
    assert at.select_slider(key=key).value > start
    at.button(key=state.keyed(state.EXPLORER_STEP, "back")).click().run()
    assert at.select_slider(key=key).value == start


def _diffusion_scores_app(dataset: str = "synthbrain", features=("ventricle_volume", "icv")) -> AppTest:
    at = _app(dataset)
    at.switch_page("app_pages/scores.py").run()
    at.multiselect(key=state.keyed(state.SCORES_FEATURES, dataset)).set_value(list(features)).run()
    at.number_input(key=state.SCORES_DIFFUSION_K).set_value(3)
    at.number_input(key=state.SCORES_DIFFUSION_N).set_value(4).run()
    at.button(key=state.SCORES_DIFFUSION_RUN).click().run()
    _no_exception(at)
    return at


@pytest.mark.parametrize(
    "dataset, features", [("synthbrain", ("ventricle_volume", "icv")), ("shapes", ("size", "texture"))]
)
def test_generator_scores_appear_debiased_beside_the_data_scores(dataset, features):
    at = _diffusion_scores_app(dataset, features)
    names = [t.get("name") for f in _figures(at) for t in f["data"]]
    assert "from data" in names and "generator, debiased by the real images" in names
    assert "generator alone (model-based)" in names  # labelled, never presented as the estimate
    assert any("generator-scores" in str(k) for k in at.session_state[state.RESULTS])
    assert "From the generator, debiased by the real images" in _texts(at)


def test_the_scores_page_offers_its_view_as_the_html_report():
    at = _app("shapes")
    at.switch_page("app_pages/scores.py").run()
    _no_exception(at)
    labels = [b.proto.label for b in at.get("download_button")]
    assert labels == ["Download CSV", "Download JSON", "Download HTML report"]


def test_the_downloads_of_the_scores_view_are_the_clis_files_with_the_numbers_on_screen():
    """`loaders.score_report`, the downloads' one report, outside a session: the page's scores, and the CLI's
    JSON schema (the same keys `python -m engine score` writes)."""
    from types import SimpleNamespace

    from components import loaders
    from engine.reports import writers
    from engine.reports.html import html_report

    ref, features = ModelRef.builtin("shapes-glass-background"), ("size", "background")
    sel = SimpleNamespace(source="shapes", model_ref=ref, device="cpu", output=0, generator=None)
    report = loaders.score_report(sel, "test", features, 50)
    page = html_report(report)
    document = json.loads(writers.json_text(report))
    assert {"dataset", "model", "spec", "input", "method", "split", "n", "scores", "outputs"} <= set(document)
    shown = loaders.data_scores("shapes", ref, "cpu", 0, "test", features, 50)
    for row in shown.itertuples():  # with the ground truth beside them, rows name their source
        cells = f"<td>{row.feature}</td><td>border_mean</td>(<td>data path</td>)?<td>{row.score:.3f}</td>"
        assert re.search(cells + f"<td>{row.ci_low:.3f}–{row.ci_high:.3f}</td>", page), row
    assert "<h2>Methods</h2>" in page and "the 1,000 test-split images of shapes" in page


def test_bad_model_upload_keeps_the_diffusion_scores():
    at = _diffusion_scores_app()
    kept = dict(at.session_state[state.RESULTS])
    model_key = state.keyed(state.MODEL, "synthbrain")
    first_model = at.sidebar.selectbox(key=model_key).value
    at.sidebar.selectbox(key=model_key).set_value(state.UPLOADED_MODEL).run()
    bad = ("model.pt", _torchscript(_WrongSignature()), "application/octet-stream")
    at.sidebar.file_uploader(key=state.MODEL_UPLOAD).set_value(bad).run()
    _no_exception(at)
    assert "(B, K)" in " ".join(e.value for e in at.sidebar.error)
    at.sidebar.selectbox(key=model_key).set_value(first_model).run()
    assert dict(at.session_state[state.RESULTS]).keys() == kept.keys()
    names = [t.get("name") for f in _figures(at) for t in f["data"]]
    assert "generator, debiased by the real images" in names


# -- bad uploads: a clear message, and the session keeps what it had ---------------------


def _nifti_bytes(shape=(8, 8, 8)) -> bytes:
    import nibabel as nib
    import numpy as np

    image = nib.Nifti1Image(np.random.default_rng(0).random(shape, dtype=np.float32), np.eye(4))
    return gzip.compress(image.to_bytes())


def _upload_app() -> AppTest:
    at = _app()
    at.session_state[state.RESULTS] = {"earlier": 42}  # something computed before the bad upload
    at.sidebar.radio(key=state.DATASET).set_value("upload").run()
    return at


def _assert_kept(at: AppTest) -> None:
    _no_exception(at)
    assert at.session_state[state.RESULTS] == {"earlier": 42}


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ([("notes.txt", b"hello", "text/plain")], "No features.csv"),
        (
            [("features.csv", b"subject,age\na,1\n", "text/csv"), ("a.nii.gz", _nifti_bytes(), "application/gzip")],
            "no 'file' column",
        ),
        (
            [("features.csv", b"file,age\nb.nii.gz,1\n", "text/csv"), ("a.nii.gz", _nifti_bytes(), "application/gzip")],
            "which was not uploaded",
        ),
        (
            [
                ("features.csv", b"file,age\na.nii.gz,1\n", "text/csv"),
                ("a.nii.gz", b"not a volume", "application/gzip"),
            ],
            "not a readable NIfTI",
        ),
        (
            [
                ("features.csv", b"file,age\na.nii.gz,old\n", "text/csv"),
                ("a.nii.gz", _nifti_bytes(), "application/gzip"),
            ],
            None,
        ),  # a single categorical value loads; scoring pages then say it cannot vary
        ([("data.zip", b"PK\x03\x04 broken", "application/zip")], "not a readable zip"),
    ],
    ids=["no-csv", "csv-without-file-column", "csv-names-missing-file", "corrupt-nifti", "one-row", "broken-zip"],
)
def test_bad_dataset_upload_gives_a_clear_message_and_keeps_the_session(files, expected):
    at = _upload_app()
    at.sidebar.file_uploader(key=state.DATASET_UPLOAD).set_value(files).run()
    _assert_kept(at)
    if expected is None:
        return
    errors = " ".join(e.value for e in at.sidebar.error)
    assert expected in errors, errors


def _shapes_cohort_zip(tmp_path, with_generator: bool) -> bytes:
    """60 of Eve's shapes images as a user's folder, zipped; with a linear-Gaussian generator trained on
    them alone in its eve-generators/ (the shapes models' input: axial, 64 px, p99)."""
    import zipfile

    import pandas as pd

    from engine.data import load_dataset
    from engine.data.dataset import GENERATORS_DIR
    from engine.diffusion.cohort import CohortRecipe, save_cohort_model, train_on_cohort
    from engine.models import load_model

    src = ROOT / "data" / "shapes"
    table = pd.read_csv(src / "features.csv").head(60).drop(columns=["split"])
    folder = tmp_path / "my-discs"
    folder.mkdir()
    for name in table["file"]:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src / name, folder / name)
    table.to_csv(folder / "features.csv", index=False)
    if with_generator:
        spec = load_model("shapes-elongated")[1].spec
        generator = train_on_cohort(
            load_dataset(folder), spec, features=["size", "aspect"], recipe=CohortRecipe(kind="linear-gaussian")
        )
        save_cohort_model(generator, folder / GENERATORS_DIR)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in folder.rglob("*"):
            if path.is_file():
                archive.write(path, path.relative_to(folder.parent))
    return buffer.getvalue()


@pytest.mark.parametrize("with_generator", [True, False], ids=["with-generator", "without"])
def test_an_uploaded_folder_uses_its_own_generator_or_says_how_to_train_one(tmp_path, with_generator):
    at = _upload_app()
    upload = ("my-discs.zip", _shapes_cohort_zip(tmp_path, with_generator), "application/zip")
    at.sidebar.file_uploader(key=state.DATASET_UPLOAD).set_value([upload]).run()
    _assert_kept(at)
    model = at.sidebar.selectbox(key=state.keyed(state.MODEL, "user"))
    assert model.value == state.UPLOADED_MODEL  # the user's own model comes first
    model.set_value("shapes-elongated").run()
    warning = " ".join(w.value for w in at.sidebar.warning)
    assert "shapes-elongated was trained on Eve's shapes, not on" in warning and "describe that model" in warning
    at.switch_page("app_pages/explorer.py").run()
    _no_exception(at)
    sidebar = " ".join(c.value for c in at.sidebar.caption)
    if with_generator:
        assert "my-discs-linear-gaussian, trained on your folder alone" in sidebar
        assert _figures(at), "the explorer draws the generator's samples"
        at.switch_page("app_pages/scores.py").run()
        _no_exception(at)
        warning = " ".join(w.value for w in at.warning)
        assert "learnt from your 60 subjects alone" in warning and "Trust the data path's score" in warning
    else:
        assert "python -m engine train-diffusion --data YOUR_FOLDER --model shapes-" in _texts(at)
        at.button(key=state.keyed(state.GENERATOR_TRAIN, "explorer")).click().run()  # learn one here instead
        _no_exception(at)
        sidebar = " ".join(c.value for c in at.sidebar.caption)
        assert "my-discs-linear-gaussian, trained on your folder alone" in sidebar
        assert _figures(at), "the explorer draws the generator it just learnt"
        assert at.session_state[state.RESULTS] == {"earlier": 42}


def test_a_folder_too_small_to_learn_a_generator_from_is_refused_and_gets_no_card(tmp_path):
    import zipfile

    import pandas as pd

    from engine.data.dataset import GENERATORS_DIR

    archive = io.BytesIO(_shapes_cohort_zip(tmp_path, with_generator=False))
    small = io.BytesIO()
    with zipfile.ZipFile(archive) as source, zipfile.ZipFile(small, "w") as target:
        table = pd.read_csv(io.BytesIO(source.read("my-discs/features.csv"))).head(20)
        target.writestr("my-discs/features.csv", table.to_csv(index=False))
        for name in table["file"]:
            target.writestr(f"my-discs/{name}", source.read(f"my-discs/{name}"))
    at = _upload_app()
    at.sidebar.file_uploader(key=state.DATASET_UPLOAD).set_value(
        [("my-discs.zip", small.getvalue(), "application/zip")]
    )
    at.run()
    at.sidebar.selectbox(key=state.keyed(state.MODEL, "user")).set_value("shapes-elongated").run()
    at.switch_page("app_pages/explorer.py").run()
    at.button(key=state.keyed(state.GENERATOR_TRAIN, "explorer")).click().run()
    _assert_kept(at)
    assert "needs at least 50" in " ".join(e.value for e in at.error)
    generators = Path(at.session_state[state.USER_DATASET]) / GENERATORS_DIR
    assert not generators.exists() or not any(generators.iterdir()), "no card, not even half of one"


def test_oversized_upload_is_refused(monkeypatch):
    from components import uploads

    monkeypatch.setattr(uploads, "MAX_TOTAL_MB", 0.001)
    at = _upload_app()
    files = [("features.csv", b"file,age\na.nii.gz,1\n", "text/csv"), ("a.nii.gz", _nifti_bytes(), "application/gzip")]
    at.sidebar.file_uploader(key=state.DATASET_UPLOAD).set_value(files).run()
    _assert_kept(at)
    assert "limit" in " ".join(e.value for e in at.sidebar.error)


def test_uploaded_folder_loads_and_a_later_bad_upload_keeps_it(tmp_path):
    src = ROOT / "data" / "synthbrain"
    lines = (src / "features.csv").read_text().splitlines()[:13]  # header + 12 subjects
    files = [("features.csv", ("\n".join(lines) + "\n").encode(), "text/csv")]
    for line in lines[1:]:
        name = line.split(",")[1]
        files.append((Path(name).name, (src / name).read_bytes(), "application/gzip"))
    at = _upload_app()
    at.sidebar.file_uploader(key=state.DATASET_UPLOAD).set_value(files).run()
    _assert_kept(at)
    assert not at.sidebar.error, [e.value for e in at.sidebar.error]
    folder = at.session_state[state.USER_DATASET]
    assert "your folder (12 images)" in _texts(at)
    at.switch_page("app_pages/browse.py").run()
    _no_exception(at)
    assert "12 of 12 images" in _texts(at)
    for page in PAGES[2:]:  # every other page works on (or says plainly what it cannot do with) the folder
        at.switch_page(page).run()
        _no_exception(at)
    # now a broken upload: message, and the folder loaded before stays in use
    at.sidebar.file_uploader(key=state.DATASET_UPLOAD).set_value([("notes.txt", b"x", "text/plain")]).run()
    _assert_kept(at)
    assert at.session_state[state.USER_DATASET] == folder
    assert "previously loaded folder" in _texts(at) + " ".join(c.value for c in at.sidebar.caption)


class _WrongSignature(torch.nn.Module):
    def forward(self, x):
        return x[:, 0, :2, :2]  # (B, 2, 2), not (B,) or (B, K)


class _MeanIntensity(torch.nn.Module):
    def forward(self, x):
        return x.mean((2, 3))  # (B, 1)


def _torchscript(module: torch.nn.Module) -> bytes:
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(module), buffer)
    return buffer.getvalue()


def _model_upload_app() -> AppTest:
    at = _app()
    at.session_state[state.RESULTS] = {"earlier": 42}
    at.sidebar.selectbox(key=state.keyed(state.MODEL, "synthbrain")).set_value(state.UPLOADED_MODEL).run()
    return at


@pytest.mark.parametrize(
    ("payload", "expected"),
    [(_torchscript(_WrongSignature()), "(B, K)"), (b"not a model at all", "not a TorchScript model")],
    ids=["wrong-signature", "not-torchscript"],
)
def test_bad_model_upload_gives_a_clear_message_and_keeps_the_session(payload, expected):
    at = _model_upload_app()
    at.sidebar.file_uploader(key=state.MODEL_UPLOAD).set_value(("model.pt", payload, "application/octet-stream")).run()
    _assert_kept(at)
    errors = " ".join(e.value for e in at.sidebar.error)
    assert expected in errors, errors


def test_uploaded_torchscript_model_is_scored():
    at = _model_upload_app()
    good = ("model.pt", _torchscript(_MeanIntensity()), "application/octet-stream")
    at.sidebar.file_uploader(key=state.MODEL_UPLOAD).set_value(good).run()
    _assert_kept(at)
    assert not at.sidebar.error
    at.switch_page("app_pages/scores.py").run()
    _no_exception(at)
    assert any("explains" in m.value for m in at.markdown)


def test_an_uploaded_model_is_fed_raw_values_unless_the_user_says_otherwise():
    at = _model_upload_app()
    good = ("model.pt", _torchscript(_MeanIntensity()), "application/octet-stream")
    at.sidebar.file_uploader(key=state.MODEL_UPLOAD).set_value(good).run()
    at.switch_page("app_pages/overview.py").run()
    _no_exception(at)
    assert "intensity raw: the stored values" in _texts(at)
    raw = at.session_state[state.USER_MODEL]
    at.sidebar.selectbox(key=state.MODEL_INTENSITY).set_value("p99").run()
    _no_exception(at)
    assert "intensity p99: divided by the 99th percentile" in _texts(at)
    assert at.session_state[state.USER_MODEL].spec.intensity == "p99" and raw.spec.intensity == "raw"


class _VolumeMean(torch.nn.Module):
    def forward(self, x):
        return x.mean((1, 2, 3, 4))  # (B, 1, S, S, S) -> (B,)


def test_an_uploaded_card_fills_the_input_and_a_volume_model_is_scored():
    at = _model_upload_app()
    card = {"name": "my 3D model", "input": {"kind": "volume", "size": 24, "spacing": 4.0}, "intensity": "zscore"}
    upload = ("model.json", json.dumps(card).encode(), "application/json")
    at.sidebar.file_uploader(key=state.MODEL_CARD_UPLOAD).set_value(upload).run()
    _no_exception(at)
    assert at.sidebar.button_group(key=state.MODEL_INPUT).value == "volume"
    assert at.sidebar.number_input(key=state.MODEL_SIZE).value == 24
    model = ("model.pt", _torchscript(_VolumeMean()), "application/octet-stream")
    at.sidebar.file_uploader(key=state.MODEL_UPLOAD).set_value(model).run()
    _assert_kept(at)
    assert not at.sidebar.error, [e.value for e in at.sidebar.error]
    ref = at.session_state[state.USER_MODEL]
    assert ref.label == "my 3D model" and ref.spec.is_volume and ref.spec.spacing == 4.0
    assert ref.spec.intensity == "zscore"
    at.switch_page("app_pages/overview.py").run()
    _no_exception(at)
    assert "a 24^3 cube of isotropic voxels at 4 mm" in _texts(at)
    at.switch_page("app_pages/scores.py").run()
    _no_exception(at)
    assert any("explains" in m.value for m in at.markdown)


def test_a_bad_card_upload_names_the_key_and_keeps_the_session():
    at = _model_upload_app()
    upload = ("model.json", b'{"input": {"kind": "cube"}}', "application/json")
    at.sidebar.file_uploader(key=state.MODEL_CARD_UPLOAD).set_value(upload).run()
    _assert_kept(at)
    assert "input kind 'cube'" in " ".join(e.value for e in at.sidebar.error)


def test_the_3d_zoo_model_draws_its_map_in_three_planes_and_is_compared():
    at = _app()
    at.sidebar.selectbox(key=state.keyed(state.MODEL, "synthbrain")).set_value("synthbrain-diagnosis-3d").run()
    at.switch_page("app_pages/browse.py").run()
    at.toggle(key=state.BROWSE_OVERLAY).set_value(True).run()
    _no_exception(at)
    titles = _figure_titles(at)[-3:]
    assert [t.split(" ")[0] for t in titles] == ["axial", "coronal", "sagittal"]
    assert all(len(f["data"]) == 2 for f in _figures(at)[-3:])  # the input under the map, in every plane
    assert "the whole volume" in _texts(at) and "largest value" in _texts(at)
    at.switch_page("app_pages/compare.py").run()
    _no_exception(at)
    assert at.button_group(key=state.COMPARE_PLANE).value == "coronal"
    at.switch_page("app_pages/explorer.py").run()
    _no_exception(at)
    assert "takes whole volumes" in _texts(at)


@pytest.fixture(scope="module", autouse=True)
def _clean_uploads():
    yield
    from components import uploads

    shutil.rmtree(uploads.UPLOAD_ROOT, ignore_errors=True)


# -- components on their own -------------------------------------------------------------


def test_slice_hover_coordinates_match_the_affine(synthbrain):
    import numpy as np

    from components.slice_viewer import world_grid
    from engine.data.slicing import extract_slice

    volume, affine = synthbrain.volume(synthbrain.subjects[0])
    for plane, axis in (("axial", 2), ("coronal", 1), ("sagittal", 0)):
        k = volume.shape[axis] // 3
        world = world_grid(volume.shape, affine, plane, k)
        assert world.shape[:2] == extract_slice(volume, affine, plane, k).shape
        # the displayed top-left pixel: first voxel on the left, last on the top axis
        voxel = np.zeros(3)
        voxel[axis] = k
        others = [a for a in range(3) if a != axis]
        voxel[others[1]] = volume.shape[others[1]] - 1
        np.testing.assert_allclose(world[0, 0], affine[:3, :3] @ voxel + affine[:3, 3])


def test_upload_refuses_paths_outside_the_folder():
    from components import uploads
    from engine.errors import EveInputError

    files = [("features.csv", b"file,age\n../../etc/a.nii.gz,1\n"), ("a.nii.gz", _nifti_bytes())]
    with pytest.raises(EveInputError, match="not a relative path"):
        uploads.dataset_folder(files)


def test_score_bars_draw_no_number_for_a_degenerate_score():
    import pandas as pd

    from components.score_bars import caption, score_bars

    table = pd.DataFrame(
        [
            dict(feature="a", source="data", score=0.4, ci_low=0.3, ci_high=0.5, status="ok", message=""),
            dict(
                feature="b",
                source="data",
                score=float("nan"),
                ci_low=float("nan"),
                ci_high=float("nan"),
                status="single_value",
                message="The feature takes a single value.",
            ),
        ]
    )
    bars = score_bars(table, {"a": "#000000", "b": "#111111"}).data[0]
    assert list(bars.x) == [0.4, 0.0]
    assert "no score" in bars.hovertext[1]
    assert caption("b", table.iloc[1], "y").startswith("b: no score")
    assert caption("a", table.iloc[0], "the output y") == "a explains 40% (30%–50%) of the variation in the output y."


def test_diffusion_caption_cautions_when_the_samples_held_the_feature_loosely():
    import pandas as pd

    from components.score_bars import diffusion_clause

    row = dict(score=0.30, ci_low=0.25, ci_high=0.36, status="ok", message="")
    assert diffusion_clause(pd.Series(row)) == " From the generator, debiased by the real images: 30% (25%–36%)."
    assert "Caution" not in diffusion_clause(pd.Series(row | {"constraint_mae_over_sd": 0.07}))
    assert "missed the asked value by 0.17 SD" in diffusion_clause(pd.Series(row | {"constraint_mae_over_sd": 0.17}))


@pytest.mark.parametrize(
    ("diffusion", "expected"),
    [((0.42, 0.30, 0.55), "agree"), ((0.60, 0.45, 0.75), "within noise"), ((0.90, 0.85, 0.95), "disagree")],
)
def test_agreement_badge(diffusion, expected):
    import pandas as pd

    from components.score_bars import agreement

    data = pd.Series(dict(score=0.40, ci_low=0.35, ci_high=0.50, status="ok"))
    score, low, high = diffusion
    badge = agreement(data, pd.Series(dict(score=score, ci_low=low, ci_high=high, status="ok")))
    assert badge[0].startswith(expected)


# -- widgets after a dataset switch show what the page uses -----------------------------------------


def _choices_in_range(at: AppTest) -> list[str]:
    """Every main-area choice widget whose shown value is not one of its options (a select_slider's
    options come back formatted, so those are checked where their values are known)."""
    wrong = []
    for kind in ("selectbox", "radio"):
        for widget in getattr(at.main, kind):
            if widget.value not in widget.options and str(widget.value) not in widget.options:
                wrong.append(f"{kind} {widget.label!r} shows {widget.value!r}, not one of {widget.options}")
    for widget in at.main.multiselect:
        if not set(widget.value) <= set(widget.options):
            wrong.append(f"multiselect {widget.label!r} shows {widget.value}, outside {widget.options}")
    return wrong


@pytest.mark.parametrize("page", PAGES)
def test_switching_dataset_leaves_every_widget_showing_a_value_the_page_uses(page):
    at = _app()
    at.switch_page(page).run()
    _no_exception(at)
    for dataset in ("shapes", "synthbrain"):
        at.sidebar.radio(key=state.DATASET).set_value(dataset).run()
        _no_exception(at)
        assert not _choices_in_range(at), (dataset, _choices_in_range(at))
        if page == "app_pages/scores.py":  # the caption states the draws and images the bars were computed with
            draws = at.main.select_slider(key=state.SCORES_N_BOOT).value
            images = at.main.selectbox(key=state.keyed(state.SCORES_SPLIT, dataset)).value
            caption = " ".join(c.value for c in at.main.caption if c.value.startswith("Bars:"))
            assert f"{draws} bootstrap draws" in caption and f" {images} images" in caption, caption


def test_scores_on_a_folder_without_splits_use_all_images_and_say_so(tmp_path):
    src = ROOT / "data" / "synthbrain"
    lines = (src / "features.csv").read_text().splitlines()[:41]  # header + 40 subjects
    header = lines[0].split(",")
    keep = [i for i, name in enumerate(header) if name != "split"]
    csv = "\n".join(",".join(line.split(",")[i] for i in keep) for line in lines) + "\n"
    files = [("features.csv", csv.encode(), "text/csv")]
    for line in lines[1:]:
        name = line.split(",")[header.index("file")]
        files.append((Path(name).name, (src / name).read_bytes(), "application/gzip"))
    at = _app()
    at.switch_page("app_pages/scores.py").run()
    at.sidebar.radio(key=state.DATASET).set_value("upload").run()
    _no_exception(at)
    at.sidebar.file_uploader(key=state.DATASET_UPLOAD).set_value(files).run()
    at.sidebar.selectbox(key=state.keyed(state.MODEL, "user")).set_value("synthbrain-diagnosis").run()
    _no_exception(at)
    assert not _choices_in_range(at), _choices_in_range(at)
    assert at.main.selectbox(key=state.keyed(state.SCORES_SPLIT, at.session_state[state.USER_DATASET])).value == "all"
    assert at.main.select_slider(key=state.SCORES_N_BOOT).value == 200
    caption = " ".join(c.value for c in at.main.caption if c.value.startswith("Bars:"))
    assert "200 bootstrap draws" in caption and "on 40 all images" not in caption and "40 images" in caption


def test_compare_shows_every_family_lists_what_does_not_apply_and_reads_the_map_by_region():
    at = _app("synthbrain")
    at.switch_page("app_pages/compare.py").run()
    _no_exception(at)

    def tiles() -> list[str]:
        return [a.get("text") for f in _figures(at) for a in f["layout"].get("annotations", [])]

    assert {"LRP", "FeatureAblation"} <= set(tiles()) and "Lime" not in tiles()  # the fast maps at once
    at.button(key=state.COMPARE_SLOW_RUN).click().run()
    _no_exception(at)
    assert {"ShapleyValueSampling", "Lime", "KernelShap"} <= set(tiles())
    [regions] = [d.value for d in at.dataframe if "region" in d.value.columns]
    assert {"grey matter", "white matter"} <= set(regions["region"])
    assert regions["share"].between(0, 1).all() and regions["share"].sum() <= 1 + 1e-6  # shares one can add up
    assert set(regions["direction"]) <= {"raises", "lowers", "none"}
    assert any("Shares add up to 100%" in c.value and "Shapley values add up to that" in c.value for c in at.caption)


def test_compare_quality_table_has_faithfulness_completeness_and_complexity():
    at = _app("shapes")
    at.switch_page("app_pages/compare.py").run()
    at.button(key=state.COMPARE_QUALITY_RUN).click().run()
    _no_exception(at)
    [quality] = [d.value for d in at.dataframe if "deletion AUC" in d.value.columns]
    assert {"LRP", "IntegratedGradients"} <= set(quality["method"])
    assert quality.set_index("method").loc["IntegratedGradients", "completeness gap"] < 0.05
    assert quality["sparseness (Gini)"].between(0, 1).all()


def test_compare_sets_the_vits_attention_maps_beside_its_captum_maps_and_says_what_does_not_apply():
    at = _app("synthbrain")
    at.selectbox(key=state.keyed(state.MODEL, "synthbrain")).set_value("synthbrain-diagnosis-vit").run()
    at.switch_page("app_pages/compare.py").run()
    _no_exception(at)
    tiles = {a.get("text") for f in _figures(at) for a in f["layout"].get("annotations", [])}
    assert {"AttentionCLS", "AttentionRollout", "AttentionGradient", "IntegratedGradients"} <= tiles
    assert "LayerGradCam" not in tiles and "LRP" not in tiles
    [missing] = [c.value for c in at.caption if c.value.startswith("Not available for this model")]
    assert (
        "LayerGradCam: it needs a convolutional feature map" in missing and "LRP: captum's LRP has no rule" in missing
    )


def _opened(query: dict, page: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params.update(query)
    at.run()
    if page:
        at.switch_page(page).run()
    _no_exception(at)
    return at


def test_a_shared_url_opens_the_same_view_and_the_view_writes_its_url():
    at = _opened({"dataset": "synthbrain", "model": "synthbrain-shortcut", "explain": "output", "output": "0"})
    assert at.sidebar.radio(key=state.DATASET).value == "synthbrain"
    assert at.sidebar.selectbox(key=state.keyed(state.MODEL, "synthbrain")).value == "synthbrain-shortcut"
    ref = ModelRef.builtin("synthbrain-shortcut")
    assert at.sidebar.radio(key=state.keyed(state.EXPLAIN, ref)).value == "output"
    assert at.query_params["model"] == "synthbrain-shortcut" and at.query_params["explain"] == "output"
    at.sidebar.radio(key=state.DATASET).set_value("shapes").run()
    assert at.query_params["dataset"] == "shapes"  # the address bar follows the view
    assert not [i.value for i in at.sidebar.info if "link" in i.value]


def test_a_shared_explorer_url_sets_feature_value_and_seed():
    at = _opened({"dataset": "shapes", "feature": "size", "value": "11.3", "seed": "7"}, "app_pages/explorer.py")
    assert at.selectbox(key=state.keyed(state.EXPLORER_FEATURE, "shapes")).value == "size"
    assert at.number_input(key=state.EXPLORER_SEED).value == 7
    value = at.session_state[state.keyed(state.EXPLORER_VALUE, "shapes", "size")]  # live: the scrubber's
    assert abs(value - 11.3) <= 0.1  # the nearest of the slider's 41 positions, 0.2 apart
    assert at.query_params["seed"] == "7" and at.query_params["feature"] == "size"


@pytest.mark.parametrize(
    "query, ignored",
    [
        ({"dataset": "oasis"}, "dataset 'oasis' is not on this server"),
        ({"dataset": "shapes", "model": "gpt-5"}, "model 'gpt-5' is not offered for shapes"),
        ({"dataset": "shapes", "feature": "size", "value": "1e9"}, "value '1e9' of size is outside"),
        ({"dataset": "shapes", "seed": "-3"}, "seed '-3' is not a whole number"),
        ({"dataset": "shapes", "feature": "ventricles"}, "feature 'ventricles' is not in shapes"),
    ],
)
def test_a_url_asking_for_what_the_server_lacks_opens_the_default_with_a_note(query, ignored):
    at = _opened(query, "app_pages/explorer.py")
    notes = [i.value for i in at.sidebar.info]
    assert any(ignored in n and "showing the default instead" in n for n in notes), notes


def test_the_contrast_window_sets_black_and_white_on_every_plane():
    at = _app("synthbrain")
    at.switch_page("app_pages/browse.py").run()
    at.slider(key=state.BROWSE_WINDOW).set_value((0.2, 0.6)).run()
    _no_exception(at)
    planes = [
        t
        for f in _figures(at)
        for t in f["data"]
        if t.get("type") == "heatmap" and str(t.get("hovertemplate", "")).startswith("intensity")
    ]
    assert len(planes) == 3 and all((t["zmin"], t["zmax"]) == (0.2, 0.6) for t in planes)


def test_a_session_opens_on_a_ready_dataset_while_the_default_builds_in_the_background(monkeypatch):
    """`make run` opens the app while SynthBrain is built in the background: a new session starts on
    Shapes with the build's progress in the sidebar, SynthBrain asked for meanwhile says when it opens, and
    the session finds it once the build is done."""
    progress = {"synthbrain": (120, 400)}
    monkeypatch.setattr(loaders, "building", lambda name: progress.get(name))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    _no_exception(at)
    assert at.sidebar.radio(key=state.DATASET).value == "shapes"
    bars = [p.proto.text for p in at.get("progress")]
    assert any("is being built in the background: 120 of 400" in t for t in bars), bars
    assert "Shapes" in _texts(at)  # the Overview shows the ready set
    at.sidebar.radio(key=state.DATASET).set_value("synthbrain").run()
    _no_exception(at)
    assert any("opens here when its build is done" in i.value for i in at.sidebar.info)
    progress.clear()  # the build is done
    at.run()
    _no_exception(at)
    assert at.sidebar.radio(key=state.DATASET).value == "synthbrain" and not at.get("progress")
    assert "SynthBrain" in _texts(at)


def test_the_generator_paths_features_together_stand_beside_the_datas_in_the_added_and_fair_share_views():
    """Issue 36: once the generator scores are computed, the views "added to the others" and "fair share" draw the
    debiased generator path's set scores beside the data's (one bar each per feature; one stacked bar each)."""
    at = _app("synthbrain")
    at.switch_page("app_pages/scores.py").run()
    features = ["ventricle_volume", "age", "icv"]
    at.multiselect(key=state.keyed(state.SCORES_FEATURES, "synthbrain")).set_value(features).run()
    at.number_input(key=state.SCORES_DIFFUSION_K).set_value(4)
    at.number_input(key=state.SCORES_DIFFUSION_N).set_value(16).run()  # 64 generated subjects: 3 features fit
    at.button(key=state.SCORES_DIFFUSION_RUN).click().run()
    at.radio(key=state.SCORES_VIEW).set_value("added to the others").run()
    _no_exception(at)
    added = next(f for f in _figures(at) if f["layout"]["xaxis"]["title"]["text"].startswith("added to all"))
    assert {t["name"] for t in added["data"]} >= {"from data", "generator, debiased by the real images"}
    assert any("Hatched: the generator path, debiased" in c.value for c in at.caption)
    at.radio(key=state.SCORES_VIEW).set_value("fair share").run()
    _no_exception(at)
    stack = next(f for f in _figures(at) if f["layout"].get("barmode") == "stack")
    bars = {y for t in stack["data"] for y in t["y"]}
    assert bars == {"from data", "generator, debiased by the real images"}
    debiased = [
        _array(t["x"])[t["y"].index("generator, debiased by the real images")]
        for t in stack["data"]
        if t["name"] in features
    ]
    assert len(debiased) == 3 and 0.3 < sum(debiased) <= 1.0  # its shares add up to its joint score
    assert "From the generator path, debiased by the real images: the 3 features it conditions on explain" in _texts(at)


def _array(values) -> np.ndarray:
    """A figure's array as its JSON holds it: a list, or plotly's packed {"dtype", "bdata"}."""
    if isinstance(values, dict):
        return np.frombuffer(base64.b64decode(values["bdata"]), dtype=values["dtype"])
    return np.asarray(values)
