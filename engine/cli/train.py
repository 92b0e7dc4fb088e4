"""The commands that build what Eve ships: `build-data` (the embedded datasets), `train-classifier` (zoo
models), `train-diffusion` (a generator of an embedded dataset, or of a user's folder alone)."""

from __future__ import annotations

from pathlib import Path

import torch

from engine.data import SliceSpec
from engine.data.dataset import GENERATORS_DIR, resolve_features
from engine.data.defaults import open_dataset
from engine.diffusion.cohort import CohortRecipe, save_cohort_model, train_on_cohort
from engine.errors import EveInputError


def build_data(args) -> None:
    """Build the embedded datasets that are missing; with `--banks`, then draw the explorer's banks of
    their generators (every feature at the explorer's defaults); with `--background`, do it all in a
    detached process that logs to `<data dir>/build.log` and return at once (`make run` opens the app
    on what is ready meanwhile)."""
    from engine.data.defaults import BUILDERS, build_default, build_lock, data_dir

    names = args.names or list(BUILDERS)
    if args.background:
        import os
        import subprocess
        import sys

        log = data_dir() / "build.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "engine", "build-data", *names] + (["--banks"] if args.banks else [])
        env = {**os.environ, "OMP_NUM_THREADS": "1"}  # its sampling leaves a core to the app's sessions
        with open(log, "a") as out:
            subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env)
        print(f"building {', '.join(names)}{' and the explorer banks' if args.banks else ''} in the background: {log}")
        return
    with build_lock("build-data", wait=False) as free:
        if not free:
            print("another build-data is running: it builds what is missing")
            return
        for name in names:
            print(f"{name}: {build_default(name, force=args.force)}", flush=True)
        if args.banks:
            draw_banks(names)


def draw_banks(names: list[str]) -> None:
    """The explorer's bank of every feature of each named generator, at the explorer's defaults: each
    one's first feature (what its explorer opens on) before the others."""
    from tqdm import tqdm

    from engine.diffusion import load_diffusion
    from engine.diffusion.banks import draw_bank, positions

    models = {name: load_diffusion(name) for name in names}
    order = [(n, m.features[0]) for n, m in models.items()] + [
        (n, f) for n, m in models.items() for f in m.features[1:]
    ]
    for name, feature in order:
        model = models[name]
        with tqdm(total=len(positions(model, feature)), desc=f"bank {name}/{feature}", unit="value") as bar:
            folder = draw_bank(model, feature, progress=lambda i, n: bar.update(i - bar.n))
        print(f"{name}/{feature}: {folder}", flush=True)


def train_diffusion(args) -> None:
    if (args.dataset is None) == (args.data is None):
        raise EveInputError(
            "train-diffusion takes one dataset: name an embedded one (synthbrain or shapes) or give --data DIR "
            "for your own folder, not both."
        )
    if args.data is not None:
        train_cohort_command(args)
        return
    from engine.diffusion.train import recipe, train_diffusion

    train_diffusion(
        recipe(args.dataset, **{k: getattr(args, k) for k in ("steps", "n_extra", "components", "threads", "seed")})
    )


def train_classifier(args) -> None:
    from engine.models.train import RECIPES, train_recipe

    torch.set_num_threads(args.threads)
    names = list(RECIPES) if args.all else args.names
    if not names:
        raise EveInputError(f"No zoo model named: name one to rebuild ({', '.join(RECIPES)}) or pass --all.")
    for name in names:
        card = train_recipe(name, args.out)
        metrics = {k: round(v, 3) for k, v in card.metrics.items() if isinstance(v, float)}
        print(f"{name}: held-out {metrics}")


def cohort_spec(args) -> SliceSpec:
    """The slice the generator makes: a model's input contract (`--model`, a built-in name or a
    TorchScript file and the card beside it, through the one card -> contract rule,
    `engine.cards.model_ref`), else the flags over a user model's defaults (`USER_DEFAULT`)."""
    from engine.cards import UserCard, model_ref
    from engine.models.zoo import list_cards

    given = dict(plane=args.plane, slice=args.slice, size=args.size, intensity=args.intensity)
    given["orientation"] = getattr(args, "orientation", None)
    if args.model is None:
        return UserCard().contract(**given)
    ref = model_ref(args.model, **given)
    if ref.is_torchscript:
        return ref.spec
    cards = {card.name: card for card in list_cards()}
    if args.model not in cards:
        raise EveInputError(f"Unknown model {args.model!r}: use a TorchScript file or one of {', '.join(cards)}.")
    return cards[args.model].spec


def train_cohort_command(args) -> Path:
    """`python -m engine train-diffusion --data DIR [...]`: train, save, print where and how long."""
    if args.threads:
        torch.set_num_threads(args.threads)
    dataset = open_dataset(args.data)
    features = None if args.features is None else resolve_features(dataset, args.features)  # None: all that vary
    spec = cohort_spec(args)
    recipe = CohortRecipe(
        kind=args.kind,
        **{k: getattr(args, k) for k in ("steps", "components", "seed") if getattr(args, k) is not None},
    )
    model = train_on_cohort(dataset, spec, features=features, recipe=recipe)
    path = save_cohort_model(model, Path(args.out) if args.out else dataset.root / GENERATORS_DIR)
    print(f"wrote {path} ({model.card.training['wall_time_seconds']:.0f} s)")
    return path
