"""Fuzzing every door a user's file comes through (issue 34, item 1).

NIfTI-1/-2 volumes, features.csv tables, zips, TorchScript models, JSON cards and MONAI bundles are
generated and mutated by hypothesis strategies (`niftis`, `feature_tables`, `zips`, `torchscripts`,
`cards`, `bundles`, `cli_calls`) and fed to `load_dataset` and `Dataset.model_inputs`, the upload path
(`engine.data.uploads`: `plan_dataset`, `UploadStore.write`), the model zoo (`load_torchscript`, `load`,
`forward`), the card and bundle readers, the CLI (`engine.cli.main.main`) and the sidebar's uploaders.

Each input ends one of four ways (`Outcome.status`):

* ``accepted`` — and then checked: the rows, shapes and values Eve reads back hold its invariants (a
  model's outputs are (B, K) float32 on the CPU; a written upload holds exactly the bytes it was given);
* ``refused`` — Eve's own error (`EveInputError` or a subclass; the CLI: exit status 2 and an ``error:``
  line);
* ``crashed`` — any other exception reached the caller;
* ``wrong`` — accepted, and an invariant does not hold.

The tests draw a bounded number of examples (`derandomize`, so every run draws the same; the whole file
in about a minute on 2 cores) and require no ``crashed`` and no ``wrong``. `benchmarks/fuzz_campaign.py`
runs the same strategies and runners longer, with random seeds, and writes what it tried and how each
input ended to `benchmarks/results/fuzz.json`. Each crash the fuzzing found is fixed where it happened,
with a regression test at the end of this file named for the input.

The sidebar's uploaders are driven through Streamlit's app test harness (`test_app`'s helpers): those
tests are marked ``app`` one by one.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import gzip
import io
import json
import shutil
import stat
import struct
import sys
import traceback
import uuid
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.cards import ModelRef, UserCard, model_ref
from engine.cli.main import main as cli_main
from engine.data.bundle import bundle_inputs, check_allowed, read_bundle
from engine.data.dataset import load_dataset
from engine.data.slicing import SliceSpec
from engine.data.uploads import UploadLimits, UploadStore, claimed_voxels, plan_dataset
from engine.errors import EveInputError, reason
from engine.models.zoo import forward, load, load_torchscript

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from test_bundle import write_bundle  # noqa: E402
from test_uploads import _lie_about_size  # noqa: E402

# the upload limits the fuzzing runs under: small, so a bomb costs kilobytes to build
FUZZ_LIMITS = UploadLimits(
    upload_mb=8, entries=50, ratio=200, ratio_from_mb=0.5, csv_mb=4, session_mb=64, quota_mb=256, volume_mvoxels=1
)
DIRECT_MAX_VOXELS = 2**22  # the direct door (load_dataset on a folder: the CLI on your own files) trusts a
# header's claimed size; volumes claiming more are only header-checked there (the upload door refuses them)
SPECS = (  # the model inputs read from each accepted folder
    SliceSpec("axial", None, 16, "raw", input="slice", orientation="stored"),
    SliceSpec("coronal", None, 16, "p99", input="slice", orientation="ras"),
    SliceSpec(input="volume", size=8, intensity="zscore", orientation="ras"),
    SliceSpec("axial", "ventricles", 16, "minmax"),
)
MODEL_SPEC = SliceSpec("axial", None, 16, "raw", input="slice", orientation="stored")
EXAMPLES = {"nifti": 40, "csv": 50, "zip": 40, "torchscript": 30, "card": 80, "bundle": 15, "cli": 12}


# -- outcomes ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One generated input: its door (`kind`), what was generated in words (`label`) and the input."""

    kind: str
    label: str
    payload: Any = field(repr=False, compare=False)


@dataclass(frozen=True)
class Outcome:
    status: str  # "accepted" | "refused" | "crashed" | "wrong"
    detail: str = ""


class Wrong(AssertionError):
    """An accepted input whose result breaks an invariant."""


def crash_detail(exc: BaseException) -> str:
    """The type, text and innermost frame of an exception that is not Eve's own."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    return f"{type(exc).__name__}: {reason(exc)}{where}"


def attempt(run) -> Outcome:
    """`run()`'s outcome: accepted (it returned), refused (Eve's error), wrong or crashed."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run()
    except EveInputError as exc:
        return Outcome("refused", str(exc)[:300])
    except Wrong as exc:
        return Outcome("wrong", str(exc)[:300])
    except Exception as exc:  # a crash: what the fuzzing looks for
        return Outcome("crashed", crash_detail(exc))
    return Outcome("accepted")


def fresh(root: Path) -> Path:
    folder = root / uuid.uuid4().hex[:12]
    folder.mkdir(parents=True)
    return folder


def check(condition: bool, what: str) -> None:
    if not condition:
        raise Wrong(what)


# -- 1. NIfTI-1/-2 volumes -------------------------------------------------------------------------------

NIFTI_DTYPES = ("uint8", "int16", "int32", "float32", "float64", "complex64")
AFFINES = {
    "identity": np.eye(4),
    "scaled": np.diag([2.0, 2.0, 3.0, 1.0]),
    "flipped": np.diag([-1.0, 1.0, 1.0, 1.0]),
    "oblique": np.array([[0.7, -0.7, 0, 0], [0.7, 0.7, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]]),
    "mni-2mm": np.array([[-2.0, 0, 0, 90], [0, 2, 0, -126], [0, 0, 2, -72], [0, 0, 0, 1]]),
    "zero": np.zeros((4, 4)),
    "nan": np.full((4, 4), np.nan),
    "inf": np.diag([np.inf, 1.0, 1.0, 1.0]),
    "singular": np.ones((4, 4)),
    "huge": np.diag([1e30, 1e30, 1e30, 1.0]),
}
# NIfTI-1 / NIfTI-2 byte offsets of the fields the mutations write
DIM_AT = {1: (40, "<8h"), 2: (16, "<8q")}
DATATYPE_AT = {1: 70, 2: 12}
VOX_OFFSET_AT = {1: (108, "<f"), 2: (168, "<d")}


def nifti_bytes(
    version: int,
    shape: tuple[int, ...],
    dtype: str,
    values: str,
    affine: str,
    sform: int,
    qform: int,
    slope: float | None,
    inter: float | None,
    big_endian: bool,
) -> bytes:
    """An uncompressed NIfTI file as nibabel writes it, then its xform fields set to anything."""
    rng = np.random.default_rng(0)
    data = rng.random(shape) * 100
    if values == "zeros":
        data = np.zeros(shape)
    elif values in ("nan", "inf"):
        data.flat[0] = np.nan if values == "nan" else np.inf
    elif values == "huge":
        data = data * 1e300
    with np.errstate(all="ignore"):
        array = data.astype(dtype)
    image_class, header_class = (
        (nib.Nifti1Image, nib.Nifti1Header) if version == 1 else (nib.Nifti2Image, nib.Nifti2Header)
    )
    header = header_class(endianness=">" if big_endian else "<")
    image = image_class(array, np.eye(4), header)
    raw = bytearray(image.to_bytes())
    header = image.header  # to_bytes derived the xforms from the affine: now the fields as drawn
    header["srow_x"], header["srow_y"], header["srow_z"] = AFFINES[affine][:3]
    header["sform_code"], header["qform_code"] = sform, qform
    if slope is not None:  # any value, 0 and Inf included (nibabel's setter refuses those)
        header["scl_slope"], header["scl_inter"] = slope, inter
    block = header.binaryblock
    raw[: len(block)] = block
    return bytes(raw)


