"""Regions of a model's input for the region methods (`baselines` FeatureAblation, ShapleyValueSampling,
Lime, KernelShap) and for reading a map by region ("the ventricles carry 41% of this output").

    grid_regions(spec)              square cells: any input, 2D or 3D
    anatomy_regions(spec)           SynthBrain's template structures and tissues (MNI152, nilearn's)
    atlas_regions(spec, "aal")      a real atlas Debian's mricron-data ships in MNI space (AAL, AICHA)
    region_shares(map, regions)     each region's sum of the map and its share of the whole

Anatomy and atlases are label volumes in MNI space, put on the 2 mm MNI152 grid SynthBrain's volumes
live on (nearest neighbour) and cut and resized exactly as a model's input is (`slicing`), so they
are right for inputs that are named slices (MNI coordinates) of volumes in MNI space.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from engine.data.slicing import SliceSpec, extract_slice, to_square
from engine.errors import EveInputError

ATLAS_DIR = Path("/usr/share/mricron/templates")  # Debian's mricron-data
ATLASES = {  # name: (label volume, "index name value" lines), both MNI space
    "aal": ("aal.nii.gz", "aal.nii.txt", "AAL (Tzourio-Mazoyer et al., 2002)"),
    "aicha": ("AICHAmc.nii.gz", "AICHAmc.nii.txt", "AICHA (Joliot et al., 2015)"),
}
ANATOMY = ("outside the brain", "ventricles", "hippocampi", "grey matter", "white matter", "other CSF")
REGION_KINDS = ("grid", "anatomy", *ATLASES)


@dataclass(frozen=True)
class Regions:
    """A label per pixel of one model input (0..R-1) and each label's name."""

    labels: np.ndarray  # (S, S) or (S, S, S) int64
    names: tuple[str, ...]
    source: str  # what the regions are, for captions and reports

    def __post_init__(self):
        if int(self.labels.max()) + 1 != len(self.names) or int(self.labels.min()) < 0:
            raise ValueError("labels must number the regions 0..len(names)-1")


