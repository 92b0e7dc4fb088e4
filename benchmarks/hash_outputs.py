"""Fingerprints of what every committed model computes: scores, samples, maps.

    .venv/bin/python benchmarks/hash_outputs.py > after.json
    git worktree add /tmp/eve-base <old commit> && (cd /tmp/eve-base && \
        EVE_DATA_DIR=$PWD/data /work/main/.venv/bin/python benchmarks/hash_outputs.py) > before.json
    diff before.json after.json

A refactor that "changes structure, not numbers" leaves every line identical. It calls only
entry points that a refactor keeps: the `score` command's JSON, `load_model`, `load_diffusion`
and its `sample`, `diffusion_score`, `attribution_map` (and reads a card as a dict or a
`ModelCard`, so it runs on commits from before and after the typed cards).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path.cwd()))

from engine.__main__ import main as cli  # noqa: E402
from engine.data.defaults import load_default  # noqa: E402
from engine.diffusion import load_diffusion  # noqa: E402
from engine.models import list_cards, load_model  # noqa: E402

try:  # the layout after the second architecture pass
    from engine.pixelmaps.methods import METHODS, attribution_map
    from engine.scores.generator import diffusion_score
except ImportError:  # before it
    from engine.baselines import METHODS, attribution_map

    from engine.diffusion import diffusion_score


def digest(array) -> str:
    array = np.ascontiguousarray(np.asarray(array, dtype=np.float64))
    return hashlib.sha256(array.tobytes()).hexdigest()[:16]


def field(card, name):
    return card[name] if isinstance(card, dict) else getattr(card, name)


def card_spec(card):
    from engine.data import SliceSpec

    spec = field(card, "spec")
    return spec if isinstance(spec, SliceSpec) else SliceSpec(spec["plane"], spec["index"], int(spec["size"]))


def cli_scores(data: str, model: str, extra: list[str]) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.json"
        with contextlib.redirect_stdout(sys.stderr):  # the command's summary: stdout holds only the JSON
            assert cli(["score", "--data", data, "--model", model, "--out", str(out), *extra]) == 0
        scores = json.loads(out.read_text())["scores"]
    return digest([[s["score"], s["ci_low"], s["ci_high"]] for s in scores])


def cli_help() -> str:
    """The score command's --help text (to call it as each commit's CLI takes it)."""
    with contextlib.redirect_stdout(io.StringIO()) as text, contextlib.suppress(SystemExit):
        cli(["score", "--help"])
    return text.getvalue()


def main() -> None:
    torch.set_num_threads(1)
    result = {}
    datasets = {}
    for card in list_cards():
        name, data = field(card, "name"), field(card, "dataset")
        result[f"score data {name}"] = cli_scores(data, name, ["--n-boot", "50"])
        ds = datasets.setdefault(data, load_default(data))
        model, card = load_model(name, "cpu")
        images = ds.model_inputs(card_spec(card), np.arange(3))
        for method, info in METHODS.items():
            if info.hooks and not isinstance(model, torch.nn.Module):
                continue
            try:
                amap = attribution_map(model, images, method, target=0)
            except Exception as exc:  # a method that does not apply to a glass-box model
                result[f"map {name} {method}"] = f"error {type(exc).__name__}"
                continue
            result[f"map {name} {method}"] = digest(amap.detach())
    for data, model_name, feature in (
        ("synthbrain", "synthbrain-diagnosis", "ventricle_volume"),
        ("shapes", "shapes-size-texture", "size"),
    ):
        dm = load_diffusion(data)
        lo, hi = dm.feature_range(feature)
        value = (lo + hi) / 2
        result[f"samples {data} default"] = digest(dm.sample({feature: value}, 8, seed=0))
        result[f"samples {data} table+guided"] = digest(
            dm.sample({feature: value}, 8, seed=0, free_features="table", readout_guidance=100.0)
        )
        model, card = load_model(model_name, "cpu")
        r, table = diffusion_score(model, card, dm, feature, k_values=3, n_per_value=4, n_boot=20)
        result[f"diffusion score {data}"] = digest([r.score, r.ci_low, r.ci_high, *table["mean"]])
        generator_only = ["--generator-only"] if "--generator-only" in cli_help() else []  # the default became debiased
        result[f"score diffusion-cli {data}"] = cli_scores(
            data,
            model_name,
            ["--method", "diffusion", *generator_only, "--features", feature, "--k-values", "2", "--n-per-value", "4"]
            + ["--n-boot", "20"],
        )
    json.dump(result, sys.stdout, indent=1, sort_keys=True)
    print()


if __name__ == "__main__":
    main()