@st.composite
def niftis(draw) -> Case:
    """A NIfTI volume: version, dims, datatype, scaling, xforms and byte order drawn, then maybe mutated
    (truncated, its dims/datatype/offset fields overwritten, header bytes flipped, huge claimed dims,
    gzipped and the stream corrupted)."""
    version = draw(st.sampled_from([1, 2]))
    ndim = draw(st.sampled_from([2, 3, 3, 3, 4]))
    shape = tuple(draw(st.integers(1, 12)) for _ in range(ndim))
    dtype = draw(st.sampled_from(NIFTI_DTYPES))
    values = draw(st.sampled_from(["random", "random", "zeros", "nan", "inf", "huge"]))
    affine = draw(st.sampled_from(list(AFFINES)))
    sform, qform = draw(st.integers(-1, 5)), draw(st.integers(-1, 5))
    scaling = draw(
        st.sampled_from([None, (0.0, 0.0), (2.5, 10.0), (-1.0, 0.0), (np.nan, 0.0), (np.inf, 0.0), (1e38, 1e38)])
    )
    big_endian = draw(st.booleans())
    mutation = draw(
        st.sampled_from(["none", "none", "none", "truncate", "claim-huge", "dims", "datatype", "vox_offset", "flip"])
    )
    gz = draw(st.booleans())
    gz_mutation = draw(st.sampled_from(["none", "none", "truncate", "flip"])) if gz else "none"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            raw = bytearray(
                nifti_bytes(version, shape, dtype, values, affine, sform, qform, *(scaling or (None, None)), big_endian)
            )
        except Exception:  # a combination nibabel will not write (complex data with a scaled header): float32
            dtype = "float32"
            raw = bytearray(nifti_bytes(version, shape, dtype, values, affine, sform, qform, None, None, big_endian))
    order = ">" if big_endian else "<"
    at, fmt = DIM_AT[version]
    fmt = order + fmt[1:]
    if mutation == "truncate":
        raw = raw[: draw(st.integers(0, len(raw) - 1))]
    elif mutation == "claim-huge":
        sides = draw(st.lists(st.sampled_from([1, 255, 1024, 4096, 32767]), min_size=3, max_size=3))
        struct.pack_into(fmt, raw, at, 3, *sides, 1, 1, 1, 1)
    elif mutation == "dims":
        dims = draw(
            st.lists(
                st.integers(-40000, 40000) if version == 1 else st.integers(-(2**40), 2**40), min_size=8, max_size=8
            )
        )
        lo, hi = (-(2**15), 2**15 - 1) if version == 1 else (-(2**63), 2**63 - 1)
        struct.pack_into(fmt, raw, at, *[min(max(d, lo), hi) for d in dims])
    elif mutation == "datatype":
        code = draw(st.sampled_from([0, 1, 128, 1536, 1792, 2048, 2304, 9999, -5]))
        struct.pack_into(order + "h", raw, DATATYPE_AT[version], code)
    elif mutation == "vox_offset":
        offset_at, offset_fmt = VOX_OFFSET_AT[version]
        offset = draw(st.sampled_from([0.0, 1.0, -5.0, 351.0, 1e30, float("nan")]))
        struct.pack_into(order + offset_fmt[1:], raw, offset_at, offset)
    elif mutation == "flip":
        for _ in range(draw(st.integers(1, 8))):
            raw[draw(st.integers(0, min(len(raw), 540) - 1))] ^= draw(st.integers(1, 255))
    claimed = claimed_voxels(bytes(raw[:540]))
    data = bytes(raw)
    if gz:
        data = gzip.compress(data, mtime=0)
        if gz_mutation == "truncate":
            data = data[: draw(st.integers(0, len(data) - 1))]
        elif gz_mutation == "flip":
            flipped = bytearray(data)
            flipped[draw(st.integers(0, len(flipped) - 1))] ^= draw(st.integers(1, 255))
            data = bytes(flipped)
    parts = [
        f"nifti{version}",
        f"{ndim}d",
        dtype,
        "big-endian" if big_endian else "little-endian",
        f"affine {affine}",
        f"values {values}",
        f"mutation {mutation}",
        f"gzip {gz_mutation}" if gz else "not gzipped",
    ]
    label = " | ".join(parts)
    return Case("nifti", label, {"bytes": data, "gz": gz, "claimed": claimed, "upload": draw(st.booleans())})


@functools.lru_cache(maxsize=1)
def good_volume() -> bytes:
    image = nib.Nifti1Image(np.random.default_rng(1).random((10, 10, 10), dtype=np.float32), np.eye(4))
    return gzip.compress(image.to_bytes(), mtime=0)


def check_inputs(dataset, root: Path) -> None:
    """Every spec's model inputs: refused, or (N, 1, S, S[, S]) float32 and finite."""
    for spec in SPECS:
        try:
            x = dataset.model_inputs(spec)
        except EveInputError:
            continue
        check(tuple(x.shape) == (len(dataset), *spec.shape), f"model inputs {tuple(x.shape)} for {spec}")
        check(x.dtype == torch.float32 and bool(torch.isfinite(x).all()), f"non-finite model inputs for {spec}")


def check_dataset(dataset, n_rows: int | None = None) -> None:
    """What an accepted folder must be: its rows, unique subjects, finite numeric features, 2D or 3D shapes."""
    if n_rows is not None:
        check(len(dataset) == n_rows, f"{len(dataset)} rows loaded of {n_rows}")
    check(dataset.table["subject"].is_unique, "subjects repeat")
    for name in dataset.numeric_features:
        check(np.isfinite(dataset.table[name].to_numpy(dtype=float)).all(), f"feature {name} not finite")
    check(all(len(s) in (2, 3) and min(s) >= 2 for s in dataset.shapes), f"shapes {dataset.shapes[:3]}")


def run_nifti(case: Case, root: Path) -> Outcome:
    """The volume beside a good one: through the upload door (a zip planned, written, loaded), or the
    direct one (`load_dataset` on a folder), then every spec's model inputs."""
    volume, name = case.payload["bytes"], "v.nii.gz" if case.payload["gz"] else "v.nii"
    csv_text = f"file,age\n{name},61\ngood.nii.gz,72\n"
    folder = fresh(root)

    def run():
        if case.payload["upload"]:
            buffer = io.BytesIO()
            with zipfile.ZipFile(buffer, "w") as archive:
                archive.writestr("cohort/features.csv", csv_text)
                archive.writestr(f"cohort/{name}", volume)
                archive.writestr("cohort/good.nii.gz", good_volume())
            buffer.seek(0)
            store = UploadStore(folder / "store", FUZZ_LIMITS)
            path = store.write(plan_dataset([("cohort.zip", buffer)], FUZZ_LIMITS)).path
        else:
            path = folder / "cohort"
            path.mkdir()
            (path / name).write_bytes(volume)
            (path / "good.nii.gz").write_bytes(good_volume())
            (path / "features.csv").write_text(csv_text)
        dataset = load_dataset(path)
        check_dataset(dataset, 2)
        claimed = case.payload["claimed"]
        if case.payload["upload"] or claimed is None or claimed <= DIRECT_MAX_VOXELS:
            check_inputs(dataset, root)

    try:
        return attempt(run)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# -- 2. features.csv ----------------------------------------------------------------------------------------

COLUMN_NAMES = [
    "age",
    " age",
    "age ",
    "sex",
    "label",
    "label_ad",
    "subject",
    "split",
    "",
    "âge",
    "file",
    " file",
    "a,b",
    'q"uote',
    "1",
    "x" * 300,
]
CELLS = st.one_of(
    st.integers(-(10**6), 10**6).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(
        [
            "",
            "nan",
            "NaN",
            "inf",
            "-Infinity",
            "1e400",
            "1e-400",
            "0x10",
            "F",
            "M",
            " 3 ",
            "1,5",
            "NULL",
            "\x00",
            "é",
            "9" * 400,
        ]
    ),
    st.text(max_size=8),
)
FILE_CELLS = [
    "a.nii.gz",
    "b.nii.gz",
    "sub/a.nii.gz",
    "missing.nii.gz",
    "../a.nii.gz",
    "/etc/passwd",
    "",
    " a.nii.gz",
    "A.NII.GZ",
    "sub\\a.nii.gz",
    "a.txt",
]


