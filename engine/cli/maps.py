"""`python -m engine maps`: every method's maps of chosen images, how good each method's maps are, and what
each region carries (`engine.pixelmaps.report`)."""

from __future__ import annotations

from engine.cli.common import command_model
from engine.data.defaults import open_dataset
from engine.errors import EveInputError
from engine.pixelmaps.report import default_methods, map_report, write_map_report
from engine.progress import bar
from engine.scores.service import split_rows


def run_maps_command(args) -> None:
    """`python -m engine maps`: the report for the command's model, images and methods, written and summarised."""
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
    progress, shown = bar("maps", "method")
    with shown:
        report = map_report(
            model,
            card,
            dataset,
            rows,
            methods,
            target=target,
            region_kind=args.regions,
            seed=args.seed,
            progress=progress,
        )
    for path in write_map_report(report, args.out):
        print(f"wrote {path}")
    shown = report.quality.set_index("method")[["deletion_auc", "insertion_auc", "sparseness", "seconds_per_map"]]
    print(shown.to_string(float_format=lambda v: f"{v:.3g}"))
