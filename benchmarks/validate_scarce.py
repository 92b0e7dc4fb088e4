"""Scarce data, honestly: both score paths on a cohort of N subjects and nothing else
(`python benchmarks/validate_scarce.py`; about 45 minutes on 2 cores with the defaults).

A user's cohort of N in {100, 200, 400} scans is simulated by N fresh SynthBrain subjects that
the zoo's classifiers never saw (a 400-subject build with its own seed, nested subsets drawn
per seed). For both SynthBrain classifiers and every feature:

* data path: the score from the N subjects' outputs (95% bootstrap CI over subjects);
* linear-Gaussian: a generator fitted on those N subjects alone (`engine.diffusion.cohort`,
  kind linear-gaussian), its score and the CI of `generator_bootstrap_score` (refits on
  bootstrap resamples of the N subjects, each sampled: the generator's error and the sampling's);
* diffusion: a latent diffusion model trained on those N subjects alone (the cohort recipe,
  early-stopped on a held-out tenth), its score and the sampling-only CI of `diffusion_score`;

each against the 16,000-subject reference of `assets/diffusion/synthbrain-validation.json`
(`generator_ref`). Writes `assets/diffusion/scarce-validation.json` (rows as the issue names
them, the summary per N and path, and the rows each generator was trained on) after every
generator, so a stopped run keeps what it measured, and prints the summary table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from engine import machine
from engine.data import load_dataset, synthbrain
from engine.data.defaults import data_dir
from engine.diffusion import SamplerConfig
from engine.diffusion.cohort import CohortRecipe, train_on_cohort
from engine.diffusion.storage import ASSETS
from engine.models.zoo import load_model
from engine.scores.generator import diffusion_score, generator_bootstrap_score
from engine.scores.service import model_outputs, score_outputs

MODELS = ("synthbrain-diagnosis", "synthbrain-shortcut")
OUT = ASSETS / "scarce-validation.json"


def references() -> dict[tuple[str, str], float]:
    rows = json.loads((ASSETS / "synthbrain-validation.json").read_text())["scores"]
    return {(r["model"], r["feature"]): r["generator_ref"] for r in rows}


def fresh_cohort(seed: int, n: int = 400):
    """n fresh SynthBrain subjects (their own seed: the classifiers trained on seed 0's), built once."""
    folder = data_dir() / ".cache" / f"scarce-cohort-seed{seed}"
    if not (folder / "features.csv").is_file():
        synthbrain.build(folder, n=n, seed=seed)
    return load_dataset(folder)


def summary(rows: pd.DataFrame) -> pd.DataFrame:
    err = rows["score"] - rows["reference"]
    covered = (rows["ci_low"] <= rows["reference"]) & (rows["reference"] <= rows["ci_high"])
    frame = rows.assign(sq=err**2, abs=err.abs(), covered=covered.astype(float))
    table = frame.groupby(["n_subjects", "path"]).agg(
        rmse=("sq", lambda v: float(np.sqrt(v.mean()))),
        max_error=("abs", "max"),
        coverage=("covered", "mean"),
        pairs=("sq", "size"),
    )
    return table.reset_index()


def markdown(frame: pd.DataFrame) -> str:
    head = "| " + " | ".join(frame.columns) + " |\n|" + "---|" * len(frame.columns)
    body = [
        "| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row) + " |"
        for row in frame.itertuples(index=False)
    ]
    return "\n".join([head, *body])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[100, 200, 400])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--paths", nargs="+", default=["data", "linear-gaussian", "diffusion"])
    parser.add_argument("--diffusion-seeds", type=int, nargs="+", default=[0], help="seeds that train diffusion")
    parser.add_argument("--k-values", type=int, default=8)
    parser.add_argument("--n-per-value", type=int, default=32)
    parser.add_argument("--replicates", type=int, default=10, help="linear-Gaussian bootstrap refits")
    parser.add_argument("--cohort-seed", type=int, default=5000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    reference = references()
    cohort = fresh_cohort(args.cohort_seed)
    features = [f for f in cohort.features if all((m, f) in reference for m in MODELS)]
    models = {name: load_model(name) for name in MODELS}
    spec = models[MODELS[0]][1].spec
    outputs = {name: model_outputs(net, cohort, card.spec)[:, 0] for name, (net, card) in models.items()}
    rows, trainings, started = [], [], time.time()

    def write() -> None:
        frame = pd.DataFrame(rows)
        doc = {
            "settings": {**vars(args), "features": features, "models": list(MODELS), "machine": machine()},
            "summary": summary(frame).to_dict("records") if len(frame) else [],
            "rows": rows,
            "trainings": trainings,
            "wall_time_seconds": round(time.time() - started),
        }
        OUT.write_text(json.dumps(doc, indent=1))

    for seed in args.seeds:
        order = np.random.default_rng(seed).permutation(len(cohort))
        for n in args.n:
            if n == len(cohort) and seed != args.seeds[0]:
                continue  # every seed's 400 are the same subjects
            subset = np.sort(order[:n])
            for path in args.paths:
                if path == "diffusion" and seed not in args.diffusion_seeds:
                    continue
                t0 = time.time()
                if path == "data":
                    for name in MODELS:
                        table = score_outputs(
                            outputs[name][subset], cohort, features, subset, ["0"], n_boot=200, seed=0
                        )
                        for r in table.itertuples():
                            rows.append(_row(n, path, name, r.feature, r.score, r.ci_low, r.ci_high, reference, seed))
                    continue
                generator = train_on_cohort(
                    cohort, spec, features=features, rows=subset, recipe=CohortRecipe(kind=path, seed=seed), log=print
                )
                trainings.append(
                    {
                        "n_subjects": n,
                        "path": path,
                        "seed": seed,
                        "subjects_trained": generator.card.training["subjects_trained"],
                        "rows_held_out": generator.card.training["rows_held_out"],
                        "wall_time_seconds": generator.card.training["wall_time_seconds"],
                        "best_step": generator.card.training.get("best_step"),
                        "steps_run": generator.card.training.get("steps_run"),
                    }
                )
                sampler = SamplerConfig.for_scores(generator)
                for name, (net, card) in models.items():
                    for feature in features:
                        kwargs = dict(k_values=args.k_values, n_per_value=args.n_per_value, sampler=sampler, seed=0)
                        if path == "linear-gaussian":
                            result, _ = generator_bootstrap_score(
                                net, card, generator, feature, replicates=args.replicates, **kwargs
                            )
                        else:
                            result, _ = diffusion_score(net, card, generator, feature, **kwargs)
                        rows.append(
                            _row(n, path, name, feature, result.score, result.ci_low, result.ci_high, reference, seed)
                        )
                print(f"N={n} seed={seed} {path}: {time.time() - t0:.0f} s", flush=True)
                write()
            write()
    write()
    print(markdown(summary(pd.DataFrame(rows))))


def _row(n, path, model, feature, score, low, high, reference, seed) -> dict:
    return {
        "n_subjects": int(n),
        "path": path,
        "model": model,
        "feature": feature,
        "score": float(score),
        "ci_low": float(low),
        "ci_high": float(high),
        "reference": float(reference[model, feature]),
        "seed": int(seed),
    }


if __name__ == "__main__":
    main()
