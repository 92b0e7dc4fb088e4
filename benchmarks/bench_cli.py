"""Where a `python -m engine score` run spends its time, on 1,000 images.

Runs the CLI's steps in-process on the embedded `shapes` set (the 1,000-image test split,
topped up with train rows if a set has fewer) and times each: loading the dataset
(`features.csv` and every NIfTI header), the model's slices (Eve's disk cache, and a
cold re-slice of the same volumes for comparison), the model's forward pass (timed inside
`forward`), the rest of the batching loop, the scores (5 features, 200 bootstrap draws),
and writing JSON + CSV and the HTML report. It prints the forward pass's share of the run
and the share spent outside it.

The model is the zoo's `shapes-size-texture` CNN (or `synthbrain-diagnosis` on synthbrain).

Run: .venv/bin/python benchmarks/bench_cli.py [--data shapes] [--n 1000] [--model NAME]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from engine.cards import ModelCard  # noqa: E402
from engine.data import SliceSpec, load_dataset  # noqa: E402
from engine.data.dataset import resolve_features
from engine.data.defaults import build_default  # noqa: E402
from engine.data.slicing import model_input  # noqa: E402
from engine.models import load_model  # noqa: E402
from engine.reports import html as report  # noqa: E402
from engine.scores import service  # noqa: E402

FEATURES = {"shapes": "size,aspect,intensity,texture,background", "synthbrain": None}


class TimedForward(nn.Module):
    """Wraps a model and adds up the wall time spent inside its forward calls."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model, self.seconds = model, 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        start = time.perf_counter()
        out = self.model(x)
        self.seconds += time.perf_counter() - start
        return out


def pick_model(name: str | None, data: str) -> tuple[nn.Module, ModelCard, SliceSpec, str]:
    """(model, card, spec, description) of a zoo model."""
    wanted = name or {"shapes": "shapes-size-texture", "synthbrain": "synthbrain-diagnosis"}[data]
    model, card = load_model(wanted)
    return model, card, card.spec, f"zoo model {wanted}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="shapes", choices=("shapes", "synthbrain"))
    parser.add_argument("--n", type=int, default=1000, help="images to score")
    parser.add_argument("--model", default=None, help="a zoo model name (default: see the module docstring)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--n-boot", type=int, default=200)
    parser.add_argument("--no-cli", action="store_true", help="skip the timed `python -m engine score` process")
    args = parser.parse_args()
    times: dict[str, float] = {}

    def timed(label: str, fn, *a, **kw):
        start = time.perf_counter()
        value = fn(*a, **kw)
        times[label] = time.perf_counter() - start
        return value

    folder = build_default(args.data)  # built once, not timed
    model, card, spec, what = pick_model(args.model, args.data)
    dataset = timed("load dataset (CSV + headers)", load_dataset, folder)
    test, train = dataset.split_indices("test"), dataset.split_indices("train")
    rows = np.concatenate([test, train])[: args.n] if len(test) < args.n else test[: args.n]
    features = resolve_features(dataset, FEATURES[args.data])
    dataset.model_inputs(spec)  # make sure Eve's slice cache exists (a first run pays the cold time below)
    dataset._stacks.clear()  # drop the in-memory copy: a new CLI process starts from the disk cache
    timed("slices (Eve's disk cache)", dataset.model_inputs, spec, rows)
    timed_model = TimedForward(model)
    y = timed("model_outputs", service.model_outputs, timed_model, dataset, spec, rows, batch_size=args.batch_size)
    forward = timed_model.seconds
    times["  of which the forward pass"] = forward
    names = list(card.output_names)
    table = timed("scores", service.score_outputs, y, dataset, features, rows, names, n_boot=args.n_boot, seed=0)
    rep = service.ScoreReport(
        table,
        names,
        {f: dataset.feature_values(f)[rows] for f in features},
        (),
        service._metadata(dataset, card, method="data", split="test", n=len(rows)),
        outputs=y,
    )
    with tempfile.TemporaryDirectory() as tmp:
        timed(
            "write JSON + CSV", lambda: (report.write_json(rep, f"{tmp}/r.json"), report.write_csv(rep, f"{tmp}/r.csv"))
        )
        timed("write HTML report", report.write_html, rep, f"{tmp}/r.html")
    # for comparison: a first-ever run re-slices every volume (not counted in the run below)
    start = time.perf_counter()
    for row in rows:
        model_input(*dataset.volume(int(row)), spec)
    cold = time.perf_counter() - start

    cli = None
    if not args.no_cli and args.n == 1000 and args.data == "shapes":  # the real command: test split = 1,000 rows
        with tempfile.TemporaryDirectory() as tmp:
            path = f"{tmp}/model.pt"
            torch.jit.save(torch.jit.trace(model, dataset.model_inputs(spec, rows[:2])), path)
            command = [
                sys.executable,
                "-m",
                "engine",
                "score",
                "--data",
                str(folder),
                "--model",
                path,
                "--features",
                FEATURES[args.data],
                "--out",
                f"{tmp}/r.json",
                "--n-boot",
                str(args.n_boot),
            ]
            start = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True, cwd=Path(__file__).resolve().parents[1])
            cli = time.perf_counter() - start

    run = sum(v for k, v in times.items() if not k.startswith("  "))
    json_run = run - times["write HTML report"]
    print(
        f"{args.data}: {len(rows):,} images at {spec.size}x{spec.size}, {len(features)} features, "
        f"{args.n_boot} bootstrap draws; model: {what}; torch threads: {torch.get_num_threads()}"
    )
    for label, seconds in times.items():
        print(f"  {label:<32} {seconds:7.3f} s  {seconds / run:6.1%}")
    print(f"  {'total (--format html)':<32} {run:7.3f} s")
    print(
        f"forward pass: {forward:.3f} s = {forward / run:.1%} of the run; outside it: {run - forward:.3f} s "
        f"= {1 - forward / run:.1%}"
    )
    print(f"with --format json (no HTML): forward {forward / json_run:.1%}, outside {1 - forward / json_run:.1%}")
    no_load = json_run - times["load dataset (CSV + headers)"]
    print(
        f"dataset already loaded (a notebook or the app): forward {forward / no_load:.1%}, "
        f"outside {1 - forward / no_load:.1%}"
    )
    if cli is not None:
        print(
            f"the real command (`python -m engine score ... --out r.json`, a TorchScript export of the model, "
            f"{len(rows):,} test images): {cli:.2f} s wall, of which the forward pass ~{forward:.2f} s "
            f"= {forward / cli:.1%}; the rest is Python + torch imports and the steps above"
        )
    print(
        f"estimator alone: {times['scores']:.3f} s; cold slicing of the same {len(rows):,} volumes "
        f"(first run, no cache): {cold:.3f} s"
    )


if __name__ == "__main__":
    main()