@st.composite
def feature_tables(draw) -> Case:
    """A features.csv: encoding (and BOM), separator, quoting, line ends, duplicated/missing/odd columns,
    NaN/Inf/huge/text cells, ragged rows; or one of 100,000 rows."""
    if draw(st.integers(0, 40)) == 0:
        rows = 100_000
        bad = draw(st.booleans())
        lines = ["file,subject,age"] + [f"{'ab'[i % 2]}.nii.gz,s{i},{i}" for i in range(rows)]
        if bad:
            lines[-1] = lines[-1].rsplit(",", 1)[0] + ",nan"
        return Case(
            "csv",
            f"100,000 rows | {'last one NaN' if bad else 'all good'}",
            {"bytes": "\n".join(lines).encode(), "rows": rows},
        )
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8-sig", "utf-16", "latin-1", "cp1252"]))
    separator = draw(st.sampled_from([",", ",", ",", ";", "\t", "|"]))
    quoting = draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL, csv.QUOTE_NONNUMERIC]))
    ending = draw(st.sampled_from(["\n", "\n", "\r\n", "\r"]))
    names = draw(st.lists(st.sampled_from(COLUMN_NAMES), max_size=4))
    columns = ([] if draw(st.integers(0, 9)) == 0 else ["file"]) + names
    n = draw(st.integers(0, 6))
    rows = []
    for i in range(n):
        row = []
        for column in columns:
            if column == "file":
                row.append(FILE_CELLS[i % 3] if draw(st.integers(0, 4)) else draw(st.sampled_from(FILE_CELLS)))
            else:
                row.append(draw(CELLS))
        if draw(st.integers(0, 9)) == 0:
            row = row[: draw(st.integers(0, len(row)))] + draw(st.lists(CELLS, max_size=2))  # ragged
        rows.append(row)
    text = io.StringIO()
    writer = csv.writer(text, delimiter=separator, quoting=quoting, lineterminator=ending)
    try:
        writer.writerows([columns, *rows])
    except csv.Error:
        writer = csv.writer(text, delimiter=separator, quoting=csv.QUOTE_ALL, lineterminator=ending)
        writer.writerows([columns, *rows])
    data = text.getvalue().encode(encoding, errors="replace")
    odd = sorted({repr(c[:8]) for c in columns if c not in ("file", "age", "sex", "label", "label_ad")})
    parts = [encoding, f"separator {separator!r}", f"{n} rows", f"{len(columns)} columns", *odd[:3]]
    label = " | ".join(parts + ([] if "file" in columns else ["no file column"]))
    return Case("csv", label, {"bytes": data, "rows": None})


def run_csv(case: Case, root: Path) -> Outcome:
    """The table in a folder beside a.nii.gz, b.nii.gz and sub/a.nii.gz: `load_dataset`, then the upload
    door with the same files loose (planned, written, loaded)."""
    folder = fresh(root)
    data = case.payload["bytes"]

    def run():
        (folder / "sub").mkdir()
        for name in ("a.nii.gz", "b.nii.gz", "sub/a.nii.gz"):
            (folder / name).write_bytes(good_volume())
        (folder / "features.csv").write_bytes(data)
        if case.payload["rows"] is None:  # 100,000 rows: planned only (their 100,000 header reads: the campaign's)
            check_dataset(load_dataset(folder))
        files = [
            ("features.csv", io.BytesIO(data)),
            ("a.nii.gz", io.BytesIO(good_volume())),
            ("b.nii.gz", io.BytesIO(good_volume())),
        ]
        plan = plan_dataset(files, FUZZ_LIMITS)
        if case.payload["rows"] is None:
            lease = UploadStore(folder / "store", FUZZ_LIMITS).write(plan)
            check((lease.path / "features.csv").read_bytes() == data, "features.csv written changed")
            check_dataset(load_dataset(lease.path))

    try:
        return attempt(run)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# -- 3. zips ----------------------------------------------------------------------------------------------

ENTRY_NAMES = [
    "features.csv",
    "a.nii.gz",
    "b.nii.gz",
    "sub/a.nii.gz",
    "../a.nii.gz",
    "/abs/a.nii.gz",
    "C:/a.nii.gz",
    "..\\a.nii.gz",
    "a" * 300 + ".nii.gz",
    "/".join(["d"] * 300) + "/a.nii.gz",
    "__MACOSX/a.nii.gz",
    "dir/",
    "inner.zip",
    "eve-generators/g.json",
    "notes.txt",
    "./a.nii.gz",
    "a.nii.gz/b.nii.gz",
]
CONTENTS = ["nifti", "nifti", "csv", "zeros-2mb", "zeros-small", "random", "empty", "zip"]
COMPRESSIONS = [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA]


def entry_bytes(content: str) -> bytes:
    if content == "nifti":
        return good_volume()
    if content == "csv":
        return b"file,age\na.nii.gz,1\nb.nii.gz,2\n"
    if content == "zeros-2mb":
        return bytes(2 * 2**20)
    if content == "zeros-small":
        return bytes(1000)
    if content == "random":
        return np.random.default_rng(2).bytes(3000)
    if content == "zip":
        return zip_bytes([("features.csv", "csv", False, zipfile.ZIP_DEFLATED), ("a.nii.gz", "nifti", False, 0)], "")
    return b""


def zip_bytes(entries, top: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names
        for name, content, link, compression in entries:
            info = zipfile.ZipInfo(f"{top}/{name}" if top else name)
            info.compress_type = compression
            if link:
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, b"/etc/passwd" if link else entry_bytes(content))
    return buffer.getvalue()


@st.composite
def zips(draw) -> Case:
    """A zip upload: entries named anything (traversal, absolute, drive letters, too long, nested zips,
    directories, duplicates, symlinks), bombs by ratio (zeros) and by entry count, headers that lie about
    an entry's size, several compressions; sometimes with a second upload beside it."""
    base = [("features.csv", "csv"), ("a.nii.gz", "nifti"), ("b.nii.gz", "nifti")]
    extra = draw(st.lists(st.tuples(st.sampled_from(ENTRY_NAMES), st.sampled_from(CONTENTS)), max_size=4))
    entries = [(n, c, draw(st.integers(0, 15)) == 0, draw(st.sampled_from(COMPRESSIONS))) for n, c in base + extra]
    count = draw(st.sampled_from([0, 0, 0, 10, 60]))
    entries += [(f"pad/{i}.txt", "empty", False, zipfile.ZIP_STORED) for i in range(count)]
    if draw(st.integers(0, 5)) == 0:
        entries = entries[:1] + draw(st.permutations(entries[1:]))
    top = draw(st.sampled_from(["cohort", "cohort", ""]))
    data = zip_bytes(entries, top)
    lie = draw(st.integers(0, 6)) == 0
    if lie:
        data = _lie_about_size(io.BytesIO(data), f"{top}/a.nii.gz" if top else "a.nii.gz", 100).getvalue()
    if draw(st.integers(0, 8)) == 0:
        cut = bytearray(data)
        cut[draw(st.integers(0, len(cut) - 1))] ^= 0xFF
        data = bytes(cut)
    second = draw(st.sampled_from([None, None, None, "features.csv", "a.nii.gz", "other.zip"]))
    tags = sorted({f"entry {n[:14]!r}" for n, _ in extra} | {f"content {c}" for _, c in extra})
    flags = [
        "lying size" if lie else "",
        f"padded {count}" if count else "",
        "a link" if any(e[2] for e in entries) else "",
        f"and {second}" if second else "",
        "no top folder" if not top else "",
    ]
    label = " | ".join([f"{len(entries)} entries", *[f for f in flags if f], *tags])
    return Case("zip", label, {"bytes": data, "second": second})


def run_zip(case: Case, root: Path) -> Outcome:
    """Planned, written, loaded; a written upload must hold exactly the bytes its entries held, inside its
    folder, with no link."""
    folder = fresh(root)

    def run():
        files = [("upload.zip", io.BytesIO(case.payload["bytes"]))]
        second = case.payload["second"]
        if second:
            content = "zip" if second.endswith(".zip") else "csv" if second.endswith(".csv") else "nifti"
            files.append((second, io.BytesIO(entry_bytes(content))))
        store = UploadStore(folder / "store", FUZZ_LIMITS)
        plan = plan_dataset(files, FUZZ_LIMITS)
        lease = store.write(plan)
        for entry in plan.entries:
            written = lease.path / entry.path
            check(written.resolve().is_relative_to(store.root.resolve()), f"{entry.path} written outside the store")
            check(not written.is_symlink(), f"{entry.path} written as a link")
            with entry.open() as source:
                check(written.read_bytes() == source.read(), f"{entry.path} written with other bytes")
        check_dataset(load_dataset(lease.path))

    try:
        return attempt(run)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# -- 4. TorchScript models ----------------------------------------------------------------------------------


class Mean(torch.nn.Module):
    def forward(self, x):
        return x.mean((1, 2, 3))  # (B,)


