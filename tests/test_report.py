"""engine.reports.html and `python -m engine score`: the report files and the command, its flags and bad input.

The scores themselves are checked against the truth in test_scoring.py.
"""

from __future__ import annotations

import html
import json
import re
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from shapes_readout import NeedsSize64, ShapesReadout, card_for, save_script
from torch import nn

import engine.cli.score as score_command
from engine.cli.main import main
from engine.data import shapes as shapes_generator
from engine.data.slicing import INTENSITIES, ORIENTATIONS
from engine.reports import html as report
from engine.reports import prose, writers
from engine.scores import service
from engine.scores.tvd import ScoreResult

# 4. the command line -----------------------------------------------------------------------------


@pytest.fixture()
def readout_pt(tmp_path) -> str:
    return save_script(ShapesReadout(), tmp_path / "readout.pt")


@pytest.fixture()
def preloaded(monkeypatch, shapes):
    """`--data shapes` without re-reading 3,000 headers: the CLI gets the session's dataset."""
    real = score_command.open_dataset
    monkeypatch.setattr(score_command, "open_dataset", lambda source: shapes if source == "shapes" else real(source))


def test_cli_scores_the_embedded_shapes_set_and_writes_json_and_csv(shapes, readout_pt, tmp_path, capsys):
    out = tmp_path / "report.json"
    argv = [
        "score",
        "--data",
        "shapes",
        "--model",
        readout_pt,
        "--intensity",
        "p99",  # the read-out expects Eve's normalisation and display orientation: the user says so
        "--orientation",
        "ras",
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
    assert doc["spec"] == {"plane": "axial", "index": None, "size": 64, "intensity": "p99"} and doc["method"] == "data"
    assert doc["input"] == (
        f"axial the middle slice, 64x64 px; orientation ras: {ORIENTATIONS['ras']}; intensity p99: {INTENSITIES['p99']}"
    )
    assert doc["model"]["kind"] == "torchscript" and doc["features"] == ["size", "background", "pos_x"]
    scores = pd.DataFrame(doc["scores"])
    assert len(scores) == 3 * 3 and set(scores["output"]) == {"output_0", "output_1", "output_2"}
    # the CLI computes exactly what the API does
    expected = service.data_scores(
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
    assert set(csv["input"]) == {doc["input"]}  # the contract travels with the CSV too
    assert "centroid" not in capsys.readouterr().err  # no traceback
    pos_x = scores[(scores["feature"] == "pos_x") & (scores["output"] == "output_2")].iloc[0]
    assert pos_x["score"] > 0.95


def _visible(page: str) -> str:
    """A report's HTML without its scripts and styles (the figures' JSON lives in scripts)."""
    return re.sub(r"<(script|style)\b.*?</\1>", "", page, flags=re.S)


def _section_text(page: str, heading: str) -> str:
    """From the heading (an h2 or h3 starting with `heading`) to the next h2."""
    start = re.search(rf"<h[23]>{re.escape(heading)}", page)
    assert start, f"no {heading!r} section"
    end = page.find("<h2>", start.end())
    return page[start.start() : end if end > 0 else None]


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
        "--intensity",
        "p99",  # the read-out expects Eve's normalisation and display orientation: the user says so
        "--orientation",
        "ras",
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
    # the score bars, what each feature adds to the others, their fair shares (the features scored together, on by
    # default) and one curve grid (one output)
    assert text.count("Plotly.newPlot") == 4
    assert "E[output_1 | A = a]" in text and "<table" in text
    assert len(text) > 1_000_000  # plotly.js itself
    assert len(pd.read_csv(tmp_path / "report.csv")) == len(shapes_generator.FEATURE_RANGES)
    page = _visible(text)
    assert '{"' not in page and "{&quot;" not in page  # metadata as labelled rows, never JSON
    assert "<th>Location</th>" in page and "<th>SHA-256</th>" in page  # nested dicts are rows
    contract = _section_text(page, "Input contract")
    assert "the 2D image" in contract and "64 × 64 px" in contract and "p99" in contract
    methods = _section_text(page, "Methods")
    assert html.escape(prose.CITATION) in methods
    assert "estimated from data (the data path), on the 1,000 test-split images of shapes" in methods
    assert "20 bootstrap resamples" in methods and "diffusion" not in methods
    assert "@media print" in text and "break-inside: avoid" in text
    software = _section_text(page, "Software")
    for name, version in (("torch", torch.__version__), ("numpy", np.__version__), ("python", sys.version.split()[0])):
        assert f"<th>{name}</th><td>{html.escape(version)}</td>" in software
    assert "<th>eve</th>" in software and "python -m engine score --data shapes" in software
    assert "diffusers" not in software  # a data-path score does not use it


def test_report_writers_round_trip_nan_as_null(shapes, tmp_path):
    rows = service.split_rows(shapes, "test")
    y = np.c_[shapes.feature_values("size")[rows], np.ones(len(rows))]  # the second output is constant
    rep = service.ScoreReport(
        service.score_outputs(y, shapes, ["size", "aspect"], rows, ["size", "const"], n_boot=10),
        ["size", "const"],
        {f: shapes.feature_values(f)[rows] for f in ("size", "aspect")},
        (),
        {"model": {"name": "m"}, "dataset": {"name": "shapes"}, "method": "data", "run": {"host": {"gpu": None}}},
        outputs=y,
    )
    doc = json.loads(writers.write_json(rep, tmp_path / "r.json").read_text())
    const = [s for s in doc["scores"] if s["output"] == "const"]
    assert all(s["score"] is None and s["status"] == "constant_output" for s in const)
    assert pd.read_csv(writers.write_csv(rep, tmp_path / "r.csv"))["score"].isna().sum() == 2
    page = report.write_html(rep, tmp_path / "r.html").read_text()
    assert "nothing to explain" in page  # the problems list; a minimal metadata dict still makes a report
    other = _section_text(_visible(page), "Other details")  # a key the report does not know: rows, not JSON
    assert "<th>run</th>" in other and "<th>host</th>" in other and "<th>gpu</th><td>—</td>" in other


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
    import engine.scores.generator

    calls = []

    def fake_diffusion_score(model, card, diffusion, feature, *, output, k_values, n_per_value, sampler, **kw):
        calls.append((diffusion.dataset, feature, output, k_values, n_per_value, sampler.free_features))
        table = pd.DataFrame(
            {"value": [1.0, 2.0], "weight": [0.5, 0.5], "n": [4, 4], "mean": [0.0, 1.0], "variance": [0.1, 0.1]}
        )
        return ScoreResult(0.5, 0.4, 0.6, 8, "ok", "", 2), table

    monkeypatch.setattr(engine.scores.generator, "diffusion_score", fake_diffusion_score)
    out = tmp_path / "diff.html"
    argv = [
        "score",
        "--data",
        "shapes",
        "--model",
        readout_pt,
        "--intensity",
        "p99",  # the read-out expects Eve's normalisation and display orientation: the user says so
        "--orientation",
        "ras",
        "--features",
        "size,pos_x",
        "--output",
        "area",
        "--method",
        "diffusion",
        "--generator-only",  # the generator's own score: the path that calls diffusion_score per feature
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
    page = _visible(out.read_text())
    assert '{"' not in page and "{&quot;" not in page
    methods = _section_text(page, "Methods")
    assert "sampled from the conditional diffusion model shapes-diffusion instead of from data" in methods
    assert "K = 2 values" in methods and "N = 4 images" in methods and "data path" not in methods
    assert "200 parametric bootstrap draws" in methods  # the shapes generator is a diffusion model: no refits
    assert "<th>K values × N samples</th><td>2 × 4 per feature" in page
    assert "<th>diffusers</th>" in _section_text(page, "Software")


BAD_INPUTS = [
    (["--features", "size,nope"], "Unknown feature 'nope'"),
    (["--model", "no-such-model"], "Unknown model 'no-such-model'"),
    (["--model", "{tmp}/garbage.pt"], "is not a TorchScript model"),
    (["--model", "{tmp}/missing.pt"], "does not exist"),
    (["--model", "{tmp}/needs64.pt", "--size", "32"], "must take images shaped (B, 1, 32, 32)"),
    (["--data", "{tmp}"], "No features.csv"),
    (["--output", "7"], "Output index 7 is out of range"),
    (["--out", "{tmp}/r.txt"], "is not a .json or .html or .htm file"),  # a missing folder is created (one rule)
    (["--out", "{tmp}/r.csv"], "the CSV's own name"),
    (["--out", "{tmp}/r.html", "--format", "json"], "names a .html file but --format json asks for JSON"),
    (["--model", "border-mean", "--size", "32"], "--size 32 do not match"),
    (["--model", "border-mean", "--explain", "probability"], "outputs are not stated, not logits"),
    (["--model", "border-mean", "--register", "mni"], "--register mni is for TorchScript models"),
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


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (["--n-boot", "-1"], "argument --n-boot: -1 is below 0: give a whole number >= 0"),
        (["--seed", "1.5"], "argument --seed: '1.5' is not a whole number"),
        (["--batch-size", "0"], "argument --batch-size: 0 is below 1"),
    ],
)
def test_cli_numbers_out_of_range_are_refused_by_the_parser_naming_the_flag(capsys, change, message):
    """Refused before anything loads: exit code 2 (returned by `main`, not raised), the flag and the fix."""
    assert main(["score", "--data", "shapes", "--model", "border-mean", "--out", "r.json", *change]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and "usage:" in err[0], err


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


# 5. a user's card beside the model ---------------------------------------------------------------


def test_a_card_beside_the_model_states_its_contract_and_flags_override_it(preloaded, readout_pt, tmp_path):
    card = {
        "name": "shape read-out",
        "input": {"kind": "slice", "plane": "axial", "slice": "middle", "size": 64, "orientation": "ras"},
        "intensity": "p99",
        "outputs": {"names": ["area", "border", "centroid_x"], "kind": "regression"},
    }
    Path(readout_pt).with_suffix(".json").write_text(json.dumps(card))
    out = tmp_path / "carded.json"
    argv = ["score", "--data", "shapes", "--model", readout_pt, "--features", "pos_x", "--out", str(out)]
    assert main([*argv, "--n-boot", "0"]) == 0
    doc = json.loads(out.read_text())
    assert doc["outputs"] == ["area", "border", "centroid_x"] and doc["model"]["outputs"] == "regression"
    assert doc["model"]["name"] == "shape read-out" and doc["spec"]["intensity"] == "p99"
    scores = pd.DataFrame(doc["scores"]).set_index("output")
    assert scores.loc["centroid_x", "score"] > 0.95  # the card's p99 and ras are what this read-out expects
    assert main([*argv, "--n-boot", "0", "--orientation", "stored"]) == 0  # fed the stored (X, Y) array...
    transposed = pd.DataFrame(json.loads(out.read_text())["scores"]).set_index("output")
    assert transposed.loc["centroid_x", "score"] < 0.1  # ...its centroid_x runs along the other axis
    assert main([*argv, "--n-boot", "0", "--intensity", "raw"]) == 0  # a flag overrides the card
    assert json.loads(out.read_text())["spec"]["intensity"] == "raw"


CARD_PROBLEMS = [
    (ShapesReadout, {"inputs": {}}, "unknown keys inputs"),
    (
        ShapesReadout,
        {"input": {"kind": "volume", "size": 96}},
        r"\(2, 3, 96\).*other input than volumes.*model card's input",
    ),
    (ShapesReadout, {"outputs": {"names": ["a", "b"]}}, "3 outputs per image but 2 output names"),
    (ShapesReadout, {"outputs": {"kind": "odds"}}, "outputs kind 'odds'"),
    (NeedsSize64, {"input": {"size": 32}}, r"must take images shaped \(B, 1, 32, 32\)"),
    (ShapesReadout, {"intensity": "log"}, "Unknown intensity rule 'log'"),
]


@pytest.mark.parametrize(("model", "card", "message"), CARD_PROBLEMS, ids=[m for *_, m in CARD_PROBLEMS])
def test_a_card_that_contradicts_its_model_is_named_with_the_fix(preloaded, tmp_path, capsys, model, card, message):
    path = save_script(model(), tmp_path / "m.pt")
    (tmp_path / "model.json").write_text(json.dumps(card))  # the folder's card, for every model in it
    argv = ["score", "--data", "shapes", "--model", path, "--out", str(tmp_path / "r.json"), "--n-boot", "0"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ") and re.search(message, err), err


def test_a_built_in_model_on_a_dataset_it_was_not_trained_on_is_warned_about_in_every_report(tmp_path, capsys):
    out = tmp_path / "foreign.html"
    argv = ["score", "--data", "synthbrain", "--model", "shapes-glass-area", "--features", "age", "--n-boot", "0"]
    assert main([*argv, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "warning: shapes-glass-area was trained on Eve's shapes, not on synthbrain" in printed
    page = out.read_text()
    assert "describe that model, not one trained on this data" in page
    assert '<p class="warning"><b>Warning.</b> shapes-glass-area was trained on Eve&#x27;s shapes' in page
    assert "Note: shapes-glass-area was trained on Eve&#x27;s shapes" in _section_text(page, "Methods")
    assert "<th>Registration</th><td>none" in page  # a slice of a 3D volume: registration is part of the contract
    assert main([*argv, "--out", str(tmp_path / "foreign.json")]) == 0
    assert "trained on Eve's shapes" in json.loads((tmp_path / "foreign.json").read_text())["warning"]
    assert main([*argv[:4], "synthbrain-diagnosis", *argv[5:], "--out", str(tmp_path / "own.json")]) == 0
    assert "warning" not in json.loads((tmp_path / "own.json").read_text())


# 6. the HTML report's sections -------------------------------------------------------------------


def test_html_report_states_a_volume_contract_and_the_sources_it_compares(synthbrain):
    """A user's 3D model (fake outputs: no forward pass) with the app's diffusion and truth rows beside."""
    from engine.cards import ModelCard
    from engine.data import SliceSpec

    spec = SliceSpec(input="volume", size=48, spacing=2.5, intensity="zscore")
    card = ModelCard(name="my 3d", kind="torchscript", spec=spec, output_names=("logit AD",), outputs="logit")
    rows = service.split_rows(synthbrain, "test")
    age = synthbrain.feature_values("age")[rows]
    y = (age + np.random.default_rng(0).normal(0, 5, len(rows)))[:, None]
    rep = service.data_report(y, card, synthbrain, ["age", "icv"], n_boot=0)
    assert rep.metadata["explained"] == "logit" and rep.metadata["ci_method"] == "none"
    assert rep.metadata["software"]["torch"] == torch.__version__  # the JSON carries the versions too
    row = rep.table.iloc[0]
    diffusion = pd.DataFrame([{**row.to_dict(), "output": "0", "score": 0.3, "n": 24, "n_groups": 3}])
    truth = rep.table.assign(output="truth", n=len(synthbrain))
    settings = {"diffusion": "gen", "n_boot": 0}
    both = prose.compare(rep, diffusion=diffusion, diffusion_settings=settings, truth=truth, truth_definition="g")
    assert set(both.table["source"]) == {"data", "diffusion", "truth"} and set(both.table["output"]) == {"logit AD"}
    page = _visible(report.html_report(both))
    assert '{"' not in page and "{&quot;" not in page
    contract = _section_text(page, "Input contract")
    assert "the whole 3D volume" in contract and "48 × 48 × 48 voxels" in contract
    assert "2.5 mm isotropic" in contract and "zscore" in contract and "<th>Registration</th><td>none" in contract
    model = _section_text(page, "Model")
    assert "a user&#x27;s TorchScript model" in model and "not known to Eve" in model
    methods = _section_text(page, "Methods")
    assert "Y is a logit." in methods and "No confidence intervals were computed" in methods
    assert (
        "The generator's own scores (cross-hatched bars, model-based) were estimated from images sampled from gen"
        in (methods.replace("&#x27;", "'"))
    )
    assert "K = 3 values" in methods and "N = 8 images" in methods  # read off the rows: n = K N
    assert f"on all {len(synthbrain):,} images: the score a perfect model of its target would get" in methods
    assert "<td>generator alone (model-based)</td>" in page and "<td>ground truth</td>" in page  # the source column
    assert "plain: data path, cross-hatched: generator alone (model-based), dotted: ground truth." in page
    alone = _visible(report.html_report(prose.compare(rep, truth=truth)))
    assert "plain: data path, dotted: ground truth." in alone and "hatched" not in alone


@pytest.mark.parametrize(
    ("ci_method", "says"),
    [
        ("generator_refits", "the scores of 20 generators refitted on bootstrap resamples of the training subjects"),
        ("parametric_bootstrap", "percentile intervals of 200 parametric bootstrap draws (seed 3)"),
        ("none", "No confidence intervals were computed"),
    ],
)
def test_the_diffusion_methods_paragraph_says_how_its_interval_was_computed(ci_method, says):
    table = pd.DataFrame(
        [dict(feature="a", output="y", score=0.4, ci_low=0.3, ci_high=0.5, unexplained=0.6, n=40, n_groups=5)]
    ).assign(status="ok", message="")
    meta = {"method": "diffusion", "diffusion": "g", "k_values": 5, "n_per_value": 8, "n_boot": 200, "seed": 3}
    meta |= {"ci_method": ci_method, "ci_refits": 20, "dataset": {"name": "d"}, "model": {"name": "m"}}
    rep = service.ScoreReport(table, ["y"], {"a": np.arange(3.0)}, (), meta)
    text = " ".join(prose.methods_paragraphs(rep))
    assert says in text and "K = 5 values" in text and "N = 8 images" in text and "data path" not in text


@pytest.mark.slow
def test_cli_diffusion_method_debiases_by_the_real_images_by_default(preloaded, tmp_path, capsys):
    """`--method diffusion` without `--generator-only`: the committed shapes generator's score debiased by the
    test split's images (their twins and K x N generated subjects), the generator's own beside it, labelled."""
    out = tmp_path / "debiased.json"
    argv = ["score", "--data", "shapes", "--model", "shapes-size-texture", "--features", "size,background"]
    argv += ["--method", "diffusion", "--k-values", "4", "--n-per-value", "8", "--n-boot", "50", "--out", str(out)]
    assert main(argv) == 0
    doc = json.loads(out.read_text())
    assert (
        doc["method"] == "debiased" and doc["n_generated"] == 32 and doc["ci_method"] == "prediction_powered_bootstrap"
    )
    scores = pd.DataFrame(doc["scores"]).set_index("feature")
    # the data path reads size 0.500 [0.465, 0.537] and background 0.000 [0.000, 0.034] on these 1,000 images
    assert abs(scores.loc["size", "score"] - 0.50) < 0.05 and scores.loc["background", "score"] < 0.1
    assert {"generator_score", "lam", "twin_correlation"} <= set(scores.columns)
    assert (scores["twin_correlation"] > 0.5).all()  # twins track the real outputs
    printed = capsys.readouterr().out
    assert "generator alone, model-based" in printed
    page = prose.methods_paragraphs(writers_report(doc))
    assert any("debiased by the" in p and "prediction-powered" in p for p in page)
    # the features together, from the same draws, debiased the same way (issue 36), the generator's own beside
    assert doc["joint"]["path"] == "debiased" and doc["joint"]["exact"] and doc["joint"]["n_subsets"] == 4
    joint = doc["joint"]["scores"][0]
    assert joint["status"] == "ok" and 0 <= joint["lam"] <= 1 and joint["generator_score"] >= 0
    assert scores["shapley"].sum() == pytest.approx(joint["score"])
    assert {"added", "added_ci_low", "generator_added", "generator_shapley"} <= set(scores.columns)
    assert scores.loc["background", "added"] < 0.05 and abs(scores.loc["size", "added"] - 0.5) < 0.1
    assert "S(all) = " in printed and "debiased by the real images" in printed
    together = prose.joint_method(doc["joint"], pd.DataFrame(doc["joint"]["scores"]))
    assert "S_real(u) + λ (S_gen(u) − S_twin(u))" in together


def test_cli_generator_only_scores_the_features_together_from_generated_subjects(preloaded, tmp_path, capsys):
    """--generator-only: K x N generated subjects, each under one training subject's features, scored together;
    model-based, and said so."""
    out = tmp_path / "alone.json"
    argv = ["score", "--data", "shapes", "--model", "shapes-size-texture", "--features", "size,texture,background"]
    argv += ["--method", "diffusion", "--generator-only", "--k-values", "4", "--n-per-value", "10", "--n-boot", "20"]
    assert main([*argv, "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    about, joint = doc["joint"], doc["joint"]["scores"][0]
    assert about["path"] == "generator" and about["generated"] == 40 and "training subjects" in about["generated_from"]
    assert joint["status"] == "ok" and joint["score"] > 0.5  # size and texture are what the model reads
    scores = pd.DataFrame(doc["scores"]).set_index("feature")
    assert scores["shapley"].sum() == pytest.approx(joint["score"]) and scores.loc["background", "shapley"] < 0.15
    assert "the generator alone (model-based)" in capsys.readouterr().out
    together = prose.joint_method(about, pd.DataFrame(doc["joint"]["scores"]))
    assert "model-based" in together and "sampling noise only" in together
    assert main([*argv, "--no-joint", "--out", str(tmp_path / "none.json")]) == 0
    assert "joint" not in json.loads((tmp_path / "none.json").read_text())
    # too few generated subjects for the features: the status names the generator path's fix, not the data path's
    small = [*argv[: argv.index("--k-values")], "--k-values", "2", "--n-per-value", "4", "--n-boot", "20"]
    assert main([*small, "--out", str(tmp_path / "small.json")]) == 0
    joint = json.loads((tmp_path / "small.json").read_text())["joint"]["scores"][0]
    assert joint["status"] == "too_few_samples" and "draw more generated subjects (K × N, here 8)" in joint["message"]
    assert "--split all" not in capsys.readouterr().out


def writers_report(doc: dict):
    """A `ScoreReport` read back from its JSON (for the prose)."""
    meta = {k: v for k, v in doc.items() if k not in ("scores", "outputs")}
    table = pd.DataFrame(doc["scores"])
    return service.ScoreReport(table, doc["outputs"], {}, tuple(doc.get("categorical", [])), meta)
