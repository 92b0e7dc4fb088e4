"""Ray tasks (Eve's `engine.compute.cluster`) against Ray Data for the data path: which to fan a cohort out with.

Both score the same 1 mm cohort (VOLUMES copies of Colin27, as benchmarks/bench_cohort_1mm.py writes
them) with synthbrain-diagnosis on a local 2-CPU Ray cluster, every volume read from its file:

* tasks: `Cluster.model_outputs`, one task per shard of whole batches (Eve's path);
* Ray Data: the row indices as a dataset, `map_batches` with a callable class on an actor pool of 2
  (each actor loads the model and opens the dataset once, then reads and scores 64 volumes a batch),
  the canonical Ray Data batch-inference pattern.

Prints the seconds and volumes/s of each (the cluster started beforehand, once, for both), whether the
outputs equal the local run's bit for bit, and the largest difference; writes
benchmarks/results/ray-data.json.

    .venv/bin/python benchmarks/compare_ray_data.py
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # the local cluster on 127.0.0.1 only

from bench_cohort_1mm import write_cohort  # noqa: E402

from engine.cards import ModelRef  # noqa: E402
from engine.compute.cluster import Cluster  # noqa: E402
from engine.data.defaults import open_dataset  # noqa: E402
from engine.models import load  # noqa: E402
from engine.scores import service  # noqa: E402

MODEL = ModelRef.builtin("synthbrain-diagnosis")
VOLUMES = 120
WORKERS = 2
BATCH = 64


class _Score:
    """A Ray Data actor: the model and the dataset held once, one batch of row indices scored per call."""

    def __init__(self, folder: str):
        self.model, self.card = load(MODEL, "cpu")
        self.dataset = open_dataset(folder)

    def __call__(self, batch: dict) -> dict:
        rows = np.asarray(batch["row"], dtype=np.int64)
        outputs = service.model_outputs(self.model, self.dataset, self.card.spec, rows, batch_size=BATCH, shard=True)
        return {"row": rows, "output": outputs[:, 0]}


def main() -> None:
    import ray

    with tempfile.TemporaryDirectory() as tmp:
        write_cohort(Path(tmp), VOLUMES)
        rows = np.arange(VOLUMES)
        model, card = load(MODEL, "cpu")
        local = service.model_outputs(model, open_dataset(tmp), card.spec, rows, shard=True)[:, 0]
        results = {"volumes": VOLUMES, "workers": WORKERS, "ray": ray.__version__}
        with Cluster.connect(num_cpus=WORKERS) as cluster:
            start = time.perf_counter()
            tasks = cluster.model_outputs(MODEL, tmp, rows, batch_size=BATCH)[:, 0]
            results["tasks"] = {"seconds": time.perf_counter() - start}
            results["tasks"]["same_as_local"] = bool(np.array_equal(tasks, local))
            results["tasks"]["max_abs_difference"] = float(np.abs(tasks - local).max())

            start = time.perf_counter()
            data = ray.data.from_items([{"row": int(r)} for r in rows]).map_batches(
                _Score, fn_constructor_args=(tmp,), batch_size=BATCH, concurrency=WORKERS, num_cpus=1
            )
            scored = sorted(data.take_all(), key=lambda item: item["row"])
            ray_data = np.array([item["output"] for item in scored], dtype=np.float32)
            results["ray_data"] = {"seconds": time.perf_counter() - start}
            results["ray_data"]["same_as_local"] = bool(np.array_equal(ray_data, local))
            results["ray_data"]["max_abs_difference"] = float(np.abs(ray_data - local).max())
        for name in ("tasks", "ray_data"):
            entry = results[name]
            entry["volumes_per_s"] = VOLUMES / entry["seconds"]
            print(
                f"{name}: {VOLUMES} volumes in {entry['seconds']:.1f} s = {entry['volumes_per_s']:.1f} volumes/s, "
                f"equal to the local run: {entry['same_as_local']} (max |diff| {entry['max_abs_difference']:.2g})"
            )
    out = ROOT / "benchmarks" / "results" / "ray-data.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
