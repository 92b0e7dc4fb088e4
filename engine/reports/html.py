"""The standalone HTML report of a `ScoreReport` (also the app's one-click export): what was scored in
labelled rows, the methods paragraphs with the citation (`engine.reports.prose`), the figures (plotly,
inlined once, so the file opens offline), the table and the software versions; printable to PDF. Its style
and print script are the files `report.css` and `report.js` beside this module."""

from __future__ import annotations

import html
import shlex
from pathlib import Path

import pandas as pd
import plotly.io as pio

from engine.data.slicing import INTENSITIES
from engine.reports import figures
from engine.reports.prose import (
    CITATION,
    SHAPLEY_HONESTY,
    SOURCE_NAMES,
    ci_words,
    compared_words,
    count,
    diffusion_kn,
    explained_words,
    is_2d,
    methods_paragraphs,
    outputs_in_words,
    primary_rows,
    results_sentences,
    slice_words,
    spec_of,
)
from engine.reports.writers import writable, write_text
from engine.scores.service import ScoreReport

HERE = Path(__file__).parent
KIND_WORDS = {
    "cnn": "convolutional network, one of Eve's built-in models (safetensors weights)",
    "glass-box": "glass-box read-out: an exact, known function of the image, one of Eve's built-in models",
    "torchscript": "a user's TorchScript model",
}
# metadata keys the sections below show; any other key is listed under "Other details"
SHOWN_KEYS = {
    *("eve", "created", "score", "dataset", "model", "spec", "input", "explained", "warning", "method"),
    *("split", "n", "features", "categorical", "n_boot", "seed", "ci_level", "ci_method", "ci_refits"),
    *("diffusion", "k_values", "n_per_value", "steps", "free_features", "readout_guidance", "sampler"),
    *("software", "arguments", "compared", "outputs_in_words", "cluster"),
    *("n_generated", "generated_from", "cross_fitted", "clamped", "joint"),
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


def _dataset_rows(meta: dict) -> list[tuple[str, object]]:
    data = meta.get("dataset", {})
    n_rows, images = data.get("n_rows"), data.get("images", "images")
    scored = None
    if meta.get("method") == "data" and meta.get("n") is not None:
        split = meta.get("split")
        every = split == "all" or meta["n"] == n_rows
        which = "every image" if every else f"the {split} split" if split else "the chosen images"
        scored = f"{count(int(meta['n']), 'image')}: {which}"
    elif meta.get("method") == "diffusion":
        scored = f"none directly: images sampled from the diffusion model {meta.get('diffusion', '')}".rstrip()
    elif meta.get("method") == "debiased" and meta.get("n") is not None:
        scored = (
            f"{count(int(meta['n']), 'image')} of the {meta.get('split')} split, their twins and "
            f"{meta.get('n_generated')} generated subjects from {meta.get('diffusion', 'the generator')}"
        )
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


def _contract_rows(meta: dict) -> list[tuple[str, object]]:
    """The input contract as labelled rows: input kind, plane and slice, size, spacing, intensity."""
    spec = spec_of(meta)
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
        if is_2d(meta):
            where = [("Input", "the 2D image (a 2D dataset is one axial slice)")]
        else:
            where = [("Input", "a 2D slice of each volume"), ("Plane", spec.plane), ("Slice", slice_words(spec))]
        rows = [
            *where,
            (
                "Size",
                f"{spec.size} × {spec.size} px, (B, 1, {spec.size}, {spec.size}); padded to a square, then resized",
            ),
        ]
    rows.append(("Intensity", f"{spec.intensity}: {INTENSITIES[spec.intensity]}"))
    if not is_2d(meta):
        rows.append(("Registration", "each volume registered to MNI152 (affine) first" if spec.register else "none"))
    return rows


def _method_rows(meta: dict, report: ScoreReport) -> list[tuple[str, object]]:
    method = meta.get("method")
    rows: list[tuple[str, object]] = []
    if method == "data":
        rows.append(("Path", "data path: the model's outputs on real images, grouped by feature value"))
        rows.append(("n", None if meta.get("n") is None else count(int(meta["n"]), "image")))
    elif method == "diffusion":
        k, n = diffusion_kn(meta, primary_rows(report.table))
        rows.append(("Path", f"diffusion path: images sampled from {meta.get('diffusion', 'a diffusion model')}"))
        rows.append(("K values × N samples", None if k is None else f"{k} × {n} per feature (independent seeds)"))
        rows.append(("Sampler", meta.get("sampler")))
    elif method == "debiased":
        rows.append(("Path", f"generator path ({meta.get('diffusion')}), debiased by the real images"))
        rows.append(("Generated subjects", meta.get("n_generated")))
        rows.append(("Cross-fitted", f"{meta['cross_fitted']} folds" if meta.get("cross_fitted") else "no"))
        rows.append(("Sampler", meta.get("sampler")))
    else:
        rows.append(("Path", method))
    rows.append(("Confidence interval", ci_words(meta)))
    rows.append(("Seed", meta.get("seed")))
    if report.joint is not None:
        rows.append(("Features together", _together_words(meta.get("joint", {}), report.joint)))
    for source, about in meta.get("compared", {}).items():
        rows.append((f"Also shown: {SOURCE_NAMES.get(source, source)}", compared_words(source, about, report)))
    return rows


def _together_words(about: dict, joint: pd.DataFrame) -> str:
    """ "joint score, added scores and Shapley effects: all 512 subsets, splines+neighbours", or why not."""
    if (joint["status"] != "ok").all():
        return f"not scored together: {joint['status'].iloc[0]} (see Problems)"
    how = (
        f"all {about.get('n_subsets'):,} subsets (exact)"
        if about.get("exact", True) and about.get("n_subsets")
        else f"{about.get('n_perm')} random orders (sampled)"
    )
    path = {"debiased": "; debiased by the real images", "generator": "; the generator alone (model-based)"}
    return (
        f"joint score, added scores and Shapley effects: {how}; estimator {about.get('estimator')}"
        f"{path.get(about.get('path'), '')}"
    )


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
        if value is True:  # a switch: its flag alone; an unset one (False) is left out
            parts.append(f"--{key.replace('_', '-')}")
        elif value is not None and value is not False:
            parts.append(f"--{key.replace('_', '-')} {shlex.quote(str(value))}")
    return " ".join(parts)


# the page


def _interval(ok: bool, low, high) -> str:
    return "—" if not ok or pd.isna(low) else f"{low:.3f}–{high:.3f}"


def _score_table(table: pd.DataFrame, level: str = "95%") -> str:
    sources = "source" in table.columns and table["source"].nunique() > 1
    together = "added" in table.columns
    head = ["Feature", "Output", *(["Source"] if sources else []), "S(A) on its own" if together else "S(A)"]
    head += [f"{level} CI", *(["Added to the others", f"{level} CI", "Shapley effect", f"{level} CI"] * together)]
    head += ["Unexplained", "n", "Groups"]
    body = []
    for r in table.itertuples():
        ok = r.status == "ok"
        note = "" if ok and not r.message else f' title="{html.escape(str(r.message))}"'
        cells = [r.feature, r.output, *([SOURCE_NAMES.get(r.source, r.source)] if sources else [])]
        cells += [f"{r.score:.3f}" if ok else r.status, _interval(ok, r.ci_low, r.ci_high)]
        if together:
            done = r.joint_status == "ok"
            blank = "—" if pd.isna(r.joint_status) else r.joint_status  # another source's row, or why not
            cells += [f"{r.added:.3f}" if done else blank, _interval(done, r.added_ci_low, r.added_ci_high)]
            cells += [f"{r.shapley:.3f}" if done else blank, _interval(done, r.shapley_ci_low, r.shapley_ci_high)]
        cells += [f"{r.unexplained:.3f}" if ok else "—", f"{r.n:,}"]
        cells.append(r.n_groups)
        body.append(f"<tr{note}>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    header = "".join(f"<th>{h}</th>" for h in head)
    return f'<table class="scores"><thead><tr>{header}</tr></thead><tbody>{"".join(body)}</tbody></table>'


PATTERN_WORDS = {  # figures.SOURCE_PATTERNS in words
    "data": "plain",
    "debiased": "hatched",
    "diffusion": "cross-hatched",
    "truth": "dotted",
}


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
    drawn += _together_figures(report, colors, intervals)
    own = primary_rows(table)
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


def _together_figures(report: ScoreReport, colors: dict, intervals: str) -> list[tuple[object, str]]:
    """The features together: what each adds to the others, and the fair shares stacked up to S(all)."""
    if report.joint is None or (report.joint["status"] != "ok").all():
        return []
    own = primary_rows(report.table)
    added = (
        figures.added_bars(own, colors, title="What each feature adds to all the others"),
        f"Added score S(all) − S(all but A) per feature, with {intervals}: what the feature explains beyond all the "
        "other recorded features. Near 0 for a feature that explains the output only through features correlated "
        "with it, however high its own score.",
    )
    shares = (
        figures.shapley_stack(own, report.joint, colors, title="Fair shares of what the features explain together"),
        "Shapley effects stacked: each feature's fair share of the joint score S(all), the variance the recorded "
        "features explain together; grey: the rest, which the image carries beyond these features. " + SHAPLEY_HONESTY,
    )
    return [added, shares]


STYLE = (HERE / "report.css").read_text()


PRINT_WIDTH = 680
PRINT_SCRIPT = (
    "<script>\n" + (HERE / "report.js").read_text().replace("__PRINT_WIDTH__", str(PRINT_WIDTH)) + "</script>\n"
)


def html_report(report: ScoreReport) -> str:
    """The standalone HTML report of a `ScoreReport`, as text (what `write_html` writes and the app's
    scores page offers for download): what was scored, a methods paragraph with the citation, the
    figures (plotly, inlined once, so the file opens offline), the table, the software; printable."""
    meta = report.metadata
    model, dataset = meta.get("model", {}).get("name", "model"), meta.get("dataset", {}).get("name", "dataset")
    title = f"Eve scores: {model} on {dataset}"
    outputs = ", ".join(report.output_names)
    lead = f"How much of the variance of {outputs} each feature explains: S(A) = Var(E[Y|A]) / Var(Y)."
    if report.joint is not None:
        lead += " Also what the features explain together, what each adds to the others, and their fair shares."
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
                [("Outputs scored", outputs_in_words(meta, report.output_names)), ("Y is", explained_words(meta))],
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
    if report.joint is not None:
        notes += "".join(
            f"<li><b>all features together / {html.escape(str(r.output))}</b> ({html.escape(str(r.status))}): "
            f"{html.escape(str(r.message))}</li>"
            for r in report.joint.itertuples()
            if r.status != "ok" or r.message
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
    path = writable(path)
    return write_text(path, html_report(report))
