"""Eve's command line: `python -m engine COMMAND ...` (`--help` lists the commands).

The arguments every command shares are declared once (`_dataset_and_model`, `_model_input`,
`_split`, `_output`); each command's module is imported when it runs, so `build-data` and
`--help` do not load captum and diffusers first.
"""

from __future__ import annotations

import argparse
import sys

from engine.data.dataset import SPLITS
from engine.data.slicing import INPUT_KINDS, INTENSITIES, ORIENTATIONS, PLANES
from engine.errors import EveInputError
from engine.options import RULES, SCORE

EMBEDDED = ("shapes", "synthbrain")  # the embedded datasets (`engine.data.defaults.BUILDERS`)


def _whole(least: int):
    """An argparse type: a whole number >= `least` (argparse names the flag and exits 2 on anything else)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"{value} is below {least}: give a whole number >= {least}")
        return value

    parse.__name__ = f"whole number >= {least}"
    return parse


COUNT = _whole(1)  # sizes, counts, batch sizes, threads
NON_NEGATIVE = _whole(0)  # seeds, bootstrap draws (0: none)


def _run(module: str, function: str):
    """A command's runner: `engine.cli.<module>.<function>(args)`, imported when the command runs."""

    def run(args: argparse.Namespace) -> None:
        import importlib

        getattr(importlib.import_module(f"engine.cli.{module}"), function)(args)

    return run


# -- the shared argument groups ---------------------------------------------------------------


def _dataset_and_model(parser: argparse.ArgumentParser, out: str, *, seed: str) -> None:
    """--data, --model, --out, --device, --seed: every command that runs a model on a dataset."""
    parser.add_argument("--data", required=True, help="an embedded dataset (shapes, synthbrain) or a dataset folder")
    parser.add_argument(
        "--model", required=True, help="a built-in model name, a TorchScript file (.pt) or a MONAI bundle folder"
    )
    parser.add_argument("--out", required=True, help=f"{out}; a missing folder is created")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    parser.add_argument("--seed", type=NON_NEGATIVE, default=SCORE.seed, help=f"{seed} (default {SCORE.seed})")
    _model_input(parser)


def _model_input(parser: argparse.ArgumentParser) -> None:
    """A TorchScript model's input contract (built-in models and bundles take their own) and what is explained."""
    group = parser.add_argument_group("a TorchScript model's input (built-in models use their card's)")
    group.add_argument(
        "--input",
        choices=INPUT_KINDS,
        default=None,
        help="the model takes a 2D slice (default) or the whole volume, (B, 1, S, S, S) with S = --size, resampled "
        "to isotropic voxels (--spacing) and centre-cropped or padded",
    )
    group.add_argument(
        "--spacing", type=float, default=None, help="volume input: isotropic voxel size in mm (default: fitted)"
    )
    group.add_argument("--plane", choices=PLANES, default=None, help="slice plane (default axial)")
    group.add_argument(
        "--slice",
        default=None,
        help="voxel index, a named slice (e.g. ventricles) or middle (default); under --orientation stored, along "
        "the stored axis closest to the plane",
    )
    group.add_argument(
        "--size", type=COUNT, default=None, help="input side in pixels, or the cube's side for a volume (default 64)"
    )
    group.add_argument(
        "--register",
        choices=("none", "mni"),
        default="none",
        help="mni registers each volume to MNI152 (affine, SimpleITK; the transform cached per file) before slicing, "
        "so a named slice can be taken from native-space volumes",
    )
    group.add_argument(
        "--orientation",
        choices=tuple(ORIENTATIONS),
        default=None,
        help="the arrays as the files store them (stored, the default: what nib.load(f).get_fdata() gives a "
        "training pipeline) or in Eve's RAS+ convention, slices in neurological display (ras)",
    )
    group.add_argument(
        "--intensity",
        choices=tuple(INTENSITIES),
        default=None,
        help="what the model is fed, applied to each volume before slicing: raw (the stored values; the default), "
        "p99 (Eve's rule: divide by the 99th percentile of non-zero voxels, clip to [0, 1]), zscore or minmax",
    )
    parser.add_argument(
        "--explain",
        choices=("output", "probability"),
        default="output",
        help="what is explained: the model's output as it is (default), or the probability of a logit output "
        "(sigmoid; softmax over K): their scores differ",
    )


def _split(parser: argparse.ArgumentParser, default: str, what: str) -> None:
    parser.add_argument(
        "--split",
        choices=SPLITS,
        default=default,
        help=f"{what}: the test or train split (every row without a split column) or all (default {default})",
    )


