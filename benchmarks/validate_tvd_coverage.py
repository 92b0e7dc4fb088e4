"""Coverage of the data-path interval, old estimator against new (`python benchmarks/validate_tvd_coverage.py`).

Issue 32, part 1. For each case and n, `--reps` (default 200) replicate data sets (seeded by
case, n and replicate) are scored by `explained_variance` with its defaults, once with
`method="binned"` (the estimator before the issue) and once with `method="local-linear"`
(the new default), on the same data and bootstrap seed. Per case, n and method: the mean
bias and RMSE of the score against the truth, the coverage of the 95% interval (the share of
replicates with ci_low <= truth <= ci_high, with its binomial standard error), the mean
width, and the mean number of bins corrected as steep.

Cases (A ~ U(0, 1) unless said; truths by quadrature or in closed form):

* sigmoid k, sd: Y = sigmoid(k (A - 0.5)) + N(0, sd^2), for (k, sd) = (12, 0.15), (30, 0.10),
  (60, 0.05), (6, 0.25) (the issue's table) and (60, 0.02) (a score near 1);
* weak linear: Y = 0.5 A + N(0, 1), S = 0.0204 (near 0);
* independent: Y ~ N(0, 1) whatever A, S = 0. The interval is clipped at 0, so it "covers"
  0 exactly when ci_low == 0, i.e. when the unclipped lower end is <= 0;
* categorical: three levels with probabilities 0.5, 0.3, 0.2, means 0, 1, -1 and sds 1, 0.5,
  1.5 (S = 0.3234); grouped exactly by both methods, so the two rows agree.

Writes `benchmarks/results/tvd-coverage.json` (the machine, the settings, one row per case,
n and method) and prints the table. About 6 minutes on 2 cores with the defaults.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import integrate, special

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from benchmarks.machine import describe  # noqa: E402
from engine.scores.tvd import explained_variance  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "tvd-coverage.json"
SIZES = (100, 200, 300, 500, 1000, 2000)
METHODS = ("binned", "local-linear")
P_CAT, MU_CAT, SD_CAT = np.array([0.5, 0.3, 0.2]), np.array([0.0, 1.0, -1.0]), np.array([1.0, 0.5, 1.5])


def sigmoid_case(k: float, sd: float):
    """Y = sigmoid(k (A - 0.5)) + N(0, sd^2): S = Var(m) / (Var(m) + sd^2), Var(m) by quadrature."""

    def m(a):
        return special.expit(k * (a - 0.5))

    mean = integrate.quad(m, 0, 1, points=[0.5], limit=200)[0]
    var = integrate.quad(lambda a: (m(a) - mean) ** 2, 0, 1, points=[0.5], limit=200)[0]

    def draw(rng, n):
        a = rng.random(n)
        return m(a) + sd * rng.normal(size=n), a

    return draw, var / (var + sd**2), False


def weak_linear(beta: float = 0.5):
    def draw(rng, n):
        a = rng.random(n)
        return beta * a + rng.normal(size=n), a

    return draw, beta**2 / 12 / (beta**2 / 12 + 1), False


def independent():
    def draw(rng, n):
        return rng.normal(size=n), rng.random(n)

    return draw, 0.0, False


def categorical():
    between = P_CAT @ MU_CAT**2 - (P_CAT @ MU_CAT) ** 2

    def draw(rng, n):
        c = rng.choice(3, size=n, p=P_CAT)
        return MU_CAT[c] + SD_CAT[c] * rng.normal(size=n), c

    return draw, between / (between + P_CAT @ SD_CAT**2), True


CASES = {
    "sigmoid k=12 sd=0.15": lambda: sigmoid_case(12, 0.15),
    "sigmoid k=30 sd=0.10": lambda: sigmoid_case(30, 0.10),
    "sigmoid k=60 sd=0.05": lambda: sigmoid_case(60, 0.05),
    "sigmoid k=6 sd=0.25": lambda: sigmoid_case(6, 0.25),
    "sigmoid k=60 sd=0.02 (near 1)": lambda: sigmoid_case(60, 0.02),
    "weak linear (near 0)": weak_linear,
    "independent (truth 0)": independent,
    "categorical": categorical,
}


def run_cell(draw, truth: float, is_cat: bool, n: int, reps: int, seed: int) -> list[dict]:
    """Both methods on `reps` seeded data sets of size n; one summary row per method."""
    scores = {m: np.empty((reps, 3)) for m in METHODS}
    steep = {m: np.empty(reps) for m in METHODS}
    for i in range(reps):
        y, a = draw(np.random.default_rng([seed, n, i]), n)
        for m in METHODS:
            r = explained_variance(y, a, categorical=is_cat, seed=i, method=m)
            scores[m][i] = r.score, r.ci_low, r.ci_high
            steep[m][i] = r.n_steep
    rows = []
    for m in METHODS:
        s, low, high = scores[m].T
        covered = (low <= truth) & (truth <= high)
        rows.append(
            dict(
                method=m,
                truth=truth,
                bias=float(s.mean() - truth),
                rmse=float(np.sqrt(((s - truth) ** 2).mean())),
                coverage=float(covered.mean()),
                coverage_se=float(np.sqrt(covered.mean() * (1 - covered.mean()) / reps)),
                width=float((high - low).mean()),
                steep_bins=float(steep[m].mean()),
            )
        )
    return rows


def print_table(table: pd.DataFrame) -> None:
    """Old and new side by side: case, n, truth, then bias, RMSE, coverage and width for each method."""
    values = ["bias", "rmse", "coverage", "width"]
    wide = table.pivot_table(index=["case", "n", "truth"], columns="method", values=values)
    wide = wide[[(v, m) for v in values for m in METHODS]]
    wide.columns = [f"{v} {'old' if m == 'binned' else 'new'}" for v, m in wide.columns]
    with pd.option_context("display.width", 250, "display.max_columns", None, "display.max_rows", None):
        print(wide.reset_index().to_string(index=False, float_format="{:.4f}".format))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=200, help="replicate data sets per case and n")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--cases", nargs="+", default=list(CASES), help="case names (default: all)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    rows, start = [], time.perf_counter()
    for case in args.cases:
        draw, truth, is_cat = CASES[case]()
        for n in args.sizes:
            seed = zlib.crc32(case.encode())  # one data stream per case, shared by both methods
            for row in run_cell(draw, truth, is_cat, n, args.reps, seed):
                rows.append(dict(case=case, n=n, **row))
                print(
                    f"{case:30s} n={n:5d} {row['method']:12s} S={truth:.4f} bias={row['bias']:+.4f} "
                    f"rmse={row['rmse']:.4f} cover={row['coverage']:.3f} width={row['width']:.4f}",
                    flush=True,
                )
    print_table(pd.DataFrame(rows))
    settings = dict(reps=args.reps, n_boot=200, ci=0.95, sizes=args.sizes, seconds=round(time.perf_counter() - start))
    record = dict(machine=describe(numpy=np.__version__), settings=settings, rows=rows)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
