"""From a volume to a model input, a 2D slice or the whole volume: the array layer (pure
numpy/torch, no file I/O).

Conventions, used everywhere in Eve:

* Volumes are first brought to RAS+ voxel order (`nibabel.as_closest_canonical`), so
  axis 0 runs left→right, axis 1 posterior→anterior, axis 2 inferior→superior.
* A 2D slice is returned as an image array of shape (rows, cols) in *neurological*
  convention: the patient's left on the image's left; anterior (axial) or superior
  (coronal, sagittal) at the top. Radiological display is a left-right flip done by the UI.
* A 2D dataset (one image per file, e.g. `shapes`) is treated as a single axial slice.
* A whole-volume input (`SliceSpec.input == "volume"`) is a (1, 1, S, S, S) tensor whose spatial
  axes are RAS+'s x, y, z (left→right, posterior→anterior, inferior→superior): the volume is
  resampled to isotropic voxels (`spacing` mm, or the spacing that fits its whole field of view
  into the cube) and centre-padded or cropped to the cube, so anisotropic voxels keep their shape.

Orientation is part of the contract (`SliceSpec.orientation`, one of `ORIENTATIONS`). All of the above
is `ras`, Eve's convention, which its own models are trained on. `stored` feeds the array exactly as
the file stores it, as `nib.load(f).get_fdata()` gives it to most users' training pipelines: a 2D
image as its stored (X, Y); a volume in its stored voxel order, resampled, padded and cropped in that
order; a slice is cut along the stored axis closest to the plane's world axis (found through the
affine: a volume whose axes are oblique to the world has no such axis and is refused) and keeps the
other two stored axes as (rows, cols), untransposed and unflipped (`stored_slice`).

Intensity: what a model is fed is part of its input contract (`SliceSpec.intensity`, one of
`INTENSITIES`), applied to the whole volume before slicing, so all slices of a subject share one
scale. `raw` feeds the stored values (after the header's scaling) unchanged; `p99`, Eve's rule for
its own models (`normalise_intensity`), divides by the 99th percentile of the non-zero voxels and
clips to [0, 1]. An explainer that changes a model's input explains a different model, so a
user's model gets `raw` unless its card says otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from engine.data.bundle import read_bundle
from engine.errors import EveInputError

PLANES = ("axial", "coronal", "sagittal")
INPUT_KINDS = ("slice", "volume")  # a 2D slice of each volume, or the whole volume (3D models)
# voxel axis that a plane cuts across, in RAS+ order
PLANE_AXIS = {"sagittal": 0, "coronal": 1, "axial": 2}

# intensity rule -> what it does, for cards and reports
INTENSITIES: dict[str, str] = {
    "raw": "the stored values (after the header's scaling), as float32",
    "p99": "divided by the 99th percentile of the non-zero voxels, clipped to [0, 1]",
    "zscore": "minus the mean, over the standard deviation, of the non-zero voxels",
    "minmax": "minus the minimum, over the range (max - min), to [0, 1]",
}

# orientation -> what the model is fed, for cards and reports
ORIENTATIONS: dict[str, str] = {
    "ras": "RAS+ voxel order, a slice shown in neurological display (the patient's left on the image's left, "
    "anterior or superior at the top)",
    "stored": "the array as the file stores it (its voxel order, axes neither reordered nor flipped)",
}
# a stored voxel axis more than this many degrees off every world axis is oblique: no plane to cut along
OBLIQUE_DEGREES = 30.0

# Named anatomical slices as world (MNI, mm) coordinates along the plane's axis.
# They work for any cohort registered to MNI space, whatever its voxel grid.
NAMED_SLICES: dict[str, tuple[str, float]] = {
    "ventricles": ("axial", 16.0),  # axial cut through the bodies of the lateral ventricles
    "hippocampus": ("coronal", -22.0),  # coronal cut through both hippocampal bodies
    "midline": ("sagittal", 0.0),  # mid-sagittal plane
    "basal-ganglia": ("axial", 4.0),
}


@dataclass(frozen=True)
class SliceSpec:
    """What a model sees, its input contract: a 2D slice (a plane, a slice — voxel index, a name in
    `NAMED_SLICES` or None for the middle — and the square output size) or the whole volume (a cube
    of side `size`, at `spacing` mm or fitted to the field of view), and the intensity rule applied
    to the volume first."""

    plane: str = "axial"  # one of PLANES
    index: int | str | None = "ventricles"  # voxel index, named slice, or None (middle)
    size: int = 64  # output is (size, size)
    intensity: str = "p99"  # one of INTENSITIES; Eve's own models are trained on p99
    register: bool = False  # register each volume to MNI152 (affine) first: named slices for native volumes
    input: str = "slice"  # one of INPUT_KINDS; "volume": plane and index are not used
    spacing: float | None = None  # volume input: isotropic voxel size in mm (None: fit the field of view)
    orientation: str = "ras"  # one of ORIENTATIONS; Eve's own models are trained on ras
    bundle: str | None = None  # a MONAI bundle folder: its own preprocessing makes the input (`engine.data.bundle`)

    def __post_init__(self):
        if self.bundle is not None:  # the bundle's transforms are the contract: nothing else applies
            info = read_bundle(self.bundle)
            object.__setattr__(self, "bundle", str(info.root))
            object.__setattr__(self, "input", "volume" if len(info.spatial) == 3 else "slice")
            for name, value in (("plane", "axial"), ("index", None), ("size", max(info.spatial))):
                object.__setattr__(self, name, value)
            for name, value in (("intensity", "raw"), ("register", False), ("spacing", None)):
                object.__setattr__(self, name, value)
            object.__setattr__(self, "orientation", "stored")
            return
        if self.intensity not in INTENSITIES:
            raise EveInputError(f"Unknown intensity rule {self.intensity!r}: use one of {', '.join(INTENSITIES)}.")
        if self.input not in INPUT_KINDS:
            raise EveInputError(f"Unknown input kind {self.input!r}: use one of {', '.join(INPUT_KINDS)}.")
        if self.orientation not in ORIENTATIONS:
            raise EveInputError(
                f"Unknown orientation {self.orientation!r}: use one of {', '.join(ORIENTATIONS)} "
                "(stored: the arrays as your files store them; ras: Eve's RAS+ convention)."
            )
        if self.register and self.orientation == "stored":
            raise EveInputError(
                "Registration resamples each volume onto MNI152's grid in RAS+ order, so no stored array is left "
                "to feed: register with orientation ras, or feed the stored arrays without registration."
            )
        if self.input == "volume":
            # plane and slice do not apply: one canonical value, so equal contracts compare equal
            object.__setattr__(self, "plane", "axial")
            object.__setattr__(self, "index", None)
            if self.spacing is not None and not 0.1 <= float(self.spacing) <= 20:
                raise EveInputError(f"Voxel spacing {self.spacing} mm is out of range: use 0.1 to 20 mm.")
            if not 4 <= int(self.size) <= 256:
                raise EveInputError(f"Volume cube side {self.size} is out of range: use 4 to 256 voxels.")
            return
        if self.spacing is not None:
            raise EveInputError("A voxel spacing applies to a volume input only: drop it, or set the input to volume.")
        if self.plane not in PLANES:
            raise EveInputError(f"Unknown plane {self.plane!r}: use one of {', '.join(PLANES)}.")
        if isinstance(self.index, str):
            if self.index not in NAMED_SLICES:
                raise EveInputError(
                    f"Unknown named slice {self.index!r}: use a voxel index or one of {', '.join(NAMED_SLICES)}."
                )
            if NAMED_SLICES[self.index][0] != self.plane:
                raise EveInputError(
                    f"Named slice {self.index!r} is a {NAMED_SLICES[self.index][0]} slice, "
                    f"not {self.plane}: change the plane or the slice."
                )
        if not 8 <= int(self.size) <= 512:
            raise EveInputError(f"Slice size {self.size} is out of range: use 8 to 512 pixels.")

    @staticmethod
    def parse_index(text: str | int | None) -> int | str | None:
        """A slice as typed (CLI flag, text box): None/""/"middle"/"None" -> None (the middle slice),
        digits -> a voxel index, anything else -> a named slice (checked by the constructor)."""
        if text is None or isinstance(text, int):
            return text
        text = text.strip()
        if text.lower() in ("middle", "none", ""):
            return None
        return int(text) if text.lstrip("-").isdigit() else text

    @property
    def is_volume(self) -> bool:
        return self.input == "volume"

    @property
    def shape(self) -> tuple[int, ...]:
        """One input's shape without the batch axis: (1, S, S), or (1, S, S, S) for a volume (a bundle's:
        what its metadata states)."""
        if self.bundle is not None:
            return read_bundle(self.bundle).shape
        return (1,) + (int(self.size),) * (3 if self.is_volume else 2)

    @property
    def key(self) -> str:
        """A file-name-safe key of everything that changes the model input (disk caches)."""
        if self.bundle is not None:
            return f"bundle-{read_bundle(self.bundle).digest}"
        if self.is_volume:
            key = f"volume-{self.size}" + ("" if self.spacing is None else f"-{float(self.spacing):g}mm")
        else:
            key = f"{self.plane}-{self.index}-{self.size}"
        key += "" if self.intensity == "p99" else f"-{self.intensity}"
        key += "" if self.orientation == "ras" else f"-{self.orientation}"
        return key + ("-mni" if self.register else "")

    def describe(self) -> str:
        """The contract in words, for cards and reports."""
        if self.bundle is not None:
            return read_bundle(self.bundle).describe()
        registered = "each volume registered to MNI152 (affine) first; " if self.register else ""
        if self.is_volume:
            voxels = "fitted to the field of view" if self.spacing is None else f"at {float(self.spacing):g} mm"
            where = f"the whole volume, a {self.size}^3 cube of isotropic voxels {voxels}"
        else:
            slice_ = "the middle slice" if self.index is None else f"slice {self.index}"
            where = f"{self.plane} {slice_}, {self.size}x{self.size} px"
        return (
            f"{registered}{where}; orientation {self.orientation}: {ORIENTATIONS[self.orientation]}; "
            f"intensity {self.intensity}: {INTENSITIES[self.intensity]}"
        )


P99_STRIDE = 16  # every 16th voxel brackets the 99th percentile before the exact selection


def _numpy_lerp(a, b, t: float):
    """numpy's own interpolation between two order statistics (`np.percentile`, method "linear"), so the
    result is np.percentile's to the bit: a + (b - a) t below t = 0.5, b - (b - a)(1 - t) from there."""
    diff = b - a
    return b - diff * (1 - t) if t >= 0.5 else a + diff * t


