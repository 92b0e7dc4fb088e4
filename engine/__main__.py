"""Eve's command line: `python -m engine COMMAND ...` (`--help` lists the commands).

Each command imports its engine module when it runs: `build-data` and `--help` then start in
well under a second instead of loading torch, captum and diffusers (~5 s) first.
"""

from __future__ import annotations

import argparse
import sys

from engine.errors import EveInputError


def _build_data(args: argparse.Namespace) -> None:
    from engine.data.defaults import BUILDERS, build_default

    for name in args.names or list(BUILDERS):
        path = build_default(name, force=args.force)
        print(f"{name}: {path}")


def _score(args: argparse.Namespace) -> None:
    from engine.report import run_score_command

    run_score_command(args)


def _maps(args: argparse.Namespace) -> None:
    from engine.map_report import run_maps_command

    run_maps_command(args)


def _counterfactual(args: argparse.Namespace) -> None:
    from engine.counterfactual import run_counterfactual_command

    run_counterfactual_command(args)


def _anchors(args: argparse.Namespace) -> None:
    from engine.anchors import run_anchors_command

    run_anchors_command(args)


def _train_diffusion(args: argparse.Namespace) -> None:
    if (args.dataset is None) == (args.data is None):
        raise EveInputError(
            "train-diffusion takes one dataset: name an embedded one (synthbrain or shapes) or give --data DIR "
            "for your own folder, not both."
        )
    if args.data is not None:
        from engine.diffusion.cohort import train_cohort_command

        train_cohort_command(args)
        return
    from engine.diffusion.train import recipe, train_diffusion

    train_diffusion(
        recipe(args.dataset, **{k: getattr(args, k) for k in ("steps", "n_extra", "components", "threads", "seed")})
    )


def _train_classifier(args: argparse.Namespace) -> None:
    import torch

    from engine.models.train import RECIPES, train_recipe

    torch.set_num_threads(args.threads)
    names = list(RECIPES) if args.all else args.names
    if not names:
        raise EveInputError(f"No zoo model named: name one to rebuild ({', '.join(RECIPES)}) or pass --all.")
    for name in names:
        card = train_recipe(name, args.out)
        metrics = {k: round(v, 3) for k, v in card.metrics.items() if isinstance(v, float)}
        print(f"{name}: held-out {metrics}")