class ThreeOutputs(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(1, 3)

    def forward(self, x):
        return self.linear(x.mean((2, 3)))  # (B, 3)


class ReturnsTuple(torch.nn.Module):
    def forward(self, x):
        return x.mean((1, 2, 3)), x.amax((1, 2, 3))


class ReturnsDict(torch.nn.Module):
    def forward(self, x) -> dict[str, torch.Tensor]:
        return {"y": x.mean((1, 2, 3))}


class ReturnsList(torch.nn.Module):
    def forward(self, x) -> list[torch.Tensor]:
        return [x.mean((1, 2, 3))]


class ReturnsMap(torch.nn.Module):
    def forward(self, x):
        return x[:, 0, :2, :2]  # (B, 2, 2)


class ReturnsScalar(torch.nn.Module):
    def forward(self, x):
        return x.mean()


class ReturnsLong(torch.nn.Module):
    def forward(self, x):
        return (x.mean((1, 2, 3)) * 10).long()


class ReturnsDouble(torch.nn.Module):
    def forward(self, x):
        return x.mean((1, 2, 3)).double()


class ReturnsNaN(torch.nn.Module):
    def forward(self, x):
        return x.mean((1, 2, 3)) * float("nan")


class NaNOnRealImages(torch.nn.Module):
    def forward(self, x):  # finite on the check's batch in [0, 1], NaN on images brighter than that
        return torch.where(x.amax((1, 2, 3)) > 1.0, torch.full_like(x[:, 0, 0, 0], float("nan")), x.mean((1, 2, 3)))


class OnMeta(torch.nn.Module):
    def forward(self, x):
        return torch.zeros(x.shape[0], 2, device="meta")


class HugeExpand(torch.nn.Module):
    def forward(self, x):
        return x.mean((1, 2, 3)).unsqueeze(1).expand(x.shape[0], 1 << 36)  # 2^36 outputs a row, held in 4 bytes


class ManyOutputs(torch.nn.Module):
    def forward(self, x):
        return x.mean((1, 2, 3)).unsqueeze(1).repeat(1, 20000)


class NoOutputs(torch.nn.Module):
    def forward(self, x):
        return torch.zeros(x.shape[0], 0)


class Raises(torch.nn.Module):
    def forward(self, x):
        if x.shape[0] > 0:
            raise RuntimeError("boom")
        return x.mean((1, 2, 3))


class Sleeps(torch.nn.Module):
    """Busy for about `n` loop turns (TorchScript has no sleep): ~4 s here for the default."""

    def __init__(self, n: int = 1_000_000):
        super().__init__()
        self.n = n

    def forward(self, x):
        y = x.mean((1, 2, 3))
        for _ in range(self.n):
            y = y + 0.0
        return y


class BatchDependent(torch.nn.Module):
    def forward(self, x):
        return x.mean((1, 2, 3)) - x.mean()  # each image's output depends on the others


class Inconsistent(torch.nn.Module):
    def forward(self, x):
        if x.shape[0] == 1:
            return torch.zeros(3)
        return x.mean((2, 3))


class WantsVolumes(torch.nn.Module):
    def forward(self, x):
        return x.mean((1, 2, 3, 4))


class WantsThreeChannels(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 1, 3)

    def forward(self, x):
        return self.conv(x).mean((1, 2, 3))


class OnCuda(torch.nn.Module):
    def forward(self, x):
        return x.mean((1, 2, 3)).to("cuda")


MODELS = (
    Mean,
    ThreeOutputs,
    ReturnsTuple,
    ReturnsDict,
    ReturnsList,
    ReturnsMap,
    ReturnsScalar,
    ReturnsLong,
    ReturnsDouble,
    ReturnsNaN,
    NaNOnRealImages,
    OnMeta,
    HugeExpand,
    ManyOutputs,
    NoOutputs,
    Raises,
    Sleeps,
    BatchDependent,
    Inconsistent,
    WantsVolumes,
    WantsThreeChannels,
    OnCuda,
)


@functools.cache
def scripted(model: type) -> bytes:
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(model().eval()), buffer)
    return buffer.getvalue()


