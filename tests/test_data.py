"""Dataset interface and the embedded synthetic sets: determinism, round trips, truth, bad input."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from engine.data import SliceSpec, load_dataset, shapes
from engine.data import synthbrain as synthbrain_generator
from engine.data.slicing import (
    PLANE_AXIS,
    cube_voxel,
    extract_slice,
    normalise_intensity,
    pixel_of_voxel,
    point_of_voxel,
    slice_index,
    to_cube,
    to_square,
    volume_voxel,
    voxel_of_click,
)
from engine.errors import DatasetError, EveInputError

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


# ---------------------------------------------------------------- fixtures


def write_folder(root: Path, volumes: dict[str, np.ndarray], rows: list[dict], affine=None) -> Path:
    """A dataset folder with the given arrays (as NIfTI) and CSV rows."""
    root.mkdir(parents=True, exist_ok=True)
    for name, array in volumes.items():
        nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), root / name)
    pd.DataFrame(rows).to_csv(root / "features.csv", index=False)
    return root


@pytest.fixture
def small_folder(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    volumes = {f"s{i}.nii.gz": rng.random((12, 14, 10)).astype(np.float32) for i in range(4)}
    rows = [{"file": f"s{i}.nii.gz", "age": 60 + i, "sex": "FM"[i % 2], "label": i % 2} for i in range(4)]
    return write_folder(tmp_path / "cohort", volumes, rows)


# ---------------------------------------------------------------- loading


def test_load_dataset_lists_subjects_and_feature_types(small_folder):
    dataset = load_dataset(small_folder, check_voxels=True)
    assert dataset.subjects == ["s0", "s1", "s2", "s3"]
    assert dataset.numeric_features == ["age"]
    assert dataset.categorical_features == ["sex"]
    assert dataset.label_columns == ["label"]
    assert dataset.feature_values("age").dtype == float


def test_model_inputs_are_normalised_float32_batches(small_folder):
    dataset = load_dataset(small_folder)
    batch = dataset.model_inputs(SliceSpec("axial", None, 16))
    assert batch.shape == (4, 1, 16, 16) and batch.dtype == torch.float32
    assert 0.0 <= batch.min() and batch.max() <= 1.0
    assert torch.equal(dataset.model_inputs(SliceSpec("axial", None, 16), rows=[2]), batch[2:3])
    # a fresh load reads the disk cache and gives the same stack
    again = load_dataset(small_folder).model_inputs(SliceSpec("axial", None, 16))
    assert torch.equal(again, batch)
    assert any((small_folder / ".eve_cache").iterdir())


@pytest.mark.parametrize("plane", ["axial", "coronal", "sagittal"])
def test_slices_follow_neurological_convention(plane):
    # RAS+ volume with a bright voxel in the patient's left (low x), anterior (high y), superior (high z)
    volume = np.zeros((20, 24, 22), np.float32)
    volume[2, 21, 19] = 1.0
    index = {"axial": 19, "coronal": 21, "sagittal": 2}[plane]
    image = extract_slice(volume, np.eye(4), plane, index)
    row, col = np.argwhere(image == 1.0)[0]
    assert row < image.shape[0] // 2  # anterior (axial) or superior (coronal/sagittal) is up
    if plane != "sagittal":
        assert col < image.shape[1] // 2  # patient's left on the image's left


def test_named_slices_use_world_coordinates(synthbrain):
    _, affine = synthbrain.volume(0)
    k = slice_index(synthbrain.shapes[0], affine, "coronal", "hippocampus")
    assert (affine @ [0, k, 0, 1])[1] == pytest.approx(-22.0, abs=1.0)


def test_normalise_intensity_scales_to_unit_range():
    volume = np.linspace(0, 500, 1000, dtype=np.float32).reshape(10, 10, 10)
    out = normalise_intensity(volume)
    assert out.max() == 1.0 and out.min() == 0.0 and out.dtype == np.float32


def test_to_square_keeps_aspect_by_padding():
    image = torch.ones(1, 1, 10, 20)
    out = to_square(image, 20)
    assert out.shape == (1, 1, 20, 20)
    assert out[0, 0, 0].sum() == 0 and out[0, 0, 10].sum() == 20


# ---------------------------------------------------------------- a viewer's crosshair


@pytest.mark.parametrize("radiological", [False, True])
@pytest.mark.parametrize("plane", ["axial", "coronal", "sagittal"])
def test_a_click_maps_to_the_voxel_shown_under_it(plane, radiological):
    volume = np.random.default_rng(0).random((9, 11, 7)).astype(np.float32)  # every voxel a different value
    image = extract_slice(volume, np.eye(4), plane, 3)
    image = image[:, ::-1] if radiological else image
    for row, col in [(0, 0), (2, 5), (image.shape[0] - 1, image.shape[1] - 1)]:
        voxel = voxel_of_click(volume.shape, plane, 3, col, row, radiological=radiological)
        assert voxel[PLANE_AXIS[plane]] == 3 and volume[voxel] == image[row, col]
        assert pixel_of_voxel(volume.shape, plane, voxel, radiological=radiological) == (col, row)


def test_a_click_on_the_radiological_view_finds_the_patients_left():
    # a bright voxel in the patient's left (low x), anterior (high y): on a radiological axial view it
    # shows on the image's right, and a click there is that voxel
    volume = np.zeros((20, 24, 22), np.float32)
    volume[2, 21, 19] = 1.0
    image = extract_slice(volume, np.eye(4), "axial", 19)[:, ::-1]
    row, col = np.argwhere(image == 1.0)[0]
    assert col > image.shape[1] // 2 and row < image.shape[0] // 2
    assert voxel_of_click(volume.shape, "axial", 19, col, row, radiological=True) == (2, 21, 19)
    assert voxel_of_click(volume.shape, "axial", 19, col, row, radiological=False) == (17, 21, 19)  # its mirror


def test_a_click_reads_out_world_coordinates_through_the_affine():
    affine = np.array([[2.0, 0, 0, -90], [0, 2.5, 0, -126], [0, 0, 3.0, -72], [0, 0, 0, 1]])  # anisotropic, shifted
    volume = np.arange(10 * 12 * 8, dtype=np.float32).reshape(10, 12, 8)
    voxel = voxel_of_click(volume.shape, "coronal", 5, 4.2, 1.8)  # the nearest pixel: column 4, row 2
    assert voxel == (4, 5, 5)
    point = point_of_voxel(volume, affine, voxel)
    assert point.world == pytest.approx((-82.0, -113.5, -57.0)) and point.intensity == volume[4, 5, 5]
    assert voxel_of_click(volume.shape, "coronal", 5, -3, 99) == (0, 5, 0)  # off the image: its edge


@pytest.mark.parametrize(
    "shape, zooms, size, spacing",
    [
        ((10, 12, 8), (2.0, 2.0, 3.0), 32, 1.0),  # upsampled (trilinear) and padded
        ((40, 36, 30), (1.0, 1.0, 1.5), 16, None),  # downsampled (area) to fit the field of view
        ((30, 30, 30), (2.0, 2.0, 2.0), 12, 4.0),  # downsampled and cropped
    ],
)
def test_the_crosshair_lands_in_the_model_cube_where_to_cube_puts_the_voxel(shape, zooms, size, spacing):
    # three ramps (each voxel's i, j, k): to_cube's resampling of them says where each cube voxel came from
    ramps = np.stack(np.indices(shape), 0).astype(np.float32)
    cube = to_cube(torch.from_numpy(ramps)[:, None], zooms, size, spacing)[:, 0].numpy()  # (3, S, S, S)
    extent = np.asarray(shape) * np.asarray(zooms)
    step = (extent.max() / size if spacing is None else spacing) / np.asarray(zooms)  # volume voxels per cube voxel
    tolerance = np.where(step <= 1, 0.5, step / 2 + 0.5)  # area averaging: each bin snaps to whole voxels
    rng = np.random.default_rng(0)
    for voxel in [tuple(int(rng.integers(n)) for n in shape) for _ in range(30)]:
        at = cube_voxel(shape, zooms, size, spacing, voxel)
        if at is None:  # cropped out: check that it lies outside the cube's field of view
            assert (np.abs((np.asarray(voxel) + 0.5) * zooms - extent / 2) > size * step * zooms / 2 - 1e-6).any()
            continue
        assert (np.abs(cube[(slice(None), *at)] - voxel) <= tolerance + 1e-4).all(), (voxel, at)
        back = np.asarray(volume_voxel(shape, zooms, size, spacing, at))
        assert (np.abs(back - voxel) <= tolerance).all(), (voxel, at, back)
    assert cube_voxel((10, 12, 8), (2, 2, 3), 8, 2.0, (0, 0, 0)) is None  # cropped out of a 16 mm cube
    assert volume_voxel((10, 12, 8), (2, 2, 3), 32, 2.0, (0, 0, 0)) is None  # the padding of a 64 mm cube


# ---------------------------------------------------------------- shapes


def test_shapes_is_deterministic_by_seed(tmp_path):
    a = load_dataset(shapes.build(tmp_path / "a", n=6, seed=3))
    b = load_dataset(shapes.build(tmp_path / "b", n=6, seed=3))
    c = load_dataset(shapes.build(tmp_path / "c", n=6, seed=4))
    pd.testing.assert_frame_equal(a.table.drop(columns="file"), b.table.drop(columns="file"))
    assert np.array_equal(a.volume(5)[0], b.volume(5)[0])
    assert not np.array_equal(a.volume(5)[0], c.volume(5)[0])


def test_shapes_image_shows_the_recorded_object(shapes):
    row = shapes.table.iloc[0]
    image = extract_slice(shapes.volume(0)[0], np.eye(4), "axial", None)
    assert image.shape == (64, 64)
    # the object's centre is where pos_x/pos_y say, and as bright as its intensity
    y, x = int(round(row["pos_y"])), int(round(row["pos_x"]))
    assert image[y - 1 : y + 2, x - 1 : x + 2].mean() == pytest.approx(
        row["intensity"], abs=0.4 * row["texture"] + 0.05
    )
    assert image[1, 1] == pytest.approx(row["background"], abs=0.08)


def test_shapes_features_are_independent_uniforms(shapes):
    table = shapes.table[list(shapes.truth["features"])]
    for name, dist in shapes.truth["features"].items():
        assert dist["low"] <= table[name].min() and table[name].max() <= dist["high"]
    corr = np.corrcoef(table.to_numpy().T)
    assert np.abs(corr - np.eye(len(corr))).max() < 0.08


# ---------------------------------------------------------------- synthbrain


def test_synthbrain_is_deterministic_by_seed_whatever_the_worker_count(tmp_path):
    a = load_dataset(synthbrain_generator.build(tmp_path / "a", n=3, seed=5, workers=1))
    b = load_dataset(synthbrain_generator.build(tmp_path / "b", n=3, seed=5, workers=2))
    pd.testing.assert_frame_equal(a.table, b.table)
    assert (tmp_path / "a" / "truth.json").read_text() == (tmp_path / "b" / "truth.json").read_text()
    for i in range(3):
        assert np.array_equal(a.volume(i)[0], b.volume(i)[0])


def test_synthbrain_nifti_round_trip(synthbrain):
    template = synthbrain_template()
    image = synthbrain.load_image(0)
    raw = nib.load(synthbrain.root / synthbrain.table["file"].iloc[0])
    assert np.allclose(image.affine, template.affine)
    assert image.shape == template.shape == (99, 117, 95)
    assert image.get_data_dtype() == np.float32 and raw.get_data_dtype() == np.int16
    assert raw.header.get_xyzt_units()[0] == "mm"
    assert np.allclose(raw.header.get_zooms(), 2.0)


def synthbrain_template():
    return synthbrain_generator.load_template()


BASE_LATENT = dict(
    age=72.0,
    male=False,
    head_scale=1.0,
    ventricle_scale=1.0,
    hippocampus_scale=1.0,
    gm_atrophy=0.0,
    bias_field=0.0,
    contrast=1.0,
    noise_sd=0.01,
)


@pytest.mark.parametrize(
    ("latent", "volume", "expected_ratio", "tolerance"),
    [
        ({"ventricle_scale": 1.6}, "ventricle_volume", 1.6, 0.2),
        ({"hippocampus_scale": 0.75}, "hippocampal_volume", 0.75, 0.1),
        ({"head_scale": 1.1}, "icv", 1.1**3, 0.05),
        ({"gm_atrophy": 0.2}, "gm_volume", 0.8, 0.05),
    ],
)
def test_synthbrain_measured_volumes_follow_the_latents(latent, volume, expected_ratio, tolerance):
    template = synthbrain_template()
    _, base = synthbrain_generator.synthesize_subject(template, BASE_LATENT, np.random.default_rng(0))
    _, changed = synthbrain_generator.synthesize_subject(template, {**BASE_LATENT, **latent}, np.random.default_rng(0))
    assert changed[volume] / base[volume] == pytest.approx(expected_ratio, abs=tolerance)


def test_synthbrain_cohort_has_the_stated_correlations(synthbrain):
    table, trends = synthbrain.table, synthbrain.truth["trends"]
    age = table["age"].to_numpy()
    # per-year slope of log volume, within a third of the stated one (the warp is not exactly volumetric)
    ventricle_slope = np.polyfit(age, np.log(table["ventricle_volume"]), 1)[0]
    hippocampus_slope = np.polyfit(age, np.log(table["hippocampal_volume"]), 1)[0]
    assert ventricle_slope == pytest.approx(trends["ventricle_log_slope"], rel=0.35)
    assert hippocampus_slope == pytest.approx(trends["hippocampus_log_slope"], rel=0.35)
    assert np.corrcoef(age, table["gm_volume"])[0, 1] < -0.1
    men = table["sex"] == "M"
    icv_ratio = table.loc[men, "icv"].mean() / table.loc[~men, "icv"].mean()
    assert icv_ratio == pytest.approx((1 + trends["head_scale_male"]) ** 3, abs=0.05)


@pytest.mark.parametrize(("column", "shortcut"), [("label", False), ("label_shortcut", True)])
def test_label_function_in_truth_reproduces_features_csv(synthbrain, column, shortcut):
    # `synthbrain` (the fixture) is the loaded cohort; the generator module is `engine.data.synthbrain`
    truth = synthbrain.truth
    probability = synthbrain_generator.label_probabilities(synthbrain.table, truth, shortcut=shortcut)
    seed = truth["label_model"][f"{column}_seed"]
    assert np.array_equal(synthbrain_generator.draw_labels(probability, seed), synthbrain.table[column].to_numpy())
    assert 0.3 < synthbrain.table[column].mean() < 0.7


def test_render_synthbrain_slices_for_a_person_to_look_at(synthbrain):
    from PIL import Image

    tiles = []
    for row in (0, 1, 2):
        volume, affine = synthbrain.volume(row)
        volume = normalise_intensity(volume)
        cuts = [
            extract_slice(volume, affine, p, i)
            for p, i in (("axial", "ventricles"), ("coronal", "hippocampus"), ("sagittal", 34))
        ]
        side = max(max(c.shape) for c in cuts)
        tiles.append(np.concatenate([np.pad(c, ((0, side - c.shape[0]), (0, side - c.shape[1]))) for c in cuts], 1))
    ARTIFACTS.mkdir(exist_ok=True)
    picture = (np.concatenate(tiles, 0) * 255).astype(np.uint8)
    Image.fromarray(picture).resize((picture.shape[1] * 2, picture.shape[0] * 2)).save(ARTIFACTS / "synthbrain.png")
    # brain tissue is bright against a dark background and the ventricles are dark inside it
    centre = tiles[0][40:80, 35:65]
    assert picture.mean() > 20 and centre.min() < 0.4 < centre.max()


# ---------------------------------------------------------------- bad input


def test_missing_features_csv(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="No features.csv"):
        load_dataset(tmp_path / "empty")


def test_not_a_folder(tmp_path):
    with pytest.raises(DatasetError, match="not a folder"):
        load_dataset(tmp_path / "nope")


def test_csv_without_file_column(small_folder):
    pd.DataFrame({"subject": ["a"], "age": [1]}).to_csv(small_folder / "features.csv", index=False)
    with pytest.raises(DatasetError, match="no 'file' column"):
        load_dataset(small_folder)


def test_missing_file_names_the_row(small_folder):
    (small_folder / "s2.nii.gz").unlink()
    with pytest.raises(DatasetError, match=r"Row 4: file .*s2.nii.gz does not exist"):
        load_dataset(small_folder)


def test_non_nifti_file(small_folder):
    (small_folder / "notes.txt").write_text("hello")
    table = pd.read_csv(small_folder / "features.csv")
    table.loc[1, "file"] = "notes.txt"
    table.to_csv(small_folder / "features.csv", index=False)
    with pytest.raises(DatasetError, match="Row 3: notes.txt is not a NIfTI file"):
        load_dataset(small_folder)


def test_corrupt_header(small_folder):
    (small_folder / "s1.nii.gz").write_bytes(gzip.compress(b"garbage" * 100))
    with pytest.raises(DatasetError, match="Row 3: s1.nii.gz is not a readable NIfTI"):
        load_dataset(small_folder)


def test_truncated_voxel_data_is_reported_when_read(small_folder):
    path = small_folder / "s0.nii.gz"
    data = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(data[: len(data) // 2]))
    with pytest.raises(DatasetError, match="Row 2: s0.nii.gz could not be read.*corrupt"):
        load_dataset(small_folder, check_voxels=True)


STORED_SHAPES = [
    ((9, 11), (9, 11)),
    ((9, 11, 1), (9, 11)),
    ((9, 11, 1, 1), (9, 11)),
    ((9, 11, 5), (9, 11, 5)),
    ((9, 11, 5, 1), (9, 11, 5)),
]
STORED_DTYPES = ["<f4", ">f4", "<i2", ">i2", "u1", "<f8", "<u2"]


@pytest.mark.parametrize(("stored", "read"), STORED_SHAPES, ids=[str(s) for s, _ in STORED_SHAPES])
@pytest.mark.parametrize("dtype", STORED_DTYPES)
def test_images_load_whatever_shape_and_dtype_other_tools_write(tmp_path, stored, read, dtype):
    """2D as (X, Y), (X, Y, 1) or (X, Y, 1, 1); 3D as (X, Y, Z) or (X, Y, Z, 1); any dtype, either
    byte order, integer data scaled by the header's scl_slope / scl_inter."""
    values = np.arange(np.prod(stored)).reshape(stored) % 50
    image = nib.Nifti1Image(values.astype(np.dtype(dtype)), np.eye(4))
    if np.dtype(dtype).kind in "iu":
        image.header.set_slope_inter(0.5, 2.0)
    nib.save(image, tmp_path / "s.nii.gz")
    pd.DataFrame([{"file": "s.nii.gz", "age": 1.0}]).to_csv(tmp_path / "features.csv", index=False)
    dataset = load_dataset(tmp_path)
    data, _ = dataset.volume(0)
    expected = values.reshape(read) * (0.5 if np.dtype(dtype).kind in "iu" else 1.0)
    expected = expected + (2.0 if np.dtype(dtype).kind in "iu" else 0.0)
    assert dataset.shapes == [read] and dataset.is_3d == (len(read) == 3) and data.dtype == np.float32
    np.testing.assert_array_equal(data, expected.astype(np.float32))  # the header's scaling, as raw
    spec = SliceSpec("axial", None, 16, "raw")
    assert dataset.model_inputs(spec).shape == (1, 1, 16, 16)