def _output(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument("--output", default=None, help=f"the output explained (name or index; default {default})")


# -- the commands -------------------------------------------------------------------------------


def _score(commands) -> None:
    score = commands.add_parser(
        "score",
        help="explained-variance scores S(A) of a model's outputs for each feature, with CIs",
        description="Compute S(A) = Var(E[Y|A]) / Var(Y) for every feature A and model output Y over a dataset; "
        "write JSON (or a standalone HTML report) and a CSV beside it.",
    )
    _dataset_and_model(
        score,
        "report path (.json or .html); the CSV goes beside it",
        seed="seed of the bootstrap and of the generator's samples",
    )
    score.add_argument("--features", default=None, help="comma-separated features (default: every feature)")
    score.add_argument(
        "--format", choices=("json", "html"), default=None, help="report format (default: html for .html, else json)"
    )
    _split(score, "test", "rows to score")
    _output(score, "all")
    score.add_argument(
        "--n-boot",
        type=NON_NEGATIVE,
        default=SCORE.n_boot,
        help=f"bootstrap draws for the 95%% CI (0: none; {SCORE.n_boot})",
    )
    score.add_argument(
        "--no-joint",
        action="store_true",
        help="leave out the features scored together: by default the report also has the joint score of all the "
        "features, and per feature what it adds to all the others and its Shapley effect (its fair share of the "
        "joint score), each with its CI; exact over every subset up to 10 features (engine.scores.joint.MAX_EXACT), "
        "from random orders of them beyond. With --method diffusion, from the same generated subjects, debiased "
        "by the real images (the generator's own beside them), or the generator's own with --generator-only",
    )
    score.add_argument(
        "--method",
        choices=("data", "diffusion"),
        default="data",
        help="data: group the dataset's outputs (default); diffusion: sample p(x | A = a) from a generator, "
        "debiased by the real images (see --generator-only)",
    )
    generator = score.add_argument_group("the generator path (--method diffusion)")
    generator.add_argument("--diffusion", default=None, help="the generator (default: the --data name)")
    generator.add_argument(
        "--generator-only",
        action="store_true",
        help="report the generator's own score (model-based: its interval holds the sampling noise, not the "
        "generator's error) instead of the score debiased by the real images (the default)",
    )
    generator.add_argument(
        "--k-values", type=COUNT, default=SCORE.k_values, help=f"feature values K (default {SCORE.k_values})"
    )
    generator.add_argument(
        "--n-per-value", type=COUNT, default=SCORE.n_per_value, help=f"samples per value N ({SCORE.n_per_value})"
    )
    generator.add_argument(
        "--folds",
        type=_whole(2),
        default=None,
        help=f"debiasing with a generator trained on these subjects: cross-fitting folds (default {SCORE.folds} for a "
        "linear-Gaussian generator; a diffusion generator needs it said, as each fold retrains it)",
    )
    generator.add_argument(
        "--free-features",
        choices=("table", "model"),
        default=None,
        help="draw the other features from the training rows nearest each value (table; the default when the "
        "model has them) or by the denoiser's condition dropout",
    )
    generator.add_argument(
        "--readout-guidance",
        type=float,
        default=None,
        help="strength of the guidance by the model's feature read-out (default: 100 when it has one; 0: none)",
    )
    score.add_argument(
        "--batch-size", type=COUNT, default=SCORE.batch_size, help=f"images per forward pass ({SCORE.batch_size})"
    )
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
    score.set_defaults(run=_run("score", "run_score_command"))


def _maps(commands) -> None:
    maps = commands.add_parser(
        "maps",
        help="attribution maps of chosen images by every method, how good each method's maps are, and what each "
        "region carries",
        description="Compute each attribution method's maps of the chosen images; write the quality table (CSV: "
        "faithfulness, completeness, stability, complexity, localisation where known), the region shares "
        "(<out>-regions.csv) and the maps (<out>-maps.npz).",
    )
    _dataset_and_model(
        maps,
        "the quality table (.csv); the regions and maps go beside it",
        seed="seed of the random methods and metrics",
    )
    maps.add_argument(
        "--subjects", default=None, help="comma-separated subject IDs (default: the first --n of --split)"
    )
    _split(maps, "test", "rows to take images from")
    maps.add_argument("--n", type=COUNT, default=4, help="images when no --subjects are given (default 4)")
    maps.add_argument("--methods", default=None, help="comma-separated methods (default: every one that applies)")
    maps.add_argument(
        "--regions",
        default="grid",
        help="regions of the region methods and of the region table: grid, anatomy (SynthBrain's template), or an "
        "atlas of Debian's mricron-data (aal, aicha); anatomy and atlases need a named MNI slice",
    )
    _output(maps, "the first")
    maps.set_defaults(run=_run("maps", "run_maps_command"))


def _counterfactual(commands) -> None:
    whatif = commands.add_parser(
        "counterfactual",
        help="a subject's slice with one feature changed and the others held (diffusion inversion), and the model "
        "before and after",
        description="Invert the subject's slice into the conditional diffusion model under its recorded features "
        "(deterministic DDIM), change one feature, regenerate; write the numbers (JSON: the model's output before "
        "and after, the probe's reading, the no-change round trip) and PNGs of the original, the counterfactual "
        "and the difference beside it.",
    )
    _dataset_and_model(
        whatif, "the JSON of numbers (.json); the PNGs go beside it", seed="unused: the edit is deterministic"
    )
    whatif.add_argument("--subject", required=True, help="the subject ID")
    whatif.add_argument("--feature", required=True, help="the numeric feature changed, e.g. ventricle_volume")
    whatif.add_argument("--value", type=float, default=None, help="its new value, in the feature's units")
    whatif.add_argument(
        "--change", default=None, help="or a change of it: +10 (the feature's units), -10, or a share: --change=-20%%"
    )
    whatif.add_argument(
        "--diffusion", default=None, help="the generator (default: the dataset's, or its folder's eve-generators/)"
    )
    _output(whatif, "the first")
    whatif.set_defaults(run=_run("counterfactual", "run_counterfactual_command"))


def _anchors(commands) -> None:
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
    _dataset_and_model(anchors, "the JSON file written (.json)", seed="seed of the draws and of the sampled subjects")
    anchors.add_argument("--subject", default=None, help="the subject explained (default: the cohort's rules)")
    _split(anchors, "all", "the cohort's rows")
    anchors.add_argument("--features", default=None, help="comma-separated features rules may use (default all)")
    anchors.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="decide by a single output above this (default 0 for a logit, 0.5 for a probability; needed for a "
        "regression)",
    )
    anchors.add_argument("--tau", type=float, default=0.95, help="precision threshold (default 0.95)")
    anchors.add_argument("--beam-width", type=COUNT, default=2, help="rules kept at each length (default 2)")
    anchors.add_argument(
        "--n-subjects", type=COUNT, default=RULES.n_subjects, help=f"cohort rules: subjects ({RULES.n_subjects})"
    )
    anchors.add_argument(
        "--n-rules", type=COUNT, default=RULES.n_rules, help=f"cohort rules: rules picked at most ({RULES.n_rules})"
    )
    anchors.set_defaults(run=_run("anchors", "run_anchors_command"))


