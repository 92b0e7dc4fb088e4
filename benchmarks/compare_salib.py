"""Accuracy of Eve's data-path score against SALib's given-data first-order index
(`python benchmarks/compare_salib.py`; needs `pip install SALib==1.6.0`, which Eve does not
depend on and this script does not install).

Given data: independent uniform inputs, one model output, a score per input. Competitor:
the S1 of `SALib.analyze.delta.analyze(..., method="sobol")` (Plischke, Borgonovo & Smith
2013, quantile bins without a noise correction; SALib 1.6 computes it on one bootstrap resample
of the rows), and, fairer to SALib, its `sobol_first` on all rows. Eve: `explained_variance`
with `method="binned"` (before issue 32) and `method="local-linear"` (the default), no CI.

Functions (truths in closed form):

* Ishigami (a = 7, b = 0.1), X ~ U(-pi, pi)^3: S = 0.3139, 0.4424, 0;
* Sobol-G, a = (0, 1, 4.5, 9, 99, 99, 99, 99), X ~ U(0, 1)^8: S_i = V_i / V with
  V_i = 1 / (3 (1 + a_i)^2) and V = prod(1 + V_i) - 1;
* non-monotone: Y = sin(2 pi X1) (1 + X3) + 4 (X2 - 1/2)^2, X ~ U(0, 1)^3: S = 0.8960,
  0.0708, 0 (X3 acts only through its interaction with X1).

For each function and n, `--reps` seeded data sets; RMSE over replicates and inputs, and its
ratio to SALib's. Writes `benchmarks/results/tvd-salib.json` and prints the table.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from benchmarks.machine import describe  # noqa: E402
from engine.scores.tvd import explained_variance  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "tvd-salib.json"
SIZES = (500, 2_000, 5_000, 20_000)
G_A = np.array([0.0, 1.0, 4.5, 9.0, 99.0, 99.0, 99.0, 99.0])


def ishigami(rng, n):
    x = rng.uniform(-np.pi, np.pi, (n, 3))
    return x, np.sin(x[:, 0]) + 7 * np.sin(x[:, 1]) ** 2 + 0.1 * x[:, 2] ** 4 * np.sin(x[:, 0])


def ishigami_truth(a=7.0, b=0.1):
    """Sobol & Levitan (1999): V_1 = (1 + b pi^4 / 5)^2 / 2, V_2 = a^2 / 8, V_3 = 0."""
    v = a**2 / 8 + b * np.pi**4 / 5 + b**2 * np.pi**8 / 18 + 0.5
    return np.array([(1 + b * np.pi**4 / 5) ** 2 / 2, a**2 / 8, 0.0]) / v


def sobol_g(rng, n):
    x = rng.random((n, G_A.size))
    return x, np.prod((np.abs(4 * x - 2) + G_A) / (1 + G_A), axis=1)


def sobol_g_truth():
    vi = 1 / (3 * (1 + G_A) ** 2)
    return vi / (np.prod(1 + vi) - 1)


def non_monotone(rng, n):
    x = rng.random((n, 3))
    return x, np.sin(2 * np.pi * x[:, 0]) * (1 + x[:, 2]) + 4 * (x[:, 1] - 0.5) ** 2


def non_monotone_truth():
    v1, v2 = 1.5**2 / 2, 16 / 180  # Var(1.5 sin(2 pi X1)), Var(4 (X2 - 1/2)^2)
    total = 0.5 * (1 + 1 + 1 / 3) + v2  # E[sin^2] E[(1 + X3)^2] + Var(4 (X2 - 1/2)^2)
    return np.array([v1, v2, 0.0]) / total


FUNCTIONS = {
    "Ishigami": (ishigami, ishigami_truth()),
    "Sobol-G": (sobol_g, sobol_g_truth()),
    "non-monotone": (non_monotone, non_monotone_truth()),
}


def salib_scores(x, y, seed):
    """S1 per input: as `delta.analyze` returns it (one resample of the rows) and on all rows."""
    from SALib.analyze import delta

    problem = dict(num_vars=x.shape[1], names=[f"x{i}" for i in range(x.shape[1])])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s1 = delta.analyze(problem, x, y, num_resamples=2, method="sobol", seed=seed + 1)["S1"]
    n = len(y)  # SALib's equal-frequency partition (delta.analyze)
    m = np.linspace(0, n, int(np.round(min(int(np.ceil(n ** (2 / (7 + np.tanh((1500 - n) / 500))))), 48))) + 1)
    return np.asarray(s1), np.array([delta.sobol_first(y, x[:, i], m) for i in range(x.shape[1])])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=50, help="replicate data sets per function and n")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    estimators = ("SALib analyze", "SALib all rows", "Eve binned", "Eve local-linear")
    rows, start = [], time.perf_counter()
    for name, (model, truth) in FUNCTIONS.items():
        for n in args.sizes:
            err = {e: np.empty((args.reps, truth.size)) for e in estimators}
            for i in range(args.reps):
                x, y = model(np.random.default_rng([n, i]), n)
                err["SALib analyze"][i], err["SALib all rows"][i] = salib_scores(x, y, seed=i)
                for m in ("binned", "local-linear"):
                    err[f"Eve {m}"][i] = [
                        explained_variance(y, x[:, k], n_boot=0, method=m).score for k in range(x.shape[1])
                    ]
            rmse = {e: np.sqrt(((err[e] - truth) ** 2).mean(axis=0)) for e in estimators}  # per input
            for e in estimators:
                pooled = float(np.sqrt((rmse[e] ** 2).mean()))
                ratio = pooled / float(np.sqrt((rmse["SALib analyze"] ** 2).mean()))
                rows.append(
                    dict(
                        function=name,
                        n=n,
                        estimator=e,
                        rmse=pooled,
                        ratio_to_salib=ratio,
                        rmse_per_input=rmse[e].round(5).tolist(),
                        truth=truth.round(4).tolist(),
                    )
                )
            print(
                f"{name:12s} n={n:6d} "
                + "  ".join(f"{e}: {rows[-4 + j]['rmse']:.4f}" for j, e in enumerate(estimators)),
                flush=True,
            )
    table = pd.DataFrame(rows).pivot_table(index=["function", "n"], columns="estimator", values="ratio_to_salib")
    print("\nRMSE / RMSE of SALib's delta S1 (pooled over inputs):")
    with pd.option_context("display.width", 200, "display.float_format", "{:.3f}".format):
        print(table[list(estimators)])
    settings = dict(reps=args.reps, sizes=args.sizes, seconds=round(time.perf_counter() - start))
    where = describe(numpy=np.__version__, SALib=importlib.metadata.version("SALib"))
    record = dict(machine=where, settings=settings, rows=rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
