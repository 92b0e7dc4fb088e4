"""Throughput of `score --ray` against the local run on this machine, and what it means for big cohorts.

Data path: the model's outputs (synthbrain-diagnosis) on a 1 mm cohort (VOLUMES copies of Colin27,
181 x 217 x 181 uint8 gzip, as benchmarks/bench_cohort_1mm.py writes them), every volume read from its
file (no cached inputs), so the time is reading, slicing and the forward pass: locally
(`service.model_outputs`, torch on every core) and on a local Ray cluster of 1 and 2 workers
(`engine.compute.cluster.Cluster.model_outputs`, each task reading only its shard's files); then the same
cohort as an object-store folder (`s3://`, moto's S3 server on 127.0.0.1, through pyarrow's S3
client), from a cold mirror, locally and on 2 workers (each fetching its shard's objects). Diffusion
path: the samples of four diffusion scores (shapes-elongated: size, aspect, texture and intensity at
the CLI's K = 8 x N = 32) locally and on 1 and 2 workers (one task per feature value).
Starting the cluster is timed apart from the work.

Each configuration checks it got the local run's numbers (bit-identical), prints volumes/s and
samples/s, and the scaling table extrapolates the measured per-volume cost to OASIS-3 (~2,800 MR
sessions) and UK Biobank imaging (~40,000 subjects) on one 16-core node and on ten, taking each
core at this machine's per-worker rate and the 2-worker efficiency measured here (on paper: not run).

    .venv/bin/python benchmarks/bench_ray.py            # writes benchmarks/results/ray.json
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # the local cluster on 127.0.0.1 only

from benchmarks.machine import describe  # noqa: E402
from engine.cards import ModelRef  # noqa: E402
from engine.compute.cluster import Cluster  # noqa: E402
from engine.data.defaults import open_dataset  # noqa: E402
from engine.data.remote import CACHE_ENV  # noqa: E402
from engine.diffusion import load_diffusion  # noqa: E402
from engine.models import load  # noqa: E402
from engine.scores import service  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_cohort_1mm import write_cohort  # noqa: E402  (copies of Colin27 at 1 mm, as that benchmark scores)

sys.path.insert(0, str(ROOT / "tests"))
from object_store import local_s3, upload  # noqa: E402  (moto's S3 server on 127.0.0.1, as the tests use)

MODEL = ModelRef.builtin("synthbrain-diagnosis")
VOLUMES = 120
DIFFUSION_MODEL = ModelRef.builtin("shapes-elongated")
DIFFUSION = dict(k_values=8, n_per_value=32, n_boot=0, seed=0)  # the CLI's default K x N
FEATURES = ["size", "aspect", "texture", "intensity"]
COHORTS = {"OASIS-3 (~2,800 MR sessions)": 2_800, "UK Biobank imaging (~40,000 subjects)": 40_000}


def _data_path(folder: str, workers: int | None) -> tuple[float, float, np.ndarray]:
    """(seconds starting the cluster, seconds scoring, outputs); every volume read from its file (an
    object store's from a fresh, empty mirror: opening it, which reads every header, is timed too)."""
    os.environ[CACHE_ENV] = tempfile.mkdtemp(prefix="eve-bench-mirror-")  # before the workers start
    if workers is None:
        start = time.perf_counter()
        model, card = load(MODEL, "cpu")
        dataset = open_dataset(folder)
        outputs = service.model_outputs(model, dataset, card.spec, np.arange(len(dataset)), shard=True)
        return 0.0, time.perf_counter() - start, outputs
    start = time.perf_counter()
    with Cluster.connect(num_cpus=workers) as cluster:
        started = time.perf_counter()
        dataset = open_dataset(folder)
        outputs = cluster.model_outputs(MODEL, dataset, np.arange(len(dataset)))
        return started - start, time.perf_counter() - started, outputs


def _diffusion_path(workers: int | None):
    model, card = load(DIFFUSION_MODEL, "cpu")
    dataset = open_dataset("shapes")
    if workers is None:
        start = time.perf_counter()
        generator = load_diffusion("shapes")
        report = service.diffusion_scores(model, card, dataset, FEATURES, diffusion=generator, **DIFFUSION)
        return 0.0, time.perf_counter() - start, report.table
    start = time.perf_counter()
    with Cluster.connect(num_cpus=workers) as cluster:
        started = time.perf_counter()
        report = cluster.diffusion_scores(DIFFUSION_MODEL, "shapes", FEATURES, **DIFFUSION)
        return started - start, time.perf_counter() - started, report.table


def main() -> None:
    results: dict = {
        "machine": describe(python=platform.python_version(), ray=__import__("ray").__version__),
        "data_path": {},
        "diffusion_path": {},
    }
    samples = len(FEATURES) * DIFFUSION["k_values"] * DIFFUSION["n_per_value"]
    configs = (("local", None), ("ray, 1 worker", 1), ("ray, 2 workers", 2))
    stored = (("s3 (moto on 127.0.0.1), local", None), ("s3 (moto on 127.0.0.1), ray, 2 workers", 2))
    with tempfile.TemporaryDirectory() as tmp, local_s3() as endpoint:
        write_cohort(Path(tmp), VOLUMES)
        address = upload(endpoint, Path(tmp), "colin27-1mm")
        reference = None
        for label, workers, folder in [*((*c, tmp) for c in configs), *((*c, address) for c in stored)]:
            startup, seconds, outputs = _data_path(folder, workers)
            reference = outputs if reference is None else reference
            same = bool(np.array_equal(outputs, reference))
            results["data_path"][label] = {"volumes": VOLUMES, "startup_s": round(startup, 2)}
            results["data_path"][label].update(seconds=round(seconds, 2), volumes_per_s=VOLUMES / seconds)
            results["data_path"][label]["same_outputs_as_local"] = same
            print(
                f"data path, {label}: {VOLUMES} volumes in {seconds:.1f} s = {VOLUMES / seconds:.1f} volumes/s "
                f"(+ {startup:.1f} s starting the cluster), same outputs as local: {same}"
            )
    reference = None
    for label, workers in configs:
        startup, seconds, table = _diffusion_path(workers)
        reference = table if reference is None else reference
        same = bool(table.equals(reference))
        results["diffusion_path"][label] = {"samples": samples, "startup_s": round(startup, 2)}
        results["diffusion_path"][label].update(seconds=round(seconds, 2), samples_per_s=samples / seconds)
        results["diffusion_path"][label]["same_scores_as_local"] = same
        print(
            f"diffusion path, {label}: {samples} samples in {seconds:.1f} s = {samples / seconds:.1f}/s "
            f"(+ {startup:.1f} s starting the cluster), same scores as local: {same}"
        )

    one = results["data_path"]["ray, 1 worker"]["volumes_per_s"]
    two = results["data_path"]["ray, 2 workers"]["volumes_per_s"]
    efficiency = min(1.0, two / (2 * one))
    per_core = one  # volumes/s one worker sustains on this machine
    table = {}
    for cohort, n in COHORTS.items():
        for nodes in (1, 10):
            cores = 16 * nodes
            hours = n / (per_core * cores * efficiency) / 3600
            table[f"{cohort}, {nodes} x 16 cores"] = round(hours, 3)
            print(f"on paper: {cohort} on {nodes} node(s) of 16 cores: {hours * 60:.1f} min (data path)")
    results["scaling_on_paper"] = {
        "assumes": f"{per_core:.2f} volumes/s a worker (measured, 1 worker) x cores x {efficiency:.2f} "
        "(the 2-worker efficiency measured here); reading and the forward pass only, 1 mm volumes",
        "hours": table,
    }
    out = ROOT / "benchmarks" / "results" / "ray.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