def add_model_input_arguments(parser: argparse.ArgumentParser) -> None:
    """A TorchScript model's input flags (built-in models take their card's) and what is explained."""
    parser.add_argument(
        "--input",
        choices=("slice", "volume"),
        default=None,
        help="TorchScript only: the model takes a 2D slice (default) or the whole volume, (B, 1, S, S, S) with "
        "S = --size, resampled to isotropic voxels (--spacing) and centre-cropped or padded",
    )
    parser.add_argument(
        "--spacing",
        type=float,
        default=None,
        help="TorchScript volume input only: isotropic voxel size in mm (default: fit the field of view into the cube)",
    )
    parser.add_argument(
        "--plane",
        choices=("axial", "coronal", "sagittal"),
        default=None,
        help="TorchScript only: slice plane (default axial; built-in models use their card)",
    )
    parser.add_argument(
        "--slice",
        default=None,
        help="TorchScript only: voxel index, a named slice (e.g. ventricles) or middle (default); under "
        "--orientation stored, along the stored axis closest to the plane",
    )
    parser.add_argument(
        "--size",
        type=int,
        default=None,
        help="TorchScript only: input side in pixels, or the cube's side in voxels for a volume (default 64)",
    )
    parser.add_argument(
        "--register",
        choices=("none", "mni"),
        default="none",
        help="TorchScript only: mni registers each volume to MNI152 (affine, SimpleITK; the transform cached per "
        "file) before slicing, so a named slice can be taken from native-space volumes",
    )
    parser.add_argument(
        "--orientation",
        choices=("stored", "ras"),
        default=None,
        help="TorchScript only: the arrays as the files store them (stored, the default: what "
        "nib.load(f).get_fdata() gives a training pipeline) or in Eve's RAS+ convention, slices in neurological "
        "display (ras; built-in models use their card's)",
    )
    parser.add_argument(
        "--intensity",
        choices=("raw", "p99", "zscore", "minmax"),
        default=None,
        help="TorchScript only: what the model is fed, applied to each volume before slicing: raw (the stored "
        "values; the default), p99 (Eve's rule: divide by the 99th percentile of non-zero voxels, clip to [0, 1]), "
        "zscore or minmax (built-in models use their card's)",
    )
    parser.add_argument(
        "--explain",
        choices=("output", "probability"),
        default="output",
        help="what is explained: the model's output as it is (default), or the probability of a logit output "
        "(sigmoid; softmax over K): their scores differ",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    build = commands.add_parser("build-data", help="build the embedded default datasets if missing")
    build.add_argument("names", nargs="*", help="shapes and/or synthbrain (default: both)")
    build.add_argument("--force", action="store_true", help="rebuild even if present")
    build.set_defaults(run=_build_data)

    score = commands.add_parser(
        "score",
        help="explained-variance scores S(A) of a model's outputs for each feature, with CIs",
        description="Compute S(A) = Var(E[Y|A]) / Var(Y) for every feature A and model output Y over a dataset; "
        "write JSON (or a standalone HTML report) and a CSV beside it.",
    )
    score.add_argument("--data", required=True, help="an embedded dataset (shapes, synthbrain) or a dataset folder")
    score.add_argument("--model", required=True, help="a built-in model name or a TorchScript file (.pt)")
    score.add_argument("--features", default=None, help="comma-separated features (default: every feature)")
    score.add_argument("--out", required=True, help="report path (.json or .html); the CSV goes beside it")
    score.add_argument(
        "--format",
        choices=("json", "html"),
        default=None,
        help="report format (default: html for an .html --out, else json)",
    )
    add_model_input_arguments(score)
    score.add_argument(
        "--split",
        choices=("test", "all"),
        default="test",
        help="rows to score: the test split (default; every row without a split column) or all",
    )
    score.add_argument("--n-boot", type=int, default=200, help="bootstrap draws for the 95%% CI (0: none)")
    score.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (and of diffusion sampling)")
    score.add_argument("--output", default=None, help="score only this output (name or index; default: all)")
    score.add_argument(
        "--method",
        choices=("data", "diffusion"),
        default="data",
        help="data: group the dataset's outputs (default); diffusion: sample p(x | A = a)",
    )
    score.add_argument("--diffusion", default=None, help="diffusion method: its model (default: the --data name)")
    score.add_argument("--k-values", type=int, default=8, help="diffusion method: feature values K (default 8)")
    score.add_argument("--n-per-value", type=int, default=32, help="diffusion method: samples per value (default 32)")
    score.add_argument(
        "--free-features",
        choices=("table", "model"),
        default=None,
        help="diffusion method: draw the other features from the training rows nearest each value "
        "(table; the default when the model has them) or by the denoiser's condition dropout",
    )
    score.add_argument(
        "--readout-guidance",
        type=float,
        default=None,
        help="diffusion method: strength of the guidance by the model's feature read-out "
        "(default: 100 when the model has one; 0: none)",
    )
    score.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default 64)")
    score.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    score.add_argument(
        "--ray",
        nargs="?",
        const="local",
        default=None,
        metavar="ADDRESS",
        help="fan the model's outputs (data path) or each feature's samples (diffusion path) out over a Ray "
        "cluster: join the one at ADDRESS (host:port or auto), or with no ADDRESS start a local one on "
        "127.0.0.1; the scores equal a local run's",
    )
    score.set_defaults(run=_score)

    maps = commands.add_parser(
        "maps",
        help="attribution maps of chosen images by every method, how good each method's maps are, and what each "
        "region carries",
        description="Compute each attribution method's maps of the chosen images; write the quality table (CSV: "
        "faithfulness, completeness, stability, complexity, localisation where known), the region shares "
        "(<out>-regions.csv) and the maps (<out>-maps.npz).",
    )
    maps.add_argument("--data", required=True, help="an embedded dataset (shapes, synthbrain) or a dataset folder")
    maps.add_argument("--model", required=True, help="a built-in model name or a TorchScript file (.pt)")
    maps.add_argument("--out", required=True, help="the quality table (.csv); the regions and maps go beside it")
    maps.add_argument(
        "--subjects", default=None, help="comma-separated subject IDs (default: the first --n of --split)"
    )
    maps.add_argument("--split", choices=("test", "train", "all"), default="test", help="rows to take images from")
    maps.add_argument("--n", type=int, default=4, help="images when no --subjects are given (default 4)")
    maps.add_argument("--methods", default=None, help="comma-separated methods (default: every one that applies)")
    maps.add_argument(
        "--regions",
        default="grid",
        help="regions of the region methods and of the region table: grid, anatomy (SynthBrain's template), or an "
        "atlas of Debian's mricron-data (aal, aicha); anatomy and atlases need a named MNI slice",
    )
    maps.add_argument("--output", default=None, help="the output explained (name or index; default the first)")
    maps.add_argument("--seed", type=int, default=0, help="seed of the random methods and metrics")
    maps.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    add_model_input_arguments(maps)
    maps.set_defaults(run=_maps)

    whatif = commands.add_parser(
        "counterfactual",
        help="a subject's slice with one feature changed and the others held (diffusion inversion), and the model "
        "before and after",
        description="Invert the subject's slice into the conditional diffusion model under its recorded features "
        "(deterministic DDIM), change one feature, regenerate; write the numbers (JSON: the model's output before "
        "and after, the probe's reading, the no-change round trip) and PNGs of the original, the counterfactual "
        "and the difference beside it.",
    )
    whatif.add_argument("--data", required=True, help="an embedded dataset (synthbrain) or a dataset folder")
    whatif.add_argument("--model", required=True, help="a built-in model name or a TorchScript file (.pt)")
    whatif.add_argument("--subject", required=True, help="the subject ID")
    whatif.add_argument("--feature", required=True, help="the numeric feature changed, e.g. ventricle_volume")
    whatif.add_argument("--value", type=float, default=None, help="its new value, in the feature's units")
    whatif.add_argument(
        "--change", default=None, help="or a change of it: +10 (the feature's units), -10, or a share: --change=-20%%"
    )
    whatif.add_argument("--out", required=True, help="the JSON of numbers; the PNGs go beside it")
    whatif.add_argument(
        "--diffusion", default=None, help="the generator (default: the dataset's, or its folder's eve-generators/)"
    )
    whatif.add_argument("--output", default=None, help="the output reported (name or index; default the first)")
    whatif.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    add_model_input_arguments(whatif)
    whatif.set_defaults(run=_counterfactual)

    anchors = commands.add_parser(
        "anchors",
        help="the shortest rule on the features that keeps the model's decision (Anchors, Ribeiro et al. 2018): "
        "for one subject, or a table of rules for the cohort",
        description="Find an anchor: a rule on the dataset's features (quartile cuts of each numeric feature, "
        "levels of a categorical one) under which the model keeps the subject's decision with precision >= tau, "
        "estimated on the cohort's rows with KL-LUCB bounds; without --subject, the submodular pick of the "
        "anchors of --n-subjects sampled subjects. The decision: a logit above 0, a probability above 0.5, the "
        "largest of K outputs, or a single output above --threshold. Writes JSON.",
    )
    anchors.add_argument("--data", required=True, help="an embedded dataset (shapes, synthbrain) or a dataset folder")
    anchors.add_argument("--model", required=True, help="a built-in model name or a TorchScript file (.pt)")
    anchors.add_argument("--subject", default=None, help="the subject explained (default: the cohort's rules)")
    anchors.add_argument("--out", required=True, help="the JSON file written")
    anchors.add_argument(
        "--split", choices=("test", "train", "all"), default="all", help="the cohort's rows (default all)"
    )
    anchors.add_argument("--features", default=None, help="comma-separated features rules may use (default all)")
    anchors.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="decide by a single output above this (default 0 for a logit, 0.5 for a probability; needed for a "
        "regression)",
    )
    anchors.add_argument("--tau", type=float, default=0.95, help="precision threshold (default 0.95)")
    anchors.add_argument("--beam-width", type=int, default=2, help="rules kept at each length (default 2)")
    anchors.add_argument("--n-subjects", type=int, default=20, help="cohort rules: subjects sampled (default 20)")
    anchors.add_argument("--n-rules", type=int, default=5, help="cohort rules: rules picked at most (default 5)")
    anchors.add_argument("--seed", type=int, default=0, help="seed of the draws and of the sampled subjects")
    anchors.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    add_model_input_arguments(anchors)
    anchors.set_defaults(run=_anchors)

    diffusion = commands.add_parser(
        "train-diffusion",
        help="train the conditional latent diffusion model of a dataset (weights + card in assets/diffusion/)",
    )
    diffusion.add_argument("dataset", nargs="?", choices=("synthbrain", "shapes"), help="an embedded dataset")
    diffusion.add_argument(
        "--data",
        default=None,
        help="your own dataset folder (NIfTI + features.csv): a generator learnt from its subjects alone, written "
        "to DIR/eve-generators/ (or --out); no generator of extra subjects is used",
    )
    diffusion.add_argument("--features", default=None, help="--data: features to condition on, a,b,c (default all)")
    diffusion.add_argument(
        "--model",
        default=None,
        help="--data: the classifier whose input the generator makes (a built-in name, or a TorchScript file whose "
        "card beside it states its input); else --plane/--slice/--size/--intensity",
    )
    diffusion.add_argument("--plane", choices=("axial", "coronal", "sagittal"), default=None, help="--data: plane")
    diffusion.add_argument("--slice", default=None, help="--data: voxel index, named slice or middle")
    diffusion.add_argument("--size", type=int, default=None, help="--data: side in pixels (default 64)")
    diffusion.add_argument(
        "--intensity", choices=("raw", "p99", "zscore", "minmax"), default=None, help="--data: intensity rule"
    )
    diffusion.add_argument(
        "--orientation", choices=("stored", "ras"), default=None, help="--data: the arrays as stored, or RAS+"
    )
    diffusion.add_argument(
        "--kind",
        choices=("diffusion", "linear-gaussian"),
        default="diffusion",
        help="--data: a latent diffusion model (default) or the linear-Gaussian latent model (seconds to fit)",
    )
    diffusion.add_argument("--out", default=None, help="--data: folder for the card and weights")
    diffusion.add_argument("--steps", type=int, default=None, help="optimiser steps (default: the card's recipe)")
    diffusion.add_argument(
        "--n-extra",
        type=int,
        default=None,
        help="extra subjects from Eve's generator (default: the recipe's; 1000 of them "
        "steer early stopping; 0 = data only)",
    )
    diffusion.add_argument("--components", type=int, default=None, help="latent size (PCA components, code size)")
    diffusion.add_argument("--threads", type=int, default=None, help="torch threads (default 1)")
    diffusion.add_argument("--seed", type=int, default=None, help="training seed (default 0)")
    diffusion.set_defaults(run=_train_diffusion)

    train = commands.add_parser("train-classifier", help="rebuild zoo models (weights + card in assets/models/)")
    train.add_argument("names", nargs="*", help="zoo model names (see engine.models.train.RECIPES)")
    train.add_argument("--all", action="store_true", help="rebuild every zoo model")
    train.add_argument("--out", default=None, help="output folder (default: assets/models/)")
    train.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: deterministic, shared)")
    train.set_defaults(run=_train_classifier)

    args = parser.parse_args(argv)
    try:
        args.run(args)
    except EveInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
