"""A cohort on an object store: `s3://bucket/cohort` (moto's S3 server on 127.0.0.1, through pyarrow's
S3 client) loads as its local folder does, fetches only what is read, notices a changed object,
scores the same from the CLI, and names the fix for what is missing or unreadable."""

from __future__ import annotations

import json
import pickle

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from object_store import copy_subjects, local_s3, upload, uri

from engine.cli.main import main
from engine.data import SliceSpec, load_dataset
from engine.data.defaults import open_dataset
from engine.data.remote import CACHE_ENV, is_remote
from engine.errors import DatasetError

SPEC = SliceSpec(plane="axial", index=None, size=16)  # the middle slice


@pytest.fixture(scope="module")
def store():
    with local_s3() as endpoint:
        yield endpoint


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "mirror"))
    return tmp_path / "mirror"


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """Files as other tools write them: BIDS-style subfolders, .nii and .nii.gz, a NIfTI-2 header, a
    trailing singleton time axis, a flipped (LAS) affine."""
    root = tmp_path_factory.mktemp("cohort")
    rng = np.random.default_rng(0)
    flipped = np.diag([-2.0, 2.0, 2.0, 1.0])
    images = {
        "sub-01/anat/sub-01_T1w.nii.gz": nib.Nifti1Image(rng.random((20, 22, 18), dtype=np.float32), np.eye(4)),
        "sub-02/anat/sub-02_T1w.nii": nib.Nifti1Image(rng.random((20, 22, 18), dtype=np.float32), flipped),
        "sub-03/anat/sub-03_T1w.nii.gz": nib.Nifti2Image(rng.random((20, 22, 18), dtype=np.float32), np.eye(4)),
        "sub-04/anat/sub-04_T1w.nii.gz": nib.Nifti1Image(rng.random((20, 22, 18, 1), dtype=np.float32), np.eye(4)),
    }
    for name, image in images.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        nib.save(image, root / name)
    rows = [{"file": n, "age": 60 + i, "sex": "FM"[i % 2], "label": i % 2} for i, n in enumerate(images)]
    pd.DataFrame(rows).to_csv(root / "features.csv", index=False)
    return root


def _images(folder) -> list:
    return sorted(p for p in folder.rglob("*.nii*") if ".part-" not in p.name)


def test_object_store_uris_are_told_from_paths_and_names():
    assert is_remote("s3://bucket/cohort") and is_remote("gs://bucket/cohort?x=1")
    assert not is_remote("/data/cohort") and not is_remote("synthbrain") and not is_remote("C:/data")


def test_a_cohort_on_s3_loads_as_its_folder_does_reading_headers_only(store, cohort, cache):
    remote = open_dataset(upload(store, cohort, "bids"))
    local = load_dataset(cohort)
    assert remote.name == "bids" and remote.remote is not None
    pd.testing.assert_frame_equal(remote.table, local.table)
    assert remote.shapes == local.shapes == [(20, 22, 18)] * 4  # NIfTI-2 and the time axis read from ranged headers
    assert remote.features == local.features
    assert not _images(cache)  # opening read each header with a ranged read, and fetched no image
    np.testing.assert_array_equal(remote.model_inputs(SPEC).numpy(), local.model_inputs(SPEC).numpy())
    assert len(_images(cache)) == 4


def test_a_shard_fetches_its_own_files_and_a_pickled_dataset_mirrors_into_its_own_cache(
    store, cohort, cache, tmp_path, monkeypatch
):
    dataset = open_dataset(upload(store, cohort, "shard"))
    np.testing.assert_array_equal(
        dataset.shard_inputs(SPEC, [1]).numpy(), load_dataset(cohort).model_inputs(SPEC, [1]).numpy()
    )
    assert [p.name for p in _images(cache)] == ["sub-02_T1w.nii"]  # the shard's file and nothing else
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "another-node"))  # a worker elsewhere: its own mirror
    worker = pickle.loads(pickle.dumps(dataset))
    assert worker.root != dataset.root and str(tmp_path / "another-node") in str(worker.root)
    np.testing.assert_array_equal(worker.shard_inputs(SPEC, [3]).numpy(), dataset.shard_inputs(SPEC, [3]).numpy())
    assert [p.name for p in _images(tmp_path / "another-node")] == ["sub-04_T1w.nii.gz"]


def test_a_changed_object_is_fetched_again(store, cohort, cache, tmp_path):
    address = upload(store, cohort, "changing")
    before = open_dataset(address).volume(0)[0]
    changed = tmp_path / "changed"
    (changed / "sub-01/anat").mkdir(parents=True)
    nib.save(
        nib.Nifti1Image(np.full((20, 22, 18), 7.0, np.float32), np.eye(4)), changed / "sub-01/anat/sub-01_T1w.nii.gz"
    )
    upload(store, changed, "changing")
    after = open_dataset(address).volume(0)[0]
    assert not np.array_equal(before, after) and np.all(after == 7.0)


def test_the_cli_scores_an_s3_cohort_as_its_local_folder(store, synthbrain, cache, tmp_path):
    small = copy_subjects(synthbrain.root, tmp_path / "small", 40)
    address = upload(store, small, "small")
    argv = ["score", "--model", "synthbrain-diagnosis", "--n-boot", "20", "--features", "age,icv", "--split", "all"]
    assert main([*argv, "--data", str(small), "--out", str(tmp_path / "local.json")]) == 0
    assert main([*argv, "--data", address, "--out", str(tmp_path / "s3.json")]) == 0
    local, remote = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("local", "s3"))
    assert remote["scores"] == local["scores"]
    assert "endpoint_override" not in json.dumps(remote)  # the report names the cohort, not the store's endpoint


def test_bad_object_store_input_names_the_fix(store, cohort, cache, tmp_path):
    with pytest.raises(DatasetError, match=r"No features.csv in s3://cohorts/nothing-here: upload a features.csv"):
        open_dataset(uri(store, "nothing-here"))
    upload(store, cohort, "one-missing", names=["features.csv", "sub-01/anat/sub-01_T1w.nii.gz"])
    with pytest.raises(DatasetError, match=r"Row 3: sub-02/anat/sub-02_T1w.nii is not in s3://cohorts/one-missing"):
        open_dataset(uri(store, "one-missing"))
    broken = tmp_path / "broken"
    (broken / "sub-01/anat").mkdir(parents=True)
    (broken / "sub-01/anat/sub-01_T1w.nii.gz").write_bytes(b"not a volume at all" * 10)
    pd.DataFrame([{"file": "sub-01/anat/sub-01_T1w.nii.gz", "age": 1.0}]).to_csv(broken / "features.csv", index=False)
    with pytest.raises(DatasetError, match=r"Row 2: sub-01/anat/sub-01_T1w.nii.gz is not a readable NIfTI"):
        open_dataset(upload(store, broken, "broken"))
    with pytest.raises(DatasetError, match=r"s3://cohorts/x cannot be listed .*check the URI, its credentials"):
        open_dataset("s3://cohorts/x?endpoint_override=http://127.0.0.1:1&region=us-east-1")
