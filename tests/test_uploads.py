"""Uploads (issues 34 and 37): limits checked from a zip's central directory before a byte is written
and again while streaming, partial writes never visible, a disk quota with least-recently-used
eviction, and an upload's work done once per upload (a rerun reads none of its bytes).

Zip bombs are built streaming (`ZipFile.open(name, "w")` fed 1 MiB of zeros at a time), so no test
holds more than a few MB; each test takes well under 10 s.
"""

from __future__ import annotations

import gc
import io
import os
import stat
import struct
import warnings
import zipfile
from pathlib import Path

import pytest
from test_app import _nifti_bytes, _no_exception, _upload_app

from components import state
from engine.data.uploads import (
    ENV,
    MB,
    PARTIAL,
    UploadLimits,
    UploadStore,
    plan_dataset,
    plan_model,
)
from engine.errors import EveInputError

NIFTI = _nifti_bytes()
CSV = b"file,age\na.nii.gz,61\nb.nii.gz,72\n"


def _zip(entries: dict[str, bytes], top: str = "cohort") -> io.BytesIO:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(f"{top}/{name}" if top else name, data)
    buffer.seek(0)
    return buffer


def _cohort(**extra: bytes) -> io.BytesIO:
    return _zip({"features.csv": CSV, "a.nii.gz": NIFTI, "b.nii.gz": NIFTI, **extra})


def _store(tmp_path: Path, **limits) -> UploadStore:
    return UploadStore(tmp_path / "uploads", UploadLimits(**limits))


def _write(store: UploadStore, files, held=()):
    return store.write(plan_dataset(files, store.limits), held)


def _nothing_written(store: UploadStore) -> bool:
    return not store.root.exists() or not any(store.root.iterdir())


@pytest.fixture(scope="module")
def bomb(tmp_path_factory) -> Path:
    """A features.csv and one entry of 320 MiB of zeros: a 0.3 MB zip (ratio ~1000)."""
    path = tmp_path_factory.mktemp("bomb") / "cohort.zip"
    zeros = bytes(MB)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("cohort/features.csv", "file,age\nbomb.nii,61\n")
        with archive.open("cohort/bomb.nii", "w", force_zip64=True) as entry:
            for _ in range(320):
                entry.write(zeros)
    return path


# -- a good upload -------------------------------------------------------------------------------------


def test_a_zipped_folder_is_written_whole_under_its_name_and_the_same_upload_maps_to_the_same_folder(tmp_path):
    store = _store(tmp_path)
    first = _write(store, [("my cohort.zip", _cohort(**{"notes.txt": b"ignored"}))])
    assert first.path.name == "cohort" and first.path.parent.parent == store.root
    assert sorted(p.name for p in first.path.iterdir()) == ["a.nii.gz", "b.nii.gz", "features.csv"]
    assert (first.path / "a.nii.gz").read_bytes() == NIFTI
    again = _write(store, [("my cohort.zip", _cohort(**{"notes.txt": b"ignored"}))])
    assert again.path == first.path
    assert not list(store.root.glob(f"*{PARTIAL}")), "no partial folder is left behind"


def test_loose_files_are_streamed_from_the_upload_object_which_stays_open(tmp_path):
    store = _store(tmp_path)
    files = [("features.csv", io.BytesIO(CSV)), ("a.nii.gz", io.BytesIO(NIFTI)), ("b.nii.gz", io.BytesIO(NIFTI))]
    lease = _write(store, files)
    assert (lease.path / "b.nii.gz").read_bytes() == NIFTI
    assert all(not f.closed for _, f in files), "Streamlit reads its UploadedFile again: Eve must not close it"


# -- refused from the central directory, before anything is written -----------------------------------


def test_a_zip_bomb_by_ratio_is_refused_before_anything_is_written(tmp_path, bomb):
    store = _store(tmp_path)  # the defaults
    with pytest.raises(EveInputError, match=r"bomb.nii' unpacks 1,0\d\d times larger.*EVE_UPLOAD_MAX_RATIO"):
        _write(store, [("cohort.zip", bomb.open("rb"))])
    assert _nothing_written(store)