def intensity_scale(volume: np.ndarray) -> float:
    """The 99th percentile of the positive voxels (float32), 0 for an empty volume: `np.percentile`'s value
    to the bit, in about a fifth of its time on a 1 mm head (`benchmarks/bench_cohort_1mm.py`).

    1. n positive voxels, and the two order statistics np.percentile interpolates (its virtual index);
    2. a bracket [a, b] around them from every `P99_STRIDE`-th voxel (widened by 5 sampling sd);
    3. exact: count the positives below a, select the voxels in [a, b] and partition that small set; if the
       bracket missed the ranks, partition every positive voxel (np.percentile's own way)."""
    flat = np.asarray(volume, dtype=np.float32).ravel(order="K")  # memory order: no copy of a NIfTI array
    n = int(np.count_nonzero(flat > 0))
    if n == 0:
        return 0.0
    q = np.true_divide(99, 100.0)
    virtual = n * q + (1 + q * (1 - 1 - 1)) - 1  # numpy's virtual index for method "linear"
    previous = np.floor(virtual)
    gamma = float(virtual - previous)
    lo, hi = int(np.clip(previous, 0, n - 1)), int(np.clip(previous + 1, 0, n - 1))
    found = None
    sample = flat[::P99_STRIDE]
    sample = sample[sample > 0]
    if sample.size >= 1000:
        m = sample.size
        rank, width = lo / max(n - 1, 1) * (m - 1), 5 * np.sqrt(m * 0.01) + 16
        ends = [int(max(0, np.floor(rank - width))), int(min(m - 1, np.ceil(rank + width)))]
        part = np.partition(sample, ends)
        a, b = part[ends[0]], part[ends[1]]
        below = int(np.count_nonzero(flat < a)) - (flat.size - n)  # a > 0: every non-positive voxel is below it
        if below <= lo:
            inside = flat[(flat >= a) & (flat <= b)]
            if hi < below + inside.size:
                inside.partition([lo - below, hi - below])
                found = inside[lo - below], inside[hi - below]
    if found is None:
        foreground = flat[flat > 0]
        foreground.partition([lo, hi])
        found = foreground[lo], foreground[hi]
    return float(_numpy_lerp(found[0], found[1], gamma))