@pytest.mark.parametrize(
    ("rule", "expected"),
    [("raw", [0.0, 2.0, 4.0, 6.0]), ("minmax", [0.0, 1 / 3, 2 / 3, 1.0]), ("p99", [0.0, 2.0 / 5.96, 4.0 / 5.96, 1.0])],
)
def test_intensity_rules_apply_to_the_whole_volume(rule, expected):
    from engine.data.slicing import apply_intensity

    volume = np.array([0.0, 2.0, 4.0, 6.0], np.float32)
    np.testing.assert_allclose(apply_intensity(volume, rule), expected, rtol=1e-5)
    z = apply_intensity(volume, "zscore")[1:]  # over the non-zero voxels
    assert z.mean() == pytest.approx(0, abs=1e-6) and z.std() == pytest.approx(1, abs=1e-6)
    with pytest.raises(EveInputError, match="Unknown intensity rule 'log'"):
        SliceSpec("axial", None, 16, "log")


MNI_2MM = np.array([[2.0, 0, 0, -98], [0, 2, 0, -134], [0, 0, 2, -72], [0, 0, 0, 1]])  # MNI152 at 2 mm
NATIVE_LSA = np.array([[-2.0, 0, 0, 127], [0, 0, -3, 90], [0, -2, 0, 127], [0, 0, 0, 1]])  # 2 x 2 x 3 mm, LSA


