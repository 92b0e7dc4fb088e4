"""engine.scoring: the rows a split means, and one set of numbers for the CLI and the app.

The estimator itself is tested against analytic truths in test_tvd.py and against the
shapes Monte Carlo truth in test_report.py; here: that every caller reaches the same rows,
outputs and scores through this one service.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from components import loaders
from engine import scoring
from engine.__main__ import main
from engine.cards import ModelRef
from engine.errors import EveInputError
from engine.models import load

FEATURES = ("size", "aspect", "texture")


def _folder(tmp_path, splits) -> str:
    import nibabel as nib

    rows = []
    for i, split in enumerate(splits):
        nib.save(nib.Nifti1Image(np.full((8, 8), i + 1.0, np.float32), np.eye(4)), tmp_path / f"s{i}.nii")
        rows.append({"file": f"s{i}.nii", "level": float(i), **({"split": split} if split else {})})
    pd.DataFrame(rows).to_csv(tmp_path / "features.csv", index=False)
    return str(tmp_path)


@pytest.mark.parametrize(
    ("splits", "split", "expected"),
    [
        (["train", "test", "test", "train"], "test", [1, 2]),
        (["train", "test", "test", "train"], "train", [0, 3]),
        (["train", "test", "test", "train"], "all", [0, 1, 2, 3]),
        ([None, None, None], "test", [0, 1, 2]),  # no split column: every row is held out
    ],
)
def test_split_rows_is_one_rule(tmp_path, splits, split, expected):
    dataset = scoring.open_dataset(_folder(tmp_path, splits))
    assert scoring.split_rows(dataset, split).tolist() == expected


def test_an_empty_split_is_refused_with_the_fix(tmp_path):
    dataset = scoring.open_dataset(_folder(tmp_path, ["train", "train"]))
    with pytest.raises(EveInputError, match="no rows with split = 'test': score 'all'"):
        scoring.split_rows(dataset, "test")
    assert scoring.default_split(dataset) == "all"
    with pytest.raises(EveInputError, match="Unknown split 'val'"):
        scoring.split_rows(dataset, "val")


def test_cli_and_app_give_the_same_numbers_for_the_same_model_split_and_seed(tmp_path, shapes):
    ref = ModelRef.builtin("shapes-size-texture")
    out = tmp_path / "r.json"
    argv = [
        "score",
        "--data",
        "shapes",
        "--model",
        ref.name,
        "--features",
        ",".join(FEATURES),
        "--out",
        str(out),
        "--n-boot",
        "50",
        "--seed",
        "0",
        "--split",
        "test",
    ]
    assert main(argv) == 0
    cli = pd.DataFrame(json.loads(out.read_text())["scores"])
    app = loaders.data_scores("shapes", ref, "cpu", 0, "test", FEATURES, 50)
    columns = ["feature", "score", "ci_low", "ci_high", "n", "n_groups", "status"]
    pd.testing.assert_frame_equal(cli[columns], app[columns], check_exact=True)
    # and the notebook's way: the service called directly
    model, card = load(ref)
    api = scoring.data_scores(model, card, shapes, list(FEATURES), split="test", n_boot=50, seed=0).table
    pd.testing.assert_frame_equal(api[columns], app[columns], check_exact=True)
