"""Checks of the diffusion model against truth (`python benchmarks/validate_diffusion.py`).

1. Scores: for each zoo classifier of the dataset and each feature, the diffusion-based
   score (K values x N samples, guidance 1; free features from the training table, and from
   the denoiser's condition dropout as `diffusion_model_free`; both without read-out guidance,
   and the table way with it as `diffusion_readout_guided`, `SamplerConfig.for_scores`, the
   default of `diffusion_score`)
   next to the data-based score on the default set
   (all rows: 400 SynthBrain subjects, 3,000 shapes; and the test split the classifier never
   saw), and an ample-data reference on generator subjects the classifier never saw
   (SynthBrain: 1,000 fresh ones plus, when cached, the 15,000 extra subjects the diffusion
   model was trained on; shapes: `--n-fresh` freshly rendered images). How far a default-set
   data score strays by chance is measured too: the sd of the data score over 30 random
   subsets of the reference subjects of the default set's size.
2. Constraint error: probe-measured value vs the asked value, per feature, as MAE / SD of
   the feature in the data; next to the probe's own held-out MAE / SD on real images. For
   both ways of drawing the free features (the table way conditions jointly), and with the
   optional read-out guidance (which also gives a third score column, `diffusion_readout_guided`).
3. Spread of the unconstrained features: conditioning on feature i = a_k, the sd of
   each other feature j (probe-measured) in the samples vs its sd (probe-measured) among
   fresh generator subjects whose A_i lies in the quantile bin around a_k; both ways.

Writes `assets/diffusion/<dataset>-validation.json` and prints markdown tables.
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
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from engine.data.defaults import load_default
from engine.data.shapes import sample_features
from engine.data.shapes_images import rendered_shapes
from engine.data.synthbrain_slices import cached_extra_subjects, extra_cache_path
from engine.diffusion import READOUT_GUIDANCE, SamplerConfig, load_diffusion, sample_seed
from engine.diffusion.storage import ASSETS
from engine.models.zoo import list_cards, load_model
from engine.scores.generator import constraint_errors, diffusion_score, feature_values
from engine.scores.tvd import explained_variance

MODELS = {
    "synthbrain": ("synthbrain-diagnosis", "synthbrain-shortcut"),
    "shapes": ("shapes-size-texture", "shapes-elongated", "shapes-glass-area", "shapes-glass-background"),
}
# conditions of the spread check: the features with the strongest (SynthBrain) or no (shapes:
# independent by design) dependence on the others
SPREAD_CONDITIONS = {"synthbrain": ("ventricle_volume", "age", "icv"), "shapes": ("size", "aspect", "texture")}


def markdown(frame: pd.DataFrame, digits: int = 3) -> str:
    """A pipe table (pandas' to_markdown needs tabulate, which Eve does not depend on)."""

    def cell(v):
        return f"{v:.{digits}f}" if isinstance(v, (float, np.floating)) else str(v)

    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def _outputs(model, images: torch.Tensor, batch: int = 256) -> np.ndarray:
    with torch.inference_mode():
        return torch.cat([model(images[i : i + batch]) for i in range(0, len(images), batch)])[:, 0].double().numpy()


def score_comparison(diffusion, models, k_values=8, n_per_value=64, fresh=None, seed=0, log=print) -> pd.DataFrame:
    """Per zoo model and feature: data-based scores and the diffusion score three ways (the table
    way unguided, the denoiser's way unguided, and `SamplerConfig.for_scores` when it guides)."""
    scores = SamplerConfig.for_scores(diffusion)
    unguided = scores.override(readout_guidance=0.0)
    ds = load_default(diffusion.dataset)
    images = ds.model_inputs(diffusion.spec)
    test = ds.split_indices("test")
    rows = []
    for name in models:
        model, card = load_model(name)
        y = _outputs(model, images)
        y_fresh = _outputs(model, fresh[0]) if fresh is not None else None
        for feature in diffusion.features:
            categorical = diffusion.feature(feature).is_categorical
            a = ds.feature_values(feature)
            data_all = explained_variance(y, a, categorical=categorical, seed=seed)
            data_test = explained_variance(y[test], a[test], categorical=categorical, seed=seed)
            t0 = time.time()
            diff, _ = diffusion_score(
                model, card, diffusion, feature, k_values=k_values, n_per_value=n_per_value, seed=seed, sampler=unguided
            )
            seconds = time.time() - t0
            dropout, _ = diffusion_score(
                model,
                card,
                diffusion,
                feature,
                k_values=k_values,
                n_per_value=n_per_value,
                seed=seed,
                sampler=SamplerConfig(free_features="model"),
            )
            guided = None
            if scores.readout_guidance:
                guided, _ = diffusion_score(
                    model,
                    card,
                    diffusion,
                    feature,
                    k_values=k_values,
                    n_per_value=n_per_value,
                    seed=seed,
                    sampler=scores,
                )
            row = {
                "model": name,
                "feature": feature,
                "data_all": data_all.score,
                "data_all_ci": [data_all.ci_low, data_all.ci_high],
                "data_test": data_test.score,
                "data_test_ci": [data_test.ci_low, data_test.ci_high],
                "diffusion": diff.score,
                "diffusion_ci": [diff.ci_low, diff.ci_high],
                "diffusion_seconds": seconds,
                "diffusion_model_free": dropout.score,
            }
            if guided is not None:
                row |= {
                    "diffusion_readout_guided": guided.score,
                    "guided_vs_all": guided.score - data_all.score,
                    "diffusion_readout_guided_ci": [guided.ci_low, guided.ci_high],
                }
            if y_fresh is not None:
                a_fresh = fresh[1][feature].to_numpy()
                ref = explained_variance(y_fresh, a_fresh, categorical=categorical, seed=seed)
                rng = np.random.default_rng(seed)
                subsets = [rng.choice(len(y_fresh), len(y), replace=False) for _ in range(30)]
                subset_scores = [
                    explained_variance(y_fresh[s], a_fresh[s], categorical=categorical, n_boot=0).score for s in subsets
                ]
                row |= {
                    "generator_ref": ref.score,
                    "generator_ref_ci": [ref.ci_low, ref.ci_high],
                    "data_all_sd_by_chance": float(np.std(subset_scores, ddof=1)),
                    "diff_vs_ref": diff.score - ref.score,
                    "model_free_vs_ref": dropout.score - ref.score,
                }
                if guided is not None:
                    row["guided_vs_ref"] = guided.score - ref.score
            row["diff_vs_all"] = row["diffusion"] - row["data_all"]
            rows.append(row)
            log(
                f"{name} {feature}: data {data_all.score:.3f} test {data_test.score:.3f} "
                f"ref {row.get('generator_ref', np.nan):.3f} diffusion {diff.score:.3f} "
                f"(free by the model {dropout.score:.3f})"
            )
    return pd.DataFrame(rows)


def rankings(table: pd.DataFrame, column: str) -> dict:
    out = {}
    for name, group in table.groupby("model"):
        rho = spearmanr(group[column], group["diffusion"]).statistic
        order_data = group.sort_values(column, ascending=False)["feature"].tolist()
        order_diff = group.sort_values("diffusion", ascending=False)["feature"].tolist()
        out[name] = {"spearman": float(rho), "top3_data": order_data[:3], "top3_diffusion": order_diff[:3]}
    return out


def spread_check(
    diffusion, fresh, conditions, k_values=5, n_per_value=64, seed=0, sampler: SamplerConfig | None = None
) -> pd.DataFrame:
    """sd of each other feature (probe-measured) given A_i = a_k: samples vs generator subjects
    in the bin of A_i around a_k (equal-mass bins; the probe's noise is in both)."""
    images, table = fresh
    measured_fresh = diffusion.measure_features(images)
    rows = []
    for feature in conditions:
        values, _ = feature_values(diffusion, feature, k_values)
        a = table[feature].to_numpy(float)
        edges = np.quantile(a, np.linspace(0, 1, k_values + 1))
        for k, value in enumerate(values):
            in_bin = (a >= edges[k]) & (a <= edges[k + 1])
            x = diffusion.sample({feature: value}, n_per_value, sample_seed(seed, 100 + k), sampler)
            measured = diffusion.measure_features(x)
            for other in diffusion.card.probe_features:
                if other == feature:
                    continue
                rows.append(
                    {
                        "condition": feature,
                        "value": value,
                        "other": other,
                        "sd_samples": float(measured[other].std(ddof=1)),
                        "sd_data": float(measured_fresh[other][in_bin].std(ddof=1)),
                        "mean_samples": float(measured[other].mean()),
                        "mean_data": float(measured_fresh[other][in_bin].mean()),
                    }
                )
    out = pd.DataFrame(rows)
    out["sd_ratio"] = out["sd_samples"] / out["sd_data"]
    sd_other = {f: diffusion.feature(f).data_sd for f in diffusion.card.probe_features}
    out["mean_shift_over_sd"] = (out["mean_samples"] - out["mean_data"]) / out["other"].map(sd_other)
    return out


def fresh_subjects(diffusion, n: int) -> tuple[torch.Tensor, pd.DataFrame] | None:
    """Generator subjects that neither the classifiers nor the diffusion model trained on (seed
    2000; the default sets use 0, the diffusion extras 1000), plus, for SynthBrain, the cached
    extras of the diffusion model (which the classifiers never saw)."""
    if not n:
        return None
    if diffusion.dataset == "shapes":
        return rendered_shapes(n, seed=2000)[0], sample_features(n, seed=2000)
    fresh = cached_extra_subjects(n, diffusion.spec, seed=2000)
    config = diffusion.card.training["config"]
    extra = reference_extras(diffusion.spec, config["n_extra"], config["extra_seed"])
    if extra is not None:
        fresh = torch.cat([fresh[0], extra[0]]), pd.concat([fresh[1], extra[1]], ignore_index=True)
    return fresh


def reference_extras(spec, n: int, seed: int):
    """The diffusion model's extra training subjects if they are cached (never generated here:
    15,000 take ~45 min), else None."""
    return cached_extra_subjects(n, spec, seed) if n and extra_cache_path(n, spec, seed).is_file() else None


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python benchmarks/validate_diffusion.py", description=__doc__)
    parser.add_argument("--dataset", default="synthbrain")
    parser.add_argument("--model", default=None, help="a diffusion card path (default: the committed model)")
    parser.add_argument("--k-values", type=int, default=8)
    parser.add_argument("--n-per-value", type=int, default=256, help="samples per value (at 64 score CIs are ~+-0.05)")
    parser.add_argument(
        "--n-fresh",
        type=int,
        default=None,
        help="fresh generator subjects for the references (default 1000 SynthBrain, 16000 shapes)",
    )
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    diffusion = load_diffusion(args.model or args.dataset)
    if args.n_fresh is None:
        args.n_fresh = 16000 if diffusion.dataset == "shapes" else 1000
    fresh = fresh_subjects(diffusion, args.n_fresh)
    report = {}
    constraint = constraint_errors(diffusion, args.k_values, args.n_per_value)
    print("constraint, free features by the model (one feature asked):")
    print(markdown(constraint))
    report["constraint"] = constraint.to_dict("records")
    guide = SamplerConfig(readout_guidance=READOUT_GUIDANCE)
    if diffusion.readout is not None:
        guided = constraint_errors(diffusion, args.k_values, args.n_per_value, sampler=guide)
        print(f"with read-out guidance (strength {READOUT_GUIDANCE}):")
        print(markdown(guided))
        report["constraint_readout_guidance"] = {"strength": READOUT_GUIDANCE, "rows": guided.to_dict("records")}
    if diffusion.feature_table is not None:
        table_way = SamplerConfig(free_features="table")
        joint = constraint_errors(diffusion, args.k_values, args.n_per_value, sampler=table_way)
        print("constraint, free features from the training table (the joint condition, as the score):")
        print(markdown(joint))
        report["constraint_table"] = joint.to_dict("records")
        if diffusion.readout is not None:
            joint_guided = constraint_errors(
                diffusion,
                args.k_values,
                args.n_per_value,
                sampler=table_way.override(readout_guidance=READOUT_GUIDANCE),
            )
            print(f"... with read-out guidance (strength {READOUT_GUIDANCE}):")
            print(markdown(joint_guided))
            report["constraint_table_readout_guidance"] = {
                "strength": READOUT_GUIDANCE,
                "rows": joint_guided.to_dict("records"),
            }
    if fresh is not None:
        ways = ["model"] + (["table"] if diffusion.feature_table is not None else [])
        for way in ways:
            spread = spread_check(
                diffusion, fresh, SPREAD_CONDITIONS[diffusion.dataset], sampler=SamplerConfig(free_features=way)
            )
            summary = spread.groupby("condition")[["sd_ratio", "mean_shift_over_sd"]].agg(
                lambda s: float(np.median(np.abs(s)) if s.name == "mean_shift_over_sd" else np.median(s))
            )
            print(f"spread of the other features, free features by the {way}:")
            print(
                markdown(
                    spread.groupby(["condition", "other"])[["sd_ratio", "mean_shift_over_sd"]].mean().reset_index(), 2
                )
            )
            suffix = "" if way == "model" else "_table"
            report[f"spread{suffix}"] = spread.to_dict("records")
            report[f"spread_summary{suffix}"] = summary.to_dict()
    zoo = {card.name for card in list_cards()}
    models = [name for name in MODELS.get(diffusion.dataset, ()) if name in zoo]
    if models:
        table = score_comparison(diffusion, models, args.k_values, args.n_per_value, fresh)
        cols = [
            "model",
            "feature",
            "data_all",
            "data_test",
            "generator_ref",
            "data_all_sd_by_chance",
            "diffusion",
            "diff_vs_all",
            "diff_vs_ref",
            "diffusion_model_free",
            "model_free_vs_ref",
            "diffusion_readout_guided",
            "guided_vs_all",
        ]
        print(markdown(table[[c for c in cols if c in table]]))
        report["scores"] = table.to_dict("records")
        report["ranking_vs_all"] = rankings(table, "data_all")
        if "generator_ref" in table:
            report["ranking_vs_generator_ref"] = rankings(table, "generator_ref")
        print(json.dumps({k: v for k, v in report.items() if k.startswith("ranking")}, indent=1))
    report["settings"] = vars(args) | {"reference_subjects": 0 if fresh is None else len(fresh[1])}
    folder = Path(args.model).parent if args.model else ASSETS
    (folder / f"{diffusion.dataset}-validation.json").write_text(json.dumps(report, indent=1, default=float))


if __name__ == "__main__":
    main()
