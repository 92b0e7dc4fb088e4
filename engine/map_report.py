"""`python -m engine maps`: attribution maps of chosen images, how good each method's maps are
(`engine.map_quality`), and what each region carries (`engine.regions`).

    report = map_report(model, card, dataset, rows, methods)   # MapReport
    write_map_report(report, "quality.csv")                    # + quality-regions.csv, quality-maps.npz

The quality table has one row per method: the metrics of `map_quality.quality_table` (faithfulness,
completeness, complexity and, for a glass-box model whose read pixels are exact, localisation), the
local Lipschitz estimate (stability) for the methods without sampling (nor stored maps: XtrAIn's are of the
tracked images only, which `default_methods` then includes), and the random-logit test
for models with two or more outputs. Times are measured per method and stated in the table.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from engine import baselines, map_quality, xtrain
from engine.cards import ModelCard
from engine.data import Dataset
from engine.errors import EveInputError
from engine.regions import region_shares, regions_for

LIPSCHITZ_SAMPLES = 5  # perturbations per image for the local Lipschitz estimate


def truth_mask(model, spec, images: torch.Tensor | None = None) -> np.ndarray | None:
    """The pixels a glass-box model reads, where they are exactly known: the ground truth of the
    localisation metrics. DarkPixelCount: its window, (S, S). BrightAreaAboveBackground (shapes'
    area read-out): each image's object, the pixels above its threshold (1 + background) / 2 that it
    counts, (B, 1, S, S) for `images`. None for any other model (or without images for the second)."""
    from engine.models.architectures import BrightAreaAboveBackground, DarkPixelCount

    if spec.is_volume:
        return None
    if isinstance(model, DarkPixelCount):
        return model.mask[0, 0].bool().cpu().numpy()  # its window (every pixel when it has none)
    if isinstance(model, BrightAreaAboveBackground) and images is not None:
        with torch.no_grad():
            return (images > model.threshold(images)).cpu().numpy()
    return None


@dataclass
class MapReport:
    """Maps per method (B, 1, ...), the quality table, the region shares and what was explained."""

    subjects: list[str]
    maps: dict[str, np.ndarray]
    quality: pd.DataFrame
    regions: pd.DataFrame
    metadata: dict = field(default_factory=dict)


def map_report(
    model,
    card: ModelCard,
    dataset: Dataset,
    rows,
    methods: list[str] | None = None,
    *,
    target: int = 0,
    region_kind: str = "grid",
    seed: int = 0,
    progress: Callable[[int, int, str], None] | None = None,
) -> MapReport:
    """Maps of `rows`' model inputs by every method (default: all that apply), their quality and their
    reading by region; `progress(done, total, method)` after each method."""
    rows = [int(r) for r in rows]
    if not rows:
        raise EveInputError("No images chosen: give at least one subject (--subjects) or a split with rows.")
    images = dataset.model_inputs(card.spec, rows)
    methods = default_methods(model, images) if methods is None else list(methods)
    for method in methods:
        baselines.method_info(method)  # raises for an unknown name
        why = baselines.unavailable(model, method)
        if why:
            raise EveInputError(f"{method} cannot explain {card.name} ({why}): leave it out of --methods.")
    chosen = regions_for(region_kind, card.spec)
    maps, seconds = {}, {}
    for i, method in enumerate(methods):
        params = {"regions": chosen.labels} if baselines.method_info(method).regional else {}
        if baselines.method_info(method).random:
            params["seed"] = seed
        start = time.perf_counter()
        maps[method] = baselines.attribution_map(model, images, method, target=target, **params)
        seconds[method] = (time.perf_counter() - start) / len(rows)
        if progress:
            progress(i + 1, len(methods), method)
    mask = truth_mask(model, card.spec, images)
    quality = map_quality.quality_table(
        model, images, maps, target, masks=None if mask is None else torch.from_numpy(mask)
    )
    quality["seconds_per_map"] = quality["method"].map(seconds)
    quality["local_lipschitz"] = [_lipschitz(model, images, m, target, seed) for m in quality["method"]]
    quality["random_logit"] = [_random_logit(model, images, m, target, card, seed) for m in quality["method"]]
    shares = []
    with torch.no_grad():
        difference = (model(images) - model(torch.zeros_like(images)))[:, target].numpy()
    for method, found in maps.items():
        regional = baselines.method_info(method).regional
        for b, row in enumerate(rows):
            table = region_shares(found[b, 0].numpy(), chosen, regional=regional, whole=float(difference[b]))
            shares.append(table.assign(method=method, subject=dataset.subjects[row]))
    regions = pd.concat(shares, ignore_index=True)[["method", "subject", "region", "pixels", "attribution", "share"]]
    metadata = {
        "model": card.name,
        "dataset": dataset.name,
        "output": card.output_names[target],
        "regions": chosen.source,
        "truth_mask": None if mask is None else "the pixels the glass-box model reads (engine.map_report.truth_mask)",
        "metrics": {**map_quality.METRICS, **EXTRA_METRICS},
    }
    return MapReport(
        [dataset.subjects[r] for r in rows], {m: v.numpy() for m, v in maps.items()}, quality, regions, metadata
    )


EXTRA_METRICS = {
    "seconds_per_map": "wall time of one map on this machine (the batch's time over its images)",
    "local_lipschitz": "max ‖φ(x + δ) − φ(x)‖ / ‖δ‖ over small perturbations δ; lower is more stable "
    "(Alvarez-Melis & Jaakkola 2018); not computed for the sampling methods",
    "random_logit": "rank correlation of the map with the map of a random other output; lower is better "
    "(Sixt, Granz & Landgraf 2020); models with 2 or more outputs only",
}


def default_methods(model, images: torch.Tensor) -> list[str]:
    """Every method that applies to `model` (`baselines.available_methods`, the training trajectory's
    included), but XtrAIn's stored maps when an image is not one that training tracked."""
    methods = baselines.available_methods(model, training=True)
    if None in xtrain.tracked_rows(model, images):
        methods = [m for m in methods if not baselines.method_info(m).stored]
    return methods