def test_a_zip_bomb_by_total_size_is_refused_before_anything_is_written(tmp_path, bomb):
    store = _store(tmp_path, upload_mb=256, ratio=10_000)
    with pytest.raises(EveInputError, match=r"unpacks to 320 MB, over Eve's limit of 256 MB.*EVE_UPLOAD_MAX_MB"):
        _write(store, [("cohort.zip", bomb.open("rb"))])
    assert _nothing_written(store)


def test_a_zip_bomb_by_entry_count_is_refused(tmp_path):
    store = _store(tmp_path, entries=50)
    many = _cohort(**{f"empty-{i}.txt": b"" for i in range(60)})
    with pytest.raises(EveInputError, match=r"63 entries, over Eve's limit of 50 \(EVE_UPLOAD_MAX_ENTRIES\)"):
        _write(store, [("cohort.zip", many)])
    assert _nothing_written(store)


@pytest.mark.parametrize(
    "name", ["../x.nii.gz", "/etc/x.nii.gz", "cohort/../../x.nii.gz", "..\\x.nii.gz", "C:/x.nii.gz"]
)
def test_a_zip_entry_outside_the_folder_is_refused(tmp_path, name):
    store = _store(tmp_path)
    with pytest.raises(EveInputError, match="points outside its folder: re-create the zip"):
        _write(store, [("cohort.zip", _zip({"features.csv": CSV, "a.nii.gz": NIFTI, name: NIFTI}, top=""))])
    assert _nothing_written(store)


def test_a_symlink_entry_is_refused(tmp_path):
    buffer = _cohort()
    with zipfile.ZipFile(buffer, "a") as archive:
        link = zipfile.ZipInfo("cohort/c.nii.gz")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
    buffer.seek(0)
    store = _store(tmp_path)
    with pytest.raises(EveInputError, match="'cohort/c.nii.gz' that is a symbolic link"):
        _write(store, [("cohort.zip", buffer)])
    assert _nothing_written(store)


def test_duplicate_names_are_refused_in_a_zip_and_among_loose_files(tmp_path):
    buffer = _cohort()
    with zipfile.ZipFile(buffer, "a") as archive, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns of the duplicate it writes
        archive.writestr("cohort/a.nii.gz", b"another a")
    buffer.seek(0)
    store = _store(tmp_path)
    with pytest.raises(EveInputError, match="two entries named 'cohort/a.nii.gz'"):
        _write(store, [("cohort.zip", buffer)])
    loose = [("features.csv", io.BytesIO(CSV)), ("a.nii.gz", io.BytesIO(NIFTI)), ("a.nii.gz", io.BytesIO(b"x"))]
    with pytest.raises(EveInputError, match="'a.nii.gz' was uploaded twice"):
        _write(store, loose)
    assert _nothing_written(store)


def test_features_csv_over_its_limit_is_refused_before_it_is_read(tmp_path):
    store = _store(tmp_path, csv_mb=0.00001)
    with pytest.raises(EveInputError, match=r"features.csv is .* over Eve's limit .*EVE_UPLOAD_MAX_CSV_MB"):
        _write(store, [("cohort.zip", _cohort())])


# -- enforced again while streaming: a lying header gets no further than it declared --------------------


def _lie_about_size(buffer: io.BytesIO, name: str, declared: int) -> io.BytesIO:
    """The zip with `name`'s uncompressed size in the central directory set to `declared`."""
    data = bytearray(buffer.getvalue())
    at = 0
    while True:
        at = data.index(b"PK\x01\x02", at)
        length = struct.unpack_from("<H", data, at + 28)[0]
        if data[at + 46 : at + 46 + length].decode() == name:
            struct.pack_into("<I", data, at + 24, declared)
            return io.BytesIO(bytes(data))
        at += 4


