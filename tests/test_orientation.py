"""Orientation in the input contract: a model fed the arrays as its files store them (`stored`) or in
Eve's RAS+ convention (`ras`), through every file convention and dtype a user's files come in.

Truth is built here, not by the engine: the expected model input of a stored file is the array the test
wrote (after its header's scaling); of a RAS+ one, the same array laid out on the world grid by the test's
own arithmetic (`_ras_array`), then cut as `slicing`'s docstring says. Files are asymmetric, so a flip or a
transpose cannot hide.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from engine.cards import UserCard, model_ref
from engine.data import load_dataset
from engine.data.slicing import INTENSITIES, SliceSpec, apply_intensity
from engine.errors import DatasetError, EveInputError

SIDE = 12  # cubes and squares: no resizing, padding or cropping, so every expected input is exact

# voxel axis -> (world axis, sign): how each tool writes its arrays
CONVENTIONS = {
    "RAS": ((0, 1), (1, 1), (2, 1)),  # plain nib.save(Nifti1Image(array, np.eye(4)))
    "LAS": ((0, -1), (1, 1), (2, 1)),  # FSL's radiological voxel order
    "LPS": ((0, -1), (1, -1), (2, 1)),  # ITK / DICOM-derived
    "PSR": ((1, -1), (2, 1), (0, 1)),  # a permutation: axis 0 runs posterior, axis 1 superior, axis 2 right
}
DTYPES = ("float32", "float64", "int16", "int16-scaled", "uint8", "float32-big-endian")
SHAPES_2D = ((SIDE, SIDE), (SIDE, SIDE, 1), (SIDE, SIDE, 1, 1))


def _affine(convention: str) -> np.ndarray:
    affine = np.zeros((4, 4))
    for voxel_axis, (world_axis, sign) in enumerate(CONVENTIONS[convention]):
        affine[world_axis, voxel_axis] = sign
        affine[world_axis, 3] = -sign * (SIDE - 1) / 2  # centred on the world origin
    affine[3, 3] = 1
    return affine


def _stored(seed: int, shape=(SIDE, SIDE, SIDE)) -> np.ndarray:
    """An asymmetric array of whole numbers in [1, 200]: a gradient along every axis plus noise, with a
    bright block in one corner (so a flip, a transpose or a permutation all change it)."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    array = 1 + sum((i + 1) * g for i, g in enumerate(grids)) + rng.integers(0, 20, size=shape)
    array[tuple(slice(0, max(1, n // 3)) for n in shape)] += 60
    return np.clip(array, 1, 200).astype(np.float64)


def _write(path, array: np.ndarray, affine: np.ndarray, dtype: str) -> np.ndarray:
    """Write `array` as `dtype`; return what the file holds after its header's scaling (float)."""
    if dtype == "int16-scaled":  # stored integers, scaled by the header: values = 0.5 * stored + 3
        image = nib.Nifti1Image(((array - 3) / 0.5).astype(np.int16), affine)
        image.header.set_slope_inter(0.5, 3.0)
        nib.save(image, path)
        return ((array - 3) / 0.5).astype(np.int16) * 0.5 + 3.0
    if dtype == "float32-big-endian":
        image = nib.Nifti1Image(array.astype(">f4"), affine)
        image.header.set_data_dtype(">f4")
        nib.save(image, path)
        return array.astype(np.float32).astype(np.float64)
    image = nib.Nifti1Image(array.astype({"int16": np.int16}.get(dtype, dtype)), affine)
    image.header.set_data_dtype(np.dtype({"int16": np.int16}.get(dtype, dtype)))
    nib.save(image, path)
    return array.astype({"int16": np.int16}.get(dtype, dtype)).astype(np.float64)


def _ras_array(stored: np.ndarray, convention: str) -> np.ndarray:
    """The stored array laid out on the world grid, axis i along world axis i, increasing: RAS+."""
    ras = np.empty_like(stored)
    index = np.indices(stored.shape).reshape(3, -1)
    target = np.empty_like(index)
    for voxel_axis, (world_axis, sign) in enumerate(CONVENTIONS[convention]):
        target[world_axis] = index[voxel_axis] if sign > 0 else SIDE - 1 - index[voxel_axis]
    ras[tuple(target)] = stored[tuple(index)]
    return ras


def _cohort(folder, convention: str, dtype: str, n: int = 3, shape=(SIDE, SIDE, SIDE)):
    folder.mkdir()
    held = []
    rows = ["file,a"]
    for i in range(n):
        held.append(_write(folder / f"s{i}.nii.gz", _stored(i, shape), _affine(convention), dtype))
        rows.append(f"s{i}.nii.gz,{i}")
    (folder / "features.csv").write_text("\n".join(rows) + "\n")
    return load_dataset(folder), held


@pytest.fixture(scope="module", params=list(itertools.product(CONVENTIONS, DTYPES)), ids="-".join)
def volumes(request, tmp_path_factory):
    convention, dtype = request.param
    dataset, held = _cohort(tmp_path_factory.mktemp("v") / "cohort", convention, dtype)
    return convention, dataset, held


def _expected(array: np.ndarray, spec: SliceSpec, convention: str) -> np.ndarray:
    """What the contract says the model is fed, built from the test's own array."""
    scaled = apply_intensity(array.astype(np.float32), spec.intensity).astype(np.float64)
    if spec.orientation == "ras" and array.ndim == 3:
        scaled = _ras_array(scaled, convention)
    if spec.is_volume:
        out = scaled
    elif spec.orientation == "stored":
        axial_axis = next(v for v, (w, _) in enumerate(CONVENTIONS[convention]) if w == 2) if array.ndim == 3 else None
        out = scaled if axial_axis is None else np.take(scaled, SIDE // 2, axis=axial_axis)
    else:  # ras: the axial cut shown in neurological display, anterior at the top
        cut = scaled if array.ndim == 2 else scaled[:, :, SIDE // 2]
        out = cut.T[::-1]
    return np.clip(out, 0, 1) if spec.intensity in ("p99", "minmax") else out


@pytest.mark.parametrize("orientation", ["stored", "ras"])
@pytest.mark.parametrize("kind", ["slice", "volume"])
@pytest.mark.parametrize("intensity", list(INTENSITIES))
def test_every_convention_and_dtype_feeds_the_contract(volumes, orientation, kind, intensity):
    convention, dataset, held = volumes
    spec = SliceSpec("axial", None, SIDE, intensity, input=kind, orientation=orientation)
    inputs = dataset.model_inputs(spec).numpy()  # no traceback for any file convention or dtype
    for row, array in enumerate(held):
        np.testing.assert_allclose(inputs[row, 0], _expected(array, spec, convention), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", SHAPES_2D, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("orientation", ["stored", "ras"])
def test_a_2d_image_is_fed_as_stored_or_in_display_orientation(tmp_path, shape, dtype, orientation):
    folder = tmp_path / "images"
    folder.mkdir()
    held = []
    for i in range(2):
        array = _stored(i, shape)
        held.append(_write(folder / f"s{i}.nii", array, np.eye(4), dtype).reshape(SIDE, SIDE))
    (folder / "features.csv").write_text("file,a\ns0.nii,0\ns1.nii,1\n")
    spec = SliceSpec("axial", None, SIDE, "raw", orientation=orientation)
    inputs = load_dataset(folder).model_inputs(spec).numpy()
    for row, array in enumerate(held):
        expected = array if orientation == "stored" else array.T[::-1]  # (X, Y) as stored; or rows = Y, top = +Y
        np.testing.assert_allclose(inputs[row, 0], expected, rtol=1e-6)


def test_a_stored_slice_is_cut_along_the_stored_axis_closest_to_the_plane(tmp_path):
    """A PSR volume's axial plane is across its stored axis 1 (superior); its coronal across axis 0."""
    dataset, held = _cohort(tmp_path / "psr", "PSR", "float32", n=1)
    for plane, axis in (("axial", 1), ("coronal", 0), ("sagittal", 2)):
        spec = SliceSpec(plane, 3, SIDE, "raw", orientation="stored")
        np.testing.assert_array_equal(dataset.model_inputs(spec)[0, 0].numpy(), np.take(held[0], 3, axis=axis))
        assert dataset.input_location(0, spec) == f"voxel 3 of stored axis {axis}"


def test_a_named_slice_under_stored_is_found_through_the_affine(tmp_path):
    """An MNI-space LAS volume (as FSL writes MNI152): the named slice 'ventricles' (z = 16 mm) is the same
    voxel plane whichever way the array is stored, found through each file's affine."""
    folder = tmp_path / "mni"
    folder.mkdir()
    shape = (40, 48, 40)
    array = _stored(0, shape)
    ras_affine = np.diag([4.0, 4.0, 4.0, 1.0])
    ras_affine[:3, 3] = (-78, -112, -70)
    las_affine = ras_affine.copy()
    las_affine[0, 0], las_affine[0, 3] = -4.0, 78.0
    for name, affine, data in (("ras", ras_affine, array), ("las", las_affine, array[::-1])):
        image = nib.Nifti1Image(np.ascontiguousarray(data), affine)
        image.set_sform(affine, code="mni")
        nib.save(image, folder / f"{name}.nii.gz")
    (folder / "features.csv").write_text("file,a\nras.nii.gz,0\nlas.nii.gz,1\n")
    dataset = load_dataset(folder)
    k = round((16 - (-70)) / 4)  # z = 16 mm on this grid
    for row, data in ((0, array), (1, array[::-1])):
        spec = SliceSpec("axial", "ventricles", 48, "raw", orientation="stored")
        cut = dataset._read_inputs(spec, np.array([row]))[0, 0].numpy()
        padded = np.pad(data[:, :, k], ((4, 4), (0, 0)))  # 40 x 48 padded to a 48 square, no resizing
        np.testing.assert_array_equal(cut, padded)


def test_the_las_float32_volume_crash_is_gone(tmp_path):
    """Issue 31: LAS-stored float32 volumes, a volume model, raw intensity: negative strides ended in a
    traceback (`At least one stride in the given numpy array is negative`)."""
    dataset, held = _cohort(tmp_path / "fsl", "LAS", "float32")
    cube = dataset.model_inputs(SliceSpec(size=SIDE, intensity="raw", input="volume", orientation="ras"))
    np.testing.assert_array_equal(cube[0, 0].numpy(), _ras_array(held[0], "LAS"))


def test_mixed_orientations_are_refused_for_stored_with_the_row_named(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    _write(folder / "a.nii.gz", _stored(0), _affine("RAS"), "float32")
    _write(folder / "b.nii.gz", _stored(1), _affine("LAS"), "float32")
    (folder / "features.csv").write_text("file,a\na.nii.gz,0\nb.nii.gz,1\n")
    dataset = load_dataset(folder)
    with pytest.raises(DatasetError, match=r"Row 3: b.nii.gz is stored in voxel order LAS, row 2's a.nii.gz in RAS"):
        dataset.model_inputs(SliceSpec("axial", None, SIDE, "raw", orientation="stored"))
    assert dataset.model_inputs(SliceSpec("axial", None, SIDE, "raw", orientation="ras")).shape == (2, 1, SIDE, SIDE)


def test_an_oblique_volume_is_refused_for_a_stored_slice_with_the_fix(tmp_path):
    folder = tmp_path / "oblique"
    folder.mkdir()
    angle = np.radians(40)
    affine = np.eye(4)
    affine[1:3, 1:3] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    _write(folder / "a.nii.gz", _stored(0), affine, "float32")
    (folder / "features.csv").write_text("file,a\na.nii.gz,0\n")
    dataset = load_dataset(folder)
    with pytest.raises(EveInputError, match=r"Row 2: a.nii.gz's voxel axes are oblique.*40 degrees.*reslice"):
        dataset.model_inputs(SliceSpec("axial", None, SIDE, "raw", orientation="stored"))
    # the whole stored volume needs no plane: it is fed
    assert dataset.model_inputs(SliceSpec(size=SIDE, intensity="raw", input="volume", orientation="stored")).shape[
        -1
    ] == (SIDE)


@pytest.mark.parametrize(
    ("card", "match"),
    [
        ({"input": {"orientation": "LAS"}}, r"input orientation .LAS. is not one of ras, stored: use stored"),
        ({"input": {"orientation": "radiological"}}, r"not one of ras, stored"),
    ],
)
def test_an_unknown_orientation_word_is_refused_with_the_choices(card, match):
    with pytest.raises(EveInputError, match=match):
        UserCard.from_json(card)
    with pytest.raises(EveInputError, match="Unknown orientation 'LAS': use one of ras, stored"):
        SliceSpec(orientation="LAS")


def test_registration_with_stored_is_refused():
    with pytest.raises(EveInputError, match="register with orientation ras"):
        SliceSpec(register=True, orientation="stored")


def test_one_default_for_a_users_model_behind_every_door(tmp_path):
    """No card, no flags: the CLI's rule (`model_ref`) and the card's (`UserCard.contract`) give the same
    contract: the stored arrays, raw values, the middle slice."""
    path = tmp_path / "m.pt"
    path.write_bytes(b"x")
    spec = model_ref(path).spec
    assert spec == UserCard().contract()
    assert (spec.orientation, spec.intensity, spec.index, spec.input) == ("stored", "raw", None, "slice")
    card = UserCard.from_json({"input": {"orientation": "ras", "slice": "12"}})
    assert card.contract().orientation == "ras" and card.contract().index == 12
    assert card.contract(orientation="stored").orientation == "stored"  # a flag overrides the card


def test_eve_cards_keep_their_contract_bit_for_bit():
    """Committed cards say nothing of orientation: they read as ras, and write back without the key."""
    from engine.cards import spec_from_json, spec_to_json

    spec = spec_from_json({"plane": "axial", "index": "ventricles", "size": 64})
    assert spec.orientation == "ras"
    assert "orientation" not in spec_to_json(spec)
    assert spec_to_json(SliceSpec(orientation="stored"))["orientation"] == "stored"
    assert SliceSpec().key == "axial-ventricles-64" and SliceSpec(orientation="stored").key.endswith("-stored")


def test_a_stored_input_is_a_view_of_no_negative_strides():
    """`model_input` makes one contiguous array of a reoriented view (the LAS crash's cause)."""
    from engine.data.slicing import model_input

    view = np.arange(SIDE**3, dtype=np.float32).reshape(SIDE, SIDE, SIDE)[::-1]
    cube = model_input(view, np.eye(4), SliceSpec(size=SIDE, intensity="raw", input="volume"))
    assert torch.equal(cube[0, 0], torch.from_numpy(view.copy()))


# -- the p99 rule's scale: np.percentile's value to the bit, faster --------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


def _reference_scale(volume) -> float:
    """The rule as written before it was made fast: np.percentile of the positive voxels."""
    volume = np.asarray(volume, dtype=np.float32)
    foreground = volume[volume > 0]
    return float(np.percentile(foreground, 99)) if foreground.size else 0.0


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 60_000),
    st.sampled_from(["integers", "gamma", "normal", "ties"]),
    st.integers(0, 2**31 - 1),
)
def test_the_fast_p99_scale_is_np_percentiles_to_the_bit(size, kind, seed):
    from engine.data.slicing import intensity_scale

    rng = np.random.default_rng(seed)
    volume = {
        "integers": lambda: rng.integers(-5, 300, size),
        "gamma": lambda: rng.gamma(2.0, 50.0, size),
        "normal": lambda: rng.normal(size=size),
        "ties": lambda: rng.choice([0.0, 1.0, 2.5, 7.0], size, p=[0.5, 0.3, 0.19, 0.01]),
    }[kind]().astype(np.float32)
    assert intensity_scale(volume) == _reference_scale(volume)


def test_the_fast_p99_scale_matches_on_real_volumes(synthbrain):
    """Every 10th SynthBrain volume (RAS+ views, F-ordered as nibabel gives them) and Colin27 at 1 mm."""
    from engine.data.slicing import intensity_scale, normalise_intensity

    volumes = [synthbrain.volume(row)[0] for row in range(0, len(synthbrain), 10)]
    colin = Path("/usr/share/mricron/templates/ch2.nii.gz")
    if colin.is_file():
        volumes.append(np.asarray(nib.load(colin).dataobj, np.float32))
    for volume in volumes:
        assert intensity_scale(volume) == _reference_scale(volume)
        old = np.clip(volume / _reference_scale(volume), 0.0, 1.0)
        np.testing.assert_array_equal(normalise_intensity(volume), old)
