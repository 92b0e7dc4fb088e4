"""engine.scoring, engine.report and `python -m engine score`: outputs, scores against the truth, report
files, bad input.

The ground truth: on `shapes` every feature is independent and uniform (truth.json), so the
true S(A) = Var(E[g | A]) / Var(g) is computed without the estimator under test:

* for an output that is a known function g of the recorded features, by Gauss-Legendre
  quadrature over the uniform distributions (exact for the polynomial g used here);
* for a model that reads the image (`ShapesReadout`), by a large Monte Carlo: fresh
  features drawn from truth.json, images rendered by a batched replica of the shapes
  generator (checked against it below), binned conditional means with the small-group
  correction. Its Monte Carlo standard error is at most about 0.005 at 16,000 images (the
  spread of 12,000-image quarters of a 48,000-image run).
"""

from __future__ import annotations

import json
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import engine.report as report
from engine import scoring
from engine.__main__ import main
from engine.cards import ModelCard
from engine.data import SliceSpec
from engine.data import shapes as shapes_generator
from engine.data.slicing import model_input, normalise_intensity
from engine.tvd import ScoreResult

SPEC = SliceSpec("axial", None, 64)  # shapes are 2D images
READOUT_NAMES = ["area", "border", "centroid_x"]
TRUTH_MC = 16_000  # Monte Carlo images for the image model's true scores (standard error <= 0.005)
TOL = 0.03  # |estimate - truth| allowed at n = 3,000 (estimator + Monte Carlo error)
CI_SLACK = 0.015  # the truth must lie in the 95% CI widened by this (3x the truth's Monte Carlo error)


# 1. a model that reads the image, and the truth ------------------------------------------------


class ShapesReadout(nn.Module):
    """Exact functions of the image (B, 1, S, S) -> (B, 3):

    area        soft count of pixels brighter than halfway between the background and white
    border      mean of the 4-pixel border frame (the normalised background)
    centroid_x  column of the centroid of the pixels 0.1 above the background
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.shape[-1]
        frame = x.new_ones(s, s)
        frame[4 : s - 4, 4 : s - 4] = 0.0
        b = (x * frame).sum(dim=(2, 3)) / frame.sum()  # (B, 1)
        area = torch.sigmoid((x - (1.0 + b[:, :, None, None]) / 2.0) / 0.05).sum(dim=(2, 3))
        cols = torch.arange(s, dtype=x.dtype, device=x.device)
        w = torch.relu(x - b[:, :, None, None] - 0.1)
        cx = (w * cols).sum(dim=(2, 3)) / w.sum(dim=(2, 3)).clamp(min=1e-6)
        return torch.cat([area, b, cx], 1)


class NeedsSize64(nn.Module):
    """Only works on 64 x 64 inputs (a flattening linear layer)."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(64 * 64, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))


def save_script(module: nn.Module, path) -> str:
    torch.jit.save(torch.jit.script(module.eval()), str(path))
    return str(path)


def render_batch(features: dict[str, np.ndarray], generator: torch.Generator, noise_sd: float) -> torch.Tensor:
    """Batched replica of `shapes.render_array` + `normalise_intensity`: (B, 1, 64, 64)."""
    size, period = shapes_generator.IMAGE_SIZE, shapes_generator.STRIPE_PERIOD
    grid = torch.arange(size, dtype=torch.float32)
    rows, cols = torch.meshgrid(grid, grid, indexing="ij")
    f = {k: torch.as_tensor(np.array(v), dtype=torch.float32)[:, None, None] for k, v in features.items()}
    dy, dx = rows - f["pos_y"], cols - f["pos_x"]
    major = f["size"]
    radius = torch.sqrt((dx / major) ** 2 + (dy / (major * f["aspect"])) ** 2)
    inside = torch.sigmoid((1.0 - radius) * major * 2.0)
    stripes = 1.0 + f["texture"] * torch.sin(2 * np.pi * (dx + dy) / period)
    image = f["background"] + inside * (f["intensity"] * stripes - f["background"])
    image = image + noise_sd * torch.randn(image.shape, generator=generator)
    flat = image.clamp(min=0.0).reshape(len(image), -1)  # (B, S*S)
    # 99th percentile of the non-zero pixels (np.percentile, linear): among the top 42 values
    back = 0.01 * ((flat > 0).sum(1) - 1).double()  # its position counted from the largest
    j = back.floor().long()
    frac = (back - j).float()
    top = flat.topk(42, dim=1).values
    q = top.gather(1, j[:, None])[:, 0] * (1 - frac) + top.gather(1, (j + 1).clamp(max=41)[:, None])[:, 0] * frac
    return (flat / q[:, None]).clamp(0.0, 1.0).reshape(-1, 1, size, size)


