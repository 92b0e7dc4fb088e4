"""How many solver steps the feature explorer needs: its images at fewer DPM-Solver++(2M) steps against 20.

    .venv/bin/python benchmarks/bench_explorer_steps.py

For each embedded diffusion model, every probed numeric feature at 7 values across its training range, 8
samples a value (one seed, the explorer's sampler: `SamplerConfig.for_explorer`), at 20, 15, 12, 10 and 8
steps. Printed, and written to `benchmarks/results/explorer_steps.json`, per step count: the median time for
8 samples (one torch thread, as the app's server runs), the pixel RMS and largest per-value RMS against the
same samples at 20 steps (intensities in [0, 1]; one grey level is 1/255 = 0.0039), and the probe's mean
|measured - asked| as a share of the feature's range (how well the images carry the asked value).
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
from engine.diffusion import SamplerConfig, load_diffusion  # noqa: E402

STEPS = (20, 15, 12, 10, 8)
VALUES = 7
SAMPLES = 8
SEED = 11


def _measure(dataset: str) -> list[dict]:
    model = load_diffusion(dataset)
    features = [f for f in model.features if f in model.card.probe_features and not model.feature(f).is_categorical]
    reference = SamplerConfig.for_explorer().override(steps=20)
    rows = []
    for steps in STEPS:
        config = reference.override(steps=steps)
        times, rms, error = [], [], []
        for feature in features:
            lo, hi = model.feature_range(feature)
            for value in np.linspace(lo, hi, VALUES):
                t0 = time.perf_counter()
                images = model.sample({feature: float(value)}, SAMPLES, SEED, config)
                times.append(time.perf_counter() - t0)
                at_20 = model.sample({feature: float(value)}, SAMPLES, SEED, reference)
                rms.append(float(((images - at_20) ** 2).mean().sqrt()))
                measured = np.asarray(model.measure_features(images)[feature])
                error.append(float(np.mean(np.abs(measured - value))) / (hi - lo))
        rows.append(
            {
                "dataset": dataset,
                "steps": steps,
                "features": len(features),
                "seconds_per_8_samples": float(np.median(times)),
                "rms_vs_20_steps": float(np.mean(rms)),
                "max_rms_vs_20_steps": float(np.max(rms)),
                "probe_error_over_range": float(np.mean(error)),
            }
        )
        print(json.dumps(rows[-1]))
    return rows


def main() -> None:
    torch.set_num_threads(1)
    rows = [row for dataset in ("synthbrain", "shapes") for row in _measure(dataset)]
    out = ROOT / "benchmarks" / "results" / "explorer_steps.json"
    out.write_text(json.dumps({"machine": describe(), "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