def normalise_intensity(volume: np.ndarray) -> np.ndarray:
    """Divide by `intensity_scale` and clip to [0, 1] (float32)."""
    volume = np.asarray(volume, dtype=np.float32)
    scale = intensity_scale(volume)
    if scale <= 0:
        return np.zeros_like(volume)
    scaled = np.divide(volume, np.float32(scale))  # one new array, clipped in place: volume / scale's values
    return np.clip(scaled, 0.0, 1.0, out=scaled)


# MNI152's brain (mm, RAS): a volume in MNI space covers this box, give or take MNI_MARGIN_MM
MNI_BRAIN_BOX = ((-68.0, 68.0), (-102.0, 68.0), (-48.0, 78.0))
MNI_MARGIN_MM = 5.0
MNI_CODE, ALIGNED_CODES = 4, (2, 3)  # NIfTI xform codes: 4 = MNI_152; 2 = aligned, 3 = Talairach


def mni_space_problem(shape: tuple[int, ...], affine: np.ndarray, sform_code: int, qform_code: int) -> str | None:
    """None when a 3D volume is in MNI space, so a named (MNI-coordinate) slice can be taken from it;
    else why not, in words. MNI space: an xform code of MNI_152, or one of "aligned" / Talairach
    with a world extent that covers MNI152's brain; "unknown" or "scanner" codes are native space."""
    codes = {int(sform_code), int(qform_code)}
    if MNI_CODE in codes:
        return None
    if not codes & set(ALIGNED_CODES):
        return f"its header says native (scanner) space (sform code {sform_code}, qform code {qform_code})"
    corners = np.array(
        [[i, j, k, 1.0] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1) for k in (0, shape[2] - 1)]
    )
    world = (affine @ corners.T)[:3]
    low, high = world.min(axis=1), world.max(axis=1)
    for axis, (name, (box_low, box_high)) in enumerate(zip("xyz", MNI_BRAIN_BOX, strict=True)):
        if low[axis] > box_low + MNI_MARGIN_MM or high[axis] < box_high - MNI_MARGIN_MM:
            return (
                f"its world extent ({name} from {low[axis]:.0f} to {high[axis]:.0f} mm) does not cover the MNI152 "
                f"brain ({name} from {box_low:.0f} to {box_high:.0f} mm)"
            )
    return None