def _train(commands) -> None:
    build = commands.add_parser("build-data", help="build the embedded default datasets if missing")
    build.add_argument("names", nargs="*", help="shapes and/or synthbrain (default: both)")
    build.add_argument("--force", action="store_true", help="rebuild even if present")
    build.add_argument(
        "--banks", action="store_true", help="then draw the explorer's banks (every feature, default settings)"
    )
    build.add_argument(
        "--background", action="store_true", help="in a detached process logging to <data dir>/build.log"
    )
    build.set_defaults(run=_run("train", "build_data"))

    diffusion = commands.add_parser(
        "train-diffusion",
        help="train the conditional latent diffusion model of a dataset (weights + card in assets/diffusion/)",
    )
    diffusion.add_argument("dataset", nargs="?", choices=EMBEDDED, help="an embedded dataset")
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
        "card beside it states its input); else the input flags",
    )
    group = diffusion.add_argument_group("--data: the slice the generator makes, without --model")
    group.add_argument("--plane", choices=PLANES, default=None, help="plane (default axial)")
    group.add_argument("--slice", default=None, help="voxel index, named slice or middle (default)")
    group.add_argument("--size", type=COUNT, default=None, help="side in pixels (default 64)")
    group.add_argument("--intensity", choices=tuple(INTENSITIES), default=None, help="intensity rule (default raw)")
    group.add_argument(
        "--orientation", choices=tuple(ORIENTATIONS), default=None, help="the arrays as stored (default), or RAS+"
    )
    diffusion.add_argument(
        "--kind",
        choices=("diffusion", "linear-gaussian"),
        default="diffusion",
        help="--data: a latent diffusion model (default) or the linear-Gaussian latent model (seconds to fit)",
    )
    diffusion.add_argument("--out", default=None, help="--data: folder for the card and weights")
    diffusion.add_argument("--steps", type=COUNT, default=None, help="optimiser steps (default: the card's recipe)")
    diffusion.add_argument(
        "--n-extra",
        type=NON_NEGATIVE,
        default=None,
        help="extra subjects from Eve's generator (default: the recipe's; 1000 of them steer early stopping; 0 = "
        "data only)",
    )
    diffusion.add_argument("--components", type=COUNT, default=None, help="latent size (PCA components, code size)")
    diffusion.add_argument("--threads", type=COUNT, default=None, help="torch threads (default 1)")
    diffusion.add_argument("--seed", type=NON_NEGATIVE, default=None, help="training seed (default 0)")
    diffusion.set_defaults(run=_run("train", "train_diffusion"))

    train = commands.add_parser("train-classifier", help="rebuild zoo models (weights + card in assets/models/)")
    train.add_argument("names", nargs="*", help="zoo model names (see engine.models.train.RECIPES)")
    train.add_argument("--all", action="store_true", help="rebuild every zoo model")
    train.add_argument("--out", default=None, help="output folder (default: assets/models/)")
    train.add_argument("--threads", type=COUNT, default=1, help="torch CPU threads (default 1: deterministic, shared)")
    train.set_defaults(run=_run("train", "train_classifier"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for add in (_train, _score, _maps, _counterfactual, _anchors):
        add(commands)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse printed the usage and what is wrong (2), or the help (0)
        return exc.code if isinstance(exc.code, int) else 2
    try:
        args.run(args)
    except EveInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
