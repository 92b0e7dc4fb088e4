"""Uploaded files -> a folder/file the engine can read (the only file writing the app does).

Uploads are written under the system temp folder, named by a hash of their content, so
the same upload maps to the same path (and the same cache entries). Nothing uploaded is
unpickled: volumes go to nibabel, models to the zoo's TorchScript loader.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from engine.data.dataset import GENERATORS_DIR, read_features_csv
from engine.errors import EveInputError

UPLOAD_ROOT = Path(tempfile.gettempdir()) / "eve-uploads"
MAX_TOTAL_MB = 2048  # a whole uploaded folder; each file is also capped by server.maxUploadSize
NIFTI = (".nii", ".nii.gz")
UNNAMED = "your-folder"  # what loose uploaded files (no zip, so no folder name) are called


def _digest(items: list[tuple[str, bytes]]) -> str:
    h = hashlib.sha1()
    for name, data in sorted(items):
        h.update(name.encode() + b"\0" + hashlib.sha1(data).digest())
    return h.hexdigest()[:16]


def _safe_relative(name: str) -> PurePosixPath | None:
    """A relative path inside the folder, or None for absolute paths and '..' escapes."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or not path.parts:
        return None
    return path


def _from_zip(data: bytes) -> tuple[list[tuple[str, bytes]], str | None]:
    """The zip's files, without the one top folder a zipped folder has, and that folder's name (None if none)."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise EveInputError("The .zip file is not a readable zip archive: re-create it (zip the folder).") from exc
    items = []
    for info in archive.infolist():
        if info.is_dir() or info.filename.startswith("__MACOSX"):
            continue
        items.append((info.filename, archive.read(info)))
    # a zip of a folder has one top folder: drop it so features.csv sits at the root
    tops = {PurePosixPath(n).parts[0] for n, _ in items if len(PurePosixPath(n).parts) > 1}
    if len(tops) == 1 and not any(len(PurePosixPath(n).parts) == 1 for n, _ in items):
        top = tops.pop()
        items = [
            (str(PurePosixPath(*PurePosixPath(n).parts[1:])), d) for n, d in items if PurePosixPath(n).parts[0] == top
        ]
        return items, top
    return items, None


def _folder_name(name: str) -> str:
    """A folder name safe on disk: what the user called their cohort, shown in reports."""
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in name).strip("-.")
    return safe[:64] or UNNAMED


def dataset_folder(files: list[tuple[str, bytes]]) -> Path:
    """Write an uploaded dataset (a .zip of the folder, or features.csv + its NIfTI files).

    Each volume is placed at the path `features.csv` names for it (matched by file name),
    so a CSV written for the original folder works unchanged. Raises EveInputError naming
    the problem and the fix; the engine's `load_dataset` then checks the contents.
    """
    if not files:
        raise EveInputError("No files uploaded: upload features.csv with its NIfTI volumes, or a .zip of the folder.")
    total_mb = sum(len(d) for _, d in files) / 2**20
    if total_mb > MAX_TOTAL_MB:
        raise EveInputError(
            f"The upload is {total_mb:.0f} MB, over Eve's {MAX_TOTAL_MB} MB limit for one folder: "
            "upload fewer subjects, or run Eve locally on the folder (python -m engine score --data DIR)."
        )
    items: list[tuple[str, bytes]] = []
    folder = UNNAMED  # loose files: no name to keep
    for name, data in files:
        if name.lower().endswith(".zip"):
            unzipped, top = _from_zip(data)
            items.extend(unzipped)
            folder = _folder_name(top or Path(name).stem)
        else:
            items.append((name, data))
    csvs = [(n, d) for n, d in items if PurePosixPath(n).name == "features.csv"]
    if not csvs:
        raise EveInputError(
            "No features.csv among the uploaded files: add a features.csv with a 'file' column naming "
            "each volume and one column per feature."
        )
    if len(csvs) > 1:
        raise EveInputError("More than one features.csv was uploaded: upload one dataset folder at a time.")
    volumes = {PurePosixPath(n).name: d for n, d in items if n.lower().endswith(NIFTI)}
    others = [n for n, _ in items if not n.lower().endswith(NIFTI) and PurePosixPath(n).name != "features.csv"]
    if not volumes:
        extra = f" (got {', '.join(others[:3])})" if others else ""
        raise EveInputError(
            f"No NIfTI volumes (.nii or .nii.gz) were uploaded{extra}: upload the volumes that features.csv names."
        )
    table = read_features_csv(io.BytesIO(csvs[0][1]))
    # <digest>/<the cohort's name>: the same upload maps to the same path, and the dataset keeps its name
    digest = _digest([*items, ("folder name", folder.encode())])
    root = UPLOAD_ROOT / digest / folder
    placed = {}
    for row, name in enumerate(table["file"], start=2):
        rel = _safe_relative(name)
        if rel is None:
            raise EveInputError(
                f"features.csv row {row}: {name!r} is not a relative path: name files relative to the folder."
            )
        if rel.name not in volumes:
            raise EveInputError(
                f"features.csv row {row} names {name!r}, which was not uploaded: upload that file too, "
                "or remove the row."
            )
        placed[rel] = volumes[rel.name]
    if (root / "features.csv").is_file():
        return root  # same content uploaded before
    staged = UPLOAD_ROOT / f"{digest}.partial"
    shutil.rmtree(staged, ignore_errors=True)
    partial = staged / folder
    for rel, data in placed.items():
        target = partial / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    (partial / "features.csv").write_bytes(csvs[0][1])
    for name, data in _generator_files(items):  # a generator trained on this folder comes with it
        target = partial / GENERATORS_DIR / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    shutil.rmtree(root.parent, ignore_errors=True)  # an earlier upload that stopped half-way
    staged.rename(root.parent)
    return root


def _generator_files(items: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """(file name, bytes) of the generator cards and weights inside an `eve-generators/` folder of the upload."""
    return [
        (PurePosixPath(n).name, d)
        for n, d in items
        if PurePosixPath(n).parent.name == GENERATORS_DIR and n.endswith((".json", ".safetensors"))
    ]


def model_file(name: str, data: bytes) -> Path:
    """Write an uploaded model file; the zoo only ever opens it with torch.jit.load (checked there)."""
    if not data:
        raise EveInputError(f"{name} is empty: upload the TorchScript file saved with torch.jit.save.")
    path = UPLOAD_ROOT / "models" / f"{_digest([(name, data)])}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file():
        path.write_bytes(data)
    return path