@st.composite
def torchscripts(draw) -> Case:
    """A TorchScript file: one of `MODELS` (wrong signatures, NaN outputs, outputs on 'meta' or cuda,
    huge outputs, models that raise or take seconds), maybe with bytes flipped, cut or appended; or not
    TorchScript at all (a pickle, random bytes, nothing)."""
    source = draw(st.sampled_from(["model"] * 6 + ["pickle", "random", "empty"]))
    if source == "pickle":
        buffer = io.BytesIO()
        torch.save(Mean().state_dict(), buffer)
        return Case("torchscript", "a pickled state_dict", {"bytes": buffer.getvalue(), "names": None})
    if source in ("random", "empty"):
        data = b"" if source == "empty" else draw(st.binary(min_size=1, max_size=256))
        return Case("torchscript", f"{source} bytes", {"bytes": data, "names": None})
    model = draw(st.sampled_from(MODELS))
    data = bytearray(scripted(model))
    mutation = draw(st.sampled_from(["none", "none", "none", "flip", "truncate", "append"]))
    if mutation == "flip":
        for _ in range(draw(st.sampled_from([1, 4, 32]))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    elif mutation == "truncate":
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif mutation == "append":
        data += draw(st.binary(min_size=1, max_size=64))
    names = draw(st.sampled_from([None, None, ["y"], ["a", "b", "c"], []]))
    return Case(
        "torchscript", f"{model.__name__} | bytes {mutation} | names {names}", {"bytes": bytes(data), "names": names}
    )


MODEL_LIMITS_FOR_FUZZ = dict(check_s=1.0, check_mb=2048, outputs=10_000)


def run_torchscript(case: Case, root: Path) -> Outcome:
    """`load_torchscript` on the bytes under a 1 s check limit; an accepted model's outputs on real-looking
    images (0 to 100) come back (B, K) float32 on the CPU, K as checked."""
    from engine.data.uploads import ModelLimits

    limits = ModelLimits(**MODEL_LIMITS_FOR_FUZZ)

    def run():
        names = case.payload["names"]
        model, card = load_torchscript(
            case.payload["bytes"], MODEL_SPEC, output_names=names, device="cpu", limits=limits
        )
        images = torch.rand(3, *MODEL_SPEC.shape, generator=torch.Generator().manual_seed(1)) * 100
        out = forward(model, images)
        check(out.dtype == torch.float32 and out.device.type == "cpu", f"outputs {out.dtype} on {out.device}")
        check(tuple(out.shape) == (3, len(card.output_names)), f"outputs {tuple(out.shape)}, {card.output_names}")

    return attempt(run)


# -- 5. JSON cards ----------------------------------------------------------------------------------------

GOOD_CARD = {
    "name": "fuzzed",
    "input": {"kind": "slice", "plane": "axial", "slice": "middle", "size": 16, "orientation": "stored"},
    "intensity": "raw",
    "outputs": {"names": ["y"], "kind": "logit", "unit": "mL"},
}
CARD_PATHS = [
    ("name",),
    ("input",),
    ("input", "kind"),
    ("input", "plane"),
    ("input", "slice"),
    ("input", "size"),
    ("input", "spacing"),
    ("input", "orientation"),
    ("intensity",),
    ("outputs",),
    ("outputs", "names"),
    ("outputs", "kind"),
    ("outputs", "unit"),
    ("extra-key",),
]
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.text(max_size=10)
    | st.sampled_from(["", "volume", "slice", "coronal", "hippocampus", "p99", "ras", "x" * 5000, "-1", "middle"]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=6,
)


@st.composite
def cards(draw) -> Case:
    """A user's card: a valid one with one key (in turn) set to any JSON value or removed, a second key
    wrong with it sometimes; or text that is not a card (nested 100,000 deep, not UTF-8, not JSON)."""
    if draw(st.integers(0, 9)) == 0:
        text = draw(
            st.sampled_from(
                [
                    b"[" * 100_000,
                    b'{"a":' * 50_000,
                    b"\xff\xfe{",
                    b"",
                    b"NaN",
                    b"[1, 2]",
                    b'{"name": "x"',
                    "\ufeff{}".encode(),
                ]
            )
        )
        return Case("card", f"text {text[:12]!r}", {"text": text})
    card = json.loads(json.dumps(GOOD_CARD))
    wrong = []
    for _ in range(draw(st.sampled_from([1, 1, 1, 2]))):
        path = draw(st.sampled_from(CARD_PATHS))
        parent = card
        for key in path[:-1]:
            parent = parent if not isinstance(parent.get(key), dict) else parent[key]
        if draw(st.integers(0, 5)) == 0:
            parent.pop(path[-1], None)
            wrong.append(f"-{'.'.join(path)}")
        else:
            parent[path[-1]] = draw(JSON_VALUES)
            wrong.append(".".join(path))
    return Case("card", " | ".join(f"key {w}" for w in wrong), {"card": card})


def run_card(case: Case, root: Path) -> Outcome:
    """The card as the sidebar reads it (`UserCard.from_json`, then its contract: `ref`) and as the CLI
    does (a `model.json` beside the model file: `model_ref`); an accepted card's reference must hash (it is
    every cache's key) and print."""
    folder = fresh(root)

    def run():
        path = folder / "model.pt"
        path.write_bytes(scripted(Mean))
        if "text" in case.payload:
            (folder / "model.json").write_bytes(case.payload["text"])
            try:
                data = json.loads(case.payload["text"])
            except (ValueError, RecursionError):  # the sidebar's own refusal (components/sidebar.py)
                data = None
            if data is not None:
                UserCard.from_json(data, source="the card")
        else:
            ref = UserCard.from_json(case.payload["card"], source="the card").ref(path)
            check(isinstance(hash(ref), int) and str(ref), "the card's reference does not hash")
            (folder / "model.json").write_text(json.dumps(case.payload["card"]))
        ref = model_ref(path)
        check(isinstance(hash(ref), int) and isinstance(ref.spec, SliceSpec), "the CLI's reference is not whole")

    try:
        return attempt(run)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# -- 6. MONAI bundles ---------------------------------------------------------------------------------------

BUNDLE_PATHS = [
    ("metadata", ("network_data_format",)),
    ("metadata", ("network_data_format", "inputs")),
    ("metadata", ("network_data_format", "inputs", "image")),
    ("metadata", ("network_data_format", "inputs", "image", "spatial_shape")),
    ("metadata", ("network_data_format", "inputs", "image", "num_channels")),
    ("metadata", ("network_data_format", "outputs")),
    ("metadata", ("network_data_format", "outputs", "pred")),
    ("metadata", ("network_data_format", "outputs", "pred", "channel_def")),
    ("metadata", ("network_data_format", "outputs", "pred", "type")),
    ("metadata", ("name",)),
    ("inference", ("preprocessing",)),
    ("inference", ("preprocessing", "transforms")),
    ("inference", ("image_key",)),
    ("inference", ("preprocessing", "_target_")),
]
BUNDLE_VALUES = st.one_of(
    JSON_VALUES,
    st.sampled_from(
        [
            [0, 16, 16],
            [-16, 16, 16],
            [100000, 100000, 100000],
            [1e400, 16, 16],
            [16, 16],
            10**12,
            {"a": "x"},
            ["x", "y"],
            "$print(1)",
            "%macro",
            "@image_key",
            [{"_target_": "os.system"}],
            [{"_target_": "LoadImaged", "keys": "image"}],
        ]
    ),
)


@st.composite
def bundles(draw) -> Case:
    """A MONAI bundle folder (`test_bundle.write_bundle`) with a key of its metadata or inference config
    set to any value or removed, a config replaced by text that is not a JSON object, or a file missing."""
    how = draw(st.sampled_from(["key"] * 6 + ["raw", "missing"]))
    if how == "raw":
        which = draw(st.sampled_from(["metadata", "inference"]))
        text = draw(st.sampled_from([b"{", b"[1]", b"[" * 100_000, b"\xff", b"null", b'"x"']))
        return Case("bundle", f"{which} is {text[:8]!r}", {"raw": (which, text)})
    if how == "missing":
        name = draw(st.sampled_from(["models/model.ts", "configs/metadata.json", "configs/inference.json"]))
        return Case("bundle", f"no {name}", {"missing": name})
    which, path = draw(st.sampled_from(BUNDLE_PATHS))
    value = draw(st.one_of(BUNDLE_VALUES, st.just(KeyError)))
    return Case(
        "bundle", f"{which} {'.'.join(path)}{' removed' if value is KeyError else ''}", {"key": (which, path, value)}
    )


def run_bundle(case: Case, root: Path) -> Outcome:
    """The bundle as a `--model` (`model_ref`), checked as an upload is (`check_allowed`), loaded, and its
    preprocessing run by MONAI on a volume: the inputs must have the shape its metadata states."""
    folder = fresh(root)

    def run():
        bundle = write_bundle(folder / "bundle")
        configs = {"metadata": bundle / "configs/metadata.json", "inference": bundle / "configs/inference.json"}
        if "raw" in case.payload:
            which, text = case.payload["raw"]
            configs[which].write_bytes(text)
        elif "missing" in case.payload:
            (bundle / case.payload["missing"]).unlink()
        else:
            which, path, value = case.payload["key"]
            config = json.loads(configs[which].read_text())
            parent = config
            for key in path[:-1]:
                parent = parent.setdefault(key, {}) if isinstance(parent, dict) else {}
            if isinstance(parent, dict):
                if value is KeyError:
                    parent.pop(path[-1], None)
                else:
                    parent[path[-1]] = value
            configs[which].write_text(json.dumps(config))
        ref = model_ref(bundle)
        check_allowed(bundle)
        load(ref, "cpu")
        volume = folder / "v.nii.gz"
        volume.write_bytes(good_volume())
        inputs = bundle_inputs(bundle, [volume])
        check(tuple(inputs.shape) == (1, *read_bundle(bundle).shape), f"bundle inputs {tuple(inputs.shape)}")

    try:
        return attempt(run)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# -- 7. the command line ----------------------------------------------------------------------------------

CLI_FLAGS = {
    "--size": ["-1", "0", "8", "16", "600", "x"],
    "--slice": ["middle", "abc", "5", "-999", "999", "ventricles"],
    "--plane": ["axial", "nope"],
    "--intensity": ["raw", "p99", "nope"],
    "--orientation": ["stored", "ras", "up"],
    "--input": ["slice", "volume", "cube"],
    "--spacing": ["2", "nan", "-1", "1e9"],
    "--device": ["cpu", "meta", "cuda", "x:y"],
    "--features": ["age", "nope", "", " , "],
    "--split": ["all", "test", "nope"],
    "--output": ["0", "99", "-1", "x"],
    "--n-boot": ["0", "5", "-5", "x"],
    "--batch-size": ["1", "4", "0", "-1"],  # 0 and negative: refused by the parser (they crashed before)
    "--seed": ["0", "7", str(2**70), "-1"],
    "--explain": ["output", "probability", "x"],
    "--format": ["json", "html", "pdf"],
    "--method": ["data", "magic"],
}
CLI_DATA = ["folder"] * 5 + ["missing", "a-file", "empty-folder", "bundle"]
CLI_MODELS = ["model"] * 5 + ["garbage", "missing", "no-such-builtin", "bundle", "bad-card"]
CLI_OUTS = ["r.json"] * 4 + ["r.html", ".", "x.txt", "model.pt/x.json"]


def cli_calls(flags=CLI_FLAGS) -> st.SearchStrategy[Case]:
    """`python -m engine score` with its data, model, output and up to four flags drawn from good and bad
    values; or argv that is not a command."""

    @st.composite
    def build(draw) -> Case:
        if draw(st.integers(0, 9)) == 0:
            argv = draw(st.sampled_from([[], ["nope"], ["score"], ["maps", "--data"], ["score", "--help"], ["-h"]]))
            return Case("cli", f"argv {' '.join(argv) or '(none)'}", {"argv": argv, "raw": True})
        data, model, out = (
            draw(st.sampled_from(CLI_DATA)),
            draw(st.sampled_from(CLI_MODELS)),
            draw(st.sampled_from(CLI_OUTS)),
        )
        chosen = draw(st.lists(st.sampled_from(sorted(flags)), max_size=4, unique=True))
        pairs = [(flag, draw(st.sampled_from(flags[flag]))) for flag in chosen]
        if "--n-boot" not in chosen:
            pairs.append(("--n-boot", "5"))
        label = " | ".join([f"data {data}", f"model {model}", f"out {out}", *(f"{f}={v}" for f, v in pairs)])
        return Case("cli", label, {"data": data, "model": model, "out": out, "flags": pairs, "raw": False})

    return build()


@functools.cache
def cli_fixtures(root: Path) -> dict[str, str]:
    """Paths the CLI cases name, made once per root: a 12-subject folder, models, a bundle."""
    base = root / "cli"
    folder = base / "folder"
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["file,age,sex"]
    for i in range(12):
        image = nib.Nifti1Image(np.random.default_rng(i).random((10, 10, 10), dtype=np.float32), np.eye(4))
        nib.save(image, folder / f"s{i}.nii.gz")
        lines.append(f"s{i}.nii.gz,{i},{'FM'[i % 2]}")
    (folder / "features.csv").write_text("\n".join(lines) + "\n")
    (base / "empty-folder").mkdir(exist_ok=True)
    (base / "a-file").write_text("x")
    (base / "model.pt").write_bytes(scripted(Mean))
    (base / "garbage.pt").write_bytes(b"garbage")
    (base / "bad-card.pt").write_bytes(scripted(Mean))
    (base / "bad-card.json").write_text('{"input": {"slice": [1, 2]}}')
    if not (base / "bundle").exists():
        write_bundle(base / "bundle")
    return {
        "folder": str(folder),
        "missing": str(base / "missing"),
        "a-file": str(base / "a-file"),
        "empty-folder": str(base / "empty-folder"),
        "bundle": str(base / "bundle"),
        "model": str(base / "model.pt"),
        "garbage": str(base / "garbage.pt"),
        "no-such-builtin": "no-such-builtin",
        "bad-card": str(base / "bad-card.pt"),
        "out": str(base),
    }


def run_cli(case: Case, root: Path) -> Outcome:
    """`engine.cli.main.main(argv)`: exit 0 with its report written (accepted), exit 2 with an ``error:``
    line (refused; argparse's own exit 2 counts), anything else a crash."""
    paths = cli_fixtures(root)
    if case.payload["raw"]:
        argv = list(case.payload["argv"])
    else:
        out = str(Path(paths["out"]) / case.payload["out"])
        argv = ["score", "--data", paths[case.payload["data"]], "--model", paths[case.payload["model"]], "--out", out]
        for flag, value in case.payload["flags"]:
            argv += [f"{flag}={value}"]
    err, printed = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(printed), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            status = cli_main(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        status = exc.code
    except Exception as exc:
        return Outcome("crashed", crash_detail(exc))
    errors = [line for line in err.getvalue().splitlines() if "error:" in line]
    if status == 0:
        if not case.payload["raw"] and "--help" not in argv:
            text = Path(argv[argv.index("--out") + 1]).read_text()
            html = ("--format", "html") in case.payload["flags"] or case.payload["out"].endswith(".html")
            if not (text.lstrip().startswith("<") if html else "scores" in json.loads(text)):
                return Outcome("wrong", f"the report is not the {'HTML' if html else 'JSON'} asked for")
        return Outcome("accepted")
    if status == 2 and len(errors) == 1:
        return Outcome("refused", errors[0][:300])
    return Outcome("crashed", f"exit status {status} with {len(errors)} error lines: {err.getvalue()[-300:]}")


RUNNERS = {
    "nifti": run_nifti,
    "csv": run_csv,
    "zip": run_zip,
    "torchscript": run_torchscript,
    "card": run_card,
    "bundle": run_bundle,
    "cli": run_cli,
}
STRATEGIES = {
    "nifti": niftis(),
    "csv": feature_tables(),
    "zip": zips(),
    "torchscript": torchscripts(),
    "card": cards(),
    "bundle": bundles(),
    "cli": cli_calls(),
}


# -- the fuzzing tests: no crash, no wrong answer --------------------------------------------------------------


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def fuzz(kind: str):
    """A test of `kind`'s door over `EXAMPLES[kind]` drawn inputs (the same every run)."""

    @settings(
        max_examples=EXAMPLES[kind],
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=STRATEGIES[kind])
    def test(workdir, case):
        outcome = RUNNERS[kind](case, workdir)
        assert outcome.status in ("accepted", "refused"), f"{case.label}: {outcome}"

    return test


test_fuzzed_volumes_are_read_right_or_refused = fuzz("nifti")
test_fuzzed_feature_tables_are_read_right_or_refused = fuzz("csv")
test_fuzzed_zips_are_written_whole_or_refused = fuzz("zip")
test_fuzzed_torchscript_files_give_outputs_or_are_refused = fuzz("torchscript")
test_fuzzed_cards_give_a_contract_or_are_refused = fuzz("card")
test_fuzzed_bundles_give_their_inputs_or_are_refused = fuzz("bundle")
test_fuzzed_command_lines_score_or_say_error = fuzz("cli")


# -- regressions: each crash the fuzzing found, at its home --------------------------------------------------


def _refused(outcome: Outcome, *words: str) -> None:
    assert outcome.status == "refused", outcome
    assert all(w in outcome.detail for w in words), outcome.detail


def test_a_card_whose_slice_intensity_orientation_plane_or_name_is_not_text_is_refused_by_the_key():
    """Crashed with AttributeError / TypeError (a list slice reached `str.strip`, an unhashable intensity
    `dict` membership) before `UserCard.from_json` checked the types."""
    for key, value, words in [
        (("input", "slice"), [1, 2], "input slice [1, 2] is neither a voxel index nor a name"),
        (("input", "slice"), 3.5, "input slice 3.5"),
        (("input", "slice"), True, "input slice True"),
        (("intensity",), [1], "intensity [1] is not a text"),
        (("input", "orientation"), ["x"], "input orientation ['x'] is not a text"),
        (("name",), {"a": 1}, "name {'a': 1} is not a text"),
        (("input", "plane"), "xyz", "input plane 'xyz' is not one of axial, coronal, sagittal"),
    ]:
        card = json.loads(json.dumps(GOOD_CARD))
        (card["input"] if key[0] == "input" else card)[key[-1]] = value
        with pytest.raises(EveInputError, match=None) as caught:
            UserCard.from_json(card, source="the card")
        assert words in str(caught.value), str(caught.value)


def test_a_card_nested_deeper_than_pythons_stack_is_refused_as_unreadable_json(tmp_path):
    """Crashed with RecursionError, which `json.loads` raises and `except ValueError` let through."""
    path = tmp_path / "m.json"
    path.write_text("[" * 100_000)
    with pytest.raises(EveInputError, match="is not readable JSON .*maximum recursion depth"):
        UserCard.read(path)


@pytest.mark.parametrize(
    ("model", "words"),
    [
        (OnMeta, ("on the 'meta' device",)),
        (HugeExpand, ("68,719,476,736 outputs per image", "EVE_MODEL_MAX_OUTPUTS")),
        (Inconsistent, ("for 2 images but a tensor of shape (3,)", "for one")),
    ],
    ids=["meta-device", "expand-2^36-outputs", "batch-size-dependent-shape"],
)
def test_a_model_whose_outputs_are_on_meta_too_many_or_shaped_by_the_batch_is_refused(model, words):
    """Crashed: `isfinite` of a 'meta' tensor (no values), of a 0-stride expand (an allocation of 256 GiB),
    and `allclose` of a (1, 3) against a (1, 2) row."""
    _refused(
        run_torchscript(Case("torchscript", model.__name__, {"bytes": scripted(model), "names": None}), Path()), *words
    )


def test_a_model_that_takes_too_long_is_refused_and_the_caller_gets_its_answer_in_time():
    """A check past its limit is refused at the limit (the check's thread runs on: Python cannot stop it)."""
    import time

    started = time.perf_counter()
    outcome = run_torchscript(Case("torchscript", "Sleeps", {"bytes": scripted(Sleeps), "names": None}), Path())
    _refused(outcome, "took longer than 1 s", "EVE_MODEL_CHECK_S")
    assert time.perf_counter() - started < 5, "answered at the limit, not when the model ends"


def _folder(tmp_path: Path, csv_text: bytes, volume: bytes | None = None) -> Path:
    folder = tmp_path / "cohort"
    folder.mkdir()
    (folder / "a.nii").write_bytes(volume or nib.Nifti1Image(np.ones((8, 8, 8), np.float32), np.eye(4)).to_bytes())
    (folder / "b.nii").write_bytes(nib.Nifti1Image(np.ones((8, 8, 8), np.float32), np.eye(4)).to_bytes())
    (folder / "features.csv").write_bytes(csv_text)
    return folder


def test_two_columns_equal_but_for_spaces_are_refused_naming_the_column(tmp_path):
    """Crashed with AttributeError: 'age' and ' age' became two columns named 'age', a DataFrame, not a Series."""
    folder = _folder(tmp_path, b"file,age, age\na.nii,1,1\nb.nii,2,2\n")
    with pytest.raises(EveInputError, match="two columns named 'age' .*rename or remove one"):
        load_dataset(folder)


def test_a_table_separated_by_semicolons_is_named_so(tmp_path):
    with pytest.raises(EveInputError, match="separated by ';', not commas: save it as comma-separated"):
        load_dataset(_folder(tmp_path, b"file;age\na.nii;1\nb.nii;2\n"))


@pytest.mark.parametrize("affine", ["zero", "nan", "inf", "singular"])
def test_a_volume_without_a_usable_affine_is_refused_when_the_folder_loads(tmp_path, affine):
    """Crashed later, reading the model inputs: `aff2axcodes` of a zero affine gave None (TypeError in join),
    a NaN or Inf one failed nibabel's SVD (LinAlgError)."""
    volume = nifti_bytes(1, (8, 8, 8), "float32", "random", affine, 2, 0, None, None, False)
    folder = _folder(tmp_path, b"file,age\na.nii,1\nb.nii,2\n", volume)
    with pytest.raises(EveInputError, match="voxel-to-world transform .* re-export the volume with a valid affine"):
        load_dataset(folder)


def test_an_upload_whose_file_name_is_too_long_to_write_is_refused_before_writing(tmp_path):
    """Crashed with OSError (File name too long) when the entry was written."""
    long = "a" * 300 + ".nii.gz"
    files = [("features.csv", io.BytesIO(f"file,age\n{long},1\n".encode())), (long, io.BytesIO(good_volume()))]
    with pytest.raises(EveInputError, match="too long to write .*rename it shorter"):
        plan_dataset(files, UploadLimits())


def test_a_volume_claiming_a_billion_voxels_is_refused_from_its_header_before_it_is_written(tmp_path):
    """Passed every zip limit (a .nii.gz packs no further inside a zip) and took 12 GB to read: a header
    claiming 1000^3 voxels over 2 KB of data."""
    import struct

    raw = bytearray(nib.Nifti1Image(np.zeros((8, 8, 8), np.float32), np.eye(4)).to_bytes())
    struct.pack_into("<8h", raw, 40, 3, 1000, 1000, 1000, 1, 1, 1, 1)
    files = [("features.csv", io.BytesIO(b"file,age\nbig.nii.gz,1\n")), ("big.nii.gz", io.BytesIO(gzip.compress(raw)))]
    store = UploadStore(tmp_path / "store", UploadLimits())
    with pytest.raises(
        EveInputError, match=r"claims 1,000,000,000 voxels, over Eve's limit of 128 million .*EVE_UPLOAD_MAX_MVOXELS"
    ):
        store.write(plan_dataset(files, store.limits))
    assert not store.root.exists() or not any(store.root.iterdir())


def test_a_limit_set_to_nan_or_inf_is_refused_naming_its_variable():
    """NaN passed `value <= 0` and made every comparison with the limit false: no limit at all."""
    from engine.data.uploads import ModelLimits

    for text in ("nan", "inf"):
        with pytest.raises(EveInputError, match=f"EVE_UPLOAD_MAX_MB='{text}' is not a positive number"):
            UploadLimits.from_env({"EVE_UPLOAD_MAX_MB": text})
    with pytest.raises(EveInputError, match="EVE_MODEL_CHECK_S='0' is not a positive number"):
        ModelLimits.from_env({"EVE_MODEL_CHECK_S": "0"})


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"network_data_format": [1]}, "does not state its input's network_data_format"),
        ({"network_data_format": {"inputs": [1]}}, "does not state its input's network_data_format"),
        ({"outputs": [1]}, None),
        ({"spatial_shape": [100000, 100000, 100000]}, "is out of range: give 1 to 64 channels"),
        ({"spatial_shape": [-16, 16, 16]}, "is out of range"),
        ({"spatial_shape": [1e400, 16, 16]}, "is not whole numbers"),
        ({"num_channels": 10**12}, "is out of range"),
        ({"channel_def": {"a": "x"}}, "are not channel numbers"),
        ({"pred": 5}, None),
        ({"type": ["x"]}, None),
    ],
    ids=[
        "format-list",
        "inputs-list",
        "outputs-list",
        "huge-shape",
        "negative-side",
        "infinite-side",
        "huge-channels",
        "channel-names-keys",
        "pred-int",
        "type-list",
    ],
)
def test_a_bundle_metadata_of_the_wrong_shape_is_refused_or_read_without_its_optional_parts(tmp_path, change, words):
    """Crashed with AttributeError (a list where a dict was read), ValueError (`int('a')` of a channel key),
    TypeError (an unhashable output type), or a tensor allocation of 8 PB (a spatial shape of 100,000^3)."""
    bundle = write_bundle(tmp_path / "bundle")
    path = bundle / "configs/metadata.json"
    metadata = json.loads(path.read_text())
    data_format = metadata["network_data_format"]
    ((key, value),) = change.items()
    where = {
        "spatial_shape": data_format["inputs"]["image"],
        "num_channels": data_format["inputs"]["image"],
        "channel_def": data_format["outputs"]["pred"],
        "type": data_format["outputs"]["pred"],
        "pred": data_format["outputs"],
        "outputs": data_format,
        "network_data_format": metadata,
    }
    where[key][key] = value
    path.write_text(json.dumps(metadata))
    if words is None:  # optional parts, read as not stated: outputs named output_0, ... or of no stated kind
        model, card = load(model_ref(bundle), "cpu")
        assert card.output_kind is None and card.output_names in (("output_0", "output_1"), ("a", "b"))
    else:
        with pytest.raises(EveInputError, match=None) as caught:
            load(model_ref(bundle), "cpu")
        assert words in str(caught.value), str(caught.value)


