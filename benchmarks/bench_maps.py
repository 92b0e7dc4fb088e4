"""Maps per second of every attribution method on this CPU, for the zoo's CNN and its ViT, and the
time of the full map-quality table for 1 and for 100 images.

Maps: each method that applies to the model (`baselines.available_methods`), on 16 SynthBrain
test slices in one batched call (the region methods run image by image inside: LIME and KernelSHAP
fit one image at a time), the best of 2 timed runs after a warm-up; the sampling methods (Shapley,
LIME, KernelSHAP) on 4 images, once. Quality: `quality.quality_table` (deletion, insertion,
ROAD both orders, completeness, sparseness, complexity) of the CNN's fast methods' maps, on 1 and
on 100 test slices, maps computed beforehand and not timed.

    .venv/bin/python benchmarks/bench_maps.py          # writes benchmarks/results/maps.json
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.machine import describe  # noqa: E402
from engine.cards import ModelRef  # noqa: E402
from engine.data.defaults import open_dataset  # noqa: E402
from engine.models import load  # noqa: E402
from engine.pixelmaps import quality  # noqa: E402
from engine.pixelmaps.methods import METHODS, attribution_map, available_methods  # noqa: E402
from engine.scores.service import split_rows  # noqa: E402

MODELS = ("synthbrain-diagnosis", "synthbrain-diagnosis-vit")
N_FAST, N_SLOW, QUALITY_SIZES = 16, 4, (1, 100)


def _rate(model, images, method: str, repeats: int) -> float:
    attribution_map(model, images[:1], method)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        attribution_map(model, images, method)
        best = min(best, time.perf_counter() - start)
    return len(images) / best


def main() -> None:
    dataset = open_dataset("synthbrain")
    rows = split_rows(dataset, "test")
    results: dict = {"machine": describe(), "maps_per_second": {}, "quality_table_seconds": {}}
    for name in MODELS:
        model, card = load(ModelRef.builtin(name), "cpu")
        images = dataset.model_inputs(card.spec, rows[:N_FAST])
        results["maps_per_second"][name] = {}
        for method in available_methods(model):
            slow = METHODS[method].slow
            per_second = _rate(model, images[:N_SLOW] if slow else images, method, 1 if slow else 2)
            results["maps_per_second"][name][method] = round(per_second, 2)
            print(f"{name:<26}{method:<22}{per_second:>10.1f} maps/s", flush=True)
    model, card = load(ModelRef.builtin(MODELS[0]), "cpu")
    methods = available_methods(model, slow=False)
    for n in QUALITY_SIZES:
        images = dataset.model_inputs(card.spec, rows[:n])
        maps = {m: attribution_map(model, images, m) for m in methods}
        start = time.perf_counter()
        table = quality.quality_table(model, images, maps, 0)
        seconds = time.perf_counter() - start
        results["quality_table_seconds"][f"{n} image(s), {len(methods)} methods"] = round(seconds, 2)
        print(f"quality table, {n} image(s) x {len(methods)} methods: {seconds:.1f} s ({len(table)} rows)", flush=True)
    out = ROOT / "benchmarks" / "results" / "maps.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
