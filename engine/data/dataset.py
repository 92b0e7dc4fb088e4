"""A dataset folder: NIfTI volumes plus a `features.csv` (the image layer over `slicing`).

`features.csv` has one row per image:

* `file` (required): path of the `.nii`/`.nii.gz` file, relative to the folder;
* `subject` (optional): a unique ID; defaults to the file name without its extension;
* `split` (optional): `train` / `test`, used by Eve's training scripts;
* columns whose name starts with `label` (optional): targets, never scored as features;
* every other column is a feature. A column whose values are all numbers is numeric; a
  column with no numbers at all is categorical (e.g. `sex` = F/M); a column that mixes
  numbers and text, or has empty cells, is an error naming the row.

`load_dataset` checks the table and every file's header up front, so a folder either
loads whole or raises one `DatasetError` naming the file/row and the fix. Voxel data is
read lazily (`check_voxels=True` reads and checks every volume at load time).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import torch

from engine.data.bundle import bundle_inputs
from engine.data.registration import register_to_mni
from engine.data.remote import RemoteFolder, is_remote
from engine.data.slicing import SliceSpec, mni_space_problem, model_input, stored_axis, where_cut
from engine.errors import DatasetError, reason

RESERVED_COLUMNS = ("subject", "file", "split")
SPLITS = ("test", "train", "all")  # the rows a split means: `engine.scores.service.split_rows`
GENERATORS_DIR = "eve-generators"  # generators trained on a folder's subjects live in <folder>/eve-generators/
NIFTI_SUFFIXES = (".nii", ".nii.gz")


def _is_label(column: str) -> bool:
    return column.startswith("label")


def _subject_from_file(name: str) -> str:
    base = Path(name).name
    for suffix in NIFTI_SUFFIXES[::-1]:  # longest first
        if base.endswith(suffix):
            return base[: -len(suffix)]
    return base


def read_features_csv(source, name: str = "features.csv") -> pd.DataFrame:
    """A features table as text, with a 'file' column; `source` is a path or a file-like object.

    Shared by folder loading and the app's upload check, so both refuse the same tables the same way.
    """
    try:
        with warnings.catch_warnings():
            # a row with more values than the header: pandas would take the first column as the index (every value
            # shifted one column left) or, with index_col=False, drop the extra values with this warning
            warnings.simplefilter("error", pd.errors.ParserWarning)
            table = pd.read_csv(source, dtype=str, keep_default_na=False, index_col=False)
    except pd.errors.ParserWarning as exc:
        raise DatasetError(
            f"{name} has a row with more values than its header has columns ({reason(exc)}): give every row one "
            "value per column (a comma inside a value needs quotes)."
        ) from exc
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DatasetError(
            f"{name} is not a readable CSV ({reason(exc)}): save it as plain comma-separated text."
        ) from exc
    table.columns = [c.strip() for c in table.columns]
    doubled = sorted({c for c in table.columns if list(table.columns).count(c) > 1})
    if doubled:
        raise DatasetError(
            f"{name} has two columns named {doubled[0]!r} (spaces around a name do not count): rename or remove one."
        )
    separator = next((s for s in (";", "\t", "|") if len(table.columns) == 1 and s in table.columns[0]), None)
    if "file" not in table.columns and separator:
        raise DatasetError(
            f"{name} is separated by {separator!r}, not commas: save it as comma-separated text (a 'file' column "
            "naming each volume, one column per feature)."
        )
    if "file" not in table.columns:
        raise DatasetError(
            f"{name} has no 'file' column (columns: {', '.join(table.columns) or 'none'}): "
            "add a 'file' column with each volume's path relative to the folder."
        )
    return table


def _read_table(csv_path: Path, shown: str | None = None) -> pd.DataFrame:
    """features.csv read and checked; `shown` names it in messages (default its path)."""
    if not csv_path.is_file():
        raise DatasetError(
            f"No features.csv in {csv_path.parent}: add a features.csv with a 'file' column "
            "naming each NIfTI volume and one column per feature."
        )
    shown = shown or str(csv_path)
    table = read_features_csv(csv_path, shown)
    if table.empty:
        raise DatasetError(f"{shown} has no rows: add one row per volume.")
    if "subject" not in table.columns:
        table.insert(0, "subject", [_subject_from_file(f) for f in table["file"]])
    duplicated = table["subject"][table["subject"].duplicated()]
    if len(duplicated):
        row = int(duplicated.index[0]) + 2  # +1 header, +1 one-based
        raise DatasetError(
            f"{shown}: subject ID {duplicated.iloc[0]!r} appears more than once (row {row}): "
            "give every row a unique subject ID."
        )
    return table


def _parse_features(table: pd.DataFrame, csv_path: Path | str) -> tuple[pd.DataFrame, list[str], list[str]]:
    """Convert feature and label columns: numeric where every value is a number."""
    numeric, categorical = [], []
    converted = table.copy()
    for column in table.columns:
        if column in RESERVED_COLUMNS:
            continue
        text = table[column].str.strip()
        empty = text == ""
        if empty.any():
            row = int(np.flatnonzero(empty.to_numpy())[0]) + 2
            raise DatasetError(
                f"{csv_path}: column {column!r} is empty in row {row}: fill the value or remove the row."
            )
        values = pd.to_numeric(text, errors="coerce")
        is_number = values.notna().to_numpy()
        if is_number.all():
            if not np.isfinite(values.to_numpy(dtype=float)).all():
                row = int(np.flatnonzero(~np.isfinite(values.to_numpy(dtype=float)))[0]) + 2
                raise DatasetError(
                    f"{csv_path}: column {column!r} has a non-finite value in row {row}: use a finite number."
                )
            converted[column] = values.astype(float)
            if not _is_label(column):
                numeric.append(column)
        elif is_number.any():
            row = int(np.flatnonzero(~is_number)[0]) + 2
            raise DatasetError(
                f"{csv_path}: column {column!r} mixes numbers and text; row {row} has "
                f"{text.iloc[row - 2][:40]!r}: make every value a number (or every value a category name)."
            )
        else:
            converted[column] = text
            if not _is_label(column):
                categorical.append(column)
    return converted, numeric, categorical


def _check_suffix(name: str, row: int) -> None:
    if not name.endswith(NIFTI_SUFFIXES):
        raise DatasetError(f"Row {row}: {name} is not a NIfTI file (.nii or .nii.gz): convert it to NIfTI.")


def _check_header(path: Path, row: int) -> tuple[int, ...]:
    if not path.is_file():
        raise DatasetError(f"Row {row}: file {path} does not exist: fix the path in features.csv or add the file.")
    _check_suffix(path.name, row)
    try:
        image = nib.load(path)
    except Exception as exc:  # nibabel raises several types for a bad header
        raise DatasetError(
            f"Row {row}: {path.name} is not a readable NIfTI file ({reason(exc)}): re-export the volume."
        ) from exc
    affine = np.asarray(image.affine, dtype=float)
    if not np.isfinite(affine).all() or np.linalg.matrix_rank(affine[:3, :3]) < 3:
        said = "is not finite" if not np.isfinite(affine).all() else "is singular (it maps the voxels onto a plane)"
        raise DatasetError(
            f"Row {row}: {path.name}'s voxel-to-world transform (its header's affine) {said}, so Eve cannot tell "
            "its orientation: re-export the volume with a valid affine (sform or qform)."
        )
    return _checked_shape(tuple(int(s) for s in image.shape), path.name, row)


def _checked_shape(shape: tuple[int, ...], name: str, row: int) -> tuple[int, ...]:
    """A header's shape as Eve uses it (2D or 3D, trailing singleton axes dropped), or why it cannot be."""
    # trailing singleton axes are how most tools write one 2D image, (X, Y, 1) or (X, Y, 1, 1),
    # or one 3D volume of a series, (X, Y, Z, 1)
    while len(shape) > 2 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) not in (2, 3):
        raise DatasetError(
            f"Row {row}: {name} has {len(shape)} dimensions {shape}; Eve needs a 2D image or a 3D volume: "
            "export one volume (e.g. one time point) per file."
        )
    if min(shape) < 2:
        raise DatasetError(f"Row {row}: {name} has shape {shape}, too thin to slice: check the export.")
    return shape


