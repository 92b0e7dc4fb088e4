"""The report files the CLI writes, and the `score` command.

    python -m engine score --data shapes --model shapes-size-texture --out report.json

Scores come from the scoring service (`engine.scoring.data_scores` / `diffusion_scores`);
this module writes them: `write_json` / `write_csv` / `write_html`. The HTML report
(`html_report`, also the app's one-click export) is standalone (plotly.js inline), opens
offline and prints to PDF: what was scored in labelled rows, a methods paragraph written
from the run's own metadata with the citation, the figures, the table and the software
versions. `run_score_command` is the `score` CLI.
"""

from __future__ import annotations

import html
import json
import math
import shlex
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.io as pio
from tqdm import tqdm

from engine import figures
from engine.cards import ModelRef, is_torchscript_source, spec_from_json
from engine.cards import model_ref as cards_model_ref
from engine.data import SliceSpec
from engine.data.bundle import trust as trust_bundle
from engine.data.remote import is_remote
from engine.data.slicing import INTENSITIES, NAMED_SLICES
from engine.devices import resolve_device
from engine.errors import EveInputError, reason
from engine.models.zoo import load
from engine.scoring import (
    SCORE_COLUMNS,
    ScoreReport,
    data_scores,
    diffusion_scores,
    open_dataset,
    resolve_features,
    trained_elsewhere,
)

# the flags of a TorchScript model's input contract, as `UserCard.contract` takes them
CONTRACT_FLAGS = ("input", "plane", "slice", "size", "spacing", "orientation", "intensity")


# 1. writers ---------------------------------------------------------------------------------


def _plain(x):
    """JSON-safe Python value: NaN/Inf -> None, numpy scalars -> Python numbers."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.ndarray):
        return [_plain(v) for v in x.tolist()]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def report_dict(report: ScoreReport) -> dict:
    """The JSON document: metadata plus `scores`, one record per feature x output."""
    return _plain({**report.metadata, "outputs": report.output_names, "scores": report.table.to_dict("records")})


def _writable(path: str | Path) -> Path:
    path = Path(path)
    if not path.parent.is_dir():
        raise EveInputError(f"Cannot write {path}: folder {path.parent} does not exist; create it or change --out.")
    return path


def _write_text(path: Path, text: str) -> Path:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise EveInputError(
            f"Cannot write {path} ({exc.strerror or reason(exc)}): choose a writable --out path."
        ) from exc
    return path


def write_json(report: ScoreReport, path: str | Path) -> Path:
    """Write the scores and metadata as JSON (NaN as null)."""
    path = _writable(path)
    return _write_text(path, json.dumps(report_dict(report), indent=2, allow_nan=False) + "\n")


def write_csv(report: ScoreReport, path: str | Path) -> Path:
    """Write the score table as CSV (one row per feature x output, with the input contract used)."""
    path = _writable(path)
    table = report.table
    if "input" in report.metadata:  # the input contract, on every row: a CSV travels without its JSON
        table = table.assign(input=report.metadata["input"])
    return _write_text(path, table.to_csv(index=False, float_format="%.6g"))


# 2. the HTML report ------------------------------------------------------------------------
#
# One page a reader can send or print: what was scored (dataset, model, the input the model was
# fed, the output explained, the method), a methods paragraph written from the report's own
# metadata, the figures and the table, then the software. Every nested metadata value is shown
# as labelled rows, never as JSON.

CITATION = (
    "Jin, Zhu & Fletcher. Feature Attribution for Deep Learning Models through Total Variance "
    "Decomposition. Medical Imaging with Deep Learning (MIDL), 2025."
)
KIND_WORDS = {
    "cnn": "convolutional network, one of Eve's built-in models (safetensors weights)",
    "glass-box": "glass-box read-out: an exact, known function of the image, one of Eve's built-in models",
    "torchscript": "a user's TorchScript model",
}
SOURCE_NAMES = {"data": "data path", "diffusion": "diffusion path", "truth": "ground truth"}
# metadata keys the sections below show; any other key is listed under "Other details"
SHOWN_KEYS = {
    *("eve", "created", "score", "dataset", "model", "spec", "input", "explained", "warning", "method"),
    *("split", "n", "features", "categorical", "n_boot", "seed", "ci_level", "ci_method", "ci_refits"),
    *("diffusion", "k_values", "n_per_value", "steps", "free_features", "readout_guidance", "sampler"),
    *("software", "arguments", "compared", "outputs_in_words"),
}


class _Html(str):
    """Text that is already HTML (escaped where it needs to be)."""


def _esc(value) -> str:
    return value if isinstance(value, _Html) else html.escape(str(value))


def _code(text) -> _Html:
    return _Html(f"<code>{html.escape(str(text))}</code>")


def _words(value) -> str | _Html:
    """A metadata value as text: nested dicts as labelled rows, lists joined by commas, never JSON."""
    if isinstance(value, _Html):
        return value
    if isinstance(value, dict):
        rows = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(_words(v))}</td></tr>" for k, v in value.items())
        return _Html(f'<table class="nested">{rows}</table>')
    if isinstance(value, (list, tuple)):
        parts = [_words(v) for v in value]
        if any(isinstance(part, _Html) for part in parts):
            return _Html(", ".join(_esc(part) for part in parts))
        return ", ".join(parts)
    if isinstance(value, float):
        return f"{value:g}"
    return "—" if value is None else str(value)


def _section(title: str, rows: list[tuple[str, object]], css: str = "facts") -> str:
    body = "".join(
        f"<tr><th>{html.escape(label)}</th><td>{_esc(_words(value))}</td></tr>"
        for label, value in rows
        if value is not None and value != ""
    )
    return f'<section class="{css}"><h3>{html.escape(title)}</h3><table>{body}</table></section>' if body else ""


def _count(n: int, thing: str) -> str:
    return f"{n:,} {thing}" + ("" if n == 1 else "s")


def _spec(meta: dict) -> SliceSpec | None:
    try:
        return spec_from_json(meta["spec"])
    except (KeyError, TypeError, ValueError, EveInputError):
        return None


def _is_2d(meta: dict) -> bool:
    return meta.get("dataset", {}).get("images") == "2D images"


def _explained_words(meta: dict) -> str:
    """What Y is, without an article: "probability (sigmoid of the logit)", "logit (apply a sigmoid for
    the probability)", "regression output: predicted target", "output whose kind is not stated"."""
    kind, said = meta.get("explained"), meta.get("model", {}).get("outputs")
    if kind in ("probability", "logit"):
        return str(said) if said and str(said).startswith(kind) else kind
    if kind == "regression":
        return f"regression output: {said}" if said else "regression output"
    return f"output whose kind is not stated ({said})" if said else "output whose kind is not stated"