@pytest.mark.parametrize("flag, value", [("--batch-size", "0"), ("--seed", "-1")])
def test_a_batch_size_of_zero_or_a_negative_seed_is_refused_by_the_cli(workdir, flag, value):
    case = Case(
        "cli", "known", {"data": "folder", "model": "model", "out": "r.json", "flags": [(flag, value)], "raw": False}
    )
    outcome = run_cli(case, workdir)
    if outcome.status == "crashed":
        raise ValueError(outcome.detail)
    assert outcome.status == "refused", outcome


# -- uploads in the uploaded-model child process --------------------------------------------------------------


class SpinsForever(torch.nn.Module):
    def forward(self, x):
        y = x.mean((1, 2, 3))
        for _ in range(1 << 40):
            y = y + 0.0
        return y


class Hoards(torch.nn.Module):
    def forward(self, x):
        kept = []
        for i in range(1 << 20):
            kept.append(torch.ones(1 << 25) + float(i))  # 128 MB a turn, all kept
        return x.mean((1, 2, 3)) + kept[-1][0] * 0.0


def test_an_uploaded_model_that_spins_or_hoards_memory_is_stopped_in_its_child_process(tmp_path, monkeypatch):
    """`zoo.load` of an uploaded TorchScript file checks it in a child process first (`zoo.screen`): a model
    that never returns is killed at the limit, one that allocates without bound at its memory cap, and the
    server process never runs either (a good one passes: every model upload in test_app goes through it)."""
    import time

    monkeypatch.setenv("EVE_MODEL_CHECK_S", "2")
    monkeypatch.setenv("EVE_MODEL_CHECK_MB", "1024")
    for model, words in [(SpinsForever, "took longer than 2 s"), (Hoards, "needed more than 1,024 MB")]:
        path = tmp_path / f"{model.__name__}.pt"
        path.write_bytes(scripted(model))
        ref = ModelRef.torchscript(path, MODEL_SPEC, uploaded=True)
        started = time.perf_counter()
        with pytest.raises(EveInputError, match=None) as caught:
            load(ref, "cpu")
        assert words in str(caught.value), str(caught.value)
        assert time.perf_counter() - started < 2 + 60, "the child is killed at the limit plus its start"


