"""Do the intervals hold? The data path, the generator alone and the generator debiased by the real images,
against SynthBrain's 16,000-subject reference (`python benchmarks/validate_intervals.py`; hours on 2 cores
with the defaults; `--quick` runs one seed of the smallest cells).

Two pools of fresh SynthBrain subjects, built with their own seeds (no subject the zoo's classifiers, the
committed generator or the other pool saw): generators learn from the first, cohorts are drawn from the second.
For both SynthBrain classifiers (probability of the diagnosis) and every feature:

* generator from elsewhere: linear-Gaussian and diffusion generators (the cohort recipe) trained on N_g in
  {400, 1,000, 2,000} subjects of the first pool; cohorts of N in {50, 100, 200} of the second; paths
  `data` (the N subjects' data path), `generator` (the generator's own score on its M generated subjects:
  model-based) and `debiased` (`engine.scores.debias`: the real subjects, their twins and M generated
  subjects); and `regression`, the same debiasing with a cubic-spline regression of the output on the
  features fitted on the generator's training subjects' real outputs in place of the generator (the
  baseline that says what the generator's images add);
* same subjects, cross-fitted: linear-Gaussian (and, for the first seed, diffusion) generators learnt from
  the cohort itself, each of 5 folds' twins from a generator that did not see the fold; N in {100, 200}.

Writes `assets/diffusion/interval-validation.json` after every cell (rows as issue 32 names them, the summary
per cell with RMSE, coverage and mean width beside the data path's on the same subjects, and each model's
share of the output the recorded features explain), and prints the summary.
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

from engine import machine  # noqa: E402
from engine.data import load_dataset, synthbrain  # noqa: E402
from engine.data.defaults import data_dir  # noqa: E402
from engine.diffusion import SamplerConfig  # noqa: E402
from engine.diffusion.cohort import CohortRecipe, train_on_cohort  # noqa: E402
from engine.models.zoo import load_model  # noqa: E402
from engine.options import SCORE  # noqa: E402
from engine.paths import DIFFUSION_ASSETS  # noqa: E402
from engine.scores.debias import Draws, cross_fitted_draws, debiased_score, draw  # noqa: E402
from engine.scores.joint import joint_score  # noqa: E402
from engine.scores.service import model_outputs  # noqa: E402
from engine.scores.tvd import explained_variance  # noqa: E402

MODELS = ("synthbrain-diagnosis", "synthbrain-shortcut")
OUT = DIFFUSION_ASSETS / "interval-validation.json"


class Both(torch.nn.Module):
    """The two classifiers' outputs (logits, as the reference scores them) side by side: one draw of images
    serves both."""

    def __init__(self, nets):
        super().__init__()
        self.nets = torch.nn.ModuleList(nets)

    def forward(self, x):
        return torch.cat([net(x).reshape(len(x), -1)[:, :1] for net in self.nets], 1)


def references() -> dict[tuple[str, str], float]:
    rows = json.loads((DIFFUSION_ASSETS / "synthbrain-validation.json").read_text())["scores"]
    return {(r["model"], r["feature"]): r["generator_ref"] for r in rows}


def pool(seed: int, n: int):
    """n fresh SynthBrain subjects of their own seed, built once (the first n of a larger build are reused)."""
    folder = data_dir() / ".cache" / f"interval-pool-seed{seed}"
    if not (folder / "features.csv").is_file():
        synthbrain.build(folder, n=n, seed=seed)
    return load_dataset(folder)


def spline_predictor(features: pd.DataFrame, y: np.ndarray, numeric: list[str], categorical: list[str]):
    """A least-squares fit of y on a natural cubic spline (4 knots) of each numeric feature and the levels of
    each categorical one: the regression baseline's predictor of the output from the features."""

    def basis(frame: pd.DataFrame) -> np.ndarray:
        cols = [np.ones(len(frame))]
        for f in numeric:
            x = frame[f].to_numpy(float)
            knots = np.quantile(features[f].to_numpy(float), [0.05, 0.35, 0.65, 0.95])
            cols.append(x)
            last = knots[-1]
            for k in knots[:-2]:
                cube = np.maximum(x - k, 0) ** 3 - np.maximum(x - knots[-2], 0) ** 3 * (last - k) / (last - knots[-2])
                cube += np.maximum(x - last, 0) ** 3 * (knots[-2] - k) / (last - knots[-2])
                cols.append(cube / (last - knots[0]) ** 2)
        for f in categorical:
            for level in sorted(features[f].astype(str).unique())[1:]:
                cols.append((frame[f].astype(str) == level).to_numpy(float))
        return np.stack(cols, 1)

    coef = np.linalg.lstsq(basis(features), y, rcond=None)[0]
    return lambda frame: basis(frame) @ coef


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-generator", type=int, nargs="+", default=[400, 1000, 2000])
    parser.add_argument("--n", type=int, nargs="+", default=[50, 100, 200])
    parser.add_argument("--n-crossfit", type=int, nargs="+", default=[100, 200])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--kinds", nargs="+", default=["linear-gaussian", "diffusion"])
    parser.add_argument("--crossfit-diffusion-seeds", type=int, nargs="*", default=[0])
    parser.add_argument("--n-generated", type=int, default=SCORE.n_generated)
    parser.add_argument("--n-boot", type=int, default=SCORE.n_boot)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="one seed, N_g 400, N 100, linear-Gaussian only")
    args = parser.parse_args(argv)
    if args.quick:
        args.n_generator, args.n, args.n_crossfit, args.seeds, args.kinds = (
            [400],
            [100],
            [100],
            [0],
            ["linear-gaussian"],
        )
        args.crossfit_diffusion_seeds = []
    torch.set_num_threads(args.threads)
    reference = references()
    started = time.time()
    generators_pool, cohorts_pool = pool(7000, 2000), pool(8000, 600)
    features = [f for f in cohorts_pool.features if all((m, f) in reference for m in MODELS)]
    categorical = [f for f in features if f in cohorts_pool.categorical_features]
    numeric = [f for f in features if f not in categorical]
    nets = [load_model(name, "cpu") for name in MODELS]
    both = Both([net for net, _ in nets]).eval()
    spec = nets[0][1].spec
    y_gen_pool = model_outputs(both, generators_pool, spec)  # (N_pool, 2): real outputs of the generators' subjects
    y_cohorts = model_outputs(both, cohorts_pool, spec)
    share = {
        name: joint_score(
            y_gen_pool[:, j],
            {f: generators_pool.feature_values(f) for f in features},
            categorical=tuple(categorical),
            n_boot=100,
        ).score
        for j, name in enumerate(MODELS)
    }
    rows, cells = [], []

    def write() -> None:
        frame = pd.DataFrame(rows)
        doc = {
            "settings": {**vars(args), "features": features, "models": list(MODELS), "machine": machine()},
            "share_explained_by_the_features": share,
            "summary": summarise(frame).to_dict("records") if len(frame) else [],
            "cells": cells,
            "rows": rows,
            "wall_time_seconds": round(time.time() - started),
        }
        OUT.write_text(json.dumps(doc, indent=1))

    def score_cell(n, n_gen, kind, seed, cohort_rows, drawn: Draws | None, twin=None, gen=None, gen_features=None):
        real = cohorts_pool.table.iloc[cohort_rows].reset_index(drop=True)
        y = y_cohorts[cohort_rows]
        if drawn is not None:
            twin, gen, gen_features = drawn.twin, drawn.gen, drawn.gen_features
        for j, name in enumerate(MODELS):
            for f in features:
                cat = f in categorical
                a = real[f].to_numpy()
                d = debiased_score(
                    y[:, j],
                    twin[:, j],
                    a,
                    gen[:, j],
                    gen_features[f].to_numpy(),
                    categorical=cat,
                    n_boot=args.n_boot,
                    seed=seed,
                )
                out = {"regression": d.result} if kind == "regression" else {"debiased": d.result, "generator": d.gen}
                for path, r in out.items():
                    rows.append(_row(n, n_gen, path, kind, name, f, r, reference, seed, d.lam, d.twin_correlation))

    for seed in args.seeds:
        order_g = np.random.default_rng(seed).permutation(len(generators_pool))
        order_s = np.random.default_rng(100 + seed).permutation(len(cohorts_pool))
        cohorts = {n: np.sort(order_s[:n]) for n in args.n}
        for n, cohort_rows in cohorts.items():  # the data path on the same subjects
            for j, name in enumerate(MODELS):
                for f in features:
                    r = explained_variance(
                        y_cohorts[cohort_rows, j],
                        cohorts_pool.feature_values(f)[cohort_rows],
                        categorical=f in categorical,
                        n_boot=args.n_boot,
                        seed=seed,
                    )
                    rows.append(_row(n, 0, "data", "data", name, f, r, reference, seed))
        for n_gen in args.n_generator:
            g_rows = np.sort(order_g[:n_gen])
            predict = [
                spline_predictor(generators_pool.table.iloc[g_rows], y_gen_pool[g_rows, j], numeric, categorical)
                for j in range(len(MODELS))
            ]
            for n, cohort_rows in cohorts.items():  # the regression baseline
                real = cohorts_pool.table.iloc[cohort_rows]
                picked = generators_pool.table.iloc[g_rows].sample(args.n_generated, replace=True, random_state=seed)
                twin = np.stack([p(real) for p in predict], 1)
                gen = np.stack([p(picked) for p in predict], 1)
                score_cell(n, n_gen, "regression", seed, cohort_rows, None, twin, gen, picked.reset_index(drop=True))
            for kind in args.kinds:
                t0 = time.time()
                generator = train_on_cohort(
                    generators_pool,
                    spec,
                    features=features,
                    rows=g_rows,
                    recipe=CohortRecipe(kind=kind, seed=seed),
                    log=lambda _: None,
                )
                trained = time.time() - t0
                sampler = SamplerConfig.for_scores(generator)
                for n, cohort_rows in cohorts.items():
                    t1 = time.time()
                    real = cohorts_pool.table.iloc[cohort_rows].reset_index(drop=True)
                    drawn = draw(both, generator, real, m_generated=args.n_generated, seed=seed, sampler=sampler)
                    score_cell(n, n_gen, kind, seed, cohort_rows, drawn)
                    cells.append(
                        {
                            "seed": seed,
                            "n_generator": n_gen,
                            "kind": kind,
                            "n_subjects": n,
                            "train_seconds": round(trained, 1),
                            "draw_and_score_seconds": round(time.time() - t1, 1),
                            "clamped": drawn.clamped,
                        }
                    )
                    print(
                        f"seed {seed} N_g {n_gen} {kind} N {n}: {time.time() - t1:.0f} s (trained in {trained:.0f} s)",
                        flush=True,
                    )
                    write()
        for n in args.n_crossfit:  # the generator learns from the cohort itself: cross-fitted
            cohort_rows = np.sort(order_s[:n])
            real = cohorts_pool.table.iloc[cohort_rows].reset_index(drop=True)
            for kind in args.kinds:
                if kind == "diffusion" and seed not in args.crossfit_diffusion_seeds:
                    continue
                t0 = time.time()

                def fit(train, kind=kind, cohort_rows=cohort_rows, seed=seed):
                    return train_on_cohort(
                        cohorts_pool,
                        spec,
                        features=features,
                        rows=cohort_rows[train],
                        recipe=CohortRecipe(kind=kind, seed=seed),
                        log=lambda _: None,
                    )

                drawn = cross_fitted_draws(both, fit, real, folds=SCORE.folds, m_generated=args.n_generated, seed=seed)
                score_cell(n, n, f"{kind} (cross-fitted)", seed, cohort_rows, drawn)
                cells.append(
                    {
                        "seed": seed,
                        "n_generator": n,
                        "kind": f"{kind} (cross-fitted)",
                        "n_subjects": n,
                        "draw_and_score_seconds": round(time.time() - t0, 1),
                    }
                )
                print(f"seed {seed} cross-fitted {kind} N {n}: {time.time() - t0:.0f} s", flush=True)
                write()
    write()
    print(markdown(summarise(pd.DataFrame(rows))))