def apply_intensity(volume: np.ndarray, rule: str) -> np.ndarray:
    """A whole volume under an intensity rule (`INTENSITIES`), as float32."""
    volume = np.asarray(volume, dtype=np.float32)
    if rule == "raw":
        return volume
    if rule == "p99":
        return normalise_intensity(volume)
    if rule == "zscore":
        foreground = volume[volume != 0]
        if foreground.size < 2 or foreground.std() == 0:
            return np.zeros_like(volume)
        return (volume - foreground.mean()) / foreground.std()
    if rule == "minmax":
        low, high = float(volume.min()), float(volume.max())
        return np.zeros_like(volume) if high <= low else (volume - low) / (high - low)
    raise EveInputError(f"Unknown intensity rule {rule!r}: use one of {', '.join(INTENSITIES)}.")


def slice_index(shape: tuple[int, ...], affine: np.ndarray, plane: str, index) -> int:
    """Voxel index along `plane`'s axis for an int, a named slice or None (middle)."""
    axis = PLANE_AXIS[plane]
    n = shape[axis]
    if index is None:
        return n // 2
    if isinstance(index, str):
        _, world_mm = NAMED_SLICES[index]
        # voxel coordinate of the world point along this axis (RAS+ affine: diagonal-dominant)
        point = np.zeros(4)
        point[axis] = world_mm
        point[3] = 1.0
        voxel = np.linalg.solve(affine, point)
        return int(np.clip(round(voxel[axis]), 0, n - 1))
    index = int(index)
    if not 0 <= index < n:
        raise EveInputError(
            f"Slice index {index} is outside the volume's {plane} range 0..{n - 1}: choose an index inside it."
        )
    return index