def test_a_zip_entry_that_lies_about_its_size_is_refused_and_nothing_half_written_is_visible(tmp_path):
    big = bytes(range(256)) * 4096  # 1 MiB that does not compress much
    honest = _zip({"features.csv": CSV, "a.nii.gz": big, "b.nii.gz": NIFTI})
    lying = _lie_about_size(honest, "cohort/a.nii.gz", 1000)  # passes every check from the directory
    store = _store(tmp_path)
    with pytest.raises(EveInputError, match=r"cohort/a.nii.gz cannot be unpacked \(Bad CRC-32.*re-create the zip"):
        _write(store, [("cohort.zip", lying)])
    assert _nothing_written(store), list(store.root.iterdir())


def test_a_loose_file_that_holds_more_than_it_declared_is_refused(tmp_path):
    class Lying(io.BytesIO):
        size = 10  # what Streamlit's UploadedFile would say; the bytes are more

    store = _store(tmp_path)
    files = [("features.csv", io.BytesIO(CSV)), ("a.nii.gz", Lying(NIFTI)), ("b.nii.gz", io.BytesIO(NIFTI))]
    with pytest.raises(EveInputError, match="a.nii.gz holds more bytes than its header declares"):
        _write(store, files)
    assert _nothing_written(store)


# -- the quota: a session's, the server's, least recently used evicted ----------------------------------


def _other(i: int) -> list[tuple[str, io.BytesIO]]:
    csv = f"file,age\na.nii.gz,{60 + i}\nb.nii.gz,70\n".encode()
    return [("cohort.zip", _zip({"features.csv": csv, "a.nii.gz": NIFTI, "b.nii.gz": NIFTI}))]


def test_the_quota_evicts_the_least_recently_used_folder_no_session_holds_and_names_the_limit_when_full(tmp_path):
    one = _write(_store(tmp_path / "probe"), _other(0))
    size = sum(p.stat().st_size for p in one.path.rglob("*") if p.is_file())
    store = _store(tmp_path, quota_mb=3.5 * size / MB)  # room for three uploads
    held = _write(store, _other(1))  # a live session holds it
    old = _write(store, _other(2)).unit  # its lease dropped at once: idle
    newer = _write(store, _other(3)).unit
    os.utime(old, (1, 1))  # last used long ago
    gc.collect()
    assert not store.pinned(old) and not store.pinned(newer) and store.pinned(held.unit)
    fourth = _write(store, _other(4))
    assert not old.exists(), "the least recently used idle folder goes first"
    assert newer.exists() and held.path.exists() and fourth.path.exists()
    fifth = _write(store, _other(5))  # evicts `newer`, the only idle one
    assert not newer.exists()
    with pytest.raises(EveInputError, match=r"upload space is full: .*\(EVE_UPLOAD_QUOTA_MB\).*try again"):
        _write(store, _other(6))  # three leases live: nothing to evict
    assert held.path.exists() and fourth.path.exists() and fifth.path.exists()
    del fourth
    gc.collect()
    assert _write(store, _other(6)).path.exists(), "a dropped lease lets its folder go"


def test_a_session_over_its_quota_is_refused_naming_the_limit(tmp_path):
    store = _store(tmp_path)
    held = _write(store, _other(1))
    size = sum(p.stat().st_size for p in held.path.rglob("*") if p.is_file())
    small = _store(tmp_path, session_mb=1.5 * size / MB)
    with pytest.raises(EveInputError, match=r"your session already holds .*EVE_UPLOAD_SESSION_QUOTA_MB.*: remove an"):
        _write(small, _other(2), held=[held])
    assert _write(small, _other(2)).path.exists(), "alone it fits"


def test_generators_trained_on_an_upload_count_in_its_folder(tmp_path):
    store = _store(tmp_path)
    lease = _write(store, _other(1))
    before = store.holds([lease])
    (lease.path / "eve-generators").mkdir()
    (lease.path / "eve-generators" / "g.safetensors").write_bytes(bytes(5000))
    assert store.holds([lease]) == before + 5000