def _row(n, n_gen, path, kind, model, feature, r, reference, seed, lam=None, corr=None) -> dict:
    row = {
        "n_subjects": int(n),
        "n_generator": int(n_gen),
        "path": path,
        "generator": kind,
        "model": model,
        "feature": feature,
        "score": float(r.score),
        "ci_low": float(r.ci_low),
        "ci_high": float(r.ci_high),
        "reference": float(reference[model, feature]),
        "seed": int(seed),
    }
    if lam is not None:
        row |= {"lam": float(lam), "twin_correlation": float(corr)}
    return row


def summarise(rows: pd.DataFrame) -> pd.DataFrame:
    """RMSE, coverage and mean width per cell, with the data path's on the same subjects as ratios."""
    ok = rows[np.isfinite(rows["score"])]
    err = ok["score"] - ok["reference"]
    frame = ok.assign(
        sq=err**2,
        covered=((ok["ci_low"] <= ok["reference"]) & (ok["reference"] <= ok["ci_high"])),
        width=ok["ci_high"] - ok["ci_low"],
    )
    keys = ["n_subjects", "n_generator", "generator", "path"]
    table = (
        frame.groupby(keys)
        .agg(
            rmse=("sq", lambda v: float(np.sqrt(v.mean()))),
            coverage=("covered", "mean"),
            width=("width", "mean"),
            pairs=("sq", "size"),
        )
        .reset_index()
    )
    data = table[table["path"] == "data"].set_index("n_subjects")
    table["rmse_vs_data"] = table["rmse"] / table["n_subjects"].map(data["rmse"])
    table["width_vs_data"] = table["width"] / table["n_subjects"].map(data["width"])
    return table


def markdown(frame: pd.DataFrame) -> str:
    head = "| " + " | ".join(frame.columns) + " |\n|" + "---|" * len(frame.columns)
    body = [
        "| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row) + " |"
        for row in frame.itertuples(index=False)
    ]
    return "\n".join([head, *body])


if __name__ == "__main__":
    main()