def _not_on_this_machine(path: Path, row: int) -> DatasetError:
    """A file the folder listed when it was opened, missing now (or on this cluster node)."""
    return DatasetError(
        f"Row {row}: {path} does not exist on this machine: every node that reads the dataset must see the "
        "same folder (a shared file system), or give the data as an object-store URI (s3://...)."
    )


def _fingerprint(root: Path, files) -> str:
    """Hash of the files' names, sizes and modification times: keys the on-disk caches."""
    h = hashlib.sha1()
    for row, name in enumerate(files):
        try:
            stat = (root / name).stat()
        except FileNotFoundError as exc:  # seen when the folder was opened, gone now (or on this node)
            raise _not_on_this_machine(root / name, row + 2) from exc
        h.update(f"{name}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return h.hexdigest()[:16]


def _check_headers(root: Path, files, remote: RemoteFolder | None = None) -> list[tuple[int, ...]]:
    """Every file's checked shape; remembered in `.eve_cache/` for an unchanged set of files. For a
    remote folder, `root` is its mirror and each shape comes from a ranged read of the header."""
    if remote is None:
        for row, name in enumerate(files):  # a missing file has no fingerprint: report it first
            if not (root / name).is_file():
                _check_header(root / name, row + 2)
        fingerprint = _fingerprint(root, files)
    else:
        for row, name in enumerate(files):
            if name not in remote.stamps:
                raise remote.not_found(name, row + 2)
        fingerprint = remote.fingerprint(files)
    cache = root / ".eve_cache" / f"headers-{fingerprint}.json"
    if cache.is_file():
        return [tuple(shape) for shape in json.loads(cache.read_text())]
    if remote is None:
        shapes = [_check_header(root / name, row + 2) for row, name in enumerate(files)]
    else:
        for row, name in enumerate(files):
            _check_suffix(name, row + 2)
        shapes = [_checked_shape(remote.header_shape(name, row + 2), name, row + 2) for row, name in enumerate(files)]
    try:
        cache.parent.mkdir(exist_ok=True)
        cache.write_text(json.dumps(shapes))
    except OSError:
        pass  # a read-only folder still works, only slower next time
    return shapes


@dataclass
class Dataset:
    """A loaded dataset folder. Build with `load_dataset`."""

    root: Path
    table: pd.DataFrame  # one row per image; numeric columns as float
    numeric_features: list[str]
    categorical_features: list[str]
    shapes: list[tuple[int, ...]]
    truth: dict | None = None  # contents of truth.json for Eve's synthetic sets
    remote: RemoteFolder | None = None  # an object-store folder, `root` its local mirror (`engine.data.remote`)
    _stacks: dict = field(default_factory=dict, repr=False)

    def __getstate__(self) -> dict:
        # sent to a Ray worker: without the in-memory stacks, and a remote folder's mirror is the worker's own
        return {**self.__dict__, "_stacks": {}}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if self.remote is not None:
            self.root = self.remote.mirror

    def file_path(self, row: int) -> Path:
        """The local path of row `row`'s image (a remote folder's is fetched into its mirror first)."""
        name = self.table["file"].iloc[row]
        if self.remote is not None:
            return self.remote.local(name, row + 2)
        path = self.root / name
        if not path.is_file():
            raise _not_on_this_machine(path, row + 2)
        return path

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def location(self) -> str:
        """Where the dataset lives, for reports: its folder, or its object-store URI without the query."""
        return self.remote.name_uri if self.remote is not None else str(self.root.resolve())

    @property
    def features(self) -> list[str]:
        return self.numeric_features + self.categorical_features

    @property
    def label_columns(self) -> list[str]:
        return [c for c in self.table.columns if _is_label(c)]

    @property
    def subjects(self) -> list[str]:
        return self.table["subject"].tolist()

    @property
    def is_3d(self) -> bool:
        return len(self.shapes[0]) == 3

    def __len__(self) -> int:
        return len(self.table)

    def index_of(self, subject: str) -> int:
        matches = np.flatnonzero(self.table["subject"].to_numpy() == subject)
        if not len(matches):
            raise DatasetError(f"Unknown subject {subject!r} in {self.name}: choose one listed in features.csv.")
        return int(matches[0])

    def split_indices(self, split: str) -> np.ndarray:
        """Row indices of a split; every row when the table has no `split` column."""
        if "split" not in self.table.columns:
            return np.arange(len(self))
        return np.flatnonzero(self.table["split"].to_numpy() == split)

    def feature_values(self, name: str) -> np.ndarray:
        if name not in self.table.columns or name in RESERVED_COLUMNS:
            raise DatasetError(f"Unknown feature {name!r} in {self.name}: choose one of {', '.join(self.features)}.")
        return self.table[name].to_numpy()

    def load_image(self, subject: str | int, orientation: str = "ras") -> nib.Nifti1Image:
        """The subject's image, voxel data checked (finite): a 3D volume in RAS+ voxel order (`ras`, Eve's
        convention) or as the file stores it (`stored`); a 2D image as stored either way."""
        row = subject if isinstance(subject, (int, np.integer)) else self.index_of(subject)
        path = self.file_path(row)
        canonical = len(self.shapes[row]) == 3 and orientation == "ras"
        try:
            image = nib.as_closest_canonical(nib.load(path)) if canonical else nib.load(path)
            data = np.asarray(image.dataobj, dtype=np.float32)
        except Exception as exc:
            raise DatasetError(
                f"Row {row + 2}: {path.name} could not be read ({reason(exc)}): the file is corrupt; re-export it."
            ) from exc
        data = data.reshape(data.shape[: len(self.shapes[row])])  # drop the trailing singleton axes
        bad = ~np.isfinite(data)
        if bad.any():
            raise DatasetError(
                f"Row {row + 2}: {path.name} has {int(bad.sum())} NaN/Inf voxels: "
                "replace them (e.g. with 0) before loading."
            )
        header = image.header.copy()
        header.set_data_dtype(np.float32)  # voxels are returned as float32, whatever the file stores
        return nib.Nifti1Image(data, image.affine, header)

    def volume(
        self, subject: str | int, register: bool = False, orientation: str = "ras"
    ) -> tuple[np.ndarray, np.ndarray]:
        """(voxel array float32, affine): in RAS+ voxel order (`ras`) or as stored (`stored`); with
        `register`, resampled onto MNI152's 2 mm grid by an affine registration
        (`registration.register_to_mni`, its transform cached per file; RAS+ only)."""
        image = self.load_image(subject, orientation)
        if register:
            row = subject if isinstance(subject, (int, np.integer)) else self.index_of(subject)
            name = self.table["file"].iloc[row]
            cache = self.root / ".eve_cache" / f"mni-{_fingerprint(self.root, [name])}.tfm"
            image = register_to_mni(image, cache)
        return np.asarray(image.dataobj, dtype=np.float32), image.affine

    def model_inputs(self, spec: SliceSpec, rows=None) -> torch.Tensor:
        """The model inputs for `rows` (default all) as a float32 tensor: (N, 1, size, size) slices,
        or (N, 1, size, size, size) volumes for a volume input (`slicing.model_input`).

        The full stack for a spec is computed once and cached in memory and on disk
        (`<folder>/.eve_cache/`), keyed by the files' names, sizes and modification times.
        """
        stack = self._stack(spec)
        return stack if rows is None else stack[torch.as_tensor(np.asarray(rows), dtype=torch.long)]

    def fingerprint(self) -> str:
        """A hash of the files' names, sizes and modification times: keys the on-disk caches."""
        if self.remote is not None:
            return self.remote.fingerprint(self.table["file"])
        return _fingerprint(self.root, self.table["file"])

    def _check_mni_space(self, spec: SliceSpec, rows: np.ndarray) -> None:
        """A named slice is an MNI coordinate: refuse it on any of `rows`' volumes not in MNI space."""
        for row in rows:
            row, name = int(row), self.table["file"].iloc[int(row)]
            image = nib.load(self.file_path(row))  # the header only; the world extent needs no reorienting
            problem = mni_space_problem(image.shape[:3], image.affine, *self._xform_codes(image))
            if problem:
                raise DatasetError(
                    f"Row {row + 2}: {name} is not in MNI space ({problem}), so the named slice {spec.index!r} "
                    "(an MNI coordinate) would cut it in the wrong place: register the volumes to MNI152 and set "
                    "their sform code to MNI_152 (4), let Eve register them (--register mni, or the sidebar's "
                    "toggle), or give the slice as a voxel index or 'middle'."
                )

    @staticmethod
    def _xform_codes(image: nib.Nifti1Image) -> tuple[int, int]:
        header = image.header
        if not hasattr(header, "get_sform"):  # e.g. an ANALYZE header: no xform codes at all
            return 0, 0
        return int(header.get_sform(coded=True)[1]), int(header.get_qform(coded=True)[1])

    def input_location(self, subject: str | int, spec: SliceSpec) -> str:
        """Where a slice model's input is cut from this subject's volume, in words ("voxel 45", "voxel 45 of
        stored axis 2"); "" for a volume input or a 2D image. Reads the header only (the registered volume
        for a registered contract)."""
        row = subject if isinstance(subject, (int, np.integer)) else self.index_of(subject)
        if spec.is_volume or len(self.shapes[row]) != 3:
            return ""
        if spec.register:
            data, affine = self.volume(row, register=True)
            shape = data.shape
        else:
            image = nib.load(self.file_path(row))
            if spec.orientation == "ras":
                ornt = nib.orientations.io_orientation(image.affine)  # as `as_closest_canonical` reorders it
                shape = np.zeros(3, int)
                shape[ornt[:, 0].astype(int)] = self.shapes[row]
                affine = image.affine @ nib.orientations.inv_ornt_aff(ornt, self.shapes[row])
            else:
                shape, affine = self.shapes[row], image.affine
        return where_cut(shape, affine, spec)

    def shard_inputs(self, spec: SliceSpec, rows) -> torch.Tensor:
        """The model inputs of `rows` alone, as `model_inputs` gives them: from the full stack where it
        is cached, else read from those rows' files only, caching nothing (a cluster worker's shard)."""
        if spec.key in self._stacks or self._cache_path(spec).is_file():
            return self.model_inputs(spec, rows)
        return self._read_inputs(spec, np.asarray(rows, dtype=np.int64))

    def _cache_path(self, spec: SliceSpec) -> Path:
        return self.root / ".eve_cache" / f"{spec.key}-{self.fingerprint()}.npy"

    def _read_inputs(self, spec: SliceSpec, rows: np.ndarray) -> torch.Tensor:
        if spec.bundle is not None:  # the bundle's own preprocessing, run by MONAI, on each file
            return bundle_inputs(spec.bundle, [self.file_path(int(row)) for row in rows])
        if spec.is_volume and not self.is_3d:
            raise DatasetError(
                f"{self.name} holds 2D images, and the model takes whole volumes (input kind 'volume'): "
                "choose a dataset of 3D volumes, or a model that takes a slice."
            )
        if isinstance(spec.index, str) and self.is_3d and not spec.register and not spec.is_volume:
            self._check_mni_space(spec, rows)
        if spec.orientation == "stored":
            self._check_stored_orientation(spec, rows)
        def read(row) -> tuple[np.ndarray, np.ndarray]:
            return self.volume(int(row), register=spec.register and self.is_3d, orientation=spec.orientation)

        # the next file is read and decoded (zlib and numpy's casts release the GIL) while this one is cut: one
        # volume ahead, so at most two are in memory
        slices = []
        with ThreadPoolExecutor(max_workers=1) as reader:
            ahead = reader.submit(read, rows[0]) if len(rows) else None
            for i in range(len(rows)):
                data, affine = ahead.result()
                ahead = reader.submit(read, rows[i + 1]) if i + 1 < len(rows) else None
                slices.append(model_input(data, affine, spec))
        return torch.cat(slices)

    def _check_stored_orientation(self, spec: SliceSpec, rows: np.ndarray) -> None:
        """Stored arrays mean one voxel order for the whole cohort: refuse a file stored in another order
        than the first (the model would see its anatomy laid out differently), and, for a slice of a
        volume, a file whose axes are oblique to the world (no stored axis cuts the plane)."""
        first = None
        for row in rows:
            row, name = int(row), self.table["file"].iloc[int(row)]
            affine = nib.load(self.file_path(row)).affine  # the header only
            codes = "".join(nib.aff2axcodes(affine))
            if first is None:
                first = (row, name, codes)
            elif codes != first[2]:
                raise DatasetError(
                    f"Row {row + 2}: {name} is stored in voxel order {codes}, row {first[0] + 2}'s {first[1]} in "
                    f"{first[2]}: under orientation stored the model would see their anatomy laid out differently. "
                    "Reorient the files to one order (e.g. fslreorient2std), or use orientation ras."
                )
            if self.is_3d and not spec.is_volume:
                stored_axis(affine, spec.plane, what=f"Row {row + 2}: {name}")

    def _stack(self, spec: SliceSpec) -> torch.Tensor:
        if spec.key in self._stacks:
            return self._stacks[spec.key]
        cache = self._cache_path(spec)
        if cache.is_file():
            stack = torch.from_numpy(np.load(cache))
        else:
            stack = self._read_inputs(spec, np.arange(len(self)))
            try:
                cache.parent.mkdir(exist_ok=True)
                np.save(cache, stack.numpy())
            except OSError:
                pass  # a read-only folder still works, only slower next time
        self._stacks[spec.key] = stack
        return stack


def resolve_features(dataset: Dataset, features=None) -> list[str]:
    """The features to score: a list or "a,b,c" string; default every numeric + categorical one."""
    if features is None or (isinstance(features, str) and not features.strip()):
        names = list(dataset.features)
    elif isinstance(features, str):
        names = [f.strip() for f in features.split(",") if f.strip()]
    else:
        names = [str(f) for f in features]
    if not names:
        raise DatasetError(f"{dataset.name} has no features to score: add feature columns to features.csv.")
    unknown = [f for f in names if f not in dataset.features]
    if unknown:
        raise DatasetError(
            f"Unknown feature{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} in {dataset.name}: "
            f"choose from {', '.join(dataset.features)}."
        )
    return list(dict.fromkeys(names))  # drop repeats, keep order


def load_dataset(folder: str | Path, *, check_voxels: bool = False) -> Dataset:
    """Load and check a dataset folder (see the module docstring for the CSV format), or an
    object-store folder of the same layout (`s3://bucket/cohort`: `engine.data.remote`).

    Raises `DatasetError` naming the file/row and the fix; never returns a half-loaded set.
    """
    if is_remote(folder):
        return _load_remote(str(folder), check_voxels)
    root = Path(folder)
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder: point Eve at a folder with NIfTI files and features.csv.")
    csv_path = root / "features.csv"
    table = _read_table(csv_path)
    table, numeric, categorical = _parse_features(table, csv_path)
    shapes = _check_headers(root, list(table["file"]))
    ndims = {len(s) for s in shapes}
    if len(ndims) > 1:
        raise DatasetError(f"{root} mixes 2D images and 3D volumes: keep one kind per dataset.")
    truth_path = root / "truth.json"
    truth = json.loads(truth_path.read_text()) if truth_path.is_file() else None
    dataset = Dataset(root, table.reset_index(drop=True), numeric, categorical, shapes, truth)
    if check_voxels:
        for row in range(len(dataset)):
            dataset.load_image(row)
    return dataset


def _load_remote(uri: str, check_voxels: bool) -> Dataset:
    remote = RemoteFolder.open(uri)
    shown = f"{remote.name_uri}/features.csv"
    table = _read_table(remote.local("features.csv"), shown)
    table, numeric, categorical = _parse_features(table, shown)
    shapes = _check_headers(remote.mirror, list(table["file"]), remote)
    if len({len(s) for s in shapes}) > 1:
        raise DatasetError(f"{remote.name_uri} mixes 2D images and 3D volumes: keep one kind per dataset.")
    truth = json.loads(remote.local("truth.json").read_text()) if "truth.json" in remote.stamps else None
    dataset = Dataset(remote.mirror, table.reset_index(drop=True), numeric, categorical, shapes, truth, remote)
    if check_voxels:
        for row in range(len(dataset)):
            dataset.load_image(row)
    return dataset
