"""Uploaded files -> a folder (or a model file) on disk, safely; the rules for what an upload may be.

Everything here is the engine's: no UI, usable from a test or a notebook. The app's side
(`components/uploads.py`) only says which upload is which and keeps what it wrote in the session.

An upload is written once, streamed:

1. **Checked before a byte is written**, from a zip's central directory: entry count, total
   uncompressed size, each entry's compression ratio (a zip bomb: zeros deflate ~1000:1), its path
   (no `..`, no absolute path, no drive letter, no symlink, no duplicate name).
2. **Streamed to disk** entry by entry (`ZipFile.open` + `shutil.copyfileobj` in 1 MiB chunks, from
   the uploaded file object itself, never its whole value), hashed while written, the byte counts
   enforced again (a header that lies about an entry's size gets no further than what it declared).
3. **Never visible half-written**: into `<root>/<random>.partial/`, renamed in one step to
   `<root>/<digest>/` (the digest of what was written, so the same upload maps to the same folder and
   the same cache entries in every session).
4. **Within a quota**: what one session holds and what the server holds altogether (uploads, the
   `.eve_cache/` the engine writes beside them, generators trained on them in `eve-generators/`).
   Room is made by removing the least recently used folders that no live session holds (a `Lease`
   pins a folder while the object lives; a session keeps its leases in its state, so they go with it).

The limits are `UploadLimits` (one place; the operator overrides them with `EVE_UPLOAD_*`
environment variables; README "Upload limits"), and beside them `ModelLimits`: what a user's model may take
when Eve checks it (`engine.models.zoo.check_model`, `zoo.screen`; `EVE_MODEL_*`; README "Security and limits").
"""

from __future__ import annotations

import gzip
import hashlib
import io
import lzma
import os
import re
import shutil
import stat
import struct
import tempfile
import threading
import time
import uuid
import weakref
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from engine.data.dataset import GENERATORS_DIR, NIFTI_SUFFIXES, read_features_csv
from engine.errors import EveInputError, reason

MB = 2**20
CHUNK = MB  # bytes copied at a time: what an upload costs in memory while it is written
UNNAMED = "your-folder"  # what loose uploaded files (no zip, so no folder name) are called
PARTIAL = ".partial"  # suffix of a folder being written (never read, removed if a writer died)
STALE_PARTIAL_S = 3600  # a .partial folder this old belongs to a writer that died: removed when room is made
# the operator's names for the limits (environment variables)
UPLOAD_ENV = "EVE_UPLOAD_MAX_MB"
ENTRIES_ENV = "EVE_UPLOAD_MAX_ENTRIES"
RATIO_ENV = "EVE_UPLOAD_MAX_RATIO"
RATIO_FROM_ENV = "EVE_UPLOAD_RATIO_FROM_MB"
CSV_ENV = "EVE_UPLOAD_MAX_CSV_MB"
SESSION_ENV = "EVE_UPLOAD_SESSION_QUOTA_MB"
QUOTA_ENV = "EVE_UPLOAD_QUOTA_MB"
ROOT_ENV = "EVE_UPLOAD_ROOT"
VOXELS_ENV = "EVE_UPLOAD_MAX_MVOXELS"
NAME_BYTES = 255  # a file name's longest on Linux and macOS (a longer one cannot be written)
PATH_BYTES = 1024  # a path inside an upload: well under PATH_MAX (4096) with the store's root in front