def grid_regions(spec: SliceSpec, cells: int | None = None) -> Regions:
    """Square cells (`baselines.region_labels("grid")`: 8 a side for a slice, 4 for a volume)."""
    from engine.pixelmaps.methods import GRID_CELLS, region_labels

    shape = (spec.size,) * (3 if spec.is_volume else 2)
    per_side = cells or GRID_CELLS[len(shape)]
    labels = region_labels(max(1, spec.size // per_side), shape).numpy()
    names = tuple(f"cell {i + 1}" for i in range(int(labels.max()) + 1))
    return Regions(labels, names, f"a grid of {per_side} x {per_side} cells")


def _require_mni_slice(spec: SliceSpec, what: str) -> None:
    if spec.is_volume or not isinstance(spec.index, str) or spec.orientation != "ras":
        raise EveInputError(
            f"{what} regions are cut from an MNI atlas in RAS+ order, so they need a model whose input is a named "
            f"MNI slice in orientation ras (this one takes {spec.describe()}): use regions 'grid' for this model."
        )


def _cut(labels: np.ndarray, affine: np.ndarray, spec: SliceSpec) -> np.ndarray:
    """A label volume cut and resized as the model's input is: each label's indicator through
    `to_square`, then the most present label per pixel."""
    plane = extract_slice(labels, affine, spec.plane, spec.index)
    present = np.unique(plane)
    stack = torch.stack([torch.from_numpy((plane == v).astype(np.float32)) for v in present])[:, None]
    resized = to_square(stack, spec.size)[:, 0]  # (L, S, S)
    return present[resized.argmax(0).numpy()].astype(np.int64)


def _dense(labels: np.ndarray, names: dict[int, str]) -> tuple[np.ndarray, tuple[str, ...]]:
    values, dense = np.unique(labels, return_inverse=True)
    return dense.reshape(labels.shape).astype(np.int64), tuple(names.get(int(v), f"label {v}") for v in values)


@functools.lru_cache(maxsize=1)
def _anatomy_volume() -> tuple[np.ndarray, np.ndarray]:
    """SynthBrain's template as one label volume on the 2 mm MNI152 grid: a voxel takes the first of
    ventricles, hippocampi, grey matter, white matter, other CSF that holds it (soft maps at 0.5)."""
    from engine.data.synthbrain import load_template

    t = load_template()
    labels = np.zeros(t.shape, np.int64)
    csf = np.clip(t.brain - t.gm - t.wm, 0, 1)
    for value, mask in reversed(list(enumerate((t.ventricles, t.hippocampus, t.gm, t.wm, csf), start=1))):
        labels[mask > 0.5] = value  # reversed: the earlier structure wins where they overlap
    labels[t.brain <= 0.5] = 0
    return labels, t.affine


def anatomy_regions(spec: SliceSpec) -> Regions:
    """SynthBrain's structures and tissues in the model's input: ventricles, hippocampi, grey and white
    matter, other CSF, outside the brain."""
    _require_mni_slice(spec, "Anatomy")
    volume, affine = _anatomy_volume()
    labels, names = _dense(_cut(volume, affine, spec), dict(enumerate(ANATOMY)))
    return Regions(labels, names, "SynthBrain's template structures (MNI152 2 mm, nilearn)")


@functools.lru_cache(maxsize=4)
def _atlas_volume(name: str) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
    import nibabel as nib
    from nibabel.processing import resample_from_to

    from engine.data.synthbrain import load_template

    if name not in ATLASES:
        raise EveInputError(f"Unknown atlas {name!r}: use one of {', '.join(ATLASES)}.")
    volume_file, names_file, _ = ATLASES[name]
    if not (ATLAS_DIR / volume_file).is_file():
        raise EveInputError(
            f"The {name} atlas is not installed ({ATLAS_DIR / volume_file} is missing): install Debian's "
            "mricron-data (apt-get install mricron-data), or use regions 'anatomy' or 'grid'."
        )
    template = load_template()
    grid = nib.Nifti1Image(np.zeros(template.shape, np.uint8), template.affine)
    atlas = resample_from_to(nib.load(ATLAS_DIR / volume_file), grid, order=0)  # labels: nearest neighbour
    names = {0: "outside the atlas"}
    for line in (ATLAS_DIR / names_file).read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].isdigit():
            names[int(parts[0])] = parts[1]
    return np.asarray(atlas.dataobj).astype(np.int64), template.affine, names


def atlas_regions(spec: SliceSpec, name: str = "aal") -> Regions:
    """A real atlas's labels in the model's input (`ATLASES`: AAL's 116, AICHA's 384 regions, those the slice cuts)."""
    _require_mni_slice(spec, f"Atlas ({name})")
    volume, affine, names = _atlas_volume(name)
    labels, found = _dense(_cut(volume, affine, spec), names)
    return Regions(labels, found, f"the {ATLASES[name][2]} atlas, from Debian's mricron-data")


def regions_for(kind: str, spec: SliceSpec) -> Regions:
    """Regions by kind (`REGION_KINDS`): 'grid', 'anatomy' or an atlas name."""
    if kind == "grid":
        return grid_regions(spec)
    if kind == "anatomy":
        return anatomy_regions(spec)
    if kind in ATLASES:
        return atlas_regions(spec, kind)
    raise EveInputError(f"Unknown regions {kind!r}: use one of {', '.join(REGION_KINDS)}.")


MIN_SEPARABLE_PIXELS = 16  # a region smaller than this in the model's input is below a map's resolution


def region_shares(amap, regions: Regions, *, regional: bool = False, whole: float | None = None) -> pd.DataFrame:
    """Per region, largest |attribution| first: its pixels, its attribution (a pixel map's sum over its
    pixels; a region method's map, `regional`: one value copied to each pixel of a region, that value), the
    direction it pushes the output ("raises" / "lowers"), and `share`: its part of the total |attribution|,
    so the shares are all positive and add up to 100% whatever the signs. With `whole` = f(x) − f(baseline),
    `of_difference` is the signed attribution over it (Shapley values over regions add up to it exactly;
    parts of opposite signs can each exceed it). `separable` is False for a region with fewer than
    `MIN_SEPARABLE_PIXELS` pixels in the input: too small for a map to tell from its neighbours."""
    amap = np.asarray(amap, dtype=np.float64).reshape(regions.labels.shape)
    n = len(regions.names)
    pixels = np.bincount(regions.labels.ravel(), minlength=n)
    sums = np.bincount(regions.labels.ravel(), weights=amap.ravel(), minlength=n)
    values = sums / np.maximum(pixels, 1) if regional else sums
    magnitude = np.abs(values).sum()
    share = np.abs(values) / magnitude if magnitude > 1e-12 else np.full_like(values, np.nan)
    whole = values.sum() if whole is None else float(whole)
    of_difference = values / whole if abs(whole) > 1e-12 else np.full_like(values, np.nan)
    table = pd.DataFrame(
        {
            "region": regions.names,
            "pixels": pixels,
            "attribution": values,
            "direction": np.where(values > 0, "raises", np.where(values < 0, "lowers", "none")),
            "share": share,
            "of_difference": of_difference,
            "separable": pixels >= MIN_SEPARABLE_PIXELS,
        }
    )
    present = table[table["pixels"] > 0]
    return present.iloc[np.argsort(-np.abs(present["attribution"].to_numpy()), kind="stable")].reset_index(drop=True)


def with_regions(params: dict, regions: Regions | None) -> dict:
    """A region method's parameters with these regions' labels (unchanged without regions)."""
    return params if regions is None else {**params, "regions": regions.labels}


__all__ = [
    "ANATOMY",
    "ATLASES",
    "REGION_KINDS",
    "Regions",
    "anatomy_regions",
    "atlas_regions",
    "grid_regions",
    "region_shares",
    "regions_for",
]