@pytest.mark.parametrize(
    ("affine", "shape", "codes", "refused"),
    [
        (MNI_2MM, (99, 117, 95), ("aligned", "unknown"), None),  # SynthBrain's header
        (MNI_2MM, (99, 117, 95), ("mni", "unknown"), None),
        (MNI_2MM, (99, 117, 95), ("scanner", "scanner"), "its header says native \\(scanner\\) space"),
        (NATIVE_LSA, (128, 62, 128), ("aligned", "unknown"), "its world extent .* does not cover the MNI152 brain"),
        (np.eye(4), (12, 14, 10), ("aligned", "unknown"), "its world extent .* does not cover the MNI152 brain"),
    ],
    ids=["mni-aligned", "mni-coded", "scanner-coded", "native-lsa", "voxel-grid"],
)
def test_a_named_slice_is_taken_only_from_a_volume_in_mni_space(tmp_path, affine, shape, codes, refused):
    image = nib.Nifti1Image(np.random.default_rng(0).random(shape, dtype=np.float32), affine)
    image.set_sform(affine, code=codes[0])
    image.set_qform(affine, code=codes[1])
    nib.save(image, tmp_path / "t1.nii.gz")
    pd.DataFrame([{"file": "t1.nii.gz", "age": 70.0}]).to_csv(tmp_path / "features.csv", index=False)
    dataset = load_dataset(tmp_path)
    assert dataset.model_inputs(SliceSpec("axial", None, 16)).shape == (1, 1, 16, 16)  # a voxel slice: always
    named = SliceSpec("coronal", "hippocampus", 16)
    if refused is None:
        assert dataset.model_inputs(named).shape == (1, 1, 16, 16)
    else:
        with pytest.raises(
            DatasetError, match=f"Row 2: t1.nii.gz is not in MNI space \\({refused}.*'hippocampus'.*register"
        ):
            dataset.model_inputs(named)


