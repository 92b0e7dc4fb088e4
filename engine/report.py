"""The report files the CLI writes, and the `score` command.

    python -m engine score --data shapes --model shapes-size-texture --out report.json

Scores come from the scoring service (`engine.scoring.data_scores` / `diffusion_scores`);
this module writes them: `write_json` / `write_csv` / `write_html`. The HTML file is
standalone (plotly.js inline) and opens offline. `run_score_command` is the `score` CLI.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import plotly.io as pio
import torch
from tqdm import tqdm

from engine import default_device, figures
from engine.cards import ModelRef, UserCard
from engine.data import SliceSpec
from engine.errors import EveInputError
from engine.models.zoo import load
from engine.scoring import (
    ScoreReport,
    data_scores,
    diffusion_scores,
    open_dataset,
    resolve_features,
    trained_elsewhere,
)

TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".ts", ".jit", ".zip", ".torchscript")


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
        raise EveInputError(f"Cannot write {path} ({exc.strerror or exc}): choose a writable --out path.") from exc
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


def _meta_rows(meta: dict) -> str:
    rows = []
    for key, value in meta.items():
        if key == "arguments":  # the JSON keeps the raw command-line arguments
            continue
        text = json.dumps(_plain(value)) if isinstance(value, (dict, list)) else str(value)
        rows.append(f"<tr><th>{html.escape(str(key))}</th><td>{html.escape(text)}</td></tr>")
    return "\n".join(rows)


def write_html(report: ScoreReport, path: str | Path) -> Path:
    """A standalone HTML report: metadata, score bars with CIs, conditional curves, the table.

    plotly.js is inlined once, so the file works offline (about 5 MB).
    """
    path = _writable(path)
    colors = figures.feature_colors(list(report.features))
    drawn = [figures.score_bars(report.table, colors, group_by="output", title="Explained variance S(A) per feature")]
    drawn += [
        figures.curves_grid(
            report.table,
            out,
            report.features,
            outputs=None if report.outputs is None else report.outputs[:, j],
            categorical=report.categorical,
            value_tables=report.value_tables,
            colors=colors,
        )
        for j, out in enumerate(report.output_names)
    ]
    parts = [pio.to_html(fig, include_plotlyjs=(i == 0), full_html=False) for i, fig in enumerate(drawn)]
    table = report.table.to_html(index=False, float_format=lambda v: f"{v:.4f}", na_rep="—", border=0)
    problems = report.table[report.table["status"] != "ok"]
    notes = "".join(
        f"<li><b>{html.escape(str(r.feature))} / {html.escape(str(r.output))}</b>: {html.escape(str(r.message))}</li>"
        for r in problems.itertuples()
    )
    title = f"Eve scores: {report.metadata['model'].get('name', 'model')} on {report.metadata['dataset']['name']}"
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.9em; }} th, td {{ padding: 3px 10px; text-align: left; }}
tr:nth-child(even) {{ background: #f4f4f4; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>How much of the model's output Y is explained by each feature A: S(A) = Var(E[Y|A]) / Var(Y), estimated
by grouping on A with a correction for the upward bias of small groups, with a 95% bootstrap interval
(Jin, Zhu &amp; Fletcher, MIDL 2025).</p>
<table>{_meta_rows(report.metadata)}</table>
{"".join(f"<div>{p}</div>" for p in parts)}
<h2>Scores</h2>
{table}
{f"<h2>Problems</h2><ul>{notes}</ul>" if notes else ""}
</body></html>
"""
    return _write_text(path, page)


# 2. the `score` command ---------------------------------------------------------------------


def _is_torchscript(source: str) -> bool:
    path = Path(source)
    return path.suffix.lower() in TORCHSCRIPT_SUFFIXES or path.is_file() or "/" in source or "\\" in source


def model_ref(args) -> ModelRef:
    """The model the command names: a TorchScript file, with its input from --plane/--slice/--size/
    --intensity over the card beside it (`<model>.json` or `model.json`, `engine.cards.UserCard`) over
    Eve's defaults; or a built-in model, which takes its card's input (contradicting flags are refused).
    --explain says whether its output or a logit's probability is explained."""
    ref = replace(_model_ref(args), explain=args.explain)
    if args.register == "none":
        return ref
    if not ref.is_torchscript:
        raise EveInputError(
            f"--register mni is for TorchScript models: built-in model {args.model!r} takes its "
            "card's input; drop the flag."
        )
    return replace(ref, spec=replace(ref.spec, register=True))


def _model_ref(args) -> ModelRef:
    if _is_torchscript(args.model):
        card = UserCard.beside(args.model) or UserCard()
        return card.ref(
            args.model,
            input=args.input,
            plane=args.plane,
            slice=args.slice,
            size=args.size,
            spacing=args.spacing,
            intensity=args.intensity,
        )
    return ModelRef.builtin(args.model)


def _check_builtin_flags(args, spec: SliceSpec) -> None:
    given = {
        "input": args.input,
        "plane": args.plane,
        "slice": None if args.slice is None else SliceSpec.parse_index(args.slice),
        "size": args.size,
        "spacing": args.spacing,
        "intensity": args.intensity,
    }
    theirs = {
        "input": spec.input,
        "plane": spec.plane,
        "slice": spec.index,
        "size": spec.size,
        "spacing": spec.spacing,
        "intensity": spec.intensity,
    }
    clash = [f"--{k} {getattr(args, k)}" for k, v in given.items() if getattr(args, k) is not None and v != theirs[k]]
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
    device = torch.device(args.device) if args.device else default_device()
    ref = model_ref(args)
    model, card = load(ref, device)  # cheap: fails before the dataset's header checks
    if not ref.is_torchscript:
        _check_builtin_flags(args, card.spec)
    if args.output is not None:
        card.output_index(args.output)
    dataset = open_dataset(args.data)
    resolve_features(dataset, args.features)  # fails before the forward pass
    warning = trained_elsewhere(card, dataset)
    if warning:
        print(f"warning: {warning}")
    if args.method == "diffusion":
        from engine.diffusion import SamplerConfig, load_diffusion  # diffusers (~3 s) only for this method

        generator = load_diffusion(args.diffusion or dataset.name)
        sampler = SamplerConfig.for_scores(generator).override(
            free_features=args.free_features, readout_guidance=args.readout_guidance
        )
        progress, bar = _tqdm_progress("diffusion scores", "score")
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
            )
    else:
        progress, bar = _tqdm_progress("model outputs", "img")
        with bar:
            report = data_scores(
                model,
                card,
                dataset,
                args.features,
                split=args.split,
                n_boot=args.n_boot,
                seed=args.seed,
                output=args.output,
                batch_size=args.batch_size,
                progress=progress,
            )
    report.metadata["arguments"] = {k: v for k, v in vars(args).items() if k not in ("run", "command")}
    written = [write_html(report, out) if fmt == "html" else write_json(report, out), write_csv(report, csv_path)]
    _print_summary(report)
    for path in written:
        print(f"wrote {path}")
    return written


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