def test_limits_come_from_the_environment_and_a_bad_value_names_its_variable():
    limits = UploadLimits.from_env({"EVE_UPLOAD_QUOTA_MB": "100", "EVE_UPLOAD_MAX_ENTRIES": "7"})
    assert limits.quota_mb == 100 and limits.entries == 7 and limits.upload_mb == UploadLimits().upload_mb
    assert set(ENV) == {f for f in UploadLimits.__dataclass_fields__}
    with pytest.raises(EveInputError, match="EVE_UPLOAD_MAX_RATIO='lots' is not a positive number: set it"):
        UploadLimits.from_env({"EVE_UPLOAD_MAX_RATIO": "lots"})


def test_an_empty_or_oversized_model_is_refused_before_it_is_written():
    with pytest.raises(EveInputError, match="model.pt is empty"):
        plan_model("model.pt", io.BytesIO(b""), UploadLimits())
    with pytest.raises(EveInputError, match=r"over Eve's limit of 1 MB.*EVE_UPLOAD_MAX_MB"):
        plan_model("model.pt", io.BytesIO(bytes(2 * MB)), UploadLimits(upload_mb=1))


# -- in the app: once per upload, and the session keeps only what it uses --------------------------------


@pytest.fixture(scope="module", autouse=True)
def _clean_uploads():
    yield
    import shutil

    from components import uploads

    shutil.rmtree(uploads.UPLOAD_ROOT, ignore_errors=True)


class _Reads:
    """Counts reads of Streamlit's UploadedFile objects by anything but Streamlit itself (its test
    harness reads them to carry the upload from one run to the next)."""

    METHODS = ("read", "read1", "readinto", "readinto1", "getvalue", "getbuffer", "readline", "readlines")

    def __init__(self, monkeypatch):
        import sys

        from streamlit.runtime.uploaded_file_manager import UploadedFile

        self.count = 0
        for name in self.METHODS:
            original = getattr(io.BytesIO, name)

            def counted(obj, *args, _original=original, **kwargs):
                if not sys._getframe(1).f_globals.get("__name__", "").startswith("streamlit"):
                    self.count += 1
                return _original(obj, *args, **kwargs)

            monkeypatch.setattr(UploadedFile, name, counted, raising=False)


def _counting_writes(monkeypatch) -> list:
    from components import uploads

    calls = []
    write = uploads.STORE.write

    def counted(plan, held=()):
        calls.append(plan.folder or plan.entries[0].path.name)
        return write(plan, held)

    monkeypatch.setattr(uploads.STORE, "write", counted)
    return calls


def test_a_rerun_touches_no_uploaded_byte_and_a_replaced_upload_is_dropped(monkeypatch):
    from components import uploads

    writes, reads = _counting_writes(monkeypatch), _Reads(monkeypatch)
    at = _upload_app()
    first = ("features.csv", CSV, "text/csv"), ("a.nii.gz", NIFTI, "application/gzip"), ("b.nii.gz", NIFTI, "x")
    at.sidebar.file_uploader(key=state.DATASET_UPLOAD).set_value(list(first)).run()
    _no_exception(at)
    assert not at.sidebar.error, [e.value for e in at.sidebar.error]
    folder = at.session_state[state.USER_DATASET]
    assert writes == ["your-folder"] and reads.count > 0
    reads.count = 0
    for page in ("app_pages/overview.py", "app_pages/browse.py", "app_pages/overview.py"):
        at.switch_page(page).run()
        _no_exception(at)
    at.run()
    assert writes == ["your-folder"], "the upload was written again on a rerun"
    assert reads.count == 0, f"{reads.count} reads of the uploaded files on reruns"
    assert at.session_state[state.USER_DATASET] == folder
    held = at.session_state[state.UPLOADS][state.DATASET_UPLOAD]
    (old,) = [w.lease for w in held.values()]
    unit = old.unit
    del old, held
    # replaced: the new upload is written once, the old mapping goes, and nothing pins its folder
    other = ("features.csv", b"file,age\na.nii.gz,1\nb.nii.gz,2\n", "text/csv"), *first[1:]
    at.sidebar.file_uploader(key=state.DATASET_UPLOAD).set_value(list(other)).run()
    assert len(writes) == 2 and at.session_state[state.USER_DATASET] != folder
    assert len(at.session_state[state.UPLOADS][state.DATASET_UPLOAD]) == 1
    gc.collect()
    assert not uploads.STORE.pinned(unit), "the replaced upload's folder is free to age out"
    # removed: the folder in use stays (and stays pinned), the uploader's entry is gone
    at.sidebar.file_uploader(key=state.DATASET_UPLOAD).set_value(None).run()
    _no_exception(at)
    held = at.session_state[state.UPLOADS][state.DATASET_UPLOAD]
    assert [str(w.lease.path) for w in held.values()] == [at.session_state[state.USER_DATASET]]