@pytest.mark.parametrize("shape", [(5, 6, 7, 3), (40,)])
def test_wrong_dimensions(small_folder, shape):
    nib.save(nib.Nifti1Image(np.ones(shape, np.float32), np.eye(4)), small_folder / "s3.nii.gz")
    with pytest.raises(DatasetError, match="Row 5: s3.nii.gz has .* dimensions"):
        load_dataset(small_folder)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_voxels(small_folder, bad):
    volume = np.ones((12, 14, 10), np.float32)
    volume[3, 3, 3] = bad
    nib.save(nib.Nifti1Image(volume, np.eye(4)), small_folder / "s1.nii.gz")
    dataset = load_dataset(small_folder)  # headers are fine
    with pytest.raises(DatasetError, match="Row 3: s1.nii.gz has 1 NaN/Inf voxels"):
        dataset.volume("s1")
    with pytest.raises(DatasetError, match="NaN/Inf"):
        load_dataset(small_folder, check_voxels=True)


def test_non_numeric_feature_value(small_folder):
    table = pd.read_csv(small_folder / "features.csv")
    table["age"] = table["age"].astype(str)
    table.loc[2, "age"] = "sixty"
    table.to_csv(small_folder / "features.csv", index=False)
    with pytest.raises(DatasetError, match="column 'age' mixes numbers and text; row 4 has 'sixty'"):
        load_dataset(small_folder)


