"""Time `explained_variance` on 10^4 to 10^6 (output, feature) pairs, 200 bootstrap draws.

Both estimators of a continuous feature (`method="local-linear"`, the default, and
`"binned"`, the one before issue 32) and a categorical feature.

Run: python benchmarks/bench_tvd.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from engine.scores.tvd import explained_variance  # noqa: E402

VAR_SIN_2A = (1 - np.exp(-8)) / 2


def main(sizes=(10_000, 20_000, 100_000, 1_000_000), n_boot: int = 200) -> None:
    truth = VAR_SIN_2A / (VAR_SIN_2A + 0.49)
    print(f"Y = sin(2A) + 0.7 eps, A ~ N(0, 1): true S(A) = {truth:.4f}; {n_boot} bootstrap draws")
    for n in sizes:
        rng = np.random.default_rng(0)
        a = rng.normal(size=n)
        y = np.sin(2 * a) + 0.7 * rng.normal(size=n)
        runs = (("continuous, local-linear", a, "local-linear"), ("continuous, binned", a, "binned"))
        runs += (("categorical", np.digitize(a, [-1.0, 0.0, 1.0]), "local-linear"),)
        for kind, feature, method in runs:
            start = time.perf_counter()
            r = explained_variance(y, feature, categorical=kind == "categorical", n_boot=n_boot, seed=0, method=method)
            seconds = time.perf_counter() - start
            print(
                f"n = {n:>9,}  {kind:24s} groups = {r.n_groups:>6,}  S = {r.score:.4f} "
                f"[{r.ci_low:.4f}, {r.ci_high:.4f}]  {seconds:6.2f} s"
            )


if __name__ == "__main__":
    main()
