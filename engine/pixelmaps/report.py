"""`python -m engine maps`: attribution maps of chosen images, how good each method's maps are
(`engine.pixelmaps.quality`), and what each region carries (`engine.pixelmaps.regions`).

    report = map_report(model, card, dataset, rows, methods)   # MapReport
    write_map_report(report, "quality.csv")                    # + quality-regions.csv, quality-maps.npz

The quality table has one row per method: the metrics of `quality.quality_table` (faithfulness,
completeness, complexity and, for a glass-box model whose read pixels are exact, localisation), the
local Lipschitz estimate (stability) for the methods without sampling (nor stored maps: XtrAIn's are of the
tracked images only, which `default_methods` then includes), and the random-logit test
for models with two or more outputs. Times are measured per method and stated in the table.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from engine.cards import ModelCard
from engine.data import Dataset
from engine.errors import EveInputError
from engine.models import xtrain
from engine.models.zoo import forward
from engine.paths import output_path
from engine.pixelmaps import methods, quality
from engine.pixelmaps.regions import region_shares, regions_for
from engine.progress import Progress

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
    chosen_methods: list[str] | None = None,
    *,
    target: int = 0,
    region_kind: str = "grid",
    seed: int = 0,
    progress: Progress | None = None,
) -> MapReport:
    """Maps of `rows`' model inputs by every method (default: all that apply), their quality
    (`quality_report`) and their reading by region; `progress(done, total)` after each method."""
    rows = [int(r) for r in rows]
    if not rows:
        raise EveInputError("No images chosen: give at least one subject (--subjects) or a split with rows.")
    images = dataset.model_inputs(card.spec, rows)
    chosen_methods = default_methods(model, images) if chosen_methods is None else list(chosen_methods)
    for method in chosen_methods:
        methods.method_info(method)  # raises for an unknown name
        why = methods.unavailable(model, method)
        if why:
            raise EveInputError(f"{method} cannot explain {card.name} ({why}): leave it out of --methods.")
    chosen = regions_for(region_kind, card.spec)
    maps, seconds = {}, {}
    for i, method in enumerate(chosen_methods):
        start = time.perf_counter()
        maps[method] = methods.attribution_map(
            model, images, method, target=target, **method_params(method, chosen, seed)
        )
        seconds[method] = (time.perf_counter() - start) / len(rows)
        if progress:
            progress(i + 1, len(chosen_methods))
    assessed = quality_report(model, card, images, maps, target, seconds=seconds, seed=seed)
    shares = []
    difference = output_difference(model, images, target)
    for method, found in maps.items():
        regional = methods.method_info(method).regional
        for b, row in enumerate(rows):
            table = region_shares(found[b, 0].numpy(), chosen, regional=regional, whole=float(difference[b]))
            shares.append(table.assign(method=method, subject=dataset.subjects[row]))
    columns = [
        "method",
        "subject",
        "region",
        "pixels",
        "attribution",
        "direction",
        "share",
        "of_difference",
        "separable",
    ]
    regions = pd.concat(shares, ignore_index=True)[columns]
    metadata = {
        "model": card.name,
        "dataset": dataset.name,
        "output": card.output_names[target],
        "regions": chosen.source,
        "truth_mask": None
        if truth_mask(model, card.spec, images) is None
        else "the pixels the glass-box model reads (engine.pixelmaps.report.truth_mask)",
        "metrics": QUALITY_COLUMNS,
    }
    return MapReport(
        [dataset.subjects[r] for r in rows], {m: v.numpy() for m, v in maps.items()}, assessed, regions, metadata
    )


def default_methods(model, images: torch.Tensor) -> list[str]:
    """Every method that applies to `model` (`methods.available_methods`, the training trajectory's
    included), but XtrAIn's stored maps when an image is not one that training tracked."""
    found = methods.available_methods(model, training=True)
    if None in xtrain.tracked_rows(model, images):
        found = [m for m in found if not methods.method_info(m).stored]
    return found


# the one quality table: column -> what it measures (the CSV's and the app's header, in its words)
QUALITY_COLUMNS = {
    **quality.METRICS,
    "randomised_spearman_abs": "rank correlation of |map| with the map after randomising every layer (Adebayo et al. "
    "2018); lower is better; not for TorchScript models",
    "randomised_spearman": "the same, signed maps",
    "infidelity": "captum's infidelity: E[(δ·φ − (f(x) − f(x − δ)))²] over small perturbations δ; lower is better",
    "sensitivity_max": "captum's max-sensitivity: the largest change of the map under small perturbations; lower is "
    "better",
    "local_lipschitz": "max ‖φ(x + δ) − φ(x)‖ / ‖δ‖ over small perturbations δ; lower is more stable "
    "(Alvarez-Melis & Jaakkola 2018)",
    "random_logit": "rank correlation of the map with the map of a random other output; lower is better "
    "(Sixt, Granz & Landgraf 2020); models with 2 or more outputs only",
    "seconds_per_map": "wall time of one map on this machine (the batch's time over its images)",
}
CAPTUM_PERTURBATIONS = 5  # perturbations per image for infidelity and max-sensitivity