def _outputs_in_words(meta: dict, names) -> str:
    """ "P(label=1): the model's probability that label = 1", one per output (the names alone in older reports)."""
    words = meta.get("outputs_in_words") or {}
    return "; ".join(f"{name}: {words[name]}" if name in words else str(name) for name in names)


def _dataset_rows(meta: dict) -> list[tuple[str, object]]:
    data = meta.get("dataset", {})
    n_rows, images = data.get("n_rows"), data.get("images", "images")
    scored = None
    if meta.get("method") == "data" and meta.get("n") is not None:
        split = meta.get("split")
        every = split == "all" or meta["n"] == n_rows
        which = "every image" if every else f"the {split} split" if split else "the chosen images"
        scored = f"{_count(int(meta['n']), 'image')}: {which}"
    elif meta.get("method") == "diffusion":
        scored = f"none directly: images sampled from the diffusion model {meta.get('diffusion', '')}".rstrip()
    return [
        ("Name", data.get("name")),
        ("Images", None if n_rows is None else f"{n_rows:,} {images}"),
        ("Source", data.get("origin")),
        ("Location", None if data.get("path") is None else _code(data["path"])),
        ("Scored", scored),
        ("Features", meta.get("features")),
        ("Of which categorical", meta.get("categorical") or None),
    ]


def _model_rows(meta: dict) -> list[tuple[str, object]]:
    model = meta.get("model", {})
    kind = model.get("kind")
    if kind == "torchscript":
        trained = "not known to Eve (a user's model)"
    else:
        trained = None if model.get("dataset") is None else f"Eve's {model['dataset']}"
    target = model.get("target")
    if target and model.get("task"):
        target = f"{target} ({model['task']})"
    checksum = model.get("weights_sha256") or model.get("sha256")
    return [
        ("Name", model.get("name")),
        ("Kind", KIND_WORDS.get(kind, kind)),
        ("Trained on", trained),
        ("Trained to predict", target),
        ("Description", model.get("description")),
        ("Function", model.get("function")),
        ("SHA-256", None if checksum is None else _code(checksum)),
    ]


MNI_AXES = {"sagittal": "x", "coronal": "y", "axial": "z"}


def _slice_words(spec: SliceSpec) -> str:
    """ "the middle slice", "the named slice hippocampus (MNI y = -22 mm)", "voxel index 40"."""
    if spec.index is None:
        return "the middle slice"
    if isinstance(spec.index, str):
        plane, mm = NAMED_SLICES[spec.index]
        return f"the named slice {spec.index} (MNI {MNI_AXES[plane]} = {mm:g} mm)"
    return f"voxel index {spec.index}"


def _contract_rows(meta: dict) -> list[tuple[str, object]]:
    """The input contract as labelled rows: input kind, plane and slice, size, spacing, intensity."""
    spec = _spec(meta)
    if spec is None:
        return [("Input", meta.get("input"))]
    if spec.is_volume:
        rows = [
            ("Input", "the whole 3D volume"),
            ("Size", f"{spec.size} × {spec.size} × {spec.size} voxels, (B, 1, {spec.size}, {spec.size}, {spec.size})"),
            (
                "Voxel spacing",
                "isotropic, fitted to the field of view"
                if spec.spacing is None
                else f"{float(spec.spacing):g} mm isotropic (resampled, then centre-cropped or padded)",
            ),
        ]
    else:
        if _is_2d(meta):
            where = [("Input", "the 2D image (a 2D dataset is one axial slice)")]
        else:
            where = [("Input", "a 2D slice of each volume"), ("Plane", spec.plane), ("Slice", _slice_words(spec))]
        rows = [
            *where,
            (
                "Size",
                f"{spec.size} × {spec.size} px, (B, 1, {spec.size}, {spec.size}); padded to a square, then resized",
            ),
        ]
    rows.append(("Intensity", f"{spec.intensity}: {INTENSITIES[spec.intensity]}"))
    if not _is_2d(meta):
        rows.append(("Registration", "each volume registered to MNI152 (affine) first" if spec.register else "none"))
    return rows


