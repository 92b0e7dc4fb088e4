"""What every command shares: the model a command names and where it runs (`command_model`), and where its
output goes (`engine.reports.writers.writable`, the one --out rule); progress bars are `engine.progress.bar`."""

from __future__ import annotations

from engine.cards import ModelRef, is_torchscript_source
from engine.cards import model_ref as cards_model_ref
from engine.data import SliceSpec
from engine.data.bundle import trust as trust_bundle
from engine.devices import resolve_device
from engine.errors import EveInputError
from engine.models.zoo import load

# the flags of a TorchScript model's input contract, as `UserCard.contract` takes them
CONTRACT_FLAGS = ("input", "plane", "slice", "size", "spacing", "orientation", "intensity")


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
