"""XtrAIn on the zoo's MLPs: how clean each method's maps are on shapes, and what tracking costs in training.

Cleanness (the paper's idea): the share of a map's |attribution| that falls on the object, for XtrAIn,
XtrAIn+, Xstep and every fast captum method, on the 8 test images `shapes-elongated-mlp` tracked while it
trained, explaining its logit. The object is what `engine.pixelmaps.report.truth_mask` calls it for shapes' area
read-out: the pixels brighter than halfway between the image's background (its border's mean) and white.
The share is `engine.pixelmaps.quality.relevance_mass` of |map|; the object's share of the pixels is the chance
level.

Overhead: each MLP recipe trained twice in this run, deterministic by seed — plain, and with XtrAIn
tracked on its 8 test images every step (`engine.models.xtrain.Tracker`) — on one thread; the ratio of the wall
times, and the tracked run's metrics equal the plain run's (the swaps never change the trajectory).

    .venv/bin/python benchmarks/bench_xtrain.py         # writes benchmarks/results/xtrain.json (~3 min)
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.machine import describe  # noqa: E402
from engine.data.defaults import load_default  # noqa: E402
from engine.models import load_model, xtrain, zoo  # noqa: E402
from engine.models.train import RECIPES, TARGETS, evaluate, fit  # noqa: E402
from engine.models.zoo import build_model  # noqa: E402
from engine.pixelmaps.methods import TRAINING_METHODS, attribution_map, available_methods  # noqa: E402
from engine.pixelmaps.quality import relevance_mass  # noqa: E402
from engine.pixelmaps.report import truth_mask  # noqa: E402

SHAPES_MLP = "shapes-elongated-mlp"
AREA = "shapes-glass-area"  # whose truth mask is the object


def cleanness() -> dict:
    """Share of |attribution| on the object per method, mean and range over the tracked images."""
    model, card = load_model(SHAPES_MLP, "cpu")
    stored = zoo.stored_attributions(SHAPES_MLP)
    images = stored.images
    area, area_card = load_model(AREA, "cpu")
    mask = torch.from_numpy(truth_mask(area, area_card.spec, images))  # (N, 1, S, S) bool
    methods = [*TRAINING_METHODS, *available_methods(model, slow=False)]
    shares = {}
    for method in methods:
        share = relevance_mass(attribution_map(model, images, method).abs(), mask)
        shares[method] = {"mean": round(float(share.mean()), 3), "min": round(float(share.min()), 3)}
    return {
        "model": SHAPES_MLP,
        "images": list(stored.subjects),
        "explained": card.output_names[0],
        "object": f"engine.pixelmaps.report.truth_mask of {AREA}: pixels above halfway between background and white",
        "object_pixel_fraction": round(float(mask.float().mean()), 3),
        "share_of_abs_attribution_on_object": dict(sorted(shares.items(), key=lambda kv: -kv[1]["mean"])),
    }


def overhead(name: str) -> dict:
    """Wall time of a recipe's training, plain and with XtrAIn tracking, in this run."""
    recipe = RECIPES[name]
    dataset = load_default(recipe.dataset)
    rows = dataset.split_indices("train")
    images = dataset.model_inputs(recipe.spec, rows)
    y = TARGETS[recipe.target].values(dataset.table.iloc[rows].reset_index(drop=True), dataset.truth)
    tracked = dataset.model_inputs(recipe.spec, dataset.split_indices("test")[: recipe.track])
    card = load_model(name, "cpu")[1]
    times, metrics = {}, {}
    for mode in ("plain", "tracked"):
        tracker = None
        if mode == "tracked":
            architecture = build_model({"class": recipe.architecture, "kwargs": recipe.kwargs}, name)
            tracker = xtrain.Tracker(architecture, tracked, probability=recipe.task == "binary")
        start = time.perf_counter()
        model = fit(recipe, images, y, progress=False, on_step=tracker.step if tracker else None)
        times[mode] = time.perf_counter() - start
        metrics[mode] = {k: round(v, 4) for k, v in evaluate(model, card, dataset).items() if k != "n"}
    return {
        "steps": tracker.steps,
        "tracked_images": len(tracked),
        "plain_s": round(times["plain"], 1),
        "tracked_s": round(times["tracked"], 1),
        "tracker_s": round(tracker.seconds, 1),
        "overhead_ratio": round(times["tracked"] / times["plain"], 1),
        "tracker_ms_per_step": round(1000 * tracker.seconds / tracker.steps, 1),
        "held_out": metrics["tracked"],
        "same_metrics_as_plain": metrics["tracked"] == metrics["plain"],
    }


def main() -> None:
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    results = {"machine": describe(), "cleanness": cleanness(), "tracking_overhead": {}}
    for name in (SHAPES_MLP, "synthbrain-diagnosis-mlp"):
        results["tracking_overhead"][name] = overhead(name)
    out = ROOT / "benchmarks" / "results" / "xtrain.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