@dataclass(frozen=True)
class UploadLimits:
    """What one upload and all uploads together may be. Each field's environment variable is
    `ENV[field name]`; sizes in MB (2**20 bytes)."""

    upload_mb: float = 2048  # one upload, as written to disk (a zip's entries uncompressed)
    entries: int = 10_000  # entries in one zip (directories included)
    ratio: float = 200.0  # an entry's uncompressed / compressed size; NIfTI deflates ~2-10:1, zeros ~1000:1
    ratio_from_mb: float = 1.0  # entries smaller than this (uncompressed) are not ratio-checked
    csv_mb: float = 64  # features.csv, which is read into memory whole
    session_mb: float = 4096  # what one session's uploads hold on disk (its folder, model, generators, caches)
    quota_mb: float = 16384  # what all uploads hold on disk; the least recently used are removed beyond it
    # voxels of one volume, in millions (2**20), from its header before a byte is written: 128 is 512^3; a
    # .nii.gz of zeros packs ~1000:1 inside a zip that packs it no further, and reading a volume takes ~3x its
    # voxels x 4 bytes at its peak (nibabel's read, its scaling, the float32 copy)
    volume_mvoxels: float = 128

    @classmethod
    def from_env(cls, environ=os.environ) -> UploadLimits:
        """The defaults, each overridden by its environment variable when set (raises EveInputError
        naming the variable when its value is not a positive number)."""
        return _from_env(cls, ENV, environ)


def _from_env(cls, names: dict[str, str], environ):
    """`cls`'s defaults, each field overridden by its environment variable `names[field]` when set."""
    values = {}
    for f in fields(cls):
        name = names[f.name]
        text = environ.get(name, "").strip()
        if not text:
            continue
        try:
            value = int(text) if f.type == "int" else float(text)
        except ValueError:
            value = 0
        if not value > 0 or value == float("inf"):
            raise EveInputError(f"{name}={text!r} is not a positive number: set it to one, or unset it.")
        values[f.name] = value
    return cls(**values)


ENV = {  # UploadLimits field -> its environment variable
    "upload_mb": UPLOAD_ENV,
    "entries": ENTRIES_ENV,
    "ratio": RATIO_ENV,
    "ratio_from_mb": RATIO_FROM_ENV,
    "csv_mb": CSV_ENV,
    "session_mb": SESSION_ENV,
    "quota_mb": QUOTA_ENV,
    "volume_mvoxels": VOXELS_ENV,
}


@dataclass(frozen=True)
class ModelLimits:
    """What a user's TorchScript model may take when Eve checks it on a dummy batch: a sibling of
    `UploadLimits` (bytes on disk, enforced by the store) read the same way, for every door that loads a user
    model (the app, the CLI, a notebook). Each field's environment variable is `MODEL_ENV[field name]`."""

    check_s: float = 60.0  # wall-clock limit of the check on a dummy batch of two (one forward of 2, one of 1)
    check_mb: float = 4096  # memory (data segment) of the child process that checks an uploaded model first
    outputs: int = 10_000  # outputs per image (K) Eve takes from a model

    @classmethod
    def from_env(cls, environ=os.environ) -> ModelLimits:
        """The defaults, each overridden by its environment variable (raises EveInputError naming a bad one)."""
        return _from_env(cls, MODEL_ENV, environ)


CHECK_S_ENV = "EVE_MODEL_CHECK_S"
CHECK_MB_ENV = "EVE_MODEL_CHECK_MB"
OUTPUTS_ENV = "EVE_MODEL_MAX_OUTPUTS"
MODEL_ENV = {"check_s": CHECK_S_ENV, "check_mb": CHECK_MB_ENV, "outputs": OUTPUTS_ENV}  # field -> its variable


def upload_root(environ=os.environ) -> Path:
    """Where uploads are written: `EVE_UPLOAD_ROOT`, else `<system temp>/eve-uploads`."""
    return Path(environ.get(ROOT_ENV) or Path(tempfile.gettempdir()) / "eve-uploads")


# -- 1. what an upload holds, checked before anything is written --------------------------------------


@dataclass(frozen=True)
class Entry:
    """One file of an upload: its path inside the folder and how to read it (a fresh stream each call)."""

    path: PurePosixPath
    size: int  # bytes it declares (a zip entry's header, a loose file's length)
    open: Callable[[], BinaryIO]
    shown: str  # how messages name it: "my.zip: cohort/a.nii.gz" or "a.nii.gz"


def _mb(n: float) -> str:
    return f"{n / MB:,.0f} MB" if n >= MB else f"{n / MB:.2f} MB"


def _safe_path(name: str) -> PurePosixPath | None:
    """A relative path inside the folder, or None: absolute, a drive letter, '..', or nothing."""
    text = name.replace("\\", "/")
    if text.startswith("/") or re.match(r"^[A-Za-z]:", text):
        return None
    path = PurePosixPath(text)
    if ".." in path.parts or not path.parts:
        return None
    return path


