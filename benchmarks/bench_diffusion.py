"""Benchmark of the committed diffusion model (`python benchmarks/bench_diffusion.py`).

Prints, in one run:
1. wall time for 8 samples at 64x64 (budget: under 2 s on the 2-core CPU), 1 thread;
2. images per second of DPM-Solver++(2M) at 20 steps vs diffusers' default 1000-step
   DDPM (ancestral) on the same denoiser, and the ratio;
3. constraint error (probe MAE / feature SD) vs the number of sampler steps.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from engine.diffusion import READOUT_GUIDANCE, SamplerConfig, load_diffusion
from engine.diffusion.storage import ASSETS
from engine.scores.generator import constraint_errors


def _timed(fn, repeats: int = 3) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", default="synthbrain")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--features", default=None, help="comma-separated probed features (default: all of them)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_diffusion(args.dataset)
    cond = {model.numeric_features[0]: model.feature(model.numeric_features[0]).mean}
    plain, guided = SamplerConfig(), SamplerConfig(readout_guidance=READOUT_GUIDANCE)
    results = {"threads": args.threads}

    # 1. the budget: 8 samples, default sampler
    results["seconds_8_samples_dpm20"] = _timed(lambda: model.sample(cond, 8, 0, plain))
    print(
        f"8 samples at {model.spec.size}x{model.spec.size}, DPM-Solver++ 20 steps: "
        f"{results['seconds_8_samples_dpm20']:.3f} s (budget 2 s)"
    )
    if model.readout is not None:
        results["seconds_8_samples_dpm20_readout_guided"] = _timed(lambda: model.sample(cond, 8, 0, guided))
        print(f"  with read-out guidance: {results['seconds_8_samples_dpm20_readout_guided']:.3f} s")

    # 2. throughput: DPM-Solver++ 20 steps vs DDPM 1000 steps on the same denoiser
    n = 32
    dpm = _timed(lambda: model.sample(cond, n, 0, plain))
    ddpm = _timed(lambda: model.sample(cond, n, 0, SamplerConfig(steps=1000, sampler="ddpm")), repeats=1)
    results |= {"images_per_s_dpm20": n / dpm, "images_per_s_ddpm1000": n / ddpm, "speedup": ddpm / dpm}
    print(f"images/s: DPM-Solver++(20) {n / dpm:.1f}, DDPM(1000) {n / ddpm:.2f}, ratio {ddpm / dpm:.0f}x")

    # 3. constraint error vs steps
    probed = model.card.probe_features
    names = probed if args.features is None else [f for f in args.features.split(",") if f in probed]
    rows = []
    configs = [
        ("dpm++", 5, 0.0),
        ("dpm++", 10, 0.0),
        ("dpm++", 20, 0.0),
        ("dpm++", 25, 0.0),
        ("ddim", 20, 0.0),
        ("ddim", 50, 0.0),
        ("ddpm", 1000, 0.0),
    ]
    if model.readout is not None:
        configs += [("dpm++", 10, READOUT_GUIDANCE), ("dpm++", 20, READOUT_GUIDANCE)]
    for sampler, steps, guide in configs:
        config = SamplerConfig(steps=steps, sampler=sampler, readout_guidance=guide)
        table = constraint_errors(model, k_values=4, n_per_value=16, sampler=config, features=names)
        row = {
            "sampler": sampler,
            "steps": steps,
            "readout_guidance": guide,
            **dict(zip(table["feature"], table["mae_over_sd"], strict=True)),
        }
        rows.append(row)
        label = f"{sampler:>6} {steps:>5} steps" + (f", read-out guidance {guide:g}" if guide else "")
        print(f"{label}: " + ", ".join(f"{k} {row[k]:.3f}" for k in names))
    results["constraint_mae_over_sd_vs_steps"] = rows
    (ASSETS / f"{args.dataset}-benchmark.json").write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
