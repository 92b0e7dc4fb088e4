"""Scores against a known truth: the target a built-in model was trained to predict, as a function of the
features (`target_values`), the scores a perfect model of it would get (`truth_table`), and the pass/fail rule
the ground-truth page shares (`against_truth`)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from engine.cards import ModelCard
from engine.data import Dataset
from engine.models.train import TARGETS
from engine.options import SCORE
from engine.scores.tvd import score_table


def target_values(dataset: Dataset, card: ModelCard, explain: str = "output") -> tuple[np.ndarray, str] | None:
    """(g(features) per row, its definition) for a built-in model whose target is known on an embedded
    dataset: the target itself, or for a classifier the Bayes-optimal probability (its logit where the logit
    is explained); None for any other model or dataset."""
    target = TARGETS.get(card.target) if card.target else None
    if target is None or dataset.truth is None or card.dataset != dataset.name:
        return None
    if target.reference is not None:
        p = np.clip(target.reference(dataset.table, dataset.truth), 1e-6, 1 - 1e-6)
        if explain == "probability":
            return p, f"the Bayes-optimal probability: {target.definition}"
        return np.log(p / (1 - p)), f"logit of the Bayes-optimal probability: {target.definition}"
    return np.asarray(target.values(dataset.table, dataset.truth), float), target.definition


def truth_table(dataset: Dataset, card: ModelCard, explain: str, features) -> tuple[pd.DataFrame, str] | None:
    """S(A) of the model's known target g(features) on every row, what a perfect model of its target would
    score (the data-path estimator on exact g values), and g's definition; None where no target is known."""
    found = target_values(dataset, card, explain)
    if found is None:
        return None
    g, definition = found
    values = {f: dataset.feature_values(f) for f in features}
    cats = tuple(f for f in features if f in dataset.categorical_features)
    table = score_table(g, values, categorical=cats, output_names=["truth"], n_boot=SCORE.n_boot, seed=SCORE.seed)
    return table, definition


def against_truth(estimate: pd.DataFrame, truth: pd.DataFrame, tolerance: float) -> pd.DataFrame:
    """One row per feature: the estimate, its interval, the truth, |estimate − truth| and the result, "pass"
    when the estimate is within `tolerance` of the truth or its interval covers it, "fail" otherwise (or
    when the estimate has no score). `estimate` and `truth` are score tables (feature, score, ci_low,
    ci_high, status)."""
    merged = estimate.set_index("feature")[["score", "ci_low", "ci_high", "status"]].join(
        truth.set_index("feature")[["score"]].rename(columns={"score": "truth"})
    )
    gap = (merged["score"] - merged["truth"]).abs()
    covers = (merged["ci_low"] <= merged["truth"]) & (merged["truth"] <= merged["ci_high"])
    passes = merged["status"].eq("ok") & ((gap <= tolerance) | covers)
    return pd.DataFrame(
        {
            "feature": merged.index,
            "estimate": merged["score"].round(3),
            "interval": [
                f"{lo:.2f}–{hi:.2f}" if np.isfinite(lo) else ""
                for lo, hi in zip(merged["ci_low"], merged["ci_high"], strict=True)
            ],
            "truth": merged["truth"].round(3),
            "gap": gap.round(3),
            "result": np.where(passes, "pass", "fail"),
        }
    ).reset_index(drop=True)