def _size_of(source: BinaryIO) -> int:
    size = getattr(source, "size", None)  # Streamlit's UploadedFile knows it
    if isinstance(size, int):
        return size
    size = source.seek(0, io.SEEK_END)
    source.seek(0)
    return size


class _Borrowed(io.RawIOBase):
    """A read view of someone else's stream, from its start: closing the view leaves the stream open
    (an uploaded file is Streamlit's, and read again by it)."""

    def __init__(self, stream: BinaryIO):
        self._stream = stream
        stream.seek(0)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        return self._stream.readinto(buffer)


def _zip_entries(name: str, source: BinaryIO, limits: UploadLimits) -> list[Entry]:
    """The zip's files, every limit checked from its central directory (no entry is decompressed)."""
    try:
        archive = zipfile.ZipFile(source)
        infos = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        raise EveInputError(
            f"{name} is not a readable zip archive ({reason(exc)}): re-create it (zip the folder)."
        ) from exc
    if len(infos) > limits.entries:
        raise EveInputError(
            f"{name} holds {len(infos):,} entries, over Eve's limit of {limits.entries:,} "
            f"({ENTRIES_ENV}): re-create the zip with only the folder of features.csv and its volumes."
        )
    total = sum(info.file_size for info in infos)
    if total > limits.upload_mb * MB:
        raise EveInputError(
            f"{name} unpacks to {_mb(total)}, over Eve's limit of {limits.upload_mb:,.0f} MB for one upload "
            f"({UPLOAD_ENV}): upload fewer subjects, or run Eve locally on the folder "
            "(python -m engine score --data DIR)."
        )
    seen: set[str] = set()
    entries = []
    for info in infos:
        path = _safe_path(info.filename)
        if path is None:
            raise EveInputError(
                f"{name} has an entry {info.filename!r} that points outside its folder: "
                "re-create the zip from the folder itself (relative paths, no '..')."
            )
        if info.flag_bits & 0x1:
            raise EveInputError(
                f"{name} has an entry {info.filename!r} that is encrypted: re-create the zip without a password."
            )
        if stat.S_ISLNK(info.external_attr >> 16):
            raise EveInputError(
                f"{name} has an entry {info.filename!r} that is a symbolic link: "
                "re-create the zip with the files themselves (zip without --symlinks)."
            )
        if str(path) in seen:
            raise EveInputError(
                f"{name} has two entries named {info.filename!r}: re-create the zip so each file is in it once."
            )
        seen.add(str(path))
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size >= limits.ratio_from_mb * MB and ratio > limits.ratio:
            raise EveInputError(
                f"{name}: {info.filename!r} unpacks {ratio:,.0f} times larger than it is packed, over Eve's "
                f"limit of {limits.ratio:,.0f} ({RATIO_ENV}); a volume compresses a few times, "
                "a zip bomb a thousand: upload the real files."
            )
        if info.is_dir() or path.parts[0] == "__MACOSX":
            continue
        entries.append(Entry(path, info.file_size, _opener(archive, info), f"{name}: {info.filename}"))
    return entries


def _opener(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Callable[[], BinaryIO]:
    return lambda: archive.open(info)


def _loose_entry(name: str, source: BinaryIO) -> Entry:
    path = _safe_path(PurePosixPath(name.replace("\\", "/")).name)
    if path is None:
        raise EveInputError(
            f"An uploaded file is called {name!r}, which is no file name: rename it and upload it again."
        )

    return Entry(path, _size_of(source), lambda: _Borrowed(source), path.name)


def _without_top_folder(entries: list[Entry]) -> tuple[list[Entry], str | None]:
    """A zip of a folder has one top folder: dropped so features.csv sits at the root; (entries, its name)."""
    tops = {e.path.parts[0] for e in entries if len(e.path.parts) > 1}
    if len(tops) != 1 or any(len(e.path.parts) == 1 for e in entries):
        return entries, None
    top = tops.pop()
    return [Entry(PurePosixPath(*e.path.parts[1:]), e.size, e.open, e.shown) for e in entries], top


def folder_name(name: str) -> str:
    """A folder name safe on disk: what the user called their cohort, shown in reports."""
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in name).strip("-.")
    return safe[:64] or UNNAMED