def test_empty_feature_cell(small_folder):
    table = pd.read_csv(small_folder / "features.csv")
    table["age"] = table["age"].astype(object)
    table.loc[0, "age"] = ""
    table.to_csv(small_folder / "features.csv", index=False)
    with pytest.raises(DatasetError, match="column 'age' is empty in row 2"):
        load_dataset(small_folder)


def test_duplicate_ids(small_folder):
    table = pd.read_csv(small_folder / "features.csv")
    table.insert(0, "subject", ["a", "b", "a", "c"])
    table.to_csv(small_folder / "features.csv", index=False)
    with pytest.raises(DatasetError, match="subject ID 'a' appears more than once \\(row 4\\)"):
        load_dataset(small_folder)


def test_unknown_feature_and_subject(small_folder):
    dataset = load_dataset(small_folder)
    with pytest.raises(DatasetError, match="Unknown feature 'volume'"):
        dataset.feature_values("volume")
    with pytest.raises(DatasetError, match="Unknown subject 'zz'"):
        dataset.volume("zz")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"plane": "oblique"}, "Unknown plane"),
        ({"plane": "axial", "index": "cerebellum"}, "Unknown named slice"),
        ({"plane": "axial", "index": "hippocampus"}, "is a coronal slice"),
        ({"size": 4}, "out of range"),
    ],
)
def test_bad_slice_specs(kwargs, message):
    with pytest.raises(EveInputError, match=message):
        SliceSpec(**kwargs)