def extract_slice(volume: np.ndarray, affine: np.ndarray, plane: str, index) -> np.ndarray:
    """A 2D (rows, cols) image in neurological convention from a RAS+ 3D volume.

    A 2D array is returned as is (after the same display orientation as an axial slice).
    """
    if volume.ndim == 2:
        return np.ascontiguousarray(volume.T[::-1])
    k = slice_index(volume.shape, affine, plane, index)
    if plane == "axial":
        cut = volume[:, :, k]  # (x, y)
    elif plane == "coronal":
        cut = volume[:, k, :]  # (x, z)
    else:
        cut = volume[k, :, :]  # (y, z)
    # rows = second axis, top = anterior/superior
    return np.ascontiguousarray(cut.T[::-1])


def stored_axis(affine: np.ndarray, plane: str, what: str = "The volume") -> int:
    """The stored voxel axis closest to `plane`'s world axis (x for sagittal, y coronal, z axial),
    through the affine's direction cosines; an axis more than `OBLIQUE_DEGREES` off it is refused
    (the message names `what`)."""
    rotation = np.asarray(affine, float)[:3, :3]
    norms = np.linalg.norm(rotation, axis=0)
    cosines = np.abs(rotation[PLANE_AXIS[plane]] / np.where(norms > 0, norms, 1.0))  # one per voxel axis
    axis = int(np.argmax(cosines))
    angle = float(np.degrees(np.arccos(np.clip(cosines[axis], 0.0, 1.0))))
    if angle > OBLIQUE_DEGREES:
        world = "xyz"[PLANE_AXIS[plane]]
        raise EveInputError(
            f"{what}'s voxel axes are oblique to the world (the closest to the {world} axis is {angle:.0f} degrees "
            f"off), so no stored axis cuts a {plane} slice: reslice the volumes to the scanner axes, feed the model "
            "the whole volume (input volume), or use orientation ras."
        )
    return axis


def stored_slice_index(shape: tuple[int, ...], affine: np.ndarray, plane: str, index) -> tuple[int, int]:
    """(stored axis, voxel index along it) of a slice of a stored 3D volume: the middle for None, a
    named MNI slice through the affine, or a voxel index checked against the axis."""
    axis = stored_axis(affine, plane)
    n = shape[axis]
    if index is None:
        return axis, n // 2
    if isinstance(index, str):
        point = np.zeros(4)
        point[PLANE_AXIS[plane]], point[3] = NAMED_SLICES[index][1], 1.0
        voxel = np.linalg.solve(np.asarray(affine, float), point)
        return axis, int(np.clip(round(voxel[axis]), 0, n - 1))
    index = int(index)
    if not 0 <= index < n:
        raise EveInputError(
            f"Slice index {index} is outside the volume's stored axis {axis} (closest to {plane}), range "
            f"0..{n - 1}: choose an index inside it."
        )
    return axis, index


def stored_slice(volume: np.ndarray, affine: np.ndarray, plane: str, index) -> np.ndarray:
    """A 2D image as the file stores it: a 2D array unchanged (X, Y); a 3D volume's slice across the
    stored axis closest to `plane` (`stored_slice_index`), the other two stored axes as (rows, cols)."""
    if volume.ndim == 2:
        return np.ascontiguousarray(volume)
    axis, k = stored_slice_index(volume.shape, affine, plane, index)
    return np.ascontiguousarray(np.take(volume, k, axis=axis))


def cut_slice(volume: np.ndarray, affine: np.ndarray, spec: SliceSpec) -> np.ndarray:
    """The 2D image a slice model is fed, before resizing, in the spec's orientation: `extract_slice`
    of a RAS+ volume (ras) or `stored_slice` of a stored one."""
    if spec.orientation == "stored":
        return stored_slice(volume, affine, spec.plane, spec.index)
    return extract_slice(volume, affine, spec.plane, spec.index)


def where_cut(shape: tuple[int, ...], affine: np.ndarray, spec: SliceSpec) -> str:
    """Where a slice model's input is cut from a volume (in the spec's orientation), in words."""
    if spec.is_volume or len(shape) != 3:
        return ""
    if spec.orientation == "stored":
        axis, k = stored_slice_index(shape, affine, spec.plane, spec.index)
        return f"voxel {k} of stored axis {axis}"
    return f"voxel {slice_index(shape, affine, spec.plane, spec.index)}"


