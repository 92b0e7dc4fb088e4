"""Time `shapley_effects`: all 2^d subsets of d features with 200 bootstrap draws.

Targets (issue 36): 9 features, all 512 subsets with intervals, under 5 s on 400 subjects and
under 60 s on 20,000, on a 2-core CPU. Also how the time grows with d (d = 3..10 on 2,000
subjects), the default estimator against its two parts, and the sampled-orders estimator at
d = 12. Features: correlated Gaussians (rho = 0.3, two pairs at 0.8), one of them categorical
(4 levels); Y linear in five of them plus a product and noise.

Run: python benchmarks/bench_joint.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from engine.scores.joint import shapley_effects  # noqa: E402


def make(n: int, d: int, seed: int = 0):
    """Outputs (n,) and features (d) of the benchmark: one categorical feature when d >= 3."""
    rng = np.random.default_rng(seed)
    sigma = np.full((d, d), 0.3) + 0.7 * np.eye(d)
    if d >= 4:
        sigma[0, 1] = sigma[1, 0] = sigma[2, 3] = sigma[3, 2] = 0.8
    x = rng.normal(size=(n, d)) @ np.linalg.cholesky(sigma).T
    beta = np.zeros(d)
    beta[: min(d, 5)] = [1.0, 0.8, 0.6, 0.4, 0.2][: min(d, 5)]
    y = x @ beta + 0.3 * x[:, 0] * x[:, min(2, d - 1)] + rng.normal(size=n)
    features = {f"a{j}": x[:, j] for j in range(d)}
    categorical = ()
    if d >= 3:
        features[f"a{d - 1}"] = np.digitize(x[:, d - 1], [-0.7, 0.0, 0.7])  # 4 levels
        categorical = (f"a{d - 1}",)
    return y, features, categorical


def timed(n, d, **kw):
    y, features, categorical = make(n, d)
    start = time.perf_counter()
    r = shapley_effects(y, features, categorical=categorical, n_boot=200, seed=0, **kw)
    return time.perf_counter() - start, r


def main(quick: bool = False) -> None:
    print("9 features (one categorical), all 512 subsets, 200 bootstrap draws:")
    for n, target in ((400, 5.0), (20_000, 60.0)):
        for method in ("splines+neighbours", "splines", "neighbours"):
            if quick and method != "splines+neighbours":
                continue
            seconds, r = timed(n, 9, method=method)
            flag = "ok" if seconds < target else f"MISSED by {seconds - target:.1f} s"
            print(
                f"  n = {n:>6,}  {method:20s} {seconds:6.2f} s (target {target:.0f} s: {flag})  "
                f"S(all) = {r.joint.score:.3f} [{r.joint.ci_low:.3f}, {r.joint.ci_high:.3f}], "
                f"{r.n_subsets} subsets, {r.joint.n_params} columns ({r.joint.method})"
            )
    print("growth with d, n = 2,000, default estimator:")
    for d in (3, 5, 7, 8, 9, 10) if not quick else (3, 6, 9):
        seconds, r = timed(2_000, d)
        print(f"  d = {d:>2}  {2**d:>5} subsets  {seconds:6.2f} s  ({seconds / 2**d * 1e3:.1f} ms a subset)")
    seconds, r = timed(2_000, 12)
    print(f"  d = 12  sampled, {r.n_perm} orders, {r.n_subsets} subsets  {seconds:6.2f} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the default estimator only, fewer d")
    main(**vars(parser.parse_args()))