def binned_truth(y: np.ndarray, a: np.ndarray, low: float, high: float, bins: int = 30) -> float:
    """Var(E[y|a]) / Var(y) from a large sample of a ~ U(low, high): equal-width bins, minus
    the noise sum_k w_k (1 - w_k) s2_k / n_k of the bin means."""
    k = np.minimum(((a - low) / (high - low) * bins).astype(int), bins - 1)
    n = np.bincount(k, minlength=bins)
    means = np.bincount(k, y, bins) / n
    s2 = np.bincount(k, (y - means[k]) ** 2, bins) / (n - 1)
    w = n / n.sum()
    explained = (w * (means - (w * means).sum()) ** 2).sum() - (w * (1 - w) * s2 / n).sum()
    return float(explained / y.var())


GLASS_BOX = ("shapes-glass-area", "shapes-glass-background")  # zoo read-outs, scored if built


def built_glass_boxes() -> dict[str, tuple[nn.Module, ModelCard]]:
    from engine.models import zoo

    built = {c.name for c in zoo.list_cards()}
    return {name: zoo.load_model(name) for name in GLASS_BOX if name in built}


def card_for(names, spec: SliceSpec = SPEC) -> ModelCard:
    """The card of a test model that takes `spec` and returns outputs named `names`."""
    return ModelCard(name="test model", kind="test", spec=spec, output_names=tuple(names))


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
    one = scoring.model_outputs(model, shapes, SPEC, rows, batch_size=1)
    many = scoring.model_outputs(model, shapes, SPEC, rows, batch_size=64)
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

    y = scoring.model_outputs(Mean1d(), shapes, SPEC, [0, 1, 2])
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
    rows = scoring.split_rows(shapes, "all")
    y = g_of_features({k: shapes.feature_values(k)[rows] for k in ranges})
    table = scoring.score_outputs(y, shapes, None, rows, ["g"], n_boot=200, seed=0)
    assert list(table["feature"]) == shapes.features and (table["status"] == "ok").all()
    for r in table.itertuples():
        t = truth[r.feature]
        assert abs(r.score - t) <= TOL, (r.feature, r.score, t)
        assert r.ci_low - CI_SLACK <= t <= r.ci_high + CI_SLACK, (r.feature, r.ci_low, r.ci_high, t)


def test_scores_of_an_image_reading_model_match_the_monte_carlo_truth(shapes, readout_truth):
    table = scoring.data_scores(ShapesReadout().eval(), card_for(READOUT_NAMES), shapes, split="all", n_boot=200).table
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
        pytest.skip(f"{name} is not built (python -m engine train-classifier {name})")
    model, card = built_glass_boxes()[name]
    table = scoring.data_scores(model, card, shapes, split="all", n_boot=200).table
    both = table.merge(readout_truth[readout_truth["model"] == name], on=["feature", "output"])
    assert len(both) == 7 and (both["status"] == "ok").all()
    for r in both.itertuples():
        assert abs(r.score - r.truth) <= TOL, (r.feature, r.score, r.truth)
        assert r.ci_low - CI_SLACK <= r.truth <= r.ci_high + CI_SLACK, (r.feature, r.ci_low, r.ci_high, r.truth)


# 4. the command line -----------------------------------------------------------------------------


@pytest.fixture()
def readout_pt(tmp_path) -> str:
    return save_script(ShapesReadout(), tmp_path / "readout.pt")


@pytest.fixture()
def preloaded(monkeypatch, shapes):
    """`--data shapes` without re-reading 3,000 headers: the CLI gets the session's dataset."""
    real = report.open_dataset
    monkeypatch.setattr(report, "open_dataset", lambda source: shapes if source == "shapes" else real(source))


