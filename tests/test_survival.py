"""The server outlives its worst user (issue 34, item 2).

Two sessions of one server: Streamlit runs every session's script in a thread of its own inside one
server process, so two instances of Streamlit's app test harness, driven from two threads of this one
process, stand in for two browser sessions (they share the process's caches, memory and GIL as sessions
of a server do; what they do not share is a websocket, which plays no part here). One session uploads
what a hostile or careless user would — a zip bomb, a volume claiming a billion voxels, a model that
never answers, a model that allocates without bound — while the other keeps browsing. The other
session's reruns keep answering, none of its state is lost, and the first gets a message; the server
process itself never runs the bad model (it is checked in a child process first, `zoo.screen`) and its
memory stays where it was.
"""

from __future__ import annotations

import io
import threading
import time
import zipfile

import pytest
import torch
from test_app import _app, _no_exception
from test_fuzz import Hoards, SpinsForever

from components import state
from engine.data.uploads import MB
from engine.models.zoo import model_checks_running

CHECK_S = 3  # the model check's limit in these tests (EVE_MODEL_CHECK_S; 60 s by default)
CHECK_MB = 1024  # the checking child's memory (EVE_MODEL_CHECK_MB; 4096 MB by default)
ANSWER_S = 20  # the other session's rerun must answer within this while the first misbehaves (alone: ~1 s)


def _torchscript(module: torch.nn.Module) -> bytes:
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(module), buffer)
    return buffer.getvalue()


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / MB


class _Peak:
    """The process's largest resident memory while the block runs (sampled every 20 ms)."""

    def __enter__(self):
        self.peak, self._stop = _rss_mb(), threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, _rss_mb())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def _bomb_zip() -> bytes:
    """features.csv and 320 MiB of zeros as one entry: a 0.3 MB zip (ratio ~1000), built streaming."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("cohort/features.csv", "file,size\nbomb.nii,1\n")
        with archive.open("cohort/bomb.nii", "w", force_zip64=True) as entry:
            for _ in range(320):
                entry.write(bytes(MB))
    return buffer.getvalue()


def _claims_a_billion_voxels() -> bytes:
    import gzip
    import struct

    import nibabel as nib
    import numpy as np

    raw = bytearray(nib.Nifti1Image(np.zeros((8, 8, 8), np.float32), np.eye(4)).to_bytes())
    struct.pack_into("<8h", raw, 40, 3, 1000, 1000, 1000, 1, 1, 1, 1)  # 4 GB claimed over 2 KB of data
    return gzip.compress(bytes(raw))


def _worker() -> object:
    """A session that has been working: the shapes dataset on the browse page, a subject chosen, a result kept."""
    at = _app("shapes")
    at.session_state[state.RESULTS] = {"my scores": 0.42}
    at.switch_page("app_pages/browse.py").run()
    _no_exception(at)
    return at


def _keeps_working(at, stop: threading.Event, at_least: int = 3) -> list[float]:
    """Rerun `at` (subject changes, page switches) until `stop` is set and at least `at_least` reruns are
    done; each rerun's wall time."""
    subjects = at.selectbox(key=state.keyed(state.BROWSE_SUBJECT, "shapes")).options[:6]
    times, i = [], 0
    while not stop.is_set() or len(times) < at_least:
        started = time.perf_counter()
        if i % 3 == 2:
            at.switch_page("app_pages/overview.py").run()
            at.switch_page("app_pages/browse.py").run()
        else:
            at.selectbox(key=state.keyed(state.BROWSE_SUBJECT, "shapes")).set_value(subjects[i % len(subjects)]).run()
        _no_exception(at)
        times.append(time.perf_counter() - started)
        i += 1
    return times


def _meanwhile(misbehave, worker) -> tuple[list[float], float]:
    """`misbehave()` in a thread of its own while `worker` keeps working: (the worker's rerun times, the
    misbehaving call's own wall time)."""
    stop, took, failed = threading.Event(), [], []

    def run():
        started = time.perf_counter()
        try:
            misbehave()
        except BaseException as exc:  # shown by the test, not lost in the thread
            failed.append(exc)
        finally:
            took.append(time.perf_counter() - started)
            stop.set()

    thread = threading.Thread(target=run)
    thread.start()
    times = _keeps_working(worker, stop)
    thread.join()
    if failed:
        raise failed[0]
    return times, took[0]


def _state_of(at) -> tuple:
    return (dict(at.session_state[state.RESULTS]), at.session_state[state.SELECTION].source)


@pytest.fixture(autouse=True)
def _limits(monkeypatch):
    monkeypatch.setenv("EVE_MODEL_CHECK_S", str(CHECK_S))
    monkeypatch.setenv("EVE_MODEL_CHECK_MB", str(CHECK_MB))


