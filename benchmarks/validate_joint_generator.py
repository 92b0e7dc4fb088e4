"""The features together on the generator path (`python benchmarks/validate_joint_generator.py`), issue 36.

Two parts, one results file (`benchmarks/results/joint-generator.json`):

1. Coverage against closed forms. X ~ N(0, Sigma) with three correlated features (tests/test_joint.py's Sigma:
   corr(X1, X2) = 0.8), real outputs Y = X1 + 0.5 X3 + noise (X2 never read). The generator's world is a
   linear model too, with coefficients beta_g: "right" (beta_g = beta), "biased" (0.6, 0.4, 0.5: part of X1's
   effect moved onto X2, the error the debiasing has to take out). Each replicate draws N real subjects, their
   twins (the generator's output under the subject's own features) and M = 512 generated subjects, and scores
   the 10 numbers (joint, and per feature first-order, added and Shapley) three ways: debiased
   (`engine.scores.debias.debiased_effects`), from data alone (`engine.scores.joint.shapley_effects` on the N
   real subjects) and the generator alone (model-based). Per cell: coverage of the 95% intervals (mean over the
   10 numbers and the lowest), mean |bias| and RMSE, mean width, and the debiased path's RMSE and width as
   ratios to the data path's.
2. SynthBrain with the committed generator: the features ventricle_volume, age and hippocampal_volume scored
   together on the 120 test images by the generator path (debiased, the CLI's defaults: 256 generated
   subjects, 200 bootstrap draws) for the glass box that reads the ventricles only and for synthbrain-diagnosis,
   beside the data path on the same 120 images and on all 400 (the reference with the most images).

About 6 minutes on 2 cores with the defaults; `--quick` for a smoke run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from anywhere without installing
sys.path.insert(0, str(ROOT / "tests"))

from test_joint import SIGMA3, effects_truth, linear_truth  # noqa: E402

from benchmarks.machine import describe  # noqa: E402
from engine.scores.debias import debiased_effects  # noqa: E402
from engine.scores.joint import shapley_effects  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "joint-generator.json"
BETA = np.array([1.0, 0.0, 0.5])
GENERATORS = {"right": BETA, "biased": np.array([0.6, 0.4, 0.5])}
KINDS = ("joint", "first-order", "added", "Shapley")
SYNTHBRAIN_FEATURES = ["ventricle_volume", "age", "hippocampal_volume"]


def numbers(r) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    e = r.effects
    est = np.r_[r.joint.score, [x.score for x in e], [x.added for x in e], [x.shapley for x in e]]
    low = np.r_[r.joint.ci_low, [x.ci_low for x in e], [x.added_ci_low for x in e], [x.shapley_ci_low for x in e]]
    high = np.r_[r.joint.ci_high, [x.ci_high for x in e], [x.added_ci_high for x in e], [x.shapley_ci_high for x in e]]
    return est, low, high


def replicate(seed: int, n: int, m: int, beta_g: np.ndarray, noise: float):
    rng = np.random.default_rng(seed)
    chol = np.linalg.cholesky(SIGMA3).T
    x, x_gen = rng.normal(size=(n, 3)) @ chol, rng.normal(size=(m, 3)) @ chol
    y = x @ BETA + noise * rng.normal(size=n)
    twin = x @ beta_g + noise * rng.normal(size=n)
    gen = x_gen @ beta_g + noise * rng.normal(size=m)
    names = ("a1", "a2", "a3")
    return y, twin, dict(zip(names, x.T, strict=True)), gen, dict(zip(names, x_gen.T, strict=True))


def coverage_cell(n: int, generator: str, noise: float, reps: int, m: int, n_boot: int) -> list[dict]:
    truth = np.concatenate([np.atleast_1d(t) for t in effects_truth(linear_truth(BETA, SIGMA3, noise**2), 3)])
    runs = {"debiased": [], "data": [], "generator alone": []}
    lams, start = [], time.perf_counter()
    for rep in range(reps):
        y, twin, features, gen, gen_features = replicate(10_000 + rep, n, m, GENERATORS[generator], noise)
        found = debiased_effects(y, twin, features, gen, gen_features, n_boot=n_boot, seed=rep)
        lams.append(found.lam[0])
        runs["debiased"].append(numbers(found.results[0]))
        runs["generator alone"].append(numbers(found.generator[0]))
        runs["data"].append(numbers(shapley_effects(y, features, n_boot=n_boot, seed=rep)))
    seconds = (time.perf_counter() - start) / reps
    rows = []
    for path, found in runs.items():
        est, low, high = (np.array([r[k] for r in found]) for k in range(3))
        hit = (low <= truth + 1e-9) & (truth - 1e-9 <= high)
        rows.append(
            {
                "n": n,
                "generator": generator,
                "noise_sd": noise,
                "path": path,
                "reps": reps,
                "coverage": round(float(hit.mean()), 3),
                "coverage_lowest": round(float(hit.mean(0).min()), 3),
                "coverage_by_kind": {
                    kind: round(float(hit[:, part].mean()), 3)
                    for kind, part in zip(KINDS, (slice(0, 1), slice(1, 4), slice(4, 7), slice(7, 10)), strict=True)
                },
                "mean_abs_bias": round(float(np.abs((est - truth).mean(0)).mean()), 4),
                "rmse": round(float(np.sqrt(((est - truth) ** 2).mean())), 4),
                "width": round(float(np.nanmean(high - low)), 4),
                "lambda_mean": round(float(np.mean(lams)), 3) if path == "debiased" else None,
                "seconds_per_replicate": round(seconds, 3),
            }
        )
    data = next(r for r in rows if r["path"] == "data")
    for r in rows:
        r["rmse_over_data"] = round(r["rmse"] / data["rmse"], 3)
        r["width_over_data"] = round(r["width"] / data["width"], 3)
    return rows


def synthbrain_rows(n_boot: int) -> list[dict]:
    from engine.data.defaults import open_dataset
    from engine.models.zoo import load_model
    from engine.scores import service

    dataset = open_dataset("synthbrain")
    rows = []
    for name in ("synthbrain-glass-ventricles", "synthbrain-diagnosis"):
        model, card = load_model(name, "cpu")
        start = time.perf_counter()
        debiased = service.debiased_scores(
            model, card, dataset, SYNTHBRAIN_FEATURES, split="test", n_boot=n_boot, output=0, joint=True
        )
        seconds = time.perf_counter() - start
        reports = {"debiased, 120 test images": debiased}
        for split, label in (("test", "data, 120 test images"), ("all", "data, all 400 images")):
            reports[label] = service.with_joint(
                service.data_scores(model, card, dataset, SYNTHBRAIN_FEATURES, split=split, n_boot=n_boot, output=0)
            )
        for label, report in reports.items():
            joint = report.joint.iloc[0]
            row = {
                "model": name,
                "path": label,
                "joint": [round(float(joint[k]), 3) for k in ("score", "ci_low", "ci_high")],
                "lambda": round(float(joint["lam"]), 3) if "lam" in joint else None,
                "seconds": round(seconds, 1) if label.startswith("debiased") else None,
            }
            for r in report.table.itertuples():
                row[r.feature] = {
                    kind: [round(float(getattr(r, col)), 3) for col in columns]
                    for kind, columns in (
                        ("own", ("score", "ci_low", "ci_high")),
                        ("added", ("added", "added_ci_low", "added_ci_high")),
                        ("Shapley", ("shapley", "shapley_ci_low", "shapley_ci_high")),
                    )
                }
                if hasattr(r, "generator_added"):
                    row[r.feature]["generator alone"] = {
                        "added": round(float(r.generator_added), 3),
                        "Shapley": round(float(r.generator_shapley), 3),
                    }
            rows.append(row)
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=100)
    parser.add_argument("--n-boot", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="10 replicates, 50 draws, N = 200 only")
    args = parser.parse_args(argv)
    reps, n_boot, sizes = (10, 50, (200,)) if args.quick else (args.reps, args.n_boot, (100, 200, 500))
    cells = []
    for n in sizes:
        for generator in GENERATORS:
            for noise in (0.4, 1.0):
                for row in coverage_cell(n, generator, noise, reps, 512, n_boot):
                    cells.append(row)
                    print(
                        f"N={n:4d} {generator:6s} noise {noise:.1f} {row['path']:16s} coverage {row['coverage']:.3f} "
                        f"(lowest {row['coverage_lowest']:.2f})  RMSE {row['rmse']:.4f} ({row['rmse_over_data']:.2f}x "
                        f"data)  width {row['width']:.3f} ({row['width_over_data']:.2f}x)  |bias| "
                        f"{row['mean_abs_bias']:.4f}",
                        flush=True,
                    )
    brain = synthbrain_rows(n_boot)
    for row in brain:
        print(json.dumps(row))
    doc = {
        "about": __doc__.split("\n\n")[0],
        "machine": describe(),
        "settings": {"reps": reps, "n_boot": n_boot, "generated": 512, "beta": BETA.tolist()},
        "coverage": cells,
        "synthbrain": brain,
    }
    if not args.quick:
        OUT.write_text(json.dumps(doc, indent=1) + "\n")
        print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
