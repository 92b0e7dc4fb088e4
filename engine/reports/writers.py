"""The report files: a `ScoreReport` as JSON and as CSV, and the two rules every written file follows
(`writable`: its folder must exist and accept a file; `write_text`: written atomically)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from engine.errors import EveInputError, reason
from engine.paths import output_path
from engine.scores.service import ScoreReport, joint_on_rows


def plain(x):
    """JSON-safe Python value: NaN/Inf -> None, numpy scalars -> Python numbers."""
    if isinstance(x, dict):
        return {str(k): plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    if isinstance(x, np.ndarray):
        return [plain(v) for v in x.tolist()]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def report_dict(report: ScoreReport) -> dict:
    """The JSON document: metadata plus `scores`, one record per feature x output (with the added score and
    the Shapley effect beside the first-order score when the features were also scored together), and then
    `joint`: how they were scored together and S(all) per output (its `scores`)."""
    document = {**report.metadata, "outputs": report.output_names, "scores": report.table.to_dict("records")}
    if report.joint is not None:
        document["joint"] = {**report.metadata.get("joint", {}), "scores": report.joint.to_dict("records")}
    return plain(document)


def writable(path: str | Path, suffixes: tuple[str, ...] = ()) -> Path:
    """`engine.paths.output_path`: the one --out rule (suffix checked, a missing folder created)."""
    return output_path(path, suffixes)


def write_text(path: Path, text: str) -> Path:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise EveInputError(
            f"Cannot write {path} ({exc.strerror or reason(exc)}): choose a writable --out path."
        ) from exc
    return path


def json_text(report: ScoreReport) -> str:
    """The scores and metadata as JSON text (NaN as null): the CLI's file and the app's download alike."""
    return json.dumps(report_dict(report), indent=2, allow_nan=False) + "\n"


def csv_text(report: ScoreReport) -> str:
    """The score table as CSV text (one row per feature x output, with the input contract used). With the
    features scored together, each row of the report's own method also carries its output's joint score
    S(all) of all the features (`joint_score`, `joint_ci_low`, `joint_ci_high`): a CSV travels without its JSON."""
    table = report.table
    if report.joint is not None:
        own = table["source"].eq(table["source"].iloc[0]) if "source" in table.columns and len(table) else None
        table = joint_on_rows(table, report.joint, own)
    if "input" in report.metadata:  # the input contract, on every row: a CSV travels without its JSON
        table = table.assign(input=report.metadata["input"])
    return table.to_csv(index=False, float_format="%.6g")


def write_json(report: ScoreReport, path: str | Path) -> Path:
    """Write `json_text(report)`."""
    return write_text(writable(path), json_text(report))


def write_csv(report: ScoreReport, path: str | Path) -> Path:
    """Write `csv_text(report)`."""
    return write_text(writable(path), csv_text(report))
