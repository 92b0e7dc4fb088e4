"""Real T1 files that other tools wrote, as a user's cohort would hold them (Debian packages that
`make test` installs, and nibabel's own test image):

* Colin27 (`mricron-data`, templates/ch2.nii.gz): 181 x 217 x 181 at 1 mm, uint8, MNI space (sform 4);
* a native-space head T1 (`insighttoolkit5-examples`, KmeansTest_T1UCharRaw.nii.gz): 128 x 128 x 62,
  LSA, 2 x 2 x 3 mm, int16, scanner sform;
* nibabel's anatomical.nii: 33 x 41 x 25, LAS, big-endian int16.

Each loads; Colin27's named slices are taken and look like MNI152's (and not like them flipped);
the native one is refused a named slice with the fix.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy.ndimage import map_coordinates

from engine.data import SliceSpec, load_dataset
from engine.data.registration import mni_template
from engine.data.slicing import model_input
from engine.errors import DatasetError

COLIN = Path("/usr/share/mricron/templates/ch2.nii.gz")
NATIVE = Path("/usr/share/doc/insighttoolkit5-examples/examples/Data/KmeansTest_T1UCharRaw.nii.gz")
ANATOMICAL = Path(nib.__file__).parent / "tests" / "data" / "anatomical.nii"
HIPPOCAMPUS = SliceSpec("coronal", "hippocampus", 64)

pytestmark = pytest.mark.skipif(
    not (COLIN.is_file() and NATIVE.is_file()),
    reason="Debian's mricron-data and insighttoolkit5-examples are not installed: run `make test`",
)


def _cohort(tmp_path: Path, *files: Path) -> Path:
    for f in files:
        shutil.copy(f, tmp_path / f.name)
    pd.DataFrame([{"file": f.name, "age": 40.0 + i} for i, f in enumerate(files)]).to_csv(
        tmp_path / "features.csv", index=False
    )
    return tmp_path


@pytest.mark.parametrize(
    ("path", "shape"), [(COLIN, (181, 217, 181)), (NATIVE, (128, 62, 128)), (ANATOMICAL, (33, 41, 25))]
)
def test_real_t1_files_load_in_ras_as_float32(tmp_path, path, shape):
    dataset = load_dataset(_cohort(tmp_path, path))
    data, affine = dataset.volume(0)
    assert data.shape == shape and data.dtype == np.float32 and np.isfinite(data).all()
    assert nib.aff2axcodes(affine) == ("R", "A", "S")
    stored = nib.load(path)
    assert float(data.sum()) == pytest.approx(float(np.asarray(stored.dataobj, np.float64).sum()), rel=1e-6)


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def _mni152_on(image: nib.Nifti1Image) -> np.ndarray:
    """nilearn's MNI152 template (`registration.mni_template`) resampled (trilinear) onto `image`'s voxel grid."""
    template = mni_template()
    ijk = np.indices(image.shape).reshape(3, -1)
    world = image.affine @ np.vstack([ijk, np.ones(ijk.shape[1])])
    voxels = np.linalg.solve(template.affine, world)[:3]
    return map_coordinates(np.asarray(template.dataobj, np.float32), voxels, order=1).reshape(image.shape)


@pytest.mark.parametrize(("plane", "name"), [("coronal", "hippocampus"), ("sagittal", "midline")])
def test_colin27_named_slices_are_mni152s_the_right_way_up(tmp_path, plane, name):
    """What Eve feeds a model from Colin27 (brain-extracted, ch2bet) against the same slice of
    MNI152 (a different brain on the same grid), upright and flipped up-down and left-right."""
    brain = COLIN.with_name("ch2bet.nii.gz")
    spec = SliceSpec(plane, name, 64)
    colin = load_dataset(_cohort(tmp_path, brain)).model_inputs(spec)[0, 0].numpy()
    canonical = nib.as_closest_canonical(nib.load(brain))
    mni = model_input(_mni152_on(canonical), canonical.affine, spec)[0, 0].numpy()
    upright = _correlation(colin, mni)
    flips = {"up-down": _correlation(colin, mni[::-1]), "left-right": _correlation(colin, mni[:, ::-1])}
    assert upright > 0.8, upright
    assert upright > flips["up-down"] + 0.1, (upright, flips)
    if plane == "sagittal":  # the coronal and axial planes are nearly left-right symmetric
        assert upright > flips["left-right"] + 0.1, (upright, flips)


def test_a_native_space_t1_is_refused_a_named_slice_with_the_fix(tmp_path):
    dataset = load_dataset(_cohort(tmp_path, NATIVE))
    assert dataset.model_inputs(SliceSpec("coronal", None, 64)).shape == (1, 1, 64, 64)  # a voxel slice is fine
    with pytest.raises(DatasetError, match="not in MNI space.*register the volumes to MNI152"):
        dataset.model_inputs(HIPPOCAMPUS)


@pytest.mark.parametrize(("plane", "aspect"), [("axial", 1.5), ("coronal", 1.0), ("sagittal", 1 / 1.5)])
def test_browse_keeps_the_anatomys_shape_for_anisotropic_voxels(tmp_path, plane, aspect):
    """The native T1's voxels are 2 x 3 x 2 mm once in RAS: a pixel is drawn as tall as it is in mm."""
    from components.slice_viewer import slice_figure

    volume, affine = load_dataset(_cohort(tmp_path, NATIVE)).volume(0)
    fig = slice_figure(volume, affine, plane, volume.shape[{"axial": 2, "coronal": 1, "sagittal": 0}[plane]] // 2)
    assert fig.layout.yaxis.scaleratio == pytest.approx(aspect)


@pytest.mark.parametrize(("plane", "name"), [("coronal", "hippocampus"), ("sagittal", "midline")])
def test_registering_the_native_t1_gives_it_the_mni152_slices(tmp_path, plane, name):
    """The native head T1, affinely registered to MNI152 by Eve, yields the named slice, and it looks
    like MNI152's (a head with its skull against a brain template: lower than Colin27's brain above)."""
    folder = _cohort(tmp_path, NATIVE)
    spec = SliceSpec(plane, name, 64, "p99", register=True)
    registered = load_dataset(folder).model_inputs(spec)[0, 0].numpy()
    template = mni_template()
    mni = model_input(np.asarray(template.dataobj, np.float32), template.affine, spec)[0, 0].numpy()
    upright, flipped = _correlation(registered, mni), _correlation(registered, mni[::-1])
    assert upright > 0.6 and upright > flipped + 0.1, (upright, flipped)
    transforms = list((folder / ".eve_cache").glob("mni-*.tfm"))
    assert len(transforms) == 1  # fitted once, then read back:
    for stack in (folder / ".eve_cache").glob("*.npy"):
        stack.unlink()
    again = load_dataset(folder).model_inputs(spec)[0, 0].numpy()
    np.testing.assert_allclose(again, registered, atol=1e-5)