def method_params(method: str, regions, seed: int) -> dict:
    """The keyword arguments a method's map takes here: the regions of a region method, the seed of a random one."""
    info = methods.method_info(method)
    return {**({"regions": regions.labels} if info.regional else {}), **({"seed": seed} if info.random else {})}


def output_difference(model, images: torch.Tensor, target: int) -> np.ndarray:
    """f(x) − f(black) per image (B,): what a complete map's values add up to, and a region table's whole."""
    outputs = forward(model, torch.cat([images, torch.zeros_like(images)]))[:, target].numpy()
    return outputs[: len(images)] - outputs[len(images) :]


def quality_report(
    model,
    card: ModelCard,
    images: torch.Tensor,
    maps: dict[str, torch.Tensor],
    target: int = 0,
    *,
    seconds: dict[str, float] | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """How good each method's maps of `images` are: one row per method, the columns of `QUALITY_COLUMNS`
    (NaN where a metric does not apply: a sampling or stored method is not re-run on perturbed images, a
    TorchScript model cannot be randomised, a one-output model has no other logit). The CLI's `maps` and
    the app's quality table are this table."""
    steps = 4
    mask = truth_mask(model, card.spec, images)
    table = quality.quality_table(model, images, maps, target, masks=None if mask is None else torch.from_numpy(mask))
    if progress:
        progress(1, steps)
    rerun = [m for m in maps if _recomputable(m)]
    randomised = pd.DataFrame(columns=["method", "spearman_abs", "spearman"])
    if rerun and not methods.is_torchscript(model) and isinstance(model, torch.nn.Module):
        checks = methods.randomisation_check(model, images, rerun, target=target, seed=seed)
        randomised = checks[checks["step"] == checks["step"].max()]
    table["randomised_spearman_abs"] = table["method"].map(randomised.set_index("method")["spearman_abs"])
    table["randomised_spearman"] = table["method"].map(randomised.set_index("method")["spearman"])
    if progress:
        progress(2, steps)
    captum = methods.captum_metrics_table(
        model, images, rerun, target, n_perturb_samples=CAPTUM_PERTURBATIONS, seed=seed
    )
    captum = captum.set_index("method") if len(captum) else pd.DataFrame(columns=["infidelity", "sensitivity_max"])
    table["infidelity"] = table["method"].map(captum["infidelity"])
    table["sensitivity_max"] = table["method"].map(captum["sensitivity_max"])
    if progress:
        progress(3, steps)
    table["local_lipschitz"] = [_lipschitz(model, images, m, target, seed) for m in table["method"]]
    table["random_logit"] = [_random_logit(model, images, m, target, card, seed) for m in table["method"]]
    table["seconds_per_map"] = table["method"].map(seconds or {})
    if progress:
        progress(steps, steps)
    return table


def _recomputable(method: str) -> bool:
    """Whether a method can map perturbed images: not a sampling one (too slow), not a stored one."""
    info = methods.method_info(method)
    return not (info.slow or info.stored)


def _lipschitz(model, images, method: str, target: int, seed: int) -> float:
    if not _recomputable(method):
        return float("nan")
    params = {"seed": seed} if methods.method_info(method).random else {}

    def explain(x):
        return methods.attribution_map(model, x, method, target=target, **params)

    values = quality.local_lipschitz(explain, images, n_perturb_samples=LIPSCHITZ_SAMPLES, seed=seed)
    return float(np.nanmean(values))


def _random_logit(model, images, method: str, target: int, card: ModelCard, seed: int) -> float:
    if len(card.output_names) < 2 or not _recomputable(method):
        return float("nan")
    params = {"seed": seed} if methods.method_info(method).random else {}

    def explain(x, other):
        return methods.attribution_map(model, x, method, target=other, **params)

    return float(np.nanmean(quality.random_logit(explain, images, target, len(card.output_names), seed=seed)))


def write_map_report(report: MapReport, out: str | Path) -> list[Path]:
    """The quality table as CSV at `out`; beside it `<stem>-regions.csv` and the maps, `<stem>-maps.npz`."""
    out = output_path(out, (".csv",))
    regions = out.with_name(f"{out.stem}-regions.csv")
    arrays = out.with_name(f"{out.stem}-maps.npz")
    report.quality.to_csv(out, index=False)
    report.regions.to_csv(regions, index=False)
    np.savez_compressed(arrays, subjects=np.asarray(report.subjects), **report.maps)
    return [out, regions, arrays]
