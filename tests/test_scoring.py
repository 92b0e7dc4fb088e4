"""engine.scores.service: the rows a split means, model outputs, scores against the truth, and one set of
numbers for the CLI, the app and the API.

The ground truth: on `shapes` every feature is independent and uniform (truth.json), so the
true S(A) = Var(E[g | A]) / Var(g) is computed without the estimator under test:

* for an output that is a known function g of the recorded features, by Gauss-Legendre
  quadrature over the uniform distributions (exact for the polynomial g used here);
* for a model that reads the image (`ShapesReadout`), by a large Monte Carlo
  (`tests/shapes_readout.py`). Its Monte Carlo standard error is at most about 0.005 at
  16,000 images (the spread of 12,000-image quarters of a 48,000-image run).
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from shapes_readout import (
    CI_SLACK,
    GLASS_BOX,
    READOUT_NAMES,
    SPEC,
    TOL,
    TRUTH_MC,
    ShapesReadout,
    binned_truth,
    built_glass_boxes,
    card_for,
    render_batch,
)
from torch import nn

from components import loaders
from engine.cards import ModelCard, ModelRef, UserCard
from engine.cli.main import main
from engine.data import shapes as shapes_generator
from engine.data.defaults import open_dataset
from engine.data.slicing import SliceSpec, model_input, normalise_intensity
from engine.errors import EveInputError
from engine.models import load
from engine.scores import service

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
    dataset = open_dataset(_folder(tmp_path, splits))
    assert service.split_rows(dataset, split).tolist() == expected


def test_an_empty_split_is_refused_with_the_fix(tmp_path):
    dataset = open_dataset(_folder(tmp_path, ["train", "train"]))
    with pytest.raises(EveInputError, match="no rows with split = 'test': score 'all'"):
        service.split_rows(dataset, "test")
    assert service.default_split(dataset) == "all"
    with pytest.raises(EveInputError, match="Unknown split 'val'"):
        service.split_rows(dataset, "val")


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
    api = service.data_scores(model, card, shapes, list(FEATURES), split="test", n_boot=50, seed=0).table
    pd.testing.assert_frame_equal(api[columns], app[columns], check_exact=True)


# the truth of the shapes read-outs -----------------------------------------------------------------


@pytest.fixture(scope="module")
def readout_truth(shapes) -> pd.DataFrame:
    """True S(A) for each feature of each output of ShapesReadout (model "readout") and of the
    built glass-box zoo models, from the same TRUTH_MC fresh images."""
    ranges = {k: (v["low"], v["high"]) for k, v in shapes.truth["features"].items()}
    assert all(v["distribution"] == "uniform" for v in shapes.truth["features"].values())
    models = {"readout": (ShapesReadout().eval(), card_for(READOUT_NAMES))} | built_glass_boxes()
    rng, generator = np.random.default_rng(2024), torch.Generator().manual_seed(2024)
    feats = {k: rng.uniform(lo, hi, TRUTH_MC) for k, (lo, hi) in ranges.items()}
    outputs = {name: [] for name in models}
    with torch.inference_mode():
        for i in range(0, TRUTH_MC, 2000):
            images = render_batch({k: v[i : i + 2000] for k, v in feats.items()}, generator, shapes.truth["noise_sd"])
            for name, (model, _) in models.items():
                outputs[name].append(model(images).double())
    rows = []
    for name, (_, card) in models.items():
        y = torch.cat(outputs[name]).numpy()
        for j, out in enumerate(card.output_names):
            rows += [(name, f, out, binned_truth(y[:, j], feats[f], *ranges[f])) for f in ranges]
    return pd.DataFrame(rows, columns=["model", "feature", "output", "truth"])


class _ZeroNoise:
    def normal(self, loc, scale, size):
        return np.zeros(size)


def test_render_replica_matches_the_shapes_generator_and_the_model_input(shapes):
    table = shapes_generator.sample_features(6, seed=7)
    feats = {k: table[k].to_numpy() for k in shapes_generator.FEATURE_RANGES}
    got = render_batch(feats, torch.Generator().manual_seed(0), noise_sd=0.0)
    for i, row in enumerate(table.to_dict("records")):
        image = shapes_generator.render_array(row, _ZeroNoise())
        np.testing.assert_allclose(got[i, 0].numpy(), normalise_intensity(image), atol=2e-6)
        # what the dataset pipeline feeds the model: the stored (x, y) volume through model_input
        stored = np.ascontiguousarray(image[::-1].T)
        np.testing.assert_allclose(model_input(stored, np.eye(4), SPEC)[0, 0].numpy(), got[i, 0].numpy(), atol=2e-6)


# 2. model outputs --------------------------------------------------------------------------------


def test_model_outputs_are_batch_invariant_in_row_order_and_leave_inputs_unchanged(shapes):
    model = ShapesReadout().eval()
    rows = np.array([5, 1, 2999, 42, 7])
    before = shapes.model_inputs(SPEC, rows).clone()
    one = service.model_outputs(model, shapes, SPEC, rows, batch_size=1)
    many = service.model_outputs(model, shapes, SPEC, rows, batch_size=64)
    assert one.shape == (5, 3) and one.dtype == np.float32
    np.testing.assert_allclose(one, many, rtol=1e-5, atol=1e-5)
    with torch.inference_mode():
        direct = model(shapes.model_inputs(SPEC, rows)).numpy()
    np.testing.assert_allclose(many, direct, rtol=1e-6)
    assert torch.equal(shapes.model_inputs(SPEC, rows), before)


def test_model_outputs_reads_a_1d_output_as_one_column(shapes):
    class Mean1d(nn.Module):
        def forward(self, x):
            return x.mean(dim=(1, 2, 3))  # (B,)

    y = service.model_outputs(Mean1d(), shapes, SPEC, [0, 1, 2])
    assert y.shape == (3, 1)


# 3. scores against the truth ---------------------------------------------------------------------

# g(features): a polynomial with a nonlinearity, an interaction and two features it ignores
G_USES = ("size", "aspect", "texture", "intensity", "background")


def g_of_features(f: dict) -> np.ndarray:
    return f["size"] ** 2 * f["aspect"] + 200 * f["texture"] ** 2 + 60 * f["intensity"] * f["background"]


def quadrature_truth(ranges: dict[str, tuple[float, float]], nodes: int = 12) -> dict[str, float]:
    """True S(A) of g for independent uniform features: Gauss-Legendre tensor grid (exact here)."""
    x, w = np.polynomial.legendre.leggauss(nodes)
    axes = {k: (lo + (x + 1) * (hi - lo) / 2) for k, (lo, hi) in ranges.items() if k in G_USES}
    grids = np.meshgrid(*axes.values(), indexing="ij")
    values = g_of_features(dict(zip(axes, grids, strict=True)))  # (nodes,) * d
    weights = np.ones_like(values)
    for d in range(values.ndim):  # product of the normalised 1-D weights
        weights = weights * (w / 2).reshape([-1 if i == d else 1 for i in range(values.ndim)])
    mean = (weights * values).sum()
    total = (weights * (values - mean) ** 2).sum()
    truth = {}
    for d, name in enumerate(axes):
        others = tuple(i for i in range(values.ndim) if i != d)
        cond = (weights * values).sum(axis=others) / weights.sum(axis=others)  # E[g | A = node]
        truth[name] = float(((w / 2) * (cond - mean) ** 2).sum() / total)
    return {k: truth.get(k, 0.0) for k in ranges}


def test_scores_of_a_known_function_of_the_features_match_the_quadrature_truth(shapes):
    ranges = {k: (v["low"], v["high"]) for k, v in shapes.truth["features"].items()}
    truth = quadrature_truth(ranges)
    assert sum(truth.values()) < 1  # the interaction term leaves a part to no single feature
    rows = service.split_rows(shapes, "all")
    y = g_of_features({k: shapes.feature_values(k)[rows] for k in ranges})
    table = service.score_outputs(y, shapes, None, rows, ["g"], n_boot=200, seed=0)
    assert list(table["feature"]) == shapes.features and (table["status"] == "ok").all()
    for r in table.itertuples():
        t = truth[r.feature]
        assert abs(r.score - t) <= TOL, (r.feature, r.score, t)
        assert r.ci_low - CI_SLACK <= t <= r.ci_high + CI_SLACK, (r.feature, r.ci_low, r.ci_high, t)


def test_scores_of_an_image_reading_model_match_the_monte_carlo_truth(shapes, readout_truth):
    table = service.data_scores(ShapesReadout().eval(), card_for(READOUT_NAMES), shapes, split="all", n_boot=200).table
    both = table.merge(readout_truth[readout_truth["model"] == "readout"], on=["feature", "output"])
    assert len(both) == 7 * 3 and (both["status"] == "ok").all()
    big = both[both["truth"] > 0.1]  # the features each output really depends on
    assert set(zip(big["output"], big["feature"], strict=True)) == {
        ("area", "size"),
        ("area", "aspect"),
        ("border", "background"),
        ("border", "intensity"),
        ("centroid_x", "pos_x"),
    }
    for r in both.itertuples():
        assert abs(r.score - r.truth) <= TOL, (r.feature, r.output, r.score, r.truth)
        assert r.ci_low - CI_SLACK <= r.truth <= r.ci_high + CI_SLACK, (r.feature, r.output, r.ci_low, r.truth)


@pytest.mark.parametrize("name", GLASS_BOX)
def test_scores_of_the_zoo_glass_box_models_match_the_monte_carlo_truth(shapes, readout_truth, name):
    if name not in set(readout_truth["model"]):
        pytest.fail(f"{name} is missing from the readout truth: rebuild it (python -m engine train-classifier {name})")
    model, card = built_glass_boxes()[name]
    table = service.data_scores(model, card, shapes, split="all", n_boot=200).table
    both = table.merge(readout_truth[readout_truth["model"] == name], on=["feature", "output"])
    assert len(both) == 7 and (both["status"] == "ok").all()
    for r in both.itertuples():
        assert abs(r.score - r.truth) <= TOL, (r.feature, r.score, r.truth)
        assert r.ci_low - CI_SLACK <= r.truth <= r.ci_high + CI_SLACK, (r.feature, r.ci_low, r.ci_high, r.truth)


# what is explained: a logit, or its probability ----------------------------------------------------


def test_a_logits_probability_is_explained_through_the_same_service(shapes):
    logit_model, logit_card = load(ModelRef.builtin("shapes-elongated"))
    model, card = load(ModelRef(name="shapes-elongated", explain="probability"))
    assert card.output_names == ("P(aspect<0.725)",) and card.outputs == "probability (sigmoid of the logit)"
    rows = service.split_rows(shapes, "test")
    logit = service.model_outputs(logit_model, shapes, card.spec, rows)
    probability = service.model_outputs(model, shapes, card.spec, rows)
    np.testing.assert_allclose(probability, torch.sigmoid(torch.from_numpy(logit)).numpy(), rtol=1e-6)
    table = service.data_scores(model, card, shapes, ["aspect", "size"], n_boot=0).table.set_index("feature")
    direct = service.score_outputs(probability, shapes, ["aspect", "size"], rows, list(card.output_names), n_boot=0)
    np.testing.assert_allclose(table["score"], direct.set_index("feature")["score"])
    logit_scores = service.data_scores(logit_model, logit_card, shapes, ["aspect"], n_boot=0).table
    assert abs(table.loc["aspect", "score"] - logit_scores["score"].iloc[0]) > 0.01  # the two differ


def test_a_probability_over_several_logits_is_their_softmax():
    from engine.models.zoo import Probability

    logits = torch.tensor([[0.0, 1.0, 2.0], [3.0, 0.0, 0.0]])
    out = Probability(nn.Identity())(logits)
    torch.testing.assert_close(out, torch.softmax(logits, dim=1))
    torch.testing.assert_close(Probability(nn.Identity())(logits[:, 0]), torch.sigmoid(logits[:, :1]))


def test_only_a_logit_has_a_probability_to_explain():
    with pytest.raises(EveInputError, match="outputs are regression, not logits"):
        load(ModelRef(name="shapes-glass-area", explain="probability"))
    with pytest.raises(EveInputError, match="Unknown explained output 'odds'"):
        ModelRef(name="shapes-glass-area", explain="odds")


def test_every_output_is_named_in_plain_words_with_its_unit():
    def described(ref):
        return load(ref)[1].describe_output(0)

    assert described(ModelRef(name="shapes-elongated", explain="probability")) == (
        "the model's probability that aspect < 0.725"
    )
    assert described(ModelRef.builtin("synthbrain-diagnosis")) == "the model's logit (log-odds) that label = 1"
    assert described(ModelRef.builtin("shapes-size-texture")) == "the model's predicted z(size)+z(texture) (SD units)"
    assert described(ModelRef.builtin("shapes-glass-area")) == "the model's output bright_pixels (pixels)"
    card = ModelCard(
        name="user",
        kind="torchscript",
        spec=SliceSpec("axial", None, 64),
        output_names=("P(AD)", "logit MCI", "volume"),
    )
    assert replace(card, outputs="probability").describe_output(0) == "the model's probability of AD"
    assert replace(card, outputs="logit").describe_output(1) == "the model's logit (log-odds) of MCI"
    user = UserCard.from_json({"outputs": {"names": ["volume"], "kind": "regression", "unit": "mL"}})
    ref = user.ref("model.pt")
    assert ref.output_unit == "mL"
    assert replace(card, outputs="regression", output_unit="mL").describe_output(2) == (
        "the model's predicted volume (mL)"
    )