def test_cli_scores_the_embedded_shapes_set_and_writes_json_and_csv(shapes, readout_pt, tmp_path, capsys):
    out = tmp_path / "report.json"
    argv = [
        "score",
        "--data",
        "shapes",
        "--model",
        readout_pt,
        "--features",
        "size,background,pos_x",
        "--out",
        str(out),
        "--n-boot",
        "50",
        "--seed",
        "3",
    ]
    assert main(argv) == 0
    doc = json.loads(out.read_text())
    assert doc["dataset"]["name"] == "shapes" and doc["split"] == "test" and doc["n"] == 1000
    assert doc["spec"] == {"plane": "axial", "index": None, "size": 64} and doc["method"] == "data"
    assert doc["model"]["kind"] == "torchscript" and doc["features"] == ["size", "background", "pos_x"]
    scores = pd.DataFrame(doc["scores"])
    assert len(scores) == 3 * 3 and set(scores["output"]) == {"output_0", "output_1", "output_2"}
    # the CLI computes exactly what the API does
    expected = scoring.data_scores(
        ShapesReadout().eval(),
        card_for(["output_0", "output_1", "output_2"]),
        shapes,
        ["size", "background", "pos_x"],
        n_boot=50,
        seed=3,
    ).table
    np.testing.assert_allclose(scores[["score", "ci_low", "ci_high"]], expected[["score", "ci_low", "ci_high"]])
    csv = pd.read_csv(tmp_path / "report.csv")
    assert list(csv.columns[:5]) == ["feature", "output", "score", "ci_low", "ci_high"] and len(csv) == 9
    assert "centroid" not in capsys.readouterr().err  # no traceback
    pos_x = scores[(scores["feature"] == "pos_x") & (scores["output"] == "output_2")].iloc[0]
    assert pos_x["score"] > 0.95


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.scripts_with_src = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "script" and dict(attrs).get("src"):
            self.scripts_with_src.append(dict(attrs)["src"])


def test_cli_html_report_is_standalone_with_score_bars_and_curves(preloaded, readout_pt, tmp_path):
    out = tmp_path / "report.html"
    argv = [
        "score",
        "--data",
        "shapes",
        "--model",
        readout_pt,
        "--out",
        str(out),
        "--format",
        "html",
        "--output",
        "1",
        "--n-boot",
        "20",
    ]
    assert main(argv) == 0
    text = out.read_text()
    parser = _Collect()
    parser.feed(text)
    assert parser.scripts_with_src == []  # plotly.js is inline: the file works offline
    assert text.count("Plotly.newPlot") == 2  # the score bars and one curve grid (one output)
    assert "E[output_1 | A = a]" in text and "<table" in text
    assert len(text) > 1_000_000  # plotly.js itself
    assert len(pd.read_csv(tmp_path / "report.csv")) == len(shapes_generator.FEATURE_RANGES)


def test_report_writers_round_trip_nan_as_null(shapes, tmp_path):
    rows = scoring.split_rows(shapes, "test")
    y = np.c_[shapes.feature_values("size")[rows], np.ones(len(rows))]  # the second output is constant
    rep = scoring.ScoreReport(
        scoring.score_outputs(y, shapes, ["size", "aspect"], rows, ["size", "const"], n_boot=10),
        ["size", "const"],
        {f: shapes.feature_values(f)[rows] for f in ("size", "aspect")},
        (),
        {"model": {"name": "m"}, "dataset": {"name": "shapes"}, "method": "data"},
        outputs=y,
    )
    doc = json.loads(report.write_json(rep, tmp_path / "r.json").read_text())
    const = [s for s in doc["scores"] if s["output"] == "const"]
    assert all(s["score"] is None and s["status"] == "constant_output" for s in const)
    assert pd.read_csv(report.write_csv(rep, tmp_path / "r.csv"))["score"].isna().sum() == 2
    assert "nothing to explain" in report.write_html(rep, tmp_path / "r.html").read_text()


def _glass_zoo(folder) -> None:
    """A one-card model zoo: the glass-box border-mean read-out (no weights to train)."""
    card = {
        "name": "border-mean",
        "kind": "glass-box",
        "dataset": "shapes",
        "output_names": ["border_mean"],
        "spec": {"plane": "axial", "index": None, "size": 64},
        "architecture": {"class": "BorderMean", "kwargs": {"size": 64, "border": 4}},
    }
    (folder / "border-mean.json").write_text(json.dumps(card))


def test_cli_scores_a_built_in_model_by_name_with_its_cards_input(preloaded, tmp_path, monkeypatch):
    _glass_zoo(tmp_path)
    monkeypatch.setenv("EVE_MODELS_DIR", str(tmp_path))
    out = tmp_path / "glass.json"
    assert main(["score", "--data", "shapes", "--model", "border-mean", "--out", str(out), "--n-boot", "0"]) == 0
    doc = json.loads(out.read_text())
    assert doc["model"]["name"] == "border-mean" and doc["outputs"] == ["border_mean"]
    score = {s["feature"]: s["score"] for s in doc["scores"]}
    assert score["background"] > 0.6 and score["pos_y"] < 0.05


