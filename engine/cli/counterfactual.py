"""`python -m engine counterfactual`: one subject's edit (one feature changed, the others held), written as
JSON and PNGs, summarised."""

from __future__ import annotations

from engine.cards import ModelCard
from engine.cli.common import command_model
from engine.data import Dataset
from engine.data.defaults import open_dataset
from engine.diffusion import load_diffusion
from engine.errors import EveInputError
from engine.explanations.counterfactual import parse_change, subject_counterfactual, summary, write_counterfactual


def run_counterfactual_command(args) -> None:
    """`python -m engine counterfactual`: one subject's edit, written as JSON and PNGs, summarised."""
    if (args.value is None) == (args.change is None):
        raise EveInputError(
            "counterfactual takes one new value: give --value V (absolute) or --change +10, --change=-20%."
        )
    model, card, ref, device = command_model(args)
    dataset = open_dataset(args.data)
    diffusion = load_diffusion(args.diffusion or generator_for(args.data, dataset, card))
    row = dataset.index_of(args.subject)
    if args.feature not in dataset.table.columns:
        raise EveInputError(
            f"{dataset.name} has no feature {args.feature!r}: choose one of {', '.join(dataset.features)}."
        )
    before = float(dataset.table[args.feature].iloc[row])
    value = parse_change(args.change, before) if args.change is not None else float(args.value)
    result = subject_counterfactual(
        model, card, diffusion, dataset, args.subject, args.feature, value, output=args.output or 0
    )
    if result.clamped:
        print(f"warning: {result.clamped}")
    for path in write_counterfactual(result, args.out):
        print(f"wrote {path}")
    print(summary(result))


def generator_for(source: str, dataset: Dataset, card: ModelCard) -> str:
    """The committed generator of an embedded dataset, or the one trained on a user's folder for this model."""
    from engine.data.defaults import BUILDERS

    if source in BUILDERS:
        return source
    from engine.diffusion.cohort import find_generators

    found = [] if dataset.remote is not None else find_generators(dataset.root, card.spec)
    if not found:
        raise EveInputError(
            f"{dataset.name} has no diffusion model for {card.name}'s input: train one with `python -m engine "
            f"train-diffusion --data {dataset.location} --model {card.name}`, or name one with --diffusion."
        )
    return str(found[0])
