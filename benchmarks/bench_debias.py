"""Time the two scores issue 32 budgets: the data path for 9 features on 20,000 rows with its interval, and the
debiased generator score for one feature at N = 100 real subjects with K x N = 8 x 32 generated ones and the
twins (the committed SynthBrain diffusion model, synthbrain-diagnosis, the test split's first 100 subjects).

Run: python benchmarks/bench_debias.py  (writes benchmarks/results/debias.json)
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from benchmarks.machine import describe  # noqa: E402
from engine.data.defaults import open_dataset  # noqa: E402
from engine.diffusion import SamplerConfig, load_diffusion  # noqa: E402
from engine.models.zoo import load_model  # noqa: E402
from engine.options import SCORE  # noqa: E402
from engine.scores.debias import debiased_score, draw  # noqa: E402
from engine.scores.service import model_outputs, split_rows  # noqa: E402
from engine.scores.tvd import explained_variance  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "debias.json"


def data_path(n: int = 20_000, features: int = 9, n_boot: int = SCORE.n_boot) -> dict:
    """9 features of 20,000 rows (one output that depends on the first three), each with its interval."""
    rng = np.random.default_rng(0)
    a = rng.normal(size=(n, features))
    y = 1 / (1 + np.exp(-(3 * a[:, 0] + np.sin(2 * a[:, 1]) + 0.5 * a[:, 2]))) + 0.1 * rng.normal(size=n)
    start = time.perf_counter()
    scores = [explained_variance(y, a[:, j], n_boot=n_boot, seed=0) for j in range(features)]
    seconds = time.perf_counter() - start
    return {
        "rows": n,
        "features": features,
        "n_boot": n_boot,
        "seconds": round(seconds, 3),
        "seconds_per_feature": round(seconds / features, 3),
        "scores": [round(s.score, 4) for s in scores],
    }


def debiased(n_real: int = 100, k: int = 8, per_value: int = 32, feature: str = "ventricle_volume") -> dict:
    dataset = open_dataset("synthbrain")
    model, card = load_model("synthbrain-diagnosis")
    generator = load_diffusion("synthbrain")
    rows = split_rows(dataset, "test")[:n_real]
    real = dataset.table.iloc[rows].reset_index(drop=True)
    start = time.perf_counter()
    y = model_outputs(model, dataset, card.spec, rows)[:, 0]
    outputs_s = time.perf_counter() - start
    start = time.perf_counter()
    drawn = draw(model, generator, real, m_generated=k * per_value, seed=0, sampler=SamplerConfig.for_scores(generator))
    draw_s = time.perf_counter() - start
    start = time.perf_counter()
    result = debiased_score(
        y, drawn.twin[:, 0], real[feature].to_numpy(), drawn.gen[:, 0], drawn.gen_features[feature].to_numpy(), seed=0
    )
    score_s = time.perf_counter() - start
    return {
        "n_real": len(rows),
        "m_generated": int(drawn.gen.shape[0]),
        "feature": feature,
        "score": round(result.result.score, 4),
        "ci": [round(result.result.ci_low, 4), round(result.result.ci_high, 4)],
        "generator_only": round(result.gen.score, 4),
        "twin_correlation": round(result.twin_correlation, 3),
        "lambda": round(result.lam, 3),
        "real_outputs_s": round(outputs_s, 2),
        "twins_and_generated_s": round(draw_s, 2),
        "debiased_score_s": round(score_s, 2),
        "total_s": round(outputs_s + draw_s + score_s, 2),
    }


def main() -> None:
    first = data_path()
    print(
        f"data path: {first['features']} features x {first['rows']:,} rows, {first['n_boot']} draws: "
        f"{first['seconds']:.2f} s ({first['seconds_per_feature']:.3f} s a feature)"
    )
    second = debiased()
    print(
        f"debiased: N = {second['n_real']}, M = {second['m_generated']}: outputs {second['real_outputs_s']} s, "
        f"twins + generated {second['twins_and_generated_s']} s, score {second['debiased_score_s']} s; "
        f"total {second['total_s']} s (S = {second['score']} {second['ci']}, lambda {second['lambda']})"
    )
    OUT.write_text(json.dumps({"machine": describe(), "data_path": first, "debiased": second}, indent=2) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