def _input_phrase(meta: dict) -> str | None:
    """What the model was fed, for the methods paragraph: "the 2D image at 64 × 64 px", ..."""
    spec = _spec(meta)
    if spec is None:
        return meta.get("input")
    if spec.is_volume:
        voxels = "fitted to the field of view" if spec.spacing is None else f"at {float(spec.spacing):g} mm"
        where = f"the whole volume as a {spec.size}³ cube of isotropic voxels {voxels}"
    elif _is_2d(meta):
        where = f"each 2D image at {spec.size} × {spec.size} px"
    else:
        where = f"one {spec.plane} slice of each volume, {_slice_words(spec)}, at {spec.size} × {spec.size} px"
        if spec.register:
            where += ", after an affine registration to MNI152"
    return f"{where}; intensity {spec.intensity}: {INTENSITIES[spec.intensity]}"


def _ci_words(meta: dict) -> str | None:
    level = f"{float(meta.get('ci_level', 0.95)):.0%}"
    method, draws = meta.get("ci_method"), meta.get("n_boot")
    if method == "none" or draws == 0:
        return "none (0 bootstrap draws)"
    if method == "generator_refits":
        return f"{level}: {meta.get('ci_refits')} generators refitted on bootstrap resamples of the training subjects"
    if method == "parametric_bootstrap":
        return f"{level} percentile interval of {draws} parametric bootstrap draws"
    if draws is None:
        return None
    return f"{level} percentile interval of {draws} bootstrap resamples of the images"


def _method_rows(meta: dict, report: ScoreReport) -> list[tuple[str, object]]:
    method = meta.get("method")
    rows: list[tuple[str, object]] = []
    if method == "data":
        rows.append(("Path", "data path: the model's outputs on real images, grouped by feature value"))
        rows.append(("n", None if meta.get("n") is None else _count(int(meta["n"]), "image")))
    elif method == "diffusion":
        k, n = _diffusion_kn(meta, _primary(report.table))
        rows.append(("Path", f"diffusion path: images sampled from {meta.get('diffusion', 'a diffusion model')}"))
        rows.append(("K values × N samples", None if k is None else f"{k} × {n} per feature (independent seeds)"))
        rows.append(("Sampler", meta.get("sampler")))
    else:
        rows.append(("Path", method))
    rows.append(("Confidence interval", _ci_words(meta)))
    rows.append(("Seed", meta.get("seed")))
    for source, about in meta.get("compared", {}).items():
        rows.append((f"Also shown: {SOURCE_NAMES.get(source, source)}", _compared_words(source, about, report)))
    return rows


def _software_rows(meta: dict) -> list[tuple[str, object]]:
    rows = [(name, version) for name, version in meta.get("software", {}).items()]
    rows.append(("Created", meta.get("created")))
    if meta.get("arguments"):
        rows.append(("Command", _code(_command(meta["arguments"]))))
    return rows


DIFFUSION_ONLY = ("diffusion", "k_values", "n_per_value", "free_features", "readout_guidance")


def _command(arguments: dict) -> str:
    """The `score` command line that reproduces a CLI report (the diffusion path's options only for it)."""
    parts = ["python -m engine score"]
    for key, value in arguments.items():
        if key in DIFFUSION_ONLY and arguments.get("method") != "diffusion":
            continue
        if value is not None:
            parts.append(f"--{key.replace('_', '-')} {shlex.quote(str(value))}")
    return " ".join(parts)


# the methods paragraph: written from the report's metadata and table, so it says what this run did


def _ok(table: pd.DataFrame) -> pd.DataFrame:
    return table[table["status"] == "ok"]


