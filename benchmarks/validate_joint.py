"""Accuracy and interval coverage of `engine.scores.joint` against truths (`python benchmarks/validate_joint.py`).

Issue 36. Two parts, one results file (`benchmarks/results/joint.json`):

1. Selection of the estimator of Var(E[Y | A_u]). For each case and n, `--select-reps` seeded
   data sets are scored by `shapley_effects(n_boot=0)` with each of `engine.scores.joint.METHODS`;
   per method: mean |bias| and the largest |bias| (over the 1 + 3d reported numbers: S(all),
   and per feature first-order, added and Shapley), and the RMSE over replicates and numbers,
   and seconds per fit.
2. Coverage of the default estimator's 95% intervals (200 bootstrap draws): over `--reps`
   seeded data sets, the share of intervals holding the truth, per kind of number (joint,
   first-order, added, Shapley), with its binomial standard error, the mean width, the RMSE.

Cases: X ~ N(0, Sigma) with correlated features (Sigma below), truths for a linear Y in closed
form (Owen & Prieur 2017; Iooss & Prieur 2019: Var(E[Y | X_u]) = beta' Sigma_.u Sigma_uu^-1
Sigma_u. beta for Y = beta' X + eps), otherwise by double-loop Monte Carlo (outer draws of X_u,
inner draws of X_-u | X_u and of the unrecorded Z; the inner-mean noise is taken back; a set
holding every feature Y reads gets S(all) exactly, and truths are clipped to [0, 1]):

* linear d3: Y = X1 + 0.5 X3 + N(0, 1), corr(X1, X2) = 0.8 (X2 explains only through X1);
* linear d4: Y = X1 + 0.5 X3 - 0.5 X4 + N(0, 1), rho 0.5, corr(X1, X2) = 0.8;
* linear d9: nine features, rho 0.3, corr(X1, X2) = 0.8, beta = (1, .8, .6, .4, .2, 0, 0, -.5, .3);
* classifier: Y = sigmoid(2 X1 - X3 + 1.5 Z), Sigma of linear d4 (a probability: not additive;
  S(X3) = 0 exactly, as E[2 X1 - X3 | X3] = 0);
* steep+inter: Y = sigmoid(8 (X1 - 0.3)) + 0.5 sin(2 X2) + 0.5 X3 X4 + 0.5 Z (a threshold, a
  product);
* sharp: Y = sigmoid(5 (X1 + 0.7 X3) + 2 Z) (a steep classifier of a combination);
* additive independent: Y = X1 + sin(2 X2) + 0.5 X3 + N(0, 1), Sigma = I (Shapley = first-order).

Prints the tables and writes the JSON (the machine, the settings, one row per case, n and
method or kind). About 3 minutes on 2 cores with the defaults; `--quick` for a smoke run.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import expit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from benchmarks.machine import describe  # noqa: E402
from engine.scores.joint import METHODS, shapley_effects  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "joint.json"


def correlation(d: int, rho: float, strong: float | None = 0.8) -> np.ndarray:
    sigma = np.full((d, d), rho) + (1 - rho) * np.eye(d)
    if strong is not None:
        sigma[0, 1] = sigma[1, 0] = strong
    return sigma


class Case:
    """Y = f(X, Z) with X ~ N(0, Sigma), Z ~ N(0, 1) unrecorded; S(u) for every mask u."""

    def __init__(self, name, sigma, f, beta=None, noise=None, reads=None):
        self.name, self.sigma, self.f, self.d = name, sigma, f, len(sigma)
        self.reads = sum(1 << j for j in (range(self.d) if reads is None else reads))  # the features f reads
        self.chol = np.linalg.cholesky(sigma)
        self.beta, self.noise = beta, noise  # linear: Y = beta' X + noise Z, truth in closed form
        self._truth = None

    def draw(self, n, rng):
        x = rng.normal(size=(n, self.d)) @ self.chol.T
        return self.f(x, rng.normal(size=n)), x

    def truth(self) -> np.ndarray:
        """S(u) for masks 0..2^d - 1."""
        if self._truth is None:
            self._truth = self._linear() if self.beta is not None else self._monte_carlo()
        return self._truth

    def _linear(self):
        b, s = np.asarray(self.beta), self.sigma
        total = b @ s @ b + self.noise**2
        out = np.zeros(2**self.d)
        for m in range(1, 2**self.d):
            u = [j for j in range(self.d) if m >> j & 1]
            c = s[:, u]
            out[m] = b @ c @ np.linalg.solve(s[np.ix_(u, u)], c.T @ b) / total
        return out

    def _monte_carlo(self, n_out=100_000, n_in=100, chunk=5_000, seed=12345):
        rng = np.random.default_rng(seed)
        y, _ = self.draw(1_000_000, rng)
        total = y.var()
        out = np.zeros(2**self.d)
        full = 2**self.d - 1
        for m in [full, *range(1, full)]:
            if m & self.reads == self.reads and m != full:  # E[Y | X_u] = E[Y | X] when u holds all that f reads
                out[m] = out[full]
                continue
            u = [j for j in range(self.d) if m >> j & 1]
            o = [j for j in range(self.d) if not m >> j & 1]
            means, noise = [], []
            for _ in range(n_out // chunk):
                x = rng.normal(size=(chunk, self.d)) @ self.chol.T
                xf = np.repeat(x[:, None, :], n_in, axis=1)
                if o:  # X_-u | X_u ~ N(A x_u, Sigma_oo - A Sigma_uo)
                    a = self.sigma[np.ix_(o, u)] @ np.linalg.inv(self.sigma[np.ix_(u, u)])
                    cond = np.linalg.cholesky(self.sigma[np.ix_(o, o)] - a @ self.sigma[np.ix_(u, o)])
                    xf[:, :, o] = (x[:, u] @ a.T)[:, None, :] + rng.normal(size=(chunk, n_in, len(o))) @ cond.T
                vals = self.f(xf, rng.normal(size=(chunk, n_in)))
                means.append(vals.mean(1))
                noise.append(vals.var(1, ddof=1) / n_in)
            out[m] = (np.concatenate(means).var() - np.concatenate(noise).mean()) / total
        return np.clip(out, 0, 1)  # (Monte Carlo noise about a true 0)


def shapley_from(values: np.ndarray, d: int) -> np.ndarray:
    phi = np.zeros(d)
    for j in range(d):
        for m in range(2**d):
            if not m >> j & 1:
                s = bin(m).count("1")
                phi[j] += (
                    math.factorial(s) * math.factorial(d - s - 1) / math.factorial(d) * (values[m | 1 << j] - values[m])
                )
    return phi


def truths(case: Case) -> dict[str, np.ndarray]:
    s, d = case.truth(), case.d
    full = 2**d - 1
    return {
        "joint": np.array([s[full]]),
        "first": np.array([s[1 << j] for j in range(d)]),
        "added": np.array([s[full] - s[full & ~(1 << j)] for j in range(d)]),
        "shapley": shapley_from(s, d),
    }


def estimates(r) -> dict[str, np.ndarray]:
    e = r.effects
    return {
        "joint": np.array([[r.joint.score, r.joint.ci_low, r.joint.ci_high]]),
        "first": np.array([[x.score, x.ci_low, x.ci_high] for x in e]),
        "added": np.array([[x.added, x.added_ci_low, x.added_ci_high] for x in e]),
        "shapley": np.array([[x.shapley, x.shapley_ci_low, x.shapley_ci_high] for x in e]),
    }


def score(case, n, rep, **kw):
    y, x = case.draw(n, np.random.default_rng(zlib.crc32(f"{case.name}/{n}/{rep}".encode())))
    return shapley_effects(y, {f"x{j + 1}": x[:, j] for j in range(case.d)}, seed=rep, **kw)


def cases() -> dict[str, Case]:
    s4 = correlation(4, 0.5)
    b9 = [1, 0.8, 0.6, 0.4, 0.2, 0, 0, -0.5, 0.3]
    return {
        c.name: c
        for c in (
            Case("linear d3", correlation(3, 0.0), lambda x, z: x[..., 0] + 0.5 * x[..., 2] + z, [1, 0, 0.5], 1.0),
            Case(
                "linear d4", s4, lambda x, z: x[..., 0] + 0.5 * x[..., 2] - 0.5 * x[..., 3] + z, [1, 0, 0.5, -0.5], 1.0
            ),
            Case("linear d9", correlation(9, 0.3), lambda x, z: x @ np.array(b9, float) + z, b9, 1.0),
            Case("classifier", s4, lambda x, z: expit(2 * x[..., 0] - x[..., 2] + 1.5 * z), reads=(0, 2)),
            Case(
                "steep+inter",
                s4,
                lambda x, z: (
                    expit(8 * (x[..., 0] - 0.3)) + 0.5 * np.sin(2 * x[..., 1]) + 0.5 * x[..., 2] * x[..., 3] + 0.5 * z
                ),
            ),
            Case("sharp", s4, lambda x, z: expit(5 * (x[..., 0] + 0.7 * x[..., 2]) + 2 * z), reads=(0, 2)),
            Case(
                "additive independent", np.eye(3), lambda x, z: x[..., 0] + np.sin(2 * x[..., 1]) + 0.5 * x[..., 2] + z
            ),
        )
    }


def selection(all_cases, sizes, reps) -> list[dict]:
    rows = []
    for name in ("linear d4", "linear d9", "classifier", "steep+inter", "sharp"):
        case = all_cases[name]
        truth = np.concatenate(list(truths(case).values()))
        for n in sizes:
            for method in METHODS:
                errors, start = [], time.perf_counter()
                for rep in range(reps if case.d < 9 else max(2, reps // 4)):
                    est = estimates(score(case, n, rep, n_boot=0, method=method))
                    errors.append(np.concatenate([v[:, 0] for v in est.values()]) - truth)
                errors = np.array(errors)
                bias = np.abs(errors.mean(0))
                rows.append(
                    dict(
                        case=name,
                        n=n,
                        method=method,
                        reps=len(errors),
                        mean_abs_bias=bias.mean(),
                        max_abs_bias=bias.max(),
                        rmse=float(np.sqrt((errors**2).mean())),
                        seconds=(time.perf_counter() - start) / len(errors),
                    )
                )
                print(
                    " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in rows[-1].items()),
                    flush=True,
                )
    return rows


def coverage(all_cases, sizes, reps) -> list[dict]:
    rows = []
    for name in ("linear d3", "linear d4", "classifier", "additive independent"):
        case = all_cases[name]
        truth = truths(case)
        for n in sizes:
            hits = {k: [] for k in truth}
            start = time.perf_counter()
            for rep in range(reps):
                est = estimates(score(case, n, rep, n_boot=200))
                for k, t in truth.items():
                    e = est[k]
                    hits[k].append(np.c_[(e[:, 1] <= t) & (t <= e[:, 2]), e[:, 2] - e[:, 1], e[:, 0] - t])
            for k, h in hits.items():
                h = np.array(h)  # (reps, numbers, 3)
                cov = h[..., 0].mean()
                rows.append(
                    dict(
                        case=name,
                        n=n,
                        kind=k,
                        reps=reps,
                        coverage=cov,
                        coverage_se=float(np.sqrt(cov * (1 - cov) / h[..., 0].size)),
                        min_coverage=h[..., 0].mean(0).min(),
                        width=h[..., 1].mean(),
                        rmse=float(np.sqrt((h[..., 2] ** 2).mean())),
                        seconds=(time.perf_counter() - start) / reps,
                    )
                )
                print(
                    " ".join(f"{k_}={v:.4f}" if isinstance(v, float) else f"{k_}={v}" for k_, v in rows[-1].items()),
                    flush=True,
                )
    return rows


def main(reps: int = 100, select_reps: int = 40, quick: bool = False) -> None:
    if quick:
        reps, select_reps = 10, 4
    all_cases = cases()
    start = time.perf_counter()
    print("== 1. selection: bias and RMSE of S(all), first-order, added and Shapley (n_boot = 0)")
    sel = selection(all_cases, (400, 2000), select_reps)
    print("== 2. coverage of the 95% intervals, default estimator, 200 draws")
    cov = coverage(all_cases, (400, 2000), reps)
    truth_rows = [
        dict(case=c.name, truth={k: v.round(4).tolist() for k, v in truths(c).items()}) for c in all_cases.values()
    ]
    result = {
        "machine": describe(),
        "settings": dict(reps=reps, select_reps=select_reps, n_boot=200, ci=0.95),
        "seconds": time.perf_counter() - start,
        "truths": truth_rows,
        "selection": sel,
        "coverage": cov,
    }
    if not quick:
        OUT.write_text(json.dumps(result, indent=1, default=float) + "\n")
        print(f"wrote {OUT}")
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(pd.DataFrame(sel).round(4).to_string(index=False))
        print(pd.DataFrame(cov).round(4).to_string(index=False))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=100, help="data sets per case and n for coverage")
    parser.add_argument("--select-reps", type=int, default=40, help="data sets per case, n and method for selection")
    parser.add_argument("--quick", action="store_true", help="a smoke run: few replicates, nothing written")
    main(**vars(parser.parse_args()))
