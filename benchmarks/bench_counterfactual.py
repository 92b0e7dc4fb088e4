"""Subjects' counterfactual scans (`engine.explanations.counterfactual`) checked, and timed, on SynthBrain's
test slices.

For every test subject (120), four edits — ventricles +10 mL, hippocampi -20%, age +10 years, head
size (icv) +10% — with the subject's other recorded features held, through the committed SynthBrain
diffusion model, for the zoo's diagnosis and shortcut classifiers. Reported:

* the no-change round trip: RMS against the slice and the classifier's output difference;
* the probe's reading of the changed feature on the counterfactual, |probe - asked| in SD units;
* where the edit lives: the share of |x' - x|^2 inside the feature's template structure, against
  edits of the same latent length in random directions;
* each classifier's output change per edit, beside what the real slices say: the partial effect of
  the same change in a linear regression of the classifier's outputs on all the features over the
  dataset's 400 real subjects (the shortcut model's output should rise with head size);
* seconds per counterfactual (models loaded, the first call not counted).

    .venv/bin/python benchmarks/bench_counterfactual.py    # writes benchmarks/results/counterfactual.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.machine import describe  # noqa: E402
from engine.cards import ModelRef  # noqa: E402
from engine.data.defaults import open_dataset  # noqa: E402
from engine.diffusion import load_diffusion  # noqa: E402
from engine.explanations.counterfactual import parse_change, subject_counterfactual  # noqa: E402
from engine.models import load  # noqa: E402
from engine.models.zoo import forward  # noqa: E402
from engine.scores.service import split_rows  # noqa: E402

MODELS = ("synthbrain-diagnosis", "synthbrain-shortcut")
EDITS = (("ventricle_volume", "+10"), ("hippocampal_volume", "-20%"), ("age", "+10"), ("icv", "+10%"))


def _partial_effects(net, dataset, diffusion) -> np.ndarray:
    """Per numeric feature: d output / d feature in a linear regression on all the features (real slices)."""
    features = dataset.table[diffusion.numeric_features].to_numpy(float)
    with torch.inference_mode():
        y = forward(net, dataset.model_inputs(diffusion.spec).float())[:, 0].numpy()
    design = np.c_[np.ones(len(features)), features]
    return np.linalg.lstsq(design, y, rcond=None)[0][1:]


def main() -> None:
    torch.set_num_threads(1)
    dataset = open_dataset("synthbrain")
    diffusion = load_diffusion("synthbrain")
    subjects = [dataset.subjects[r] for r in split_rows(dataset, "test")]
    results: dict = {"machine": describe(), "n_subjects": len(subjects), "edits": {}, "models": {}}
    rows, seconds = [], []
    for name in MODELS:
        net, card = load(ModelRef.builtin(name), "cpu")
        slopes = _partial_effects(net, dataset, diffusion)
        subject_counterfactual(net, card, diffusion, dataset, subjects[0], "age", 70.0)  # warm-up
        for feature, change in EDITS:
            slope = slopes[diffusion.numeric_features.index(feature)]
            for subject in subjects:
                before = float(dataset.table[feature].iloc[dataset.index_of(subject)])
                cf = subject_counterfactual(
                    net, card, diffusion, dataset, subject, feature, parse_change(change, before)
                )
                seconds.append(cf.seconds)
                row = cf.to_json() | {"model": name, "change": change}
                row["regression_change"] = float(slope * (cf.value_asked - before))
                rows.append(row)
    for name in MODELS:
        mine = [r for r in rows if r["model"] == name]
        round_trip = np.abs([r["reconstruction_output_change"] for r in mine])
        results["models"][name] = {
            "no_change_output_difference_mean_abs": float(round_trip.mean()),
            "no_change_output_difference_max_abs": float(round_trip.max()),
            "output_change": {
                f"{feature} {change}": {
                    "counterfactual_mean": float(
                        np.mean([r["output_change"] for r in mine if r["feature"] == feature])
                    ),
                    "regression_on_real_slices_mean": float(
                        np.mean([r["regression_change"] for r in mine if r["feature"] == feature])
                    ),
                    "correlation_across_subjects": float(
                        np.corrcoef(
                            [r["output_change"] for r in mine if r["feature"] == feature],
                            [r["regression_change"] for r in mine if r["feature"] == feature],
                        )[0, 1]
                    )
                    if change.endswith("%")
                    else None,  # an absolute change has the same regression effect for every subject
                }
                for feature, change in EDITS
            },
        }
    first = [r for r in rows if r["model"] == MODELS[0]]  # the images do not depend on the classifier
    for feature, change in EDITS:
        mine = [r for r in first if r["feature"] == feature]
        entry = {
            "probe_error_sd_median": float(np.median([r["probe_error_sd"] for r in mine])),
            "probe_error_sd_p90": float(np.quantile([r["probe_error_sd"] for r in mine], 0.9)),
            "probe_change_over_asked_change_median": float(
                np.median(
                    [(r["probe_after"] - r["probe_before"]) / (r["value_asked"] - r["value_before"]) for r in mine]
                )
            ),
            "clamped": sum(r["clamped"] is not None for r in mine),
        }
        if mine[0]["locality"]:
            entry["structure"] = mine[0]["locality"]["structure"]
            entry["structure_area_share"] = mine[0]["locality"]["structure_area"]
            entry["energy_share_in_structure_median"] = float(np.median([r["locality"]["share"] for r in mine]))
            entry["random_direction_share_median"] = float(np.median([r["locality"]["random_share"] for r in mine]))
            entry["near_area_share"] = mine[0]["locality"]["near_area"]
            entry["energy_share_near_structure_median"] = float(np.median([r["locality"]["share_near"] for r in mine]))
            entry["random_direction_share_near_median"] = float(
                np.median([r["locality"]["random_share_near"] for r in mine])
            )
        results["edits"][f"{feature} {change}"] = entry
    results["no_change_rms"] = {
        "mean": float(np.mean([r["reconstruction_rms"] for r in first])),
        "max": float(np.max([r["reconstruction_rms"] for r in first])),
    }
    results["seconds_per_counterfactual"] = {"median": float(np.median(seconds)), "max": float(np.max(seconds))}
    out = ROOT / "benchmarks" / "results" / "counterfactual.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: v for k, v in results.items() if k != "machine"}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