@dataclass(frozen=True)
class Plan:
    """What an upload writes: each entry at its path in `folder`, and the bytes that will take."""

    folder: str
    entries: tuple[Entry, ...]

    @property
    def size(self) -> int:
        return sum(e.size for e in self.entries)


def plan_dataset(files: Sequence[tuple[str, BinaryIO]], limits: UploadLimits) -> Plan:
    """What an uploaded dataset (a .zip of the folder, or features.csv + its NIfTI files) writes, every
    limit checked and features.csv matched to the volumes; nothing is written. Each volume goes to the
    path features.csv names for it (matched by file name), so a CSV written for the original folder
    works unchanged. Raises EveInputError naming the problem and the fix."""
    if not files:
        raise EveInputError("No files uploaded: upload features.csv with its NIfTI volumes, or a .zip of the folder.")
    entries: list[Entry] = []
    folder = UNNAMED  # loose files: no name to keep
    for name, source in files:
        if name.lower().endswith(".zip"):
            unzipped, top = _without_top_folder(_zip_entries(name, source, limits))
            entries.extend(unzipped)
            folder = folder_name(top or PurePosixPath(name).stem)
        else:
            entries.append(_loose_entry(name, source))
    total = sum(e.size for e in entries)
    if total > limits.upload_mb * MB:
        raise EveInputError(
            f"The upload is {_mb(total)}, over Eve's limit of {limits.upload_mb:,.0f} MB for one upload "
            f"({UPLOAD_ENV}): upload fewer subjects, or run Eve locally on the folder "
            "(python -m engine score --data DIR)."
        )
    names = Counter(str(e.path) for e in entries)
    doubled = sorted(n for n, k in names.items() if k > 1)
    if doubled:
        raise EveInputError(f"{doubled[0]!r} was uploaded twice: upload each file once (one dataset folder at a time).")
    csvs = [e for e in entries if e.path.name == "features.csv"]
    if not csvs:
        raise EveInputError(
            "No features.csv among the uploaded files: add a features.csv with a 'file' column naming "
            "each volume and one column per feature."
        )
    if len(csvs) > 1:
        raise EveInputError("More than one features.csv was uploaded: upload one dataset folder at a time.")
    volumes: dict[str, list[Entry]] = {}
    for e in entries:
        if e.path.name.lower().endswith(NIFTI_SUFFIXES):
            volumes.setdefault(e.path.name, []).append(e)
    if not volumes:
        others = [e.shown for e in entries if e is not csvs[0]]
        extra = f" (got {', '.join(others[:3])})" if others else ""
        raise EveInputError(
            f"No NIfTI volumes (.nii or .nii.gz) were uploaded{extra}: upload the volumes that features.csv names."
        )
    csv = csvs[0]
    if csv.size > limits.csv_mb * MB:
        raise EveInputError(
            f"features.csv is {_mb(csv.size)}, over Eve's limit of {limits.csv_mb:,.0f} MB "
            f"({CSV_ENV}): keep one row per volume and only the feature columns."
        )
    try:
        with csv.open() as stream:
            table = read_features_csv(io.BufferedReader(_Bounded(stream, csv.size, csv.shown)))
    except (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, NotImplementedError, RuntimeError) as exc:
        raise EveInputError(
            f"{csv.shown} cannot be unpacked ({reason(exc)}): re-create the zip (zip the folder again)."
        ) from exc
    placed: dict[PurePosixPath, Entry] = {}
    by_path = {e.path: e for es in volumes.values() for e in es}
    for row, name in enumerate(table["file"], start=2):
        rel = _safe_path(name)
        if rel is None:
            raise EveInputError(
                f"features.csv row {row}: {name!r} is not a relative path: name files relative to the folder."
            )
        found = by_path.get(rel) or (volumes[rel.name][0] if len(volumes.get(rel.name, ())) == 1 else None)
        if found is None and rel.name in volumes:
            raise EveInputError(
                f"features.csv row {row} names {name!r}, and several uploaded volumes have that file name: "
                "name each file by its path inside the folder."
            )
        if found is None:
            raise EveInputError(
                f"features.csv row {row} names {name!r}, which was not uploaded: upload that file too, "
                "or remove the row."
            )
        placed[rel] = found
    generators = [
        Entry(PurePosixPath(GENERATORS_DIR, e.path.name), e.size, e.open, e.shown)
        for e in entries
        if e.path.parent.name == GENERATORS_DIR and e.path.name.endswith((".json", ".safetensors"))
    ]
    written = [Entry(rel, e.size, e.open, e.shown) for rel, e in placed.items()]
    for entry in written:
        _check_name_length(entry)
        _check_claimed_voxels(entry, limits)
    written.append(Entry(PurePosixPath("features.csv"), csv.size, csv.open, csv.shown))
    return Plan(folder, tuple(sorted([*written, *generators], key=lambda e: str(e.path))))