def test_a_refused_upload_is_refused_once_and_its_message_shown_on_every_rerun(monkeypatch):
    writes = _counting_writes(monkeypatch)
    at = _upload_app()
    bad = [("features.csv", b"file,age\nc.nii.gz,1\n", "text/csv"), ("a.nii.gz", NIFTI, "application/gzip")]
    at.sidebar.file_uploader(key=state.DATASET_UPLOAD).set_value(bad).run()
    at.run()
    at.run()
    assert writes == [], "refused while planned: nothing was written"
    assert "which was not uploaded" in " ".join(e.value for e in at.sidebar.error)
    written = list(at.session_state[state.UPLOADS][state.DATASET_UPLOAD].values())
    assert len(written) == 1 and written[0].error.__traceback__ is None, "no traceback keeps the run alive"


def test_an_uploaded_model_is_written_once(monkeypatch):
    import torch
    from test_app import _MeanIntensity, _model_upload_app, _torchscript

    writes = _counting_writes(monkeypatch)
    at = _model_upload_app()
    at.sidebar.file_uploader(key=state.MODEL_UPLOAD).set_value(
        ("my model.pt", _torchscript(_MeanIntensity()), "application/octet-stream")
    ).run()
    at.run()
    _no_exception(at)
    assert writes == ["my-model.pt"]
    path = Path(at.session_state[state.USER_MODEL].path)
    assert path.name == "my-model.pt" and torch.jit.load(str(path)) is not None


# -- in a real server: issue 37's "done when" ---------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.slow
def test_a_150_mb_upload_and_12_page_views_leave_the_server_at_most_300_mb_larger(tmp_path):
    """45 copies of the 1 mm Colin27 T1 (~150 MB zipped) dropped on the uploader in Chromium, then 12 page
    views: a rerun reads none of the upload, so the views add at most 300 MB (the browse page's volume, the
    bounded caches) at their peak and after; the upload itself is Streamlit's to hold while the session
    lives (`benchmarks/bench_upload_memory.py` prints the numbers and what holds them)."""
    from benchmarks.bench_cohort_1mm import COLIN
    from benchmarks.bench_upload_memory import cohort_zip, measure
    from benchmarks.browser import CHROMIUM, start_server

    if not Path(CHROMIUM).exists() or not COLIN.exists():
        pytest.skip("needs Debian's chromium and mricron-data (make test installs them)")
    upload = cohort_zip(tmp_path, 45)
    with open(tmp_path / "streamlit.log", "w") as log:
        proc, url = start_server(log)
        try:
            result = measure(url, proc.pid, upload, 45, views=12, after_s=0, expire=False, trim=False)
        finally:
            proc.terminate()
            proc.wait(10)
    assert not result["errors"], result["errors"]
    assert result["upload_mb"] >= 100
    assert result["growth_after_upload_mb"] <= 300, result
    assert result["rss_peak_during_views_mb"] - result["rss_after_upload_mb"] <= 300, result
