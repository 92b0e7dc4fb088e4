"""`python -m engine score`: explained-variance scores of a model's outputs for each feature, written as
JSON or HTML with a CSV beside it, and the features together (unless --no-joint): the joint score of all of
them, and per feature what it adds to the others and its Shapley effect."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from engine.cards import ModelRef
from engine.cli.common import command_model
from engine.data.dataset import resolve_features
from engine.data.defaults import open_dataset
from engine.data.remote import is_remote
from engine.errors import EveInputError
from engine.progress import bar as progress_bar
from engine.reports.html import write_html
from engine.reports.writers import writable, write_csv, write_json
from engine.scores.service import (
    ScoreReport,
    data_scores,
    debiased_scores,
    diffusion_scores,
    trained_elsewhere,
    with_joint,
)


def run_score_command(args) -> list[Path]:
    """The `python -m engine score` command (arguments in `engine.cli.main`); returns the files written."""
    out = Path(args.out)
    named = {".html": "html", ".htm": "html", ".json": "json"}.get(out.suffix.lower())
    if args.format and named and args.format != named:
        raise EveInputError(
            f"--out {out.name} names a .{out.suffix.lower()[1:]} file but --format {args.format} asks for "
            f"{args.format.upper()}: give the report a .{args.format} name, or leave --format out."
        )
    fmt = args.format or named or "json"
    csv_path = out.with_suffix(".csv")
    if csv_path == out:
        raise EveInputError(f"--out {out} is the CSV's own name: give the report a .json or .html name.")
    writable(out, (".json", ".html", ".htm"))
    if args.n_boot < 0:
        raise EveInputError(f"--n-boot {args.n_boot}: use 0 (no CI) or a positive number of bootstrap draws.")
    model, card, ref, device = command_model(args)
    if args.output is not None:
        card.output_index(args.output)
    dataset = open_dataset(args.data)
    resolve_features(dataset, args.features)  # fails before the forward pass
    warning = trained_elsewhere(card, dataset)
    if warning:
        print(f"warning: {warning}")
    cluster = None
    if getattr(args, "ray", None):
        from engine.compute.cluster import Cluster  # Ray (~2 s to import) only when asked for

        cluster = Cluster.connect(None if args.ray == "local" else args.ray)
    try:
        report = _scores(args, ref, model, card, dataset, device, cluster)
    finally:
        if cluster is not None:
            cluster.shutdown()
    if not args.no_joint and report.metadata["method"] == "data":
        report = with_joint(report)  # the generator paths score the features together as they draw
    arguments = {k: v for k, v in vars(args).items() if k not in ("run", "command")}
    if is_remote(arguments.get("data")):  # an object-store URI's query may hold an endpoint or keys
        arguments["data"] = dataset.location
    report = replace(report, metadata={**report.metadata, "arguments": arguments})
    written = [write_html(report, out) if fmt == "html" else write_json(report, out), write_csv(report, csv_path)]
    _print_summary(report)
    for path in written:
        print(f"wrote {path}")
    return written


def _scores(args, ref: ModelRef, model, card, dataset, device, cluster) -> ScoreReport:
    """The command's scores: the data path, the generator path debiased by the real images (the default of
    --method diffusion) or the generator's own (--generator-only), the heavy part on a Ray cluster with --ray."""
    where = None if cluster is None else cluster.describe()
    common = dict(n_boot=args.n_boot, seed=args.seed, output=args.output, batch_size=args.batch_size)
    if args.method == "data":
        runner = None if cluster is None else cluster.outputs_runner(ref, device.type)
        progress, shown = progress_bar("model outputs", "img")
        with shown:
            return data_scores(
                model,
                card,
                dataset,
                args.features,
                split=args.split,
                progress=progress,
                runner=runner,
                where=where,
                **common,
            )
    from engine.diffusion import SamplerConfig, load_diffusion  # diffusers (~3 s) only for this method

    generator = load_diffusion(args.diffusion or dataset.name)
    sampler = SamplerConfig.for_scores(generator).override(
        free_features=args.free_features, readout_guidance=args.readout_guidance
    )
    if not args.generator_only:
        progress, shown = progress_bar("twins and generated subjects", "img")
        with shown:
            return debiased_scores(
                model,
                card,
                dataset,
                args.features,
                diffusion=generator,
                split=args.split,
                n_generated=args.k_values * args.n_per_value,
                folds=args.folds,
                sampler=sampler,
                progress=progress,
                joint=not args.no_joint,
                **common,
            )
    progress, shown = progress_bar("generator scores", "score")
    runner = None
    if cluster is not None:
        runner = cluster.diffusion_runner(ref, args.diffusion or dataset.name, device.type, progress)
    with shown:
        return diffusion_scores(
            model,
            card,
            dataset,
            args.features,
            diffusion=generator,
            k_values=args.k_values,
            n_per_value=args.n_per_value,
            progress=progress,
            sampler=sampler,
            runner=runner,
            where=where,
            joint=not args.no_joint,
            **common,
        )


def _print_summary(report: ScoreReport) -> None:
    meta = report.metadata
    where = f", {meta.get('split')} split, n = {meta.get('n')}" if meta["method"] in ("data", "debiased") else ""
    print(f"{meta['model'].get('name', 'model')} on {meta['dataset']['name']} ({meta['method']}{where}):")
    width = max(len(str(f)) for f in report.table["feature"])
    for r in report.table.itertuples():
        if r.status == "ok":
            alone = (
                ""
                if not hasattr(r, "generator_score")
                else f"  (generator alone, model-based: {r.generator_score:.3f})"
            )
            print(f"  {r.feature:<{width}}  {r.output}:  S = {r.score:.3f}  [{r.ci_low:.3f}, {r.ci_high:.3f}]{alone}")
        else:
            print(f"  {r.feature:<{width}}  {r.output}:  {r.status} — {r.message}")
    if report.joint is not None:
        _print_joint(report, width)


def _interval(low, high) -> str:
    return "" if low != low else f"  [{low:.3f}, {high:.3f}]"  # NaN: no interval


def _print_joint(report: ScoreReport, width: int) -> None:
    """S(all) per output, then each feature's added score and Shapley effect (`with_joint`)."""
    about = report.metadata.get("joint", {})
    how = "all subsets" if about.get("exact") else f"{about.get('n_perm')} random orders (sampled)"
    how += {"debiased": ", debiased by the real images", "generator": ", the generator alone (model-based)"}.get(
        about.get("path"), ""
    )
    for j in report.joint.itertuples():
        if j.status != "ok":
            hint = " (--features, or more rows: --split all)" if about.get("path", "data") == "data" else ""
            print(f"  together, {j.output}:  {j.status} — {j.message}{hint}")
            continue
        print(f"  together, {j.output}:  S(all) = {j.score:.3f}{_interval(j.ci_low, j.ci_high)}  ({how})")
        for r in report.table[report.table["output"] == j.output].itertuples():
            if r.joint_status != "ok":
                print(f"    {r.feature:<{width}}  {r.joint_status} — {r.joint_message}")
                continue
            added = f"added = {r.added:.3f}{_interval(r.added_ci_low, r.added_ci_high)}"
            shapley = f"Shapley = {r.shapley:.3f}{_interval(r.shapley_ci_low, r.shapley_ci_high)}"
            alone = (
                f"  (generator alone, model-based: added {r.generator_added:.3f}, Shapley {r.generator_shapley:.3f})"
                if hasattr(r, "generator_added")
                else ""
            )
            print(f"    {r.feature:<{width}}  {added}   {shapley}{alone}")