# -- the sidebar's uploaders: a handful of the cases above, through the app ----------------------------------------


def app_model_cases() -> list[tuple[str, str, Any, str | None]]:
    """(label, uploader, upload, words of the message or None for accepted) for the card and model uploaders."""
    cases = [
        ("card nested 100,000 deep", "card", b"[" * 100_000, "is not readable JSON"),
        ("card slice a list", "card", b'{"input": {"slice": [1, 2]}}', "input slice [1, 2]"),
        ("card volume with plane xyz", "card", b'{"input": {"kind": "volume", "plane": "xyz"}}', "input plane 'xyz'"),
        ("card intensity a list", "card", b'{"intensity": ["raw"]}', "intensity ['raw'] is not a text"),
        ("card not UTF-8", "card", b"\xff\xfe{", "is not readable JSON"),
    ]
    cases += [
        (f"model {m.__name__}", "model", scripted(m), words)
        for m, words in [
            (OnMeta, "'meta' device"),
            (HugeExpand, "outputs per image"),
            (Inconsistent, "for one"),
            (ReturnsTuple, "not a tuple or dict"),
            (Mean, None),
        ]
    ]
    return cases + [("model random bytes", "model", b"\x80\x04junk", "not a TorchScript model")]


def app_dataset_cases() -> list[tuple[str, list, str | None]]:
    """(label, files, words of the message or None for accepted) for the dataset uploader."""
    big = bytearray(nib.Nifti1Image(np.zeros((8, 8, 8), np.float32), np.eye(4)).to_bytes())
    struct.pack_into("<8h", big, 40, 3, 1000, 1000, 1000, 1, 1, 1, 1)
    long = "a" * 300 + ".nii.gz"
    zeros_affine = nifti_bytes(1, (8, 8, 8), "float32", "random", "zero", 2, 0, None, None, False)
    bomb = [("features.csv", "csv", False, 8), ("a.nii.gz", "nifti", False, 8), ("b.nii.gz", "zeros-2mb", False, 8)]
    good = [
        ("features.csv", b"file,age\na.nii.gz,1\nb.nii.gz,2\n", "text/csv"),
        ("a.nii.gz", good_volume(), "x"),
        ("b.nii.gz", good_volume(), "x"),
    ]
    return [
        (
            "csv 'age' and ' age'",
            [("features.csv", b"file,age, age\na.nii.gz,1,1\n", "text/csv"), ("a.nii.gz", good_volume(), "x")],
            "two columns named 'age'",
        ),
        (
            "volume claiming 1000^3",
            [("features.csv", b"file,age\nbig.nii.gz,1\n", "text/csv"), ("big.nii.gz", gzip.compress(bytes(big)), "x")],
            "claims 1,000,000,000 voxels",
        ),
        (
            "file name of 300 bytes",
            [("features.csv", f"file,age\n{long},1\n".encode(), "text/csv"), (long, good_volume(), "x")],
            "too long to write",
        ),
        (
            "volume with a zero affine",
            [("features.csv", b"file,age\na.nii,1\n", "text/csv"), ("a.nii", zeros_affine, "x")],
            "voxel-to-world transform",
        ),
        ("zip bomb by ratio", [("cohort.zip", zip_bytes(bomb, "c"), "application/zip")], "unpacks 1,0"),
        (
            "csv separated by ';'",
            [("features.csv", b"file;age\na.nii.gz;1\n", "text/csv"), ("a.nii.gz", good_volume(), "x")],
            "separated by ';'",
        ),
        ("a good folder", good, None),
    ]