def cube_planes(cube: np.ndarray, point: tuple[int, int, int] | None = None) -> dict[str, tuple[int, np.ndarray]]:
    """The three planes through voxel `point` (None: the centre) of a volume model's input cube
    (RAS+ x, y, z; isotropic voxels): {plane: (voxel index, image in neurological convention)}."""
    cube = np.asarray(cube)
    point = tuple(n // 2 for n in cube.shape) if point is None else tuple(int(p) for p in point)
    return {
        plane: (point[PLANE_AXIS[plane]], extract_slice(cube, np.eye(4), plane, point[PLANE_AXIS[plane]]))
        for plane in PLANES
    }


def peak_voxel(volume_map: np.ndarray) -> tuple[int, int, int]:
    """The voxel of a 3D map's largest |value| (where three planes through the map should cross)."""
    volume_map = np.abs(np.asarray(volume_map))
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(volume_map)), volume_map.shape))


# voxel axes (RAS+) along a displayed slice's (rows, columns), as `extract_slice` lays them out
DISPLAY_AXES = {"axial": (1, 0), "coronal": (2, 0), "sagittal": (2, 1)}


@dataclass(frozen=True)
class VolumePoint:
    """One voxel of a volume, as a viewer's crosshair reads it out."""

    voxel: tuple[int, int, int]  # RAS+ voxel indices (i, j, k)
    world: tuple[float, float, float]  # its centre in world coordinates (mm), through the affine
    intensity: float  # the volume's value there


def voxel_of_click(
    shape: tuple[int, ...], plane: str, index: int, x: float, y: float, *, radiological: bool = False
) -> tuple[int, int, int]:
    """The RAS+ voxel (i, j, k) shown at displayed pixel (column `x`, row `y`) of `plane`'s slice
    `index` of a 3D volume of `shape`: the inverse of `extract_slice`'s layout (the top row is the
    last voxel along the row axis), after the left-right flip when the view is `radiological`.
    A point off the image is clipped to its edge."""
    rows, cols = DISPLAY_AXES[plane]
    col = int(np.clip(round(float(x)), 0, shape[cols] - 1))
    row = int(np.clip(round(float(y)), 0, shape[rows] - 1))
    voxel = [0, 0, 0]
    voxel[PLANE_AXIS[plane]] = int(np.clip(int(index), 0, shape[PLANE_AXIS[plane]] - 1))
    voxel[rows] = shape[rows] - 1 - row
    voxel[cols] = shape[cols] - 1 - col if radiological else col
    return tuple(voxel)


def pixel_of_voxel(
    shape: tuple[int, ...], plane: str, voxel: tuple[int, int, int], *, radiological: bool = False
) -> tuple[int, int]:
    """Where voxel (i, j, k) of a 3D volume of `shape` falls in `plane`'s displayed slice, as
    (column, row): the inverse of `voxel_of_click` (the crosshair's lines in each plane)."""
    rows, cols = DISPLAY_AXES[plane]
    col = shape[cols] - 1 - voxel[cols] if radiological else voxel[cols]
    return int(col), int(shape[rows] - 1 - voxel[rows])


def point_of_voxel(volume: np.ndarray, affine: np.ndarray, voxel: tuple[int, int, int]) -> VolumePoint:
    """A voxel's world coordinates (mm, `affine @ (i, j, k, 1)`) and intensity."""
    voxel = tuple(int(v) for v in voxel)
    world = np.asarray(affine, float) @ np.r_[voxel, 1.0]
    return VolumePoint(voxel, tuple(float(w) for w in world[:3]), float(np.asarray(volume)[voxel]))


def _cube_grid(shape, zooms, size: int, spacing: float | None) -> tuple[np.ndarray, np.ndarray]:
    """`to_cube`'s geometry per axis: cube coordinate = (voxel + 0.5) * scale - 0.5 + offset
    (resampling with half-voxel centres, then the centre pad or crop)."""
    shape, zooms = np.asarray(shape[:3], float), np.asarray(zooms, float)
    extent = shape * zooms
    spacing = float(extent.max() / size) if spacing is None else float(spacing)
    target = np.array([max(1, round(e / spacing)) for e in extent], float)
    return target / shape, (size - target) // 2