def _recomputable(method: str) -> bool:
    """Whether a method can map perturbed images: not a sampling one (too slow), not a stored one."""
    info = baselines.method_info(method)
    return not (info.slow or info.stored)


def _lipschitz(model, images, method: str, target: int, seed: int) -> float:
    if not _recomputable(method):
        return float("nan")
    params = {"seed": seed} if baselines.method_info(method).random else {}

    def explain(x):
        return baselines.attribution_map(model, x, method, target=target, **params)

    values = map_quality.local_lipschitz(explain, images, n_perturb_samples=LIPSCHITZ_SAMPLES, seed=seed)
    return float(np.nanmean(values))


def _random_logit(model, images, method: str, target: int, card: ModelCard, seed: int) -> float:
    if len(card.output_names) < 2 or not _recomputable(method):
        return float("nan")
    params = {"seed": seed} if baselines.method_info(method).random else {}

    def explain(x, other):
        return baselines.attribution_map(model, x, method, target=other, **params)

    return float(np.nanmean(map_quality.random_logit(explain, images, target, len(card.output_names), seed=seed)))


def write_map_report(report: MapReport, out: str | Path) -> list[Path]:
    """The quality table as CSV at `out`; beside it `<stem>-regions.csv` and the maps, `<stem>-maps.npz`."""
    out = Path(out)
    if out.suffix != ".csv":
        raise EveInputError(f"--out {out}: give a .csv path for the quality table (the maps go beside it).")
    out.parent.mkdir(parents=True, exist_ok=True)
    regions = out.with_name(f"{out.stem}-regions.csv")
    arrays = out.with_name(f"{out.stem}-maps.npz")
    report.quality.to_csv(out, index=False)
    report.regions.to_csv(regions, index=False)
    np.savez_compressed(arrays, subjects=np.asarray(report.subjects), **report.maps)
    return [out, regions, arrays]


def run_maps_command(args) -> None:
    """`python -m engine maps`: the report for the command's model, images and methods, written and summarised."""
    from tqdm import tqdm

    from engine.report import command_model
    from engine.scoring import open_dataset, split_rows

    model, card, ref, device = command_model(args)
    target = card.output_index(args.output) if args.output is not None else 0
    dataset = open_dataset(args.data)
    if args.subjects:
        rows = [dataset.index_of(s.strip()) for s in args.subjects.split(",") if s.strip()]
    else:
        if args.n < 1:
            raise EveInputError(f"--n {args.n}: give 1 or more images.")
        rows = split_rows(dataset, args.split)[: args.n]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
    if methods is None:
        methods = default_methods(model, dataset.model_inputs(card.spec, rows))
    with tqdm(total=len(methods), unit="method", desc="maps") as bar:
        report = map_report(
            model,
            card,
            dataset,
            rows,
            methods,
            target=target,
            region_kind=args.regions,
            seed=args.seed,
            progress=lambda done, total, method: bar.update(1),
        )
    for path in write_map_report(report, args.out):
        print(f"wrote {path}")
    shown = report.quality.set_index("method")[["deletion_auc", "insertion_auc", "sparseness", "seconds_per_map"]]
    print(shown.to_string(float_format=lambda v: f"{v:.3g}"))