def test_cli_diffusion_method_calls_the_diffusion_engine_when_it_exists(preloaded, readout_pt, tmp_path, monkeypatch):
    import engine.diffusion

    calls = []

    def fake_diffusion_score(model, card, diffusion, feature, *, output, k_values, n_per_value, sampler, **kw):
        calls.append((diffusion.dataset, feature, output, k_values, n_per_value, sampler.free_features))
        table = pd.DataFrame(
            {"value": [1.0, 2.0], "weight": [0.5, 0.5], "n": [4, 4], "mean": [0.0, 1.0], "variance": [0.1, 0.1]}
        )
        return ScoreResult(0.5, 0.4, 0.6, 8, "ok", "", 2), table

    monkeypatch.setattr(engine.diffusion, "diffusion_score", fake_diffusion_score, raising=False)
    out = tmp_path / "diff.html"
    argv = [
        "score",
        "--data",
        "shapes",
        "--model",
        readout_pt,
        "--features",
        "size,pos_x",
        "--output",
        "area",
        "--method",
        "diffusion",
        "--k-values",
        "2",
        "--n-per-value",
        "4",
        "--free-features",
        "model",
        "--out",
        str(out),
    ]
    # TorchScript outputs are named output_0..; "area" is not one of them
    assert main(argv) == 2
    argv[argv.index("area")] = "output_0"
    assert main(argv) == 0
    assert calls == [("shapes", "size", 0, 2, 4, "model"), ("shapes", "pos_x", 0, 2, 4, "model")]
    csv = pd.read_csv(tmp_path / "diff.csv")
    assert list(csv["score"]) == [0.5, 0.5] and "Plotly.newPlot" in out.read_text()


BAD_INPUTS = [
    (["--features", "size,nope"], "Unknown feature 'nope'"),
    (["--model", "no-such-model"], "Unknown model 'no-such-model'"),
    (["--model", "{tmp}/garbage.pt"], "is not a TorchScript model"),
    (["--model", "{tmp}/missing.pt"], "does not exist"),
    (["--model", "{tmp}/needs64.pt", "--size", "32"], "must take images shaped (B, 1, 32, 32)"),
    (["--data", "{tmp}"], "No features.csv"),
    (["--output", "7"], "Output index 7 is out of range"),
    (["--out", "{tmp}/no/such/dir/r.json"], "does not exist"),
    (["--out", "{tmp}/r.csv"], "the CSV's own name"),
    (["--n-boot", "-1"], "--n-boot -1"),
    (["--model", "border-mean", "--size", "32"], "--size 32 do not match"),
]


@pytest.mark.parametrize(("change", "message"), BAD_INPUTS, ids=[m for _, m in BAD_INPUTS])
def test_cli_bad_input_gives_one_error_line_and_exit_code_2(
    preloaded, readout_pt, tmp_path, monkeypatch, capsys, change, message
):
    _glass_zoo(tmp_path)
    monkeypatch.setenv("EVE_MODELS_DIR", str(tmp_path))
    (tmp_path / "garbage.pt").write_bytes(b"\x80\x04not a model at all")
    save_script(NeedsSize64(), tmp_path / "needs64.pt")
    args = {"--data": "shapes", "--model": readout_pt, "--out": str(tmp_path / "r.json")}
    extra = []
    for flag, value in zip(change[::2], change[1::2], strict=True):
        value = value.format(tmp=tmp_path)
        if flag in args:
            args[flag] = value
        else:
            extra += [flag, value]
    argv = ["score", *[x for kv in args.items() for x in kv], "--n-boot", "10", *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1], err
    assert not any("Traceback" in line for line in err)


class MeanBrightness(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))  # (B, 1)


def test_cli_scores_a_users_folder_with_a_categorical_feature(tmp_path):
    """A user's folder of 2D NIfTI images and a TorchScript model at --size 16; `group` is categorical."""
    import nibabel as nib

    rng = np.random.default_rng(0)
    folder = tmp_path / "cohort"
    folder.mkdir()
    rows = []
    for i in range(60):
        level, group = rng.uniform(0.2, 0.8), "AB"[i % 2]
        image = np.full((16, 16), level, np.float32)
        image[:4, :4] = 1.0  # a white patch: the 99th-percentile normalisation then keeps the level
        nib.save(nib.Nifti1Image(image, np.eye(4)), folder / f"s{i}.nii")
        rows.append({"file": f"s{i}.nii", "level": level, "group": group, "label": i % 3})
    pd.DataFrame(rows).to_csv(folder / "features.csv", index=False)
    model = save_script(MeanBrightness(), tmp_path / "mean.pt")
    out = tmp_path / "cohort.html"
    argv = ["score", "--data", str(folder), "--model", model, "--size", "16", "--out", str(out), "--n-boot", "50"]
    assert main(argv) == 0
    table = pd.read_csv(tmp_path / "cohort.csv").set_index("feature")
    assert list(table.index) == ["level", "group"]  # labels are never scored; no split column: every row
    assert table.loc["level", "score"] > 0.95 and table.loc["level", "n"] == 60
    assert table.loc["group", "n_groups"] == 2 and table.loc["group", "ci_low"] == 0
    assert "group: S = " in out.read_text()