def cube_voxel(shape, zooms, size: int, spacing: float | None, voxel) -> tuple[int, int, int] | None:
    """The voxel of a volume model's input cube (`to_cube` with the same arguments) that voxel
    (i, j, k) of the volume lands in; None when the cube's crop leaves it out."""
    scale, offset = _cube_grid(shape, zooms, size, spacing)
    point = np.floor((np.asarray(voxel, float) + 0.5) * scale + offset).astype(int)
    return tuple(int(p) for p in point) if ((point >= 0) & (point < size)).all() else None


def volume_voxel(shape, zooms, size: int, spacing: float | None, cube_point) -> tuple[int, int, int] | None:
    """The inverse of `cube_voxel`: the volume's voxel at a cube voxel; None in the cube's padding."""
    scale, offset = _cube_grid(shape, zooms, size, spacing)
    point = np.floor((np.asarray(cube_point, float) + 0.5 - offset) / scale).astype(int)
    inside = ((point >= 0) & (point < np.asarray(shape[:3]))).all()
    return tuple(int(p) for p in point) if inside else None


def to_square(image: torch.Tensor, size: int) -> torch.Tensor:
    """Zero-pad (B, C, H, W) to a centred square, then resize to (size, size).

    Padding first keeps the anatomy's aspect ratio; antialiased bilinear resizing avoids
    aliasing when downsampling.
    """
    h, w = image.shape[-2:]
    side = max(h, w)
    pad_h, pad_w = side - h, side - w
    image = F.pad(image, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
    if side == size:
        return image
    return F.interpolate(image, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def to_cube(volume: torch.Tensor, zooms, size: int, spacing: float | None = None) -> torch.Tensor:
    """A (B, C, X, Y, Z) volume with voxel sizes `zooms` (mm) resampled to isotropic `spacing` mm
    (None: the spacing that fits the largest extent into `size` voxels), then centre-padded with
    zeros or centre-cropped to (size, size, size).

    Downsampling on every axis averages over each new voxel (area), so it does not alias;
    otherwise the resampling is trilinear.
    """
    extent = np.asarray(volume.shape[2:], float) * np.asarray(zooms, float)
    spacing = float(extent.max() / size) if spacing is None else float(spacing)
    target = [max(1, round(e / spacing)) for e in extent]
    if list(volume.shape[2:]) != target:
        downsampling = all(t <= n for t, n in zip(target, volume.shape[2:], strict=True))
        mode = {"mode": "area"} if downsampling else {"mode": "trilinear", "align_corners": False}
        volume = F.interpolate(volume, size=target, **mode)
    pads = []
    for n in reversed(target):  # F.pad lists the last axis first
        low = (size - n) // 2
        pads += [low, size - n - low]
    return F.pad(volume, pads)  # negative padding crops


def model_input(volume: np.ndarray, affine: np.ndarray, spec: SliceSpec) -> torch.Tensor:
    """One volume, in the spec's orientation (RAS+ for ras, as stored for stored: the dataset reads it so,
    `Dataset.volume`), → the model's input under the spec's intensity rule, as a float32 tensor:
    its slice resized to (1, 1, size, size), or for a volume input the whole volume as
    (1, 1, size, size, size) (`to_cube`). Rules with a [0, 1] range stay in it after resizing."""
    # a reoriented or byte-swapped view (negative or odd strides) becomes one contiguous float32 array
    scaled = np.ascontiguousarray(apply_intensity(volume, spec.intensity), dtype=np.float32)
    if spec.is_volume:
        if scaled.ndim != 3:
            raise EveInputError(
                "A volume input needs 3D volumes, and this dataset holds 2D images: "
                "feed the model a slice (input kind 'slice') or use a dataset of 3D volumes."
            )
        zooms = np.linalg.norm(np.asarray(affine, float)[:3, :3], axis=0)
        tensor = to_cube(torch.from_numpy(scaled)[None, None], zooms, int(spec.size), spec.spacing)
    else:
        image = cut_slice(scaled, affine, spec)
        tensor = to_square(torch.from_numpy(image.copy())[None, None], spec.size)
    return tensor.clamp_(0.0, 1.0) if spec.intensity in ("p99", "minmax") else tensor
