"""Explained-variance scores of a model over a dataset, and the report files the CLI writes.

    python -m engine score --data shapes --model shapes-size-texture --out report.json

The pipeline, one public function a step (usable from a notebook, no UI):

1. `model_outputs(model, dataset, spec, rows)` -> (N, K) outputs Y = f(x_i), batched
   under `torch.inference_mode` with a tqdm bar;
2. `score_outputs(outputs, dataset, features, rows)` -> one row per feature x output
   with S(A) = Var(E[Y|A]) / Var(Y), its bootstrap CI and a status
   (`engine.tvd.score_table`: bias-corrected grouping estimator);
3. `write_json` / `write_csv` / `write_html` -> the report files. The HTML file is
   standalone (plotly.js inline) and opens offline.

`build_report` runs steps 1-2 and keeps what the writers need (outputs, feature values,
metadata); `score_dataset` returns its table. `run_score_command` is the `score` CLI.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from engine.data import Dataset, SliceSpec
from engine.errors import EveInputError
from engine.tvd import conditional_curve, score_table

SPLITS = ("test", "all")
TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".ts", ".jit", ".zip", ".torchscript")
CARD_KEYS = (
    "name",
    "kind",
    "description",
    "dataset",
    "target",
    "task",
    "output_names",
    "function",
    "weights_sha256",
    "sha256",
)
MAX_SCATTER = 2000  # points drawn per curve panel in the HTML report (a random subset beyond)


# 1. inputs: features, rows, outputs ---------------------------------------------------------


def resolve_features(dataset: Dataset, features=None) -> list[str]:
    """The features to score: a list or "a,b,c" string; default every numeric + categorical one."""
    if features is None or (isinstance(features, str) and not features.strip()):
        names = list(dataset.features)
    elif isinstance(features, str):
        names = [f.strip() for f in features.split(",") if f.strip()]
    else:
        names = [str(f) for f in features]
    if not names:
        raise EveInputError(f"{dataset.name} has no features to score: add feature columns to features.csv.")
    unknown = [f for f in names if f not in dataset.features]
    if unknown:
        raise EveInputError(
            f"Unknown feature{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} in {dataset.name}: "
            f"choose from {', '.join(dataset.features)}."
        )
    return list(dict.fromkeys(names))  # drop repeats, keep order


def split_rows(dataset: Dataset, split: str = "test") -> np.ndarray:
    """Row indices to score: the `test` split (every row if the table has no split column) or `all`."""
    if split not in SPLITS:
        raise EveInputError(f"Unknown split {split!r}: use one of {', '.join(SPLITS)}.")
    if split == "all":
        return np.arange(len(dataset))
    rows = dataset.split_indices("test")
    if not rows.size:
        raise EveInputError(f"{dataset.name} has no rows with split = 'test': use --split all.")
    return rows


def output_index(output_names: list[str], output: int | str) -> int:
    """Column of an output given by name or index (an index may be a digit string)."""
    if isinstance(output, str) and output in output_names:
        return output_names.index(output)
    if isinstance(output, (int, np.integer)) or (isinstance(output, str) and output.lstrip("-").isdigit()):
        index = int(output)
        if 0 <= index < len(output_names):
            return index
        raise EveInputError(
            f"Output index {index} is out of range: the model has {len(output_names)} output(s) "
            f"({', '.join(output_names)})."
        )
    raise EveInputError(f"Unknown output {output!r}: the model's outputs are {', '.join(output_names)}.")


def _card_parts(card_or_output_names) -> tuple[dict, list[str]]:
    """(card dict, output names) from a model card or a plain list of output names."""
    if isinstance(card_or_output_names, dict):
        card = dict(card_or_output_names)
        return card, [str(n) for n in card.get("output_names", [])]
    names = [str(n) for n in card_or_output_names]
    return {"name": "model", "kind": "unknown", "output_names": names}, names


# 2. model outputs ---------------------------------------------------------------------------


def _model_device(model) -> torch.device:
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


@torch.inference_mode()
def model_outputs(
    model, dataset: Dataset, spec: SliceSpec, rows=None, batch_size: int = 64, device=None, progress: bool = True
) -> np.ndarray:
    """Model outputs f(x_i) for dataset rows, as a (N, K) float32 array in row order.

    Args:
        model: a torch module (or TorchScript) mapping (B, 1, S, S) float32 images in [0, 1]
            to (B, K) outputs; put it in eval mode and on `device` first.
        dataset: a loaded dataset.
        spec: the slice the model sees (plane, slice, size S).
        rows: (N,) row indices; default every row.
        batch_size: images per forward pass.
        device: where to run the batches; default the model's device (else the CPU).
        progress: show a tqdm bar (on stderr).

    The slices come from `dataset.model_inputs(spec, rows)` (computed once per spec and
    disk-cached); a (B,) output is read as (B, 1).
    """
    rows = np.arange(len(dataset)) if rows is None else np.asarray(rows, dtype=np.int64)
    device = torch.device(device) if device is not None else _model_device(model)
    images = dataset.model_inputs(spec, rows)  # (N, 1, S, S)
    outs = []
    with tqdm(total=len(rows), desc="model outputs", unit="img", disable=not progress, leave=False) as bar:
        for start in range(0, len(rows), batch_size):
            batch = images[start : start + batch_size].to(device)  # (B, 1, S, S)
            out = model(batch)
            if not isinstance(out, torch.Tensor) or out.ndim not in (1, 2) or out.shape[0] != len(batch):
                shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                raise EveInputError(
                    f"The model returned {shape} for a batch of {len(batch)} images: it must return one (B, K) tensor."
                )
            outs.append(out.reshape(len(batch), -1).float().cpu())
            bar.update(len(batch))
    if not outs:
        raise EveInputError("No images to score: the chosen split is empty.")
    return torch.cat(outs).numpy()  # (N, K)


# 3. scores ----------------------------------------------------------------------------------


def score_outputs(
    outputs,
    dataset: Dataset,
    features=None,
    rows=None,
    output_names: list[str] | None = None,
    *,
    n_boot: int = 200,
    seed: int = 0,
    ci: float = 0.95,
) -> pd.DataFrame:
    """Score table for precomputed outputs on dataset rows (`engine.tvd.score_table`).

    Args:
        outputs: (N,) or (N, K) outputs for `rows`, in the same order.
        dataset: gives the feature values and which features are categorical.
        features: names (list or "a,b,c"); default every feature.
        rows: (N,) row indices the outputs belong to; default every row.
        output_names: K names (default "y0".."y{K-1}").

    Returns one row per (feature, output): feature, output, score, ci_low, ci_high,
    unexplained, n, n_groups, status, message.
    """
    names = resolve_features(dataset, features)
    rows = np.arange(len(dataset)) if rows is None else np.asarray(rows, dtype=np.int64)
    y = np.asarray(outputs, dtype=float)
    if len(y) != len(rows):
        raise ValueError(f"{len(y)} outputs for {len(rows)} rows")
    values = {f: dataset.feature_values(f)[rows] for f in names}
    cats = tuple(f for f in names if f in dataset.categorical_features)
    return score_table(y, values, categorical=cats, output_names=output_names, n_boot=n_boot, seed=seed, ci=ci)


@dataclass
class ScoreReport:
    """Everything the report writers need. Build with `build_report`."""

    table: pd.DataFrame  # one row per (feature, output), score_table's columns
    output_names: list[str]  # names of the scored output columns
    features: dict[str, np.ndarray]  # name -> (N,) values on the scored rows
    categorical: tuple[str, ...]  # features grouped exactly
    metadata: dict  # dataset, model, spec, split, n, method, n_boot, seed, ...
    outputs: np.ndarray | None = None  # (N, K) outputs on the scored rows (data method)
    value_tables: dict = field(default_factory=dict)  # (feature, output) -> per-value table (diffusion)


def _spec_dict(spec: SliceSpec) -> dict:
    return {"plane": spec.plane, "index": spec.index, "size": int(spec.size)}


def _metadata(dataset: Dataset, card: dict, spec: SliceSpec, **extra) -> dict:
    return {
        "eve": "Eve, the Explained-Variance Explorer",
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "score": "S(A) = Var(E[Y|A]) / Var(Y), bias-corrected, percentile-bootstrap CI",
        "dataset": {"name": dataset.name, "path": str(dataset.root.resolve()), "n_rows": len(dataset)},
        "model": {k: card[k] for k in CARD_KEYS if k in card},
        "spec": _spec_dict(spec),
        **extra,
    }


def build_report(
    model,
    card_or_output_names,
    dataset: Dataset,
    features=None,
    spec: SliceSpec | None = None,
    *,
    split: str = "test",
    n_boot: int = 200,
    seed: int = 0,
    output: int | str | None = None,
    batch_size: int = 64,
    device=None,
    progress: bool = True,
    ci: float = 0.95,
) -> ScoreReport:
    """Model outputs on a split of the dataset and their scores for each feature (data method).

    Args:
        model: (B, 1, S, S) -> (B, K) module in eval mode (see `model_outputs`).
        card_or_output_names: the model's card (a dict from `engine.models.zoo`) or its
            K output names.
        dataset: a loaded dataset.
        features: names (list or "a,b,c"); default every numeric + categorical feature.
        spec: the model's input slice; default the card's spec.
        split: "test" (the test split; every row without a split column) or "all".
        n_boot: bootstrap draws for the CI (0: no CI).
        seed: seed of the bootstrap.
        output: score only this output (name or index); default every output.
        batch_size, device, progress: passed to `model_outputs`.
        ci: confidence level of the interval.
    """
    card, names = _card_parts(card_or_output_names)
    if spec is None:
        if "spec" not in card:
            raise EveInputError("No input slice given: pass spec=SliceSpec(plane, slice, size) for this model.")
        spec = SliceSpec(card["spec"]["plane"], card["spec"]["index"], int(card["spec"]["size"]))
    feature_names = resolve_features(dataset, features)  # fail before the forward pass
    rows = split_rows(dataset, split)
    if output is not None and names:
        output_index(names, output)
    if n_boot < 0:
        raise EveInputError(f"n_boot = {n_boot}: use 0 (no CI) or a positive number of bootstrap draws.")
    y = model_outputs(model, dataset, spec, rows, batch_size=batch_size, device=device, progress=progress)
    if not names:
        names = [f"output_{j}" for j in range(y.shape[1])]
    if len(names) != y.shape[1]:
        raise EveInputError(
            f"The model returned {y.shape[1]} outputs per image but its card names {len(names)}: "
            "give one name per output."
        )
    if output is not None:
        j = output_index(names, output)
        y, names = y[:, [j]], [names[j]]
    table = score_outputs(y, dataset, feature_names, rows, names, n_boot=n_boot, seed=seed, ci=ci)
    values = {f: dataset.feature_values(f)[rows] for f in feature_names}
    cats = tuple(f for f in feature_names if f in dataset.categorical_features)
    meta = _metadata(
        dataset,
        card,
        spec,
        method="data",
        split=split,
        n=int(len(rows)),
        features=feature_names,
        categorical=list(cats),
        n_boot=int(n_boot),
        seed=int(seed),
        ci_level=ci,
    )
    return ScoreReport(table, names, values, cats, meta, outputs=y)


def score_dataset(
    model,
    card_or_output_names,
    dataset: Dataset,
    features=None,
    spec: SliceSpec | None = None,
    *,
    split: str = "test",
    n_boot: int = 200,
    seed: int = 0,
    **kw,
) -> pd.DataFrame:
    """The score table of `build_report`: one row per feature x output (see `score_outputs`)."""
    return build_report(
        model, card_or_output_names, dataset, features, spec, split=split, n_boot=n_boot, seed=seed, **kw
    ).table


def diffusion_report(
    model,
    card: dict,
    dataset: Dataset,
    features=None,
    *,
    diffusion: str | None = None,
    output: int | str | None = None,
    k_values: int = 8,
    n_per_value: int = 32,
    n_boot: int = 200,
    seed: int = 0,
    steps: int = 20,
    batch_size: int = 64,
    progress: bool = True,
    free_features: str | None = None,
    readout_guidance: float | None = None,
) -> ScoreReport:
    """Scores from a conditional diffusion model (`engine.diffusion.diffusion_score`) instead of data.

    Raises `EveInputError` when the diffusion engine is not available.
    """
    try:
        import engine.diffusion as diffusion_engine

        score_fn = getattr(diffusion_engine, "diffusion_score", None)
    except Exception:  # an engine piece mid-build can fail to import in any way
        score_fn = None
    if score_fn is None:
        raise EveInputError(
            "The diffusion engine is not available yet (engine.diffusion has no diffusion_score): use --method data."
        )
    feature_names = resolve_features(dataset, features)
    card = {**card, "dataset": card.get("dataset") or dataset.name}  # a TorchScript model: the data it scores
    names = [str(n) for n in card.get("output_names", [])] or ["output_0"]
    columns = [output_index(names, output)] if output is not None else list(range(len(names)))
    rows, tables = [], {}
    todo = [(f, j) for f in feature_names for j in columns]
    for f, j in tqdm(todo, desc="diffusion scores", unit="score", disable=not progress, leave=False):
        r, per_value = score_fn(
            model,
            card,
            diffusion or dataset.name,
            f,
            k_values=k_values,
            n_per_value=n_per_value,
            output=j,
            seed=seed,
            steps=steps,
            batch_size=batch_size,
            n_boot=n_boot,
            free_features=free_features,
            readout_guidance=readout_guidance,
        )
        rows.append((f, names[j], r.score, r.ci_low, r.ci_high, 1 - r.score, r.n, r.n_groups, r.status, r.message))
        tables[(f, names[j])] = per_value
    columns_ = ["feature", "output", "score", "ci_low", "ci_high", "unexplained", "n", "n_groups", "status", "message"]
    cats = tuple(f for f in feature_names if f in dataset.categorical_features)
    spec = SliceSpec(card["spec"]["plane"], card["spec"]["index"], int(card["spec"]["size"]))
    meta = _metadata(
        dataset,
        card,
        spec,
        method="diffusion",
        diffusion=diffusion or dataset.name,
        features=feature_names,
        categorical=list(cats),
        k_values=k_values,
        n_per_value=n_per_value,
        steps=steps,
        free_features=next((str(t["free_features"].iloc[0]) for t in tables.values() if "free_features" in t),
                           free_features),  # fmt: skip
        readout_guidance=next((float(t["readout_guidance"].iloc[0]) for t in tables.values()
                               if "readout_guidance" in t), readout_guidance),  # fmt: skip
        n_boot=int(n_boot),
        seed=int(seed),
        ci_level=0.95,
    )
    scored = [names[j] for j in columns]
    values = {f: dataset.feature_values(f) for f in feature_names}
    return ScoreReport(pd.DataFrame(rows, columns=columns_), scored, values, cats, meta, value_tables=tables)


# 4. writers ---------------------------------------------------------------------------------


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
    """Write the score table as CSV (one row per feature x output)."""
    path = _writable(path)
    return _write_text(path, report.table.to_csv(index=False, float_format="%.6g"))


def _rgba(hex_color: str, alpha: float) -> str:
    h = hex_color.lstrip("#")
    return f"rgba({int(h[0:2], 16)},{int(h[2:4], 16)},{int(h[4:6], 16)},{alpha})"


def score_figure(table: pd.DataFrame, title: str = "Explained variance S(A) per feature"):
    """Bars of S(A) per feature with the CI as error bars, one colour per output."""
    import plotly.graph_objects as go
    from plotly.colors import qualitative

    fig = go.Figure()
    for i, (out, part) in enumerate(table.groupby("output", sort=False)):
        score = part["score"].to_numpy(float)
        fig.add_trace(
            go.Bar(
                x=part["feature"],
                y=score,
                name=str(out),
                marker_color=qualitative.Plotly[i % 10],
                error_y=dict(
                    type="data",
                    symmetric=False,
                    array=part["ci_high"].to_numpy(float) - score,
                    arrayminus=score - part["ci_low"].to_numpy(float),
                ),
                customdata=np.c_[part["ci_low"], part["ci_high"], part["status"]],
                hovertemplate="%{x}: S = %{y:.3f} [%{customdata[0]:.3f}, %{customdata[1]:.3f}] %{customdata[2]}"
                "<extra>" + html.escape(str(out)) + "</extra>",
            )
        )
    fig.update_layout(
        title=title,
        barmode="group",
        yaxis=dict(title="S(A) = Var(E[Y|A]) / Var(Y)", range=[0, 1]),
        xaxis_title="feature",
        height=420,
        legend_title="output",
    )
    return fig


def curves_figure(report: ScoreReport, output: str, color: str = "#1f77b4"):
    """One panel per feature: outputs vs feature values, E[Y | A = a] and its 95% band."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    feats = list(report.features)
    j = report.output_names.index(output)
    scores = report.table[report.table["output"] == output].set_index("feature")
    titles = []
    for f in feats:
        r = scores.loc[f]
        titles.append(
            f"{f}: S = {r['score']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"
            if r["status"] == "ok"
            else f"{f}: {r['status']}"
        )
    n_cols = min(3, len(feats))
    n_rows = math.ceil(len(feats) / n_cols)
    fig = make_subplots(
        rows=n_rows, cols=n_cols, subplot_titles=titles, horizontal_spacing=0.07, vertical_spacing=0.5 / max(n_rows, 1)
    )
    for i, f in enumerate(feats):
        row, col = i // n_cols + 1, i % n_cols + 1
        categorical = f in report.categorical
        if report.outputs is not None:
            y, a = report.outputs[:, j].astype(float), report.features[f]
            keep = np.random.default_rng(0).permutation(len(y))[:MAX_SCATTER]
            fig.add_trace(
                go.Scatter(
                    x=np.asarray(a[keep]).astype(str) if categorical else a[keep],
                    y=y[keep],
                    mode="markers",
                    marker=dict(color=_rgba(color, 0.25), size=4),
                    showlegend=False,
                    hoverinfo="skip",
                ),
                row=row,
                col=col,
            )
            curve = conditional_curve(y, a, categorical=categorical)
            x, mean, low, high = curve.grid, curve.mean, curve.band_low, curve.band_high
            ok = curve.status == "ok"
        else:  # diffusion: the per-value means with a normal-theory band
            values = report.value_tables.get((f, output))
            ok = values is not None and len(values) > 0
            if ok:
                x, mean = values["value"].to_numpy(), values["mean"].to_numpy(float)
                half = 1.96 * np.sqrt(values["variance"].to_numpy(float) / values["n"].to_numpy(float))
                low, high = mean - half, mean + half
        if not ok:
            continue
        if categorical:
            fig.add_trace(
                go.Scatter(
                    x=np.asarray(x).astype(str),
                    y=mean,
                    mode="markers",
                    showlegend=False,
                    marker=dict(color="black", size=9, symbol="diamond"),
                    error_y=dict(type="data", symmetric=False, array=high - mean, arrayminus=mean - low),
                ),
                row=row,
                col=col,
            )
        else:
            fig.add_trace(
                go.Scatter(
                    x=np.r_[x, x[::-1]],
                    y=np.r_[high, low[::-1]],
                    fill="toself",
                    fillcolor=_rgba(color, 0.25),
                    line=dict(width=0),
                    showlegend=False,
                    hoverinfo="skip",
                ),
                row=row,
                col=col,
            )
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=mean,
                    mode="lines",
                    line=dict(color=color, width=3),
                    showlegend=False,
                    hovertemplate=f"{html.escape(f)} %{{x:.3g}}<br>E[Y|A] %{{y:.3g}}<extra></extra>",
                ),
                row=row,
                col=col,
            )
        fig.update_xaxes(title_text=f, row=row, col=col)
    fig.update_layout(title=f"E[{output} | A = a] with its 95% band", height=320 * n_rows, showlegend=False)
    return fig


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
    import plotly.io as pio

    path = _writable(path)
    figures = [score_figure(report.table)]
    figures += [curves_figure(report, out) for out in report.output_names]
    parts = [pio.to_html(fig, include_plotlyjs=(i == 0), full_html=False) for i, fig in enumerate(figures)]
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


