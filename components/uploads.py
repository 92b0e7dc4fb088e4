"""Uploads in the app: which upload is which, and what the session keeps of it.

An upload is known by what Streamlit already knows of it (`UploadedFile.file_id`, name and size),
so a rerun finds what it wrote in the session's state and touches none of its bytes: the work
proportional to an upload (checking, unpacking, hashing, writing: `engine.data.uploads`, where
every limit lives) happens once per upload, as does its failure message.

What the session keeps is small: per uploader, a `Lease` on the folder or model file the upload
wrote (it pins it against eviction while the session lives), or the error it gave. It keeps the
uploader's current upload and the one in use (the last that loaded), nothing else: a removed or
replaced upload is dropped, and its folder ages out of the store (least recently used first).
Nothing uploaded is unpickled: volumes go to nibabel, models to the zoo's TorchScript loader.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

import streamlit as st

from components import state
from engine.data.uploads import Lease, UploadLimits, UploadStore, plan_dataset, plan_model, upload_root
from engine.errors import EveInputError

LIMITS = UploadLimits.from_env()  # the operator's limits (README "Upload limits")
UPLOAD_ROOT = upload_root()
MAX_TOTAL_MB = LIMITS.upload_mb  # the same limit under its earlier name (tests/test_app.py lowers it)
STORE = UploadStore(UPLOAD_ROOT, LIMITS)  # one per server process: its leases pin folders for all sessions


def _limits() -> UploadLimits:
    return replace(LIMITS, upload_mb=MAX_TOTAL_MB)


@dataclass(frozen=True)
class Written:
    """What one upload gave: a lease on what it wrote, or the error that refused it (no traceback:
    that would keep the run's frames, and the upload with them, alive in the session)."""

    lease: Lease | None
    error: EveInputError | None


def identity(files: Sequence) -> tuple:
    """An upload as the uploader knows it: no byte of it is read."""
    return tuple((f.file_id, f.name, f.size) for f in files)


def _written(
    key: str, upload: tuple, write: Callable[[list[Lease]], Lease], in_use: str | None, adopted: bool = False
) -> Path:
    """What `upload` (an `identity`) in uploader `key` wrote: written now if this session has not
    seen it, else read from the session. Raises the upload's EveInputError (again on every rerun).
    `adopted`: a new upload that is written is in use from now on (the one used before is let go)."""
    sessions_uploads: dict = st.session_state[state.UPLOADS]
    held: dict = sessions_uploads.setdefault(key, {})
    # the session keeps the uploader's current upload and the one in use; the others go (and age out)
    for other in [u for u, w in held.items() if u != upload and (w.lease is None or str(w.lease.path) != in_use)]:
        del held[other]
    seen = held.get(upload)
    if seen is None or (seen.lease is not None and not seen.lease.path.exists()):
        kept = [w.lease for k, uploads in sessions_uploads.items() if k != key for w in uploads.values() if w.lease]
        try:
            seen = Written(write(kept), None)
        except EveInputError as exc:
            seen = Written(None, type(exc)(*exc.args))
        if adopted and seen.lease is not None:
            held.clear()
        held[upload] = seen
    if seen.error is not None:
        raise type(seen.error)(*seen.error.args)
    return seen.lease.path


def forget(key: str, in_use: str | None) -> None:
    """The uploader `key` is empty: keep only the lease of what is in use."""
    held: dict = st.session_state[state.UPLOADS].get(key, {})
    for other in [u for u, w in held.items() if w.lease is None or str(w.lease.path) != in_use]:
        del held[other]


def dataset(files: Sequence, check: Callable[[Path], object]) -> Path:
    """The folder the dataset uploader's `files` (Streamlit `UploadedFile`s) were written to; `check`
    (the dataset loader) runs once on a newly written folder, and its EveInputError is the upload's."""

    def write(kept: list[Lease]) -> Lease:
        lease = STORE.write(plan_dataset([(f.name, f) for f in files], _limits()), kept)
        check(lease.path)
        return lease

    return _written(state.DATASET_UPLOAD, identity(files), write, st.session_state[state.USER_DATASET], adopted=True)


def model(upload) -> Path:
    """The file the model uploader's `upload` (an `UploadedFile`) was written to."""
    in_use = st.session_state[state.USER_MODEL]

    def write(kept: list[Lease]) -> Lease:
        return STORE.write(plan_model(upload.name, upload, _limits()), kept)

    return _written(state.MODEL_UPLOAD, identity([upload]), write, in_use and in_use.path)


def dataset_folder(files: Sequence[tuple[str, bytes | BinaryIO]]) -> Path:
    """Write a dataset from (name, bytes or file object) pairs outside any session (scripts, tests):
    nothing pins the folder, so it may be evicted once the store needs room."""
    import io

    sources = [(name, io.BytesIO(data) if isinstance(data, bytes) else data) for name, data in files]
    return STORE.write(plan_dataset(sources, _limits())).path