def app_outcome(at, words: str | None, accepted_key: str) -> Outcome:
    """How an upload ended in the app: crashed (an exception reached the page), refused (the sidebar says so,
    with `words`), accepted (no error and the session holds it), or wrong."""
    from components import state

    if at.exception:
        return Outcome("crashed", " ".join(e.value for e in at.exception)[:300])
    shown = " ".join(e.value for e in at.sidebar.error)
    if at.session_state[state.RESULTS] != {"earlier": 42}:
        return Outcome("wrong", "the session lost its results")
    if words is None:
        ok = not shown and at.session_state[accepted_key] is not None
        return Outcome("accepted") if ok else Outcome("wrong", f"refused a good upload: {shown[:200]}")
    return Outcome("refused", shown[:300]) if words in shown else Outcome("wrong", f"said {shown[:200]!r}")


def run_app_cases() -> list[tuple[str, Outcome]]:
    """Every `app_model_cases` and `app_dataset_cases` upload in two sessions of the app on the shapes set."""
    from test_app import _app

    from components import state

    results = []
    at = _app("shapes")
    at.session_state[state.RESULTS] = {"earlier": 42}
    at.sidebar.selectbox(key=state.keyed(state.MODEL, "shapes")).set_value(state.UPLOADED_MODEL).run()
    for label, uploader, data, words in app_model_cases():
        at.session_state[state.USER_MODEL] = None
        if uploader == "card":
            at.sidebar.file_uploader(key=state.MODEL_CARD_UPLOAD).set_value(("card.json", data, "application/json"))
        else:
            at.sidebar.file_uploader(key=state.MODEL_CARD_UPLOAD).set_value(None)
            at.sidebar.file_uploader(key=state.MODEL_UPLOAD).set_value((f"{label[6:]}.pt", data, "x"))
        at.run()
        results.append((label, app_outcome(at, words, state.USER_MODEL)))
    at = _app("shapes")
    at.session_state[state.RESULTS] = {"earlier": 42}
    at.sidebar.radio(key=state.DATASET).set_value("upload").run()
    for label, files, words in app_dataset_cases():
        at.sidebar.file_uploader(key=state.DATASET_UPLOAD).set_value(files).run()
        results.append((label, app_outcome(at, words, state.USER_DATASET)))
    return results


@pytest.mark.app
def test_the_sidebars_uploaders_refuse_fuzzed_cards_models_and_folders_and_keep_the_session():
    """A handful of the inputs above, through the sidebar's card, model and dataset uploaders: each bad one
    gets its message in the sidebar, a good one loads, no exception reaches the page, and the session keeps
    what it computed."""
    results = run_app_cases()
    assert len(results) == len(app_model_cases()) + len(app_dataset_cases())
    bad = [(label, o) for label, o in results if o.status not in ("accepted", "refused")]
    assert not bad, bad


def test_a_row_with_more_values_than_the_header_is_refused_not_shifted_one_column(tmp_path):
    """Crashed (found by the campaign) with ValueError: pandas took the first column of such a table as its
    index, every value moved one column left (the 'file' column held the ages), and a duplicated subject's
    row number was read from that index."""
    folder = _folder(tmp_path, b"file,age\na.nii,1,3\nb.nii,2,4\n")
    with pytest.raises(EveInputError, match="a row with more values than its header has columns .*one value per"):
        load_dataset(folder)


@pytest.mark.parametrize("damage", ["local header", "lzma stream", "bzip2 stream"])
def test_a_zip_whose_entry_is_damaged_is_refused_as_one_to_re_create(tmp_path, damage):
    """Crashed (found by the campaign) with BadZipFile (features.csv's local header overwritten: read before
    anything was written) and LZMAError (a damaged LZMA entry); a damaged bzip2 entry raises OSError."""
    compression = {"local header": zipfile.ZIP_DEFLATED, "lzma stream": zipfile.ZIP_LZMA}.get(damage, zipfile.ZIP_BZIP2)
    entries = [
        ("features.csv", "csv", False, compression),
        ("a.nii.gz", "nifti", False, compression),
        ("b.nii.gz", "nifti", False, compression),
    ]
    data = bytearray(zip_bytes(entries, "cohort"))
    if damage == "local header":
        data[0] ^= 0xFF  # features.csv's local header: its magic number
    else:
        at = data.index(b"cohort/a.nii.gz") + len("cohort/a.nii.gz") + 40  # inside a.nii.gz's compressed bytes
        data[at : at + 16] = bytes(16)
    store = UploadStore(tmp_path / "store", UploadLimits())
    with pytest.raises(EveInputError, match="cannot be unpacked .*re-create the zip"):
        store.write(plan_dataset([("cohort.zip", io.BytesIO(bytes(data)))], store.limits))


def test_a_bundle_whose_preprocessing_leaves_the_path_unread_is_refused_naming_loadimaged(tmp_path):
    """Crashed (found by the campaign) with TypeError: an empty list of transforms hands back the file's path,
    and torch cannot make a tensor of text."""
    bundle = write_bundle(tmp_path / "bundle", transforms=[])
    volume = tmp_path / "v.nii.gz"
    volume.write_bytes(good_volume())
    with pytest.raises(EveInputError, match="made a str .*not an image: add LoadImaged first"):
        bundle_inputs(bundle, [volume])


def test_an_uploaded_file_torch_cannot_load_is_refused_from_its_child_without_loading_it_here(tmp_path, monkeypatch):
    """A damaged TorchScript file can cost gigabytes and seconds to refuse: the child's refusal is final, and this
    process never reads it with torch.jit.load."""
    import engine.models.zoo as zoo

    path = tmp_path / "damaged.pt"
    path.write_bytes(scripted(Mean)[:-200])
    loads = []
    monkeypatch.setattr(zoo.torch.jit, "load", lambda *a, **k: loads.append(a) or pytest.fail("loaded here"))
    with pytest.raises(EveInputError, match=r"the uploaded file is not a TorchScript model \(\w+Error\): Eve never"):
        load(ModelRef.torchscript(path, MODEL_SPEC, uploaded=True), "cpu")
    assert not loads