def test_slice_index_out_of_range(small_folder):
    dataset = load_dataset(small_folder)
    with pytest.raises(EveInputError, match="outside the volume's axial range 0..9"):
        dataset.model_inputs(SliceSpec("axial", 10, 16))


def test_header_checks_are_remembered_until_a_file_changes(small_folder):
    load_dataset(small_folder)
    assert len(list((small_folder / ".eve_cache").glob("headers-*.json"))) == 1
    load_dataset(small_folder)  # unchanged files: the same cache entry
    assert len(list((small_folder / ".eve_cache").glob("headers-*.json"))) == 1
    nib.save(nib.Nifti1Image(np.ones((5, 6, 7, 3), np.float32), np.eye(4)), small_folder / "s3.nii.gz")
    with pytest.raises(DatasetError, match="dimensions"):  # the changed file is checked again
        load_dataset(small_folder)


def test_empty_csv_file(small_folder):
    (small_folder / "features.csv").write_text("")
    with pytest.raises(DatasetError, match="is not a readable CSV"):
        load_dataset(small_folder)


# ---------------------------------------------------------------- builds in the background (`make run`)


def test_a_build_another_process_holds_is_reported_and_waited_for_not_repeated(tmp_path, monkeypatch):
    """`make run` builds SynthBrain in a detached process while the app opens: the app reads its
    progress (`building`) and, asked for the set, waits for that build instead of starting its own."""
    import threading

    from engine.data import defaults

    monkeypatch.setenv("EVE_DATA_DIR", str(tmp_path))
    monkeypatch.setitem(defaults.DEFAULT_SIZES, "shapes", 10)
    started, release = threading.Event(), threading.Event()

    def other_builder():
        with defaults.build_lock("shapes"):
            volumes = tmp_path / "shapes.partial" / "volumes"
            volumes.mkdir(parents=True)
            for i in range(4):
                (volumes / f"{i}.nii.gz").write_bytes(b"")
            started.set()
            release.wait(10)
            shapes.build(tmp_path / "shapes", n=10)

    thread = threading.Thread(target=other_builder)
    thread.start()
    started.wait(10)
    assert defaults.building("shapes") == (4, 10)
    assert defaults.building("synthbrain") is None  # nobody builds it

    def must_not_build(*args, **kwargs):
        raise AssertionError("a second build started")

    monkeypatch.setitem(defaults.BUILDERS, "shapes", must_not_build)
    threading.Timer(0.3, release.set).start()
    assert defaults.build_default("shapes") == tmp_path / "shapes"  # waited for the other one
    thread.join()
    assert defaults.is_built("shapes") and defaults.building("shapes") is None