def _check_name_length(entry: Entry) -> None:
    parts = [part.encode("utf-8", "surrogateescape") for part in entry.path.parts]
    if max(len(part) for part in parts) > NAME_BYTES or len(b"/".join(parts)) > PATH_BYTES:
        raise EveInputError(
            f"{entry.shown[:80]!r}… has a name or folder path too long to write (file names up to {NAME_BYTES} bytes, "
            f"paths up to {PATH_BYTES}): rename it shorter, in the upload and in features.csv."
        )


def claimed_voxels(head: bytes) -> int | None:
    """Voxels a NIfTI-1 or NIfTI-2 header (the file's first 540 bytes, uncompressed) says its image holds:
    the product of dim[1..dim[0]]; None when `head` is no NIfTI header (load_dataset then says why)."""
    for order in "<>":
        if len(head) >= 348 and struct.unpack_from(order + "i", head)[0] == 348:
            dims = struct.unpack_from(order + "8h", head, 40)  # NIfTI-1: int16 dim[8] at byte 40
        elif len(head) >= 540 and struct.unpack_from(order + "i", head)[0] == 540:
            dims = struct.unpack_from(order + "8q", head, 16)  # NIfTI-2: int64 dim[8] at byte 16
        else:
            continue
        if not 1 <= dims[0] <= 7:
            return None
        total = 1
        for n in dims[1 : dims[0] + 1]:
            total *= max(int(n), 1)
        return total
    return None


def _check_claimed_voxels(entry: Entry, limits: UploadLimits) -> None:
    """Refuse a volume whose header claims more voxels than `limits.volume_mvoxels`, before it is written:
    a few hundred bytes are read (decompressed for .nii.gz); a header that cannot be read is load_dataset's
    to name."""
    try:
        with entry.open() as stream:
            if entry.path.name.lower().endswith(".gz"):
                stream = gzip.GzipFile(fileobj=stream)
            head = stream.read(540)
    except (OSError, EOFError, zlib.error, lzma.LZMAError, zipfile.BadZipFile, NotImplementedError, RuntimeError):
        return
    voxels = claimed_voxels(head)
    if voxels is not None and voxels > limits.volume_mvoxels * MB:
        raise EveInputError(
            f"{entry.shown}: its header claims {voxels:,} voxels, over Eve's limit of {limits.volume_mvoxels:,.0f} "
            f"million for one volume ({VOXELS_ENV}; 128 is 512^3): upload the volume at its real size, or run Eve "
            "locally on the folder (python -m engine score --data DIR)."
        )


def plan_model(name: str, source: BinaryIO, limits: UploadLimits) -> Plan:
    """What an uploaded model file writes (`<its name>.pt`); nothing is written."""
    entry = _loose_entry(name, source)
    if entry.size == 0:
        raise EveInputError(f"{name} is empty: upload the TorchScript file saved with torch.jit.save.")
    if entry.size > limits.upload_mb * MB:
        raise EveInputError(
            f"{name} is {_mb(entry.size)}, over Eve's limit of {limits.upload_mb:,.0f} MB for one upload "
            f"({UPLOAD_ENV}): run Eve locally with the model (python -m engine score --model FILE)."
        )
    stem = folder_name(PurePosixPath(entry.path).name.removesuffix(".pt").removesuffix(".pth"))
    return Plan("", (Entry(PurePosixPath(f"{stem}.pt"), entry.size, entry.open, entry.shown),))


