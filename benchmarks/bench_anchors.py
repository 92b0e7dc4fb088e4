"""Seconds for one subject's anchor on SynthBrain with the zoo's `synthbrain-diagnosis`, on this CPU.

What is timed, each separately:
* `outputs`: the model's outputs on the 400 rows once (`engine.scores.service.model_outputs`, slices read from the
  dataset's disk cache), and the decisions from them (`engine.explanations.anchors.cohort`): what the app caches;
* `per subject`: `engine.explanations.anchors.cohort_anchor` on those cached decisions, for 40 subjects
  (every 10th row),
  each once: median, max, and the draws it took;
* `cohort rules`: `engine.explanations.anchors.cohort_rules`, the anchors of 20 sampled subjects and the
  submodular pick.

    .venv/bin/python benchmarks/bench_anchors.py          # writes benchmarks/results/anchors.json
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.machine import describe  # noqa: E402
from engine.cards import ModelRef  # noqa: E402
from engine.explanations.anchors import AnchorConfig, cohort, cohort_anchor, cohort_rules  # noqa: E402
from engine.models import load  # noqa: E402
from engine.scores.service import model_outputs, open_dataset  # noqa: E402

MODEL = "synthbrain-diagnosis"
TARGET_SECONDS = 5.0  # one subject's anchor, outputs cached


def main() -> None:
    dataset = open_dataset("synthbrain")
    model, card = load(ModelRef.builtin(MODEL), "cpu")
    dataset.model_inputs(card.spec)  # the slices' disk cache, read before timing
    start = time.perf_counter()
    outputs = model_outputs(model, dataset, card.spec)
    found = cohort(None, card, dataset, outputs=outputs)
    outputs_seconds = time.perf_counter() - start
    rows = range(0, len(dataset), 10)
    seconds, draws, reached = [], [], 0
    for row in rows:
        start = time.perf_counter()
        anchor = cohort_anchor(found, row)
        seconds.append(time.perf_counter() - start)
        draws.append(anchor.n_drawn)
        reached += anchor.reaches_tau
    example = cohort_anchor(found, dataset.index_of("sub-0007"))
    start = time.perf_counter()
    table = cohort_rules(found, n_subjects=20, n_rules=5)
    rules_seconds = time.perf_counter() - start
    results = {
        "machine": describe(),
        "model": MODEL,
        "dataset": "synthbrain",
        "n_cohort": int(len(found.rows)),
        "config": {k: getattr(AnchorConfig(), k) for k in AnchorConfig.__dataclass_fields__},
        "outputs_seconds": round(outputs_seconds, 3),
        "per_subject_seconds": {
            "subjects": len(seconds),
            "median": round(float(np.median(seconds)), 4),
            "max": round(float(np.max(seconds)), 4),
            "target": TARGET_SECONDS,
        },
        "draws_per_subject": {"median": int(np.median(draws)), "max": int(np.max(draws))},
        "subjects_reaching_tau": f"{reached} of {len(seconds)}",
        "example": example.text,
        "cohort_rules": {
            "subjects": len(table.sampled),
            "rules": len(table.anchors),
            "seconds": round(rules_seconds, 3),
            "explained": round(table.explained[-1], 3) if table.explained else 0.0,
        },
    }
    print(f"outputs and decisions on {len(found.rows)} rows, once: {outputs_seconds:.2f} s")
    print(
        f"one subject's anchor (outputs cached): median {np.median(seconds):.3f} s, max {np.max(seconds):.3f} s "
        f"over {len(seconds)} subjects (target {TARGET_SECONDS:g} s); {reached} reach tau"
    )
    print(f"e.g. sub-0007: {example.text}")
    print(f"cohort rules (20 subjects, submodular pick): {rules_seconds:.2f} s, {len(table.anchors)} rules")
    out = ROOT / "benchmarks" / "results" / "anchors.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