@pytest.fixture(scope="module", autouse=True)
def _clean_uploads():
    yield
    import shutil

    from components import uploads

    shutil.rmtree(uploads.UPLOAD_ROOT, ignore_errors=True)


@pytest.mark.app
def test_a_zip_bomb_and_a_billion_voxel_volume_are_refused_while_another_session_keeps_working():
    worker = _worker()
    before = _state_of(worker)
    bomber = _app("shapes")
    bomber.session_state[state.RESULTS] = {"theirs": 1}
    bomber.sidebar.radio(key=state.DATASET).set_value("upload").run()
    uploads = [
        ([("cohort.zip", _bomb_zip(), "application/zip")], "unpacks 1,0"),
        (
            [
                ("features.csv", b"file,size\nbig.nii.gz,1\n", "text/csv"),
                ("big.nii.gz", _claims_a_billion_voxels(), "x"),
            ],
            "claims 1,000,000,000 voxels",
        ),
    ]
    rss = _rss_mb()
    with _Peak() as peak:
        for files, words in uploads:

            def upload(files=files):
                bomber.sidebar.file_uploader(key=state.DATASET_UPLOAD).set_value(files).run()

            times, _ = _meanwhile(upload, worker)
            _no_exception(bomber)
            assert words in " ".join(e.value for e in bomber.sidebar.error)
            assert max(times) < ANSWER_S, times
    assert peak.peak - rss < 200, f"the server grew {peak.peak - rss:.0f} MB while the bombs were refused"
    assert _state_of(worker) == before, "the other session lost its state"
    assert bomber.session_state[state.RESULTS] == {"theirs": 1}, "the bomber's own results are kept too"
    assert bomber.session_state[state.USER_DATASET] is None


@pytest.mark.app
@pytest.mark.parametrize(
    ("model", "words"),
    [(SpinsForever, f"took longer than {CHECK_S} s"), (Hoards, f"needed more than {CHECK_MB:,} MB")],
    ids=["spins-forever", "hoards-memory"],
)
def test_a_model_that_never_answers_or_hoards_memory_gets_a_message_while_another_session_keeps_working(model, words):
    worker = _worker()
    before = _state_of(worker)
    uploader = _app("shapes")
    uploader.session_state[state.RESULTS] = {"theirs": 1}
    uploader.sidebar.selectbox(key=state.keyed(state.MODEL, "shapes")).set_value(state.UPLOADED_MODEL).run()
    payload = (f"{model.__name__}.pt", _torchscript(model()), "application/octet-stream")
    rss = _rss_mb()
    with _Peak() as peak:
        times, took = _meanwhile(
            lambda: uploader.sidebar.file_uploader(key=state.MODEL_UPLOAD).set_value(payload).run(), worker
        )
    _no_exception(uploader)
    assert words in " ".join(e.value for e in uploader.sidebar.error)
    assert took < CHECK_S + 60, f"the upload's answer took {took:.1f} s"
    assert len(times) >= 3 and max(times) < ANSWER_S, times
    assert _state_of(worker) == before, "the other session lost its state"
    assert uploader.session_state[state.RESULTS] == {"theirs": 1} and uploader.session_state[state.USER_MODEL] is None
    assert peak.peak - rss < 200, f"the server grew {peak.peak - rss:.0f} MB: the model ran in it"
    assert not model_checks_running(), "the model was run in the server process"


def test_a_model_checked_in_the_server_process_is_refused_at_its_limit_and_its_thread_runs_on(tmp_path):
    """Where Python cannot enforce the limit: the CLI and a notebook check a model in their own process (it is
    the user's own); past the limit the check is refused on time, but its thread runs on until the model
    ends, a core busy meanwhile. (The app's uploads never get here: `test_a_model_that_never_answers...`.)"""
    from engine.data.slicing import SliceSpec
    from engine.data.uploads import ModelLimits
    from engine.errors import EveInputError
    from engine.models.zoo import load_torchscript

    class SpinsAWhile(torch.nn.Module):
        def forward(self, x):
            y = x.mean((1, 2, 3))
            for _ in range(1_500_000):  # ~5 s here
                y = y + 0.0
            return y

    spec = SliceSpec("axial", None, 16, "raw", input="slice", orientation="stored")
    started = time.perf_counter()
    with pytest.raises(EveInputError, match="took longer than 0.5 s"):
        load_torchscript(_torchscript(SpinsAWhile()), spec, device="cpu", limits=ModelLimits(check_s=0.5))
    assert time.perf_counter() - started < 3
    assert model_checks_running(), "the thread runs on: Python cannot stop it"
    ticks, until = 0, time.perf_counter() + 0.5
    while time.perf_counter() < until:  # and this process's Python keeps running meanwhile (the forward freed the GIL)
        ticks += 1
    assert ticks > 10_000
