"""A cohort on an object store (`s3://bucket/cohort`, `gs://…`, `hdfs://…`), read through pyarrow's
file systems, the ones Ray Data reads.

The folder's layout is a local folder's (`features.csv`, the NIfTI files it names, optionally
`truth.json`). It is mirrored object by object into a local folder, `<EVE_REMOTE_CACHE>/<hash of
the URI>/<its last name>` (default cache `~/.cache/eve/remote`): the table when the cohort is
opened, each image's header by a ranged read of its first bytes, and an image itself only when it
is read — so a Ray worker fetches the files of its own shard and nothing else. Every object is
known by its size and modification time at open: a changed object is fetched again, and those
stamps key the mirror's caches as a local file's stat keys a folder's.

Credentials and endpoints are pyarrow's: the nodes' environment (`AWS_ACCESS_KEY_ID`, an
instance role, ...) or the URI's query (`s3://bucket/cohort?endpoint_override=host:9000&scheme=http`).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import nibabel as nib

from engine.errors import DatasetError, reason

SCHEMES = ("s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss")  # what pyarrow.fs.FileSystem.from_uri opens
CACHE_ENV = "EVE_REMOTE_CACHE"
HEADER_BYTES = 64 * 1024  # a ranged read that holds any NIfTI-1/2 header, gzip-compressed or not
FETCH_CHUNK = 8 * 1024 * 1024


def is_remote(source) -> bool:
    """Whether `source` is an object-store URI rather than a local path or a dataset name."""
    return urlsplit(str(source)).scheme.lower() in SCHEMES


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "eve" / "remote")


def _without_query(uri: str) -> str:
    parts = urlsplit(uri)
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


@dataclass
class RemoteFolder:
    """One object-store folder: its objects' stamps (size, mtime) as listed at `open`, and a local mirror."""

    uri: str
    stamps: dict[str, tuple[int, int]] = field(default_factory=dict)  # name relative to the folder -> stamp
    _fs: object = field(default=None, repr=False, compare=False)
    _base: str = field(default="", repr=False, compare=False)

    @classmethod
    def open(cls, uri: str) -> RemoteFolder:
        folder = cls(uri)
        folder.stamps = folder._list()
        if "features.csv" not in folder.stamps:
            raise DatasetError(
                f"No features.csv in {folder.name_uri}: upload a features.csv with a 'file' column naming each "
                "NIfTI volume (relative to that folder) and one column per feature."
            )
        return folder

    def __getstate__(self) -> dict:  # a pyarrow file system holds live connections: each process opens its own
        return {**self.__dict__, "_fs": None, "_base": ""}

    @property
    def name_uri(self) -> str:
        """The URI without its query (which may hold an endpoint or keys): for messages."""
        return _without_query(self.uri)

    @property
    def name(self) -> str:
        return self.name_uri.rsplit("/", 1)[-1]

    @property
    def mirror(self) -> Path:
        """This process's local copy of the folder (created on first use)."""
        digest = hashlib.sha1(self.name_uri.encode()).hexdigest()[:12]
        path = cache_root() / digest / self.name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _filesystem(self):
        if self._fs is None:
            import pyarrow.fs as pafs

            try:
                self._fs, self._base = pafs.FileSystem.from_uri(self.uri)
            except Exception as exc:  # pyarrow raises ValueError, OSError or ArrowInvalid for a bad URI
                raise DatasetError(
                    f"{self.name_uri} cannot be opened ({reason(exc)}): check the URI, its credentials "
                    "(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the node's role) and its endpoint."
                ) from exc
            self._base = self._base.rstrip("/")
        return self._fs

    def _list(self) -> dict[str, tuple[int, int]]:
        import pyarrow.fs as pafs

        fs = self._filesystem()
        try:
            infos = fs.get_file_info(pafs.FileSelector(self._base, recursive=True, allow_not_found=True))
        except OSError as exc:
            raise DatasetError(
                f"{self.name_uri} cannot be listed ({reason(exc)}): check the URI, its credentials and its endpoint."
            ) from exc
        stamps = {}
        for info in infos:
            if info.type == pafs.FileType.File:
                mtime = info.mtime_ns if info.mtime_ns is not None else 0
                stamps[info.path[len(self._base) + 1 :]] = (int(info.size), int(mtime))
        return stamps

    def not_found(self, name: str, row: int | None) -> DatasetError:
        """The message for an object features.csv names and the store does not hold."""
        where = f"Row {row}: " if row else ""
        return DatasetError(
            f"{where}{name} is not in {self.name_uri}: fix the path in features.csv or upload the file."
        )

    def fingerprint(self, names) -> str:
        """Hash of the objects' names and stamps (as `dataset._fingerprint` hashes a folder's stats)."""
        h = hashlib.sha1()
        for name in names:
            size, mtime = self.stamps[name]
            h.update(f"{name}:{size}:{mtime};".encode())
        return h.hexdigest()[:16]

    def local(self, name: str, row: int | None = None) -> Path:
        """The object `name`, fetched into the mirror unless the mirror holds it at its listed stamp."""
        if name not in self.stamps:
            raise self.not_found(name, row)
        size, mtime = self.stamps[name]
        path = self.mirror / name
        if path.is_file():
            stat = path.stat()
            if stat.st_size == size and (not mtime or stat.st_mtime_ns == mtime):  # a store may give no mtime
                return path
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + f".part-{os.getpid()}")
        try:
            with self._filesystem().open_input_stream(f"{self._base}/{name}", compression=None) as source, partial.open("wb") as out:
                while chunk := source.read(FETCH_CHUNK):
                    out.write(chunk)
            if mtime:
                os.utime(partial, ns=(mtime, mtime))  # the mirror's stat then stands for the object's version
            partial.replace(path)  # whole or not at all: a reader never sees half a file
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise DatasetError(
                f"{name} could not be fetched from {self.name_uri} ({reason(exc)}): check the credentials and "
                "the endpoint, then retry."
            ) from exc
        return path

    def header_shape(self, name: str, row: int) -> tuple[int, ...]:
        """The image's shape from its header alone (a ranged read of its first bytes)."""
        if name not in self.stamps:
            raise self.not_found(name, row)
        try:
            with self._filesystem().open_input_file(f"{self._base}/{name}") as source:
                head = source.read(min(HEADER_BYTES, self.stamps[name][0]))
        except OSError as exc:
            raise DatasetError(
                f"Row {row}: {name} could not be read from {self.name_uri} ({reason(exc)}): check the credentials."
            ) from exc
        try:
            if name.endswith(".gz"):
                head = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(head)
            klass = nib.Nifti2Header if _header_size(head) == 540 else nib.Nifti1Header
            header = klass.from_fileobj(io.BytesIO(head), check=True)
        except (zlib.error, gzip.BadGzipFile, nib.spatialimages.HeaderDataError, ValueError, EOFError) as exc:
            raise DatasetError(
                f"Row {row}: {name} is not a readable NIfTI file ({reason(exc)}): re-export the volume."
            ) from exc
        return tuple(int(s) for s in header.get_data_shape())


def _header_size(head: bytes) -> int:
    """sizeof_hdr, the first int32 of a NIfTI header (348 for NIfTI-1, 540 for NIfTI-2), either byte order."""
    if len(head) < 4:
        return 0
    little, big = int.from_bytes(head[:4], "little"), int.from_bytes(head[:4], "big")
    return 540 if 540 in (little, big) else 348