# 5. the `score` command ---------------------------------------------------------------------


def _parse_slice(text: str | None):
    """--slice value: None/"middle" -> None (middle), digits -> voxel index, else a named slice."""
    if text is None or text.lower() in ("middle", "none", ""):
        return None
    return int(text) if text.lstrip("-").isdigit() else text


def _load_data(source: str) -> Dataset:
    from engine.data import load_dataset
    from engine.data.defaults import BUILDERS, load_default

    if source in BUILDERS and not Path(source).is_dir():
        return load_default(source)
    return load_dataset(source)


def _is_torchscript(source: str) -> bool:
    path = Path(source)
    return path.suffix.lower() in TORCHSCRIPT_SUFFIXES or path.is_file() or "/" in source or "\\" in source


def _load_model(args, device: torch.device):
    """(model, card, spec) for a zoo name or a TorchScript file (--plane/--slice/--size)."""
    from engine.models.zoo import card_spec, load_model, load_torchscript

    given = {"plane": args.plane, "slice": None if args.slice is None else _parse_slice(args.slice), "size": args.size}
    if _is_torchscript(args.model):
        spec = SliceSpec(args.plane or "axial", _parse_slice(args.slice), args.size or 64)
        model, card = load_torchscript(args.model, spec, name=Path(args.model).name, device=device)
        return model, card, spec
    model, card = load_model(args.model, device)
    spec = card_spec(card)
    theirs = {"plane": spec.plane, "slice": spec.index, "size": spec.size}
    clash = [f"--{k} {getattr(args, k)}" for k, v in given.items() if getattr(args, k) is not None and v != theirs[k]]
    if clash:
        raise EveInputError(
            f"Built-in model {args.model!r} takes its card's input ({spec.plane}, slice {spec.index}, "
            f"size {spec.size}); {', '.join(clash)} do not match: drop them (they are for "
            "TorchScript models)."
        )
    return model, card, spec


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
    device = torch.device(args.device) if args.device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, card, spec = _load_model(args, device)  # cheap: fails before the dataset's header checks
    if args.output is not None and card.get("output_names"):
        output_index([str(n) for n in card["output_names"]], args.output)
    dataset = _load_data(args.data)
    resolve_features(dataset, args.features)  # fails before the forward pass
    if card.get("dataset") and card["dataset"] != dataset.name:
        print(f"note: model {card['name']!r} was trained on {card['dataset']!r}; scoring it on {dataset.name!r}.")
    if args.method == "diffusion":
        report = diffusion_report(
            model,
            card,
            dataset,
            args.features,
            diffusion=args.diffusion,
            output=args.output,
            k_values=args.k_values,
            n_per_value=args.n_per_value,
            n_boot=args.n_boot,
            seed=args.seed,
            batch_size=args.batch_size,
            free_features=args.free_features,
            readout_guidance=args.readout_guidance,
        )
    else:
        report = build_report(
            model,
            card,
            dataset,
            args.features,
            spec,
            split=args.split,
            n_boot=args.n_boot,
            seed=args.seed,
            output=args.output,
            batch_size=args.batch_size,
            device=device,
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
