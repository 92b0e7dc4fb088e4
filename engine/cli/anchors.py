"""`python -m engine anchors`: a subject's anchor, or the cohort's rules, written as JSON."""

from __future__ import annotations

import json
from pathlib import Path

from engine.cli.common import command_model
from engine.data.defaults import open_dataset
from engine.explanations.anchors import AnchorConfig, anchors_metadata, cohort, cohort_anchor, cohort_rules
from engine.reports.writers import plain, writable, write_text


def run_anchors_command(args) -> Path:
    """`python -m engine anchors`: a subject's anchor (--subject) or the cohort's rules, written as JSON."""
    out = writable(args.out, (".json",))
    config = AnchorConfig(tau=args.tau, beam_width=args.beam_width)
    model, card, ref, device = command_model(args)
    dataset = open_dataset(args.data)
    row = dataset.index_of(args.subject) if args.subject else None
    found = cohort(model, card, dataset, split=args.split, features=args.features, threshold=args.threshold)
    if row is not None:
        anchor = cohort_anchor(found, row, config=config, seed=args.seed)
        document = {**anchors_metadata(found, card, config, args.seed), "anchor": anchor.to_json()}
        print(anchor.text)
    else:
        table = cohort_rules(found, n_subjects=args.n_subjects, n_rules=args.n_rules, config=config, seed=args.seed)
        meta = anchors_metadata(found, card, config, args.seed, pick="submodular pick (SP-Anchor)")
        document = {**meta, **table.to_json()}
        for a, share in zip(table.anchors, table.explained, strict=True):
            print(f"{a.text}; explained so far {share:.0%}")
        reaching = f"{table.n_reaching} of {len(table.sampled)} sampled subjects"
        print(f"{reaching} have an anchor reaching tau = {config.tau:g}")
    write_text(out, json.dumps(plain(document), indent=2, allow_nan=False) + "\n")
    print(f"wrote {out}")
    return out