# -- 2. streamed to disk, the counts enforced again ---------------------------------------------------


class _Bounded(io.RawIOBase):
    """A read stream that refuses to give more than `size` bytes (what its header declared)."""

    def __init__(self, stream: BinaryIO, size: int, shown: str):
        self._stream, self._left, self._shown = stream, size, shown

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        try:
            data = self._stream.read(min(len(buffer), self._left + 1))
        except (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, OSError) as exc:  # bz2 says OSError
            raise EveInputError(
                f"{self._shown} cannot be unpacked ({reason(exc)}): re-create the zip (zip the folder again)."
            ) from exc
        if len(data) > self._left:
            raise EveInputError(
                f"{self._shown} holds more bytes than its header declares: re-create the zip (it is damaged or forged)."
            )
        self._left -= len(data)
        buffer[: len(data)] = data
        return len(data)


class _HashingWriter:
    """A file being written that hashes what it is given (sha256) and counts it."""

    def __init__(self, target: BinaryIO):
        self._target, self.hash, self.written = target, hashlib.sha256(), 0

    def write(self, data) -> int:
        self.hash.update(data)
        self.written += len(data)
        return self._target.write(data)


def _stream(entry: Entry, target: Path) -> bytes:
    """Copy one entry to `target` in CHUNK pieces, never more than it declared; its sha256."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with entry.open() as source, open(target, "wb") as out:
            writer = _HashingWriter(out)
            shutil.copyfileobj(_Bounded(source, entry.size, entry.shown), writer, CHUNK)
    except (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, NotImplementedError, RuntimeError) as exc:
        raise EveInputError(
            f"{entry.shown} cannot be unpacked ({reason(exc)}): re-create the zip (zip the folder again)."
        ) from exc
    except OSError as exc:  # the server's side: a full disk, a name its file system refuses
        raise EveInputError(
            f"{entry.shown} could not be written on the server ({reason(exc)}): try again later, and tell the "
            "operator if it persists (the upload space may be full)."
        ) from exc
    if writer.written != entry.size:
        raise EveInputError(
            f"{entry.shown} holds {writer.written:,} bytes where its header declares {entry.size:,}: "
            "re-create the zip (it is damaged or forged)."
        )
    return writer.hash.digest()


# -- 3., 4. the store: atomic folders within a quota, the least recently used removed --------------------


class Lease:
    """A folder (or model file) in the store that someone uses: it is not removed while this object
    lives. Keep it where its user's state lives (a session's state), and it goes with it."""

    def __init__(self, store: UploadStore, unit: Path, path: Path):
        self.unit, self.path = unit, path
        store._pin(unit)
        weakref.finalize(self, store._unpin, unit)

    def __repr__(self) -> str:
        return f"Lease({str(self.path)!r})"


class UploadStore:
    """Uploads under `root`, one folder per distinct upload (`<root>/<digest>/`), together within
    `limits.quota_mb`; a session's within `limits.session_mb`. Thread-safe within one process."""

    def __init__(self, root: Path, limits: UploadLimits):
        self.root, self.limits = Path(root), limits
        self._lock = threading.RLock()  # re-entrant: a lease's finalizer may run inside a locked section
        self._pins: Counter[str] = Counter()
        self._reserved = 0  # bytes being written right now (counted against the quota)

    # -- what is pinned, and how much the store holds

    def _pin(self, unit: Path) -> None:
        with self._lock:
            self._pins[str(unit)] += 1
        _touch(unit)

    def _unpin(self, unit: Path) -> None:
        with self._lock:
            self._pins[str(unit)] -= 1
            if self._pins[str(unit)] <= 0:
                del self._pins[str(unit)]
        _touch(unit)  # last used now: ages out from here

    def pinned(self, unit: Path) -> bool:
        return self._pins.get(str(unit), 0) > 0

    def units(self) -> list[Path]:
        """Every finished upload folder (no `.partial` one)."""
        if not self.root.is_dir():
            return []
        return [p for p in self.root.iterdir() if p.is_dir() and not p.name.endswith(PARTIAL)]

    def used(self) -> int:
        """Bytes the store holds on disk, `.partial` folders included."""
        return _size(self.root)

    def holds(self, leases: Iterable[Lease]) -> int:
        """Bytes on disk of the folders these leases hold (each once)."""
        return sum(_size(unit) for unit in {lease.unit for lease in leases})

    # -- writing

    def write(self, plan: Plan, held: Iterable[Lease] = ()) -> Lease:
        """Write `plan` (or find the same upload written before) and lease it; `held` is what the
        session already holds and keeps (its per-session quota counts them)."""
        held_bytes = self.holds(held)
        if held_bytes + plan.size > self.limits.session_mb * MB:
            raise EveInputError(
                f"This upload needs {_mb(plan.size)} and your session already holds {_mb(held_bytes)} of uploads, "
                f"over Eve's limit of {self.limits.session_mb:,.0f} MB a session "
                f"({SESSION_ENV}): remove an upload you no longer use, or upload fewer subjects."
            )
        with self._lock:
            self._make_room(plan.size)
            self._reserved += plan.size
        staged = self.root / f"{uuid.uuid4().hex}{PARTIAL}"
        try:
            digest = hashlib.sha256(plan.folder.encode())
            for entry in plan.entries:
                digest.update(str(entry.path).encode() + b"\0" + _stream(entry, staged / plan.folder / entry.path))
            unit = self.root / digest.hexdigest()[:16]
            path = unit / plan.folder if plan.folder else unit / plan.entries[0].path
            with self._lock:
                if unit.is_dir():  # the same upload, written before (by this session or another)
                    shutil.rmtree(staged, ignore_errors=True)
                else:
                    staged.rename(unit)  # atomic: the folder is whole or absent
                return Lease(self, unit, path)
        finally:
            shutil.rmtree(staged, ignore_errors=True)
            with self._lock:
                self._reserved -= plan.size

    def _make_room(self, need: int) -> None:
        """Remove the least recently used folders no lease holds until `need` more bytes fit the quota;
        raise EveInputError naming the limit when even that cannot make room. Called under the lock."""
        quota = self.limits.quota_mb * MB
        now = time.time()
        if self.root.is_dir():
            for stale in self.root.glob(f"*{PARTIAL}"):
                if now - stale.stat().st_mtime > STALE_PARTIAL_S:
                    shutil.rmtree(stale, ignore_errors=True)
        sizes = {unit: _size(unit) for unit in self.units()}
        used = sum(sizes.values()) + self._reserved  # in-flight writes count as whole
        if used + need <= quota:
            return
        idle = sorted((u for u in sizes if not self.pinned(u)), key=_last_used)
        for unit in idle:
            shutil.rmtree(unit, ignore_errors=True)
            used -= sizes[unit]
            if used + need <= quota:
                return
        held = sum(size for unit, size in sizes.items() if self.pinned(unit))
        raise EveInputError(
            f"Eve's upload space is full: open sessions hold {_mb(held)} of its {self.limits.quota_mb:,.0f} MB "
            f"({QUOTA_ENV}) and this upload needs {_mb(need)}: try again when other sessions "
            "have closed, upload fewer subjects, or ask the operator to raise the limit."
        )


def _touch(unit: Path) -> None:
    try:
        os.utime(unit)
    except OSError:
        pass  # removed meanwhile, or not written yet


def _last_used(unit: Path) -> float:
    try:
        return unit.stat().st_mtime
    except OSError:
        return 0.0


def _size(folder: Path) -> int:
    """Bytes of the files under `folder` (0 if it is gone)."""
    total = 0
    for parent, _dirs, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(parent, name)).st_size
            except OSError:
                pass  # removed while walking
    return total