def _diffusion_kn(meta: dict, table: pd.DataFrame) -> tuple[int | None, int | None]:
    """K values and N samples per value: as recorded, else read off the rows (n = K N, groups = K)."""
    if meta.get("k_values") is not None and meta.get("n_per_value") is not None:
        return int(meta["k_values"]), int(meta["n_per_value"])
    ok = _ok(table)
    if ok.empty or not (ok["n_groups"] > 0).all():
        return None, None
    k, n = ok["n_groups"].astype(int), (ok["n"] // ok["n_groups"]).astype(int)
    return (int(k.iloc[0]), int(n.iloc[0])) if k.nunique() == 1 and n.nunique() == 1 else (None, None)


def _span(values) -> str:
    values = sorted({int(v) for v in values})
    return str(values[0]) if len(values) == 1 else f"{values[0]}–{values[-1]}"


def _data_method(meta: dict, report: ScoreReport) -> str:
    n, split, dataset = meta.get("n"), meta.get("split"), meta.get("dataset", {}).get("name", "the dataset")
    every = split == "all" or (n is not None and n == meta.get("dataset", {}).get("n_rows"))
    if n is None:
        which = f"images of {dataset}"
    else:
        which = f"all {n:,} images of {dataset}" if every else f"the {n:,} {split}-split images of {dataset}"
    text = f"S(A) was estimated from data (the data path), on {which}. "
    cats = [f for f in meta.get("categorical", []) if f in report.features]
    continuous = [f for f in report.features if f not in cats]
    table = _ok(_primary(report.table))
    groups = []
    if continuous:
        bins = table[table["feature"].isin(continuous)]["n_groups"]
        here = f"{_span(bins)} here: " if len(bins) else ""
        groups.append(
            f"quantile bins of each continuous feature ({here}about n^(2/3) / 2, at most n/20, so at least about 20 "
            "images a bin; a feature with fewer distinct values is grouped on its values)"
        )
    if cats:
        groups.append(f"the exact levels of the categorical feature{'s' if len(cats) > 1 else ''} {', '.join(cats)}")
    text += (
        f"Images were grouped into {' and '.join(groups)}. S(A) = 1 − E[Var(Y|A)] / Var(Y), with E[Var(Y|A)] "
        "measured inside each bin by the residual variance of a straight line in the rank of A (the bin means "
        "alone would count the change of E[Y|A] across a bin as noise), and, in bins where the output steps "
        "within the bin, by differences between neighbours in A's order (Rice's estimator); within exact groups "
        "by the within-group variance, with the between-group variance's expected excess from noise, "
        "Σ_k w_k (1 − w_k) s²_k / n_k, subtracted (an ω²-type correction). The score is clipped to [0, 1]. "
    )
    draws = meta.get("n_boot")
    if draws:
        level = f"{float(meta.get('ci_level', 0.95)):.0%}"
        text += (
            f"The {level} confidence intervals are percentile intervals of {draws} bootstrap resamples of the "
            f"(output, feature value) pairs (seed {meta.get('seed', 0)}), re-centred on the corrected estimate."
        )
    elif draws == 0:
        text += "No confidence intervals were computed (0 bootstrap draws)."
    return text


def _diffusion_ci(meta: dict, n_per_value) -> str:
    method, level = meta.get("ci_method"), f"{float(meta.get('ci_level', 0.95)):.0%}"
    seed = meta.get("seed", 0)
    if method == "generator_refits":
        return (
            f"The {level} confidence intervals are the 2.5th and 97.5th percentiles of the scores of "
            f"{meta.get('ci_refits')} generators refitted on bootstrap resamples of the training subjects, each "
            f"sampled afresh (base seed {seed}), so they hold the generator's fitting error as well as the sampling "
            "noise."
        )
    if method == "parametric_bootstrap":
        n, dof, over = ("N", "N − 1", "(N − 1)") if n_per_value is None else (n_per_value, *[n_per_value - 1] * 2)
        return (
            f"The {level} confidence intervals are percentile intervals of {meta.get('n_boot')} parametric bootstrap "
            f"draws (seed {seed}): each per-value mean redrawn from Normal(m_k, s²_k / {n}) and each variance from "
            f"s²_k · χ²({dof}) / {over}. They hold the sampling noise of the generated images, not the "
            "generator's own error."
        )
    if method is None and meta.get("n_boot"):  # the method was not recorded
        return f"The {level} confidence intervals are percentile intervals of {meta['n_boot']} bootstrap draws."
    return "No confidence intervals were computed (0 bootstrap draws)."


def _diffusion_method(meta: dict, report: ScoreReport, *, compared: bool = False) -> str:
    k, n = _diffusion_kn(meta, report.table)
    dataset = meta.get("dataset", {}).get("name", "the dataset")
    generator = meta.get("diffusion", "a conditional diffusion model")
    k_text, n_text = ("K" if k is None else f"K = {k}"), ("N" if n is None else f"N = {n}")
    lead = (
        f"The diffusion-path scores (hatched bars) were estimated from images sampled from {generator} instead of data."
        if compared
        else f"S(A) was estimated from images sampled from the conditional diffusion model {generator} instead of "
        "from data (the diffusion path, for scarce data)."
    )
    sampler = meta.get("sampler", "").rstrip(".")
    sampler = sampler[:1].lower() + sampler[1:]
    return (
        f"{lead} For each feature A, {k_text} values a_k were taken (for a continuous feature the means of K "
        f"equal-mass bins of its distribution in {dataset}, each of weight 1/K; for a categorical one its levels, "
        f"weighted by their frequencies), and {n_text} images were sampled from p(x | A = a_k) at each value with "
        "independent noise seeds, from the plain conditional model (no classifier-free guidance, which narrows "
        f"p(x | a) and inflates scores){'; ' + sampler if sampler else ''}. Var(E[Y|A]) was estimated "
        "by the weighted variance of the K per-value means of Y minus its expected excess from noise, "
        f"Σ_k w_k (1 − w_k) s²_k / {'N' if n is None else n} (an ω²-type correction), and E[Var(Y|A)] by the "
        f"weighted mean of the per-value variances. {_diffusion_ci(meta, n)}"
    )


def _compared_words(source: str, about: dict, report: ScoreReport) -> str:
    if source == "diffusion":
        k, n = _diffusion_kn(about, report.table[report.table["source"] == "diffusion"])
        kn = "" if k is None else f", {k} values × {n} samples per feature"
        return f"{about.get('diffusion', 'a diffusion model')}{kn}; CI {_ci_words(about) or 'as in the table'}"
    if source == "truth":
        return f"the estimator on the model's exact target, {about.get('definition', '')}".rstrip(", ")
    return _words(about)


def _truth_method(about: dict, report: ScoreReport) -> str:
    rows = _ok(report.table[report.table["source"] == "truth"])
    n = f", on all {int(rows['n'].iloc[0]):,} images" if len(rows) else ""
    definition = about.get("definition")
    return (
        "The ground truth (dotted bars) is the same estimator applied to the exact target the model was trained to "
        f"predict{n}: the score a perfect model of its target would get."
        + (f" The target: {definition}." if definition else "")
    )


def methods_paragraphs(report: ScoreReport) -> list[str]:
    """The report's methods section as plain-text paragraphs, written from its metadata and table
    (the path it took, what the model was fed, n, the interval, the seed), citing the paper; one
    more paragraph per source `compare` put beside its scores."""
    meta = report.metadata
    model = meta.get("model", {}).get("name", "the model")
    outputs = ", ".join(report.output_names)
    fed, words = _input_phrase(meta), _explained_words(meta)
    first = (
        "The attribution score of a feature A is the fraction of the variance of the model's output Y = f(X) that "
        "A explains, S(A) = Var(E[Y|A]) / Var(Y), from the law of total variance Var(Y) = Var(E[Y|A]) + "
        f"E[Var(Y|A)] (Jin, Zhu & Fletcher, MIDL 2025). Here Y was the output"
        f"{'s' if len(report.output_names) > 1 else ''} {outputs} of {model}"
        + (f", fed {fed}" if fed else "")
        + f". Y is {'an' if words[0] in 'aeiou' else 'a'} {words}."
        + (f" Note: {meta['warning']}" if meta.get("warning") else "")
    )
    if meta.get("method") == "diffusion":
        second = _diffusion_method(meta, report)
    else:
        second = _data_method(meta, report)
    paragraphs = [first, second]
    compared = meta.get("compared", {})
    if "diffusion" in compared:
        paragraphs.append(
            _diffusion_method(
                {"dataset": meta.get("dataset", {}), **compared["diffusion"]}, _only(report, "diffusion"), compared=True
            )
        )
    if "truth" in compared:
        paragraphs.append(_truth_method(compared["truth"], report))
    return paragraphs


def _only(report: ScoreReport, source: str) -> ScoreReport:
    return replace(report, table=report.table[report.table["source"] == source])


def results_sentences(report: ScoreReport) -> list[str]:
    """One sentence per output: the features by score, each with its interval."""
    table = _primary(report.table)
    sentences = []
    for out in report.output_names:
        ok = _ok(table[table["output"] == out]).sort_values("score", ascending=False)
        if ok.empty:
            continue
        parts = [
            f"{r.feature} {r.score:.0%}" + ("" if math.isnan(r.ci_low) else f" ({r.ci_low:.0%}–{r.ci_high:.0%})")
            for r in ok.itertuples()
        ]
        sentences.append(f"Share of the variance of {out} explained: {'; '.join(parts)}.")
    if sentences:
        sentences.append(
            "Correlated features share explained variance, so the scores need not add up to the total (nor to 100%)."
        )
    return sentences


def _primary(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of the report's own method (without compared sources)."""
    if "source" not in table.columns:
        return table
    return table[table["source"] == table["source"].iloc[0]] if len(table) else table


def compare(
    report: ScoreReport,
    *,
    diffusion: pd.DataFrame | None = None,
    diffusion_settings: dict | None = None,
    truth: pd.DataFrame | None = None,
    truth_definition: str | None = None,
) -> ScoreReport:
    """A one-output report with other sources' scores beside its own, as the app's scores page shows
    them: diffusion-path rows (`diffusion_settings`: `engine.scoring.diffusion_settings`) and
    ground-truth rows. The table gains a `source` column; rows of other sources take the report's
    output name."""
    if len(report.output_names) != 1:
        raise ValueError("compare() takes a report of one output")
    output = report.output_names[0]
    parts = [report.table.assign(source=report.metadata.get("method", "data"))]
    compared = {}
    for source, rows, about in (
        ("diffusion", diffusion, diffusion_settings or {}),
        ("truth", truth, {"definition": truth_definition} if truth_definition else {}),
    ):
        if rows is None or rows.empty:
            continue
        parts.append(rows[[*SCORE_COLUMNS]].assign(output=output, source=source))
        compared[source] = about
    table = pd.concat(parts, ignore_index=True)
    return replace(report, table=table, metadata={**report.metadata, "compared": compared})


# the page


def _score_table(table: pd.DataFrame, level: str = "95%") -> str:
    sources = "source" in table.columns and table["source"].nunique() > 1
    head = ["Feature", "Output", *(["Source"] if sources else []), "S(A)", f"{level} CI", "Unexplained", "n", "Groups"]
    body = []
    for r in table.itertuples():
        ok = r.status == "ok"
        ci = "—" if not ok or pd.isna(r.ci_low) else f"{r.ci_low:.3f}–{r.ci_high:.3f}"
        note = "" if ok and not r.message else f' title="{html.escape(str(r.message))}"'
        cells = [r.feature, r.output, *([SOURCE_NAMES.get(r.source, r.source)] if sources else [])]
        cells += [f"{r.score:.3f}" if ok else r.status, ci, f"{r.unexplained:.3f}" if ok else "—", f"{r.n:,}"]
        cells.append(r.n_groups)
        body.append(f"<tr{note}>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    header = "".join(f"<th>{h}</th>" for h in head)
    return f'<table class="scores"><thead><tr>{header}</tr></thead><tbody>{"".join(body)}</tbody></table>'


PATTERN_WORDS = {"data": "plain", "diffusion": "hatched", "truth": "dotted"}  # figures.SOURCE_PATTERNS in words


def _patterns(sources: pd.Series) -> str:
    """ "plain: data path, dotted: ground truth." for the sources a figure shows."""
    shown = [s for s in dict.fromkeys(sources) if s in PATTERN_WORDS]
    return ", ".join(f"{PATTERN_WORDS[s]}: {SOURCE_NAMES[s]}" for s in shown) + "."


def _figures(report: ScoreReport) -> list[tuple[object, str]]:
    """(figure, caption) pairs: the score bars, then one grid of conditional curves per output."""
    meta, table = report.metadata, report.table
    colors = figures.feature_colors(list(report.features))
    by_source = "source" in table.columns and table["source"].nunique() > 1
    level = f"{float(meta.get('ci_level', 0.95)):.0%}"
    intervals = "no intervals (0 bootstrap draws)" if meta.get("n_boot") == 0 else f"{level} confidence intervals"
    bars_caption = (
        f"S(A) per feature, with {intervals} as error bars; "
        + (_patterns(table["source"]) if by_source else "one bar per output.")
        + " An empty slot is a feature with no score (see the table)."
    )
    drawn = [
        (
            figures.score_bars(
                table, colors, group_by="source" if by_source else "output", title="Explained variance S(A) per feature"
            ),
            bars_caption,
        )
    ]
    own = _primary(table)
    points = "dots: one image each (at most 2,000 drawn); " if report.outputs is not None else ""
    means = "the mean output at each sampled value a_k" if report.outputs is None else "the kernel-smoothed mean output"
    for j, out in enumerate(report.output_names):
        fig = figures.curves_grid(
            own,
            out,
            report.features,
            outputs=None if report.outputs is None else report.outputs[:, j],
            categorical=report.categorical,
            value_tables=report.value_tables,
            colors=colors,
        )
        fig.update_annotations(font_size=12)  # panel titles fit three to a printed page's width
        caption = (
            f"The conditional mean E[{out} | A = a] for each feature: {points}line: {means}, with its 95% band. "
            "S(A) is the variance of this curve relative to the variance of the output."
        )
        drawn.append((fig, caption))
    return drawn


STYLE = """
:root { --ink: #1f2328; --muted: #57606a; --rule: #d0d7de; --wash: #f6f8fa; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--ink); background: #fff;
       margin: 2em auto; max-width: 1120px; padding: 0 1.2em; }
h1 { font-size: 1.7em; margin: 0 0 .2em; } h2 { font-size: 1.25em; margin: 1.6em 0 .5em;
     border-bottom: 1px solid var(--rule); padding-bottom: .2em; } h3 { font-size: 1em; margin: 0 0 .4em; }
.lead { color: var(--muted); margin: 0 0 1em; }
.toolbar { float: right; } .toolbar button { font: inherit; padding: .3em .9em; cursor: pointer; }
.warning { border: 1px solid #d4a72c; background: #fff8c5; padding: .6em .9em; border-radius: 6px; margin: 1em 0; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(330px, 1fr)); gap: .8em 1.6em; }
.facts table, table.nested { border-collapse: collapse; width: 100%; table-layout: fixed; }
.facts th, .facts td { text-align: left; vertical-align: top; padding: 2px 8px 2px 0; font-size: .92em; }
.facts th { color: var(--muted); font-weight: 600; width: 36%; }
.facts td { overflow-wrap: anywhere; }
table.nested th { color: var(--muted); font-weight: normal; padding-right: 8px; }
code { font: .85em ui-monospace, SFMono-Regular, Menlo, monospace; overflow-wrap: anywhere; }
.methods p { max-width: 85ch; }
.narrow { max-width: 760px; }
.cite { color: var(--muted); font-size: .92em; }
figure { margin: 1em 0; } figcaption { color: var(--muted); font-size: .9em; max-width: 90ch; }
table.scores { border-collapse: collapse; font-size: .9em; font-variant-numeric: tabular-nums; }
table.scores th, table.scores td { padding: 3px 12px 3px 0; text-align: left; border-bottom: 1px solid var(--rule); }
table.scores tbody tr:nth-child(even) { background: var(--wash); }
@page { size: A4; margin: 15mm 14mm; }
@media print {
  :root { --ink: #000; --muted: #333; --rule: #999; --wash: #fff; }
  body { font-size: 10pt; line-height: 1.4; margin: 0; max-width: none; padding: 0; color: #000; background: #fff; }
  .toolbar, .modebar, .modebar-container, button { display: none !important; }
  figure > div { height: auto !important; }  /* plotly's wrapper keeps its screen height inline */
  .warning { background: #fff; border: 1.5px solid #000; }
  h2, h3 { break-after: avoid; page-break-after: avoid; }
  table, figure, section.facts, .warning { break-inside: avoid; page-break-inside: avoid; }
  table.scores { font-size: 9pt; } table.scores tr { break-inside: avoid; }
  .grid { grid-template-columns: 1fr 1fr; }
  a { color: #000; text-decoration: none; }
}
"""

# plotly figures keep their screen size: before printing, redraw them at the page's width (A4 less
# margins), their height scaled alike but not below 300 px, and restore them after
PRINT_WIDTH = 680
PRINT_SCRIPT = f"""
<script>
(function () {{
  function plots() {{ return Array.from(document.querySelectorAll(".js-plotly-plot")); }}
  window.addEventListener("beforeprint", function () {{
    plots().forEach(function (p) {{
      var height = p.layout.height || p.getBoundingClientRect().height;
      var scale = {PRINT_WIDTH} / p.getBoundingClientRect().width;
      var printed = Math.min(height, Math.max(300, Math.round(height * scale)));
      p.dataset.screenHeight = height;
      p.style.height = printed + "px";
      Plotly.relayout(p, {{width: {PRINT_WIDTH}, height: printed}});
    }});
  }});
  window.addEventListener("afterprint", function () {{
    plots().forEach(function (p) {{
      p.style.height = "100%";
      Plotly.relayout(p, {{width: null, height: Number(p.dataset.screenHeight), autosize: true}});
    }});
  }});
}})();
</script>
"""


def html_report(report: ScoreReport) -> str:
    """The standalone HTML report of a `ScoreReport`, as text (what `write_html` writes and the app's
    scores page offers for download): what was scored, a methods paragraph with the citation, the
    figures (plotly, inlined once, so the file opens offline), the table, the software; printable."""
    meta = report.metadata
    model, dataset = meta.get("model", {}).get("name", "model"), meta.get("dataset", {}).get("name", "dataset")
    title = f"Eve scores: {model} on {dataset}"
    outputs = ", ".join(report.output_names)
    lead = f"How much of the variance of {outputs} each feature explains: S(A) = Var(E[Y|A]) / Var(Y)."
    if meta.get("created"):
        lead += f" Created {meta['created']}."
    warning = f'<p class="warning"><b>Warning.</b> {html.escape(meta["warning"])}</p>' if meta.get("warning") else ""
    facts = "".join(
        [
            _section("Dataset", _dataset_rows(meta)),
            _section("Model", _model_rows(meta)),
            _section("Input contract: what the model was fed", _contract_rows(meta)),
            _section(
                "Output explained",
                [("Outputs scored", _outputs_in_words(meta, report.output_names)), ("Y is", _explained_words(meta))],
            ),
            _section("Method", _method_rows(meta, report)),
        ]
    )
    other = {k: v for k, v in meta.items() if k not in SHOWN_KEYS}
    if other:
        facts += _section("Other details", list(other.items()))
    methods = "".join(f"<p>{html.escape(p)}</p>" for p in methods_paragraphs(report))
    results = " ".join(results_sentences(report))
    drawn = _figures(report)
    config = {"displaylogo": False, "responsive": True}
    for fig, _ in drawn:
        fig.update_layout(template="plotly_white")  # white paper on screen and in print
    plots = "".join(
        f"<figure>{pio.to_html(fig, include_plotlyjs=(i == 0), full_html=False, config=config)}"
        f"<figcaption><b>Figure {i + 1}.</b> {html.escape(caption)}</figcaption></figure>"
        for i, (fig, caption) in enumerate(drawn)
    )
    problems = report.table[report.table["status"] != "ok"]
    notes = "".join(
        f"<li><b>{html.escape(str(r.feature))} / {html.escape(str(r.output))}</b>: {html.escape(str(r.message))}</li>"
        for r in problems.itertuples()
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>{STYLE}</style></head><body>
<div class="toolbar"><button type="button" onclick="window.print()">Print / save as PDF</button></div>
<h1>{html.escape(title)}</h1>
<p class="lead">{html.escape(lead)}</p>
{warning}
<h2>What was scored</h2>
<div class="grid">{facts}</div>
<h2>Methods</h2>
<div class="methods">{methods}
<p class="cite">Reference: {html.escape(CITATION)} Software: Eve, the Explained-Variance Explorer
({html.escape(str(meta.get("software", {}).get("eve", "version not recorded")))}).</p></div>
{f"<h2>Results</h2><p>{html.escape(results)}</p>" if results else ""}
<h2>Figures</h2>
{plots}
<h2>Scores</h2>
{_score_table(report.table, f"{float(meta.get('ci_level', 0.95)):.0%}")}
{f"<h2>Problems</h2><ul>{notes}</ul>" if notes else ""}
<h2>Software</h2>
<div class="narrow">{_section("Versions and reproduction", _software_rows(meta))}</div>
{PRINT_SCRIPT}
</body></html>
"""


def write_html(report: ScoreReport, path: str | Path) -> Path:
    """Write `html_report(report)`: a standalone HTML file (plotly.js inlined once, about 5 MB)."""
    path = _writable(path)
    return _write_text(path, html_report(report))


# 2. the `score` command ---------------------------------------------------------------------


def command_ref(args) -> ModelRef:
    """The model the command names (`engine.cards.model_ref`: a TorchScript file fed its card beside it under
    --input/--plane/--slice/--size/--spacing/--orientation/--intensity/--register, or a built-in model with
    its card's input; contradicting flags are refused for a built-in one); --explain says whether its output
    or a logit's probability is explained."""
    given = {k: getattr(args, k, None) for k in CONTRACT_FLAGS}
    register = getattr(args, "register", "none") == "mni"
    if not is_torchscript_source(args.model) and register:
        raise EveInputError(
            f"--register mni is for TorchScript models: built-in model {args.model!r} takes its "
            "card's input; drop the flag."
        )
    return cards_model_ref(args.model, explain=getattr(args, "explain", "output"), register=register, **given)


def command_model(args) -> tuple:
    """(model, card, ref, device) a command names (`command_ref`, --device), a built-in model's contradicting
    input flags refused; cheap, so it fails before a dataset's header checks."""
    device = resolve_device(args.device)
    ref = command_ref(args)
    if ref.spec is not None and ref.spec.bundle is not None:  # the user's own bundle, on their own machine
        trust_bundle(ref.spec.bundle)
        print(
            f"note: the command line trusts the MONAI bundle {ref.spec.bundle}: its preprocessing runs as its "
            "configs write it (the app runs only MONAI's own transforms from an uploaded bundle)"
        )
    model, card = load(ref, device)
    if not ref.is_torchscript:
        _check_builtin_flags(args, card.spec)
    return model, card, ref, device


def _check_builtin_flags(args, spec: SliceSpec) -> None:
    given = {k: getattr(args, k, None) for k in CONTRACT_FLAGS}
    if given["slice"] is not None:
        given["slice"] = SliceSpec.parse_index(given["slice"])
    theirs = {
        "input": spec.input,
        "plane": spec.plane,
        "slice": spec.index,
        "size": spec.size,
        "spacing": spec.spacing,
        "orientation": spec.orientation,
        "intensity": spec.intensity,
    }
    clash = [f"--{k} {getattr(args, k)}" for k, v in given.items() if v is not None and v != theirs[k]]
    if clash:
        raise EveInputError(
            f"Built-in model {args.model!r} takes its card's input ({spec.describe()}); {', '.join(clash)} do not "
            "match: drop them (they are for TorchScript models)."
        )


def _tqdm_progress(desc: str, unit: str):
    """A progress(done, total) callback drawing a tqdm bar on stderr, and the bar to close."""
    bar = tqdm(desc=desc, unit=unit, leave=False)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    return progress, bar


def run_score_command(args) -> list[Path]:
    """The `python -m engine score` command (arguments in `engine.__main__`); returns the files written."""
    out = Path(args.out)
    fmt = args.format or ("html" if out.suffix.lower() in (".html", ".htm") else "json")
    csv_path = out.with_suffix(".csv")
    if csv_path == out:
        raise EveInputError(f"--out {out} is the CSV's own name: give the report a .json or .html name.")
    _writable(out)
    if args.n_boot < 0:
        raise EveInputError(f"--n-boot {args.n_boot}: use 0 (no CI) or a positive number of bootstrap draws.")
    model, card, ref, device = command_model(args)
    if args.output is not None:
        card.output_index(args.output)
    dataset = open_dataset(args.data)
    resolve_features(dataset, args.features)  # fails before the forward pass
    warning = trained_elsewhere(card, dataset)
    if warning:
        print(f"warning: {warning}")
    cluster = None
    if getattr(args, "ray", None):
        from engine.cluster import Cluster  # Ray (~2 s to import) only when asked for

        cluster = Cluster.connect(None if args.ray == "local" else args.ray)
    try:
        report = _scores(args, ref, model, card, dataset, device, cluster)
    finally:
        if cluster is not None:
            cluster.shutdown()
    arguments = {k: v for k, v in vars(args).items() if k not in ("run", "command")}
    if is_remote(arguments.get("data")):  # an object-store URI's query may hold an endpoint or keys
        arguments["data"] = dataset.location
    report.metadata["arguments"] = arguments
    written = [write_html(report, out) if fmt == "html" else write_json(report, out), write_csv(report, csv_path)]
    _print_summary(report)
    for path in written:
        print(f"wrote {path}")
    return written


def _scores(args, ref: ModelRef, model, card, dataset, device, cluster) -> ScoreReport:
    """The command's scores: locally, or with the heavy part on a Ray cluster (`engine.cluster`)."""
    if args.method == "diffusion":
        from engine.diffusion import SamplerConfig, load_diffusion  # diffusers (~3 s) only for this method

        generator = load_diffusion(args.diffusion or dataset.name)
        sampler = SamplerConfig.for_scores(generator).override(
            free_features=args.free_features, readout_guidance=args.readout_guidance
        )
        progress, bar = _tqdm_progress("diffusion scores", "score")
        runner = None
        if cluster is not None:
            runner = cluster.diffusion_runner(ref, args.diffusion or dataset.name, device.type, progress)
        with bar:
            report = diffusion_scores(
                model,
                card,
                dataset,
                args.features,
                diffusion=generator,
                output=args.output,
                k_values=args.k_values,
                n_per_value=args.n_per_value,
                n_boot=args.n_boot,
                seed=args.seed,
                batch_size=args.batch_size,
                progress=progress,
                sampler=sampler,
                runner=runner,
            )
    else:
        if cluster is None:
            score, progress_bar = partial(data_scores, model, card, dataset), ("model outputs", "img")
        else:  # the outputs shard by shard on the cluster, the estimator here
            score = partial(cluster.data_scores, ref, dataset, device=device.type)
            progress_bar = ("model outputs (Ray shards)", "shard")
        progress, bar = _tqdm_progress(*progress_bar)
        with bar:
            report = score(
                args.features,
                split=args.split,
                n_boot=args.n_boot,
                seed=args.seed,
                output=args.output,
                batch_size=args.batch_size,
                progress=progress,
            )
    if cluster is not None:
        report.metadata["cluster"] = cluster.describe()
    return report


def _print_summary(report: ScoreReport) -> None:
    meta = report.metadata
    where = f", {meta.get('split')} split, n = {meta.get('n')}" if meta["method"] == "data" else ""
    print(f"{meta['model'].get('name', 'model')} on {meta['dataset']['name']} ({meta['method']}{where}):")
    width = max(len(str(f)) for f in report.table["feature"])
    for r in report.table.itertuples():
        if r.status == "ok":
            print(f"  {r.feature:<{width}}  {r.output}:  S = {r.score:.3f}  [{r.ci_low:.3f}, {r.ci_high:.3f}]")
        else:
            print(f"  {r.feature:<{width}}  {r.output}:  {r.status} — {r.message}")
