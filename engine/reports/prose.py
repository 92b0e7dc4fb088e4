"""A report in words, written from its own metadata and table, so it says what this run did: the phrases
the HTML page's rows use (`input_phrase`, `ci_words`, ...), the methods paragraphs (`methods_paragraphs`),
the results (`results_sentences`), and `compare`, which puts other sources' scores beside a report's."""

from __future__ import annotations

import math
from dataclasses import replace

import pandas as pd

from engine.cards import spec_from_json
from engine.data import SliceSpec
from engine.data.slicing import INTENSITIES, NAMED_SLICES
from engine.errors import EveInputError
from engine.scores.service import SCORE_COLUMNS, ScoreReport

CITATION = (
    "Jin, Zhu & Fletcher. Feature Attribution for Deep Learning Models through Total Variance "
    "Decomposition. Medical Imaging with Deep Learning (MIDL), 2025."
)
SOURCE_NAMES = {
    "data": "data path",
    "debiased": "generator path, debiased by the real images",
    "diffusion": "generator alone (model-based)",
    "truth": "ground truth",
}


def count(n: int, thing: str) -> str:
    return f"{n:,} {thing}" + ("" if n == 1 else "s")


def spec_of(meta: dict) -> SliceSpec | None:
    try:
        return spec_from_json(meta["spec"])
    except (KeyError, TypeError, ValueError, EveInputError):
        return None


def is_2d(meta: dict) -> bool:
    return meta.get("dataset", {}).get("images") == "2D images"


def explained_words(meta: dict) -> str:
    """What Y is, without an article: "probability (sigmoid of the logit)", "logit (apply a sigmoid for
    the probability)", "regression output: predicted target", "output whose kind is not stated"."""
    kind, said = meta.get("explained"), meta.get("model", {}).get("outputs")
    if kind in ("probability", "logit"):
        return str(said) if said and str(said).startswith(kind) else kind
    if kind == "regression":
        return f"regression output: {said}" if said else "regression output"
    return f"output whose kind is not stated ({said})" if said else "output whose kind is not stated"


def outputs_in_words(meta: dict, names) -> str:
    """ "P(label=1): the model's probability that label = 1", one per output (the names alone in older reports)."""
    words = meta.get("outputs_in_words") or {}
    return "; ".join(f"{name}: {words[name]}" if name in words else str(name) for name in names)


MNI_AXES = {"sagittal": "x", "coronal": "y", "axial": "z"}


def slice_words(spec: SliceSpec) -> str:
    """ "the middle slice", "the named slice hippocampus (MNI y = -22 mm)", "voxel index 40"."""
    if spec.index is None:
        return "the middle slice"
    if isinstance(spec.index, str):
        plane, mm = NAMED_SLICES[spec.index]
        return f"the named slice {spec.index} (MNI {MNI_AXES[plane]} = {mm:g} mm)"
    return f"voxel index {spec.index}"


def input_phrase(meta: dict) -> str | None:
    """What the model was fed, for the methods paragraph: "the 2D image at 64 × 64 px", ..."""
    spec = spec_of(meta)
    if spec is None:
        return meta.get("input")
    if spec.is_volume:
        voxels = "fitted to the field of view" if spec.spacing is None else f"at {float(spec.spacing):g} mm"
        where = f"the whole volume as a {spec.size}³ cube of isotropic voxels {voxels}"
    elif is_2d(meta):
        where = f"each 2D image at {spec.size} × {spec.size} px"
    else:
        where = f"one {spec.plane} slice of each volume, {slice_words(spec)}, at {spec.size} × {spec.size} px"
        if spec.register:
            where += ", after an affine registration to MNI152"
    return f"{where}; intensity {spec.intensity}: {INTENSITIES[spec.intensity]}"


def ci_words(meta: dict) -> str | None:
    level = f"{float(meta.get('ci_level', 0.95)):.0%}"
    method, draws = meta.get("ci_method"), meta.get("n_boot")
    if method == "none" or draws == 0:
        return "none (0 bootstrap draws)"
    if method == "generator_refits":
        return f"{level}: {meta.get('ci_refits')} generators refitted on bootstrap resamples of the training subjects"
    if method == "parametric_bootstrap":
        return f"{level} percentile interval of {draws} parametric bootstrap draws"
    if method == "prediction_powered_bootstrap":
        return (
            f"{level} prediction-powered bootstrap: {draws} draws resampling the real images with their twins and, "
            "apart, the generated subjects"
        )
    if draws is None:
        return None
    return f"{level} percentile interval of {draws} bootstrap resamples of the images"


# the methods paragraph: written from the report's metadata and table, so it says what this run did


def ok_rows(table: pd.DataFrame) -> pd.DataFrame:
    return table[table["status"] == "ok"]


def diffusion_kn(meta: dict, table: pd.DataFrame) -> tuple[int | None, int | None]:
    """K values and N samples per value: as recorded, else read off the rows (n = K N, groups = K)."""
    if meta.get("k_values") is not None and meta.get("n_per_value") is not None:
        return int(meta["k_values"]), int(meta["n_per_value"])
    ok = ok_rows(table)
    if ok.empty or not (ok["n_groups"] > 0).all():
        return None, None
    k, n = ok["n_groups"].astype(int), (ok["n"] // ok["n_groups"]).astype(int)
    return (int(k.iloc[0]), int(n.iloc[0])) if k.nunique() == 1 and n.nunique() == 1 else (None, None)


def _span(values) -> str:
    values = sorted({int(v) for v in values})
    return str(values[0]) if len(values) == 1 else f"{values[0]}–{values[-1]}"


def _data_method(meta: dict, report: ScoreReport) -> str:
    n, split, dataset = meta.get("n"), meta.get("split"), meta.get("dataset", {}).get("name", "the dataset")
    every = split == "all" or (n is not None and n == meta.get("dataset", {}).get("n_rows"))
    if n is None:
        which = f"images of {dataset}"
    else:
        which = f"all {n:,} images of {dataset}" if every else f"the {n:,} {split}-split images of {dataset}"
    text = f"S(A) was estimated from data (the data path), on {which}. "
    cats = [f for f in meta.get("categorical", []) if f in report.features]
    continuous = [f for f in report.features if f not in cats]
    table = ok_rows(primary_rows(report.table))
    groups = []
    if continuous:
        bins = table[table["feature"].isin(continuous)]["n_groups"]
        here = f"{_span(bins)} here: " if len(bins) else ""
        groups.append(
            f"quantile bins of each continuous feature ({here}about n^(2/3) / 2, at most n/20, so at least about 20 "
            "images a bin; a feature with fewer distinct values is grouped on its values)"
        )
    if cats:
        groups.append(f"the exact levels of the categorical feature{'s' if len(cats) > 1 else ''} {', '.join(cats)}")
    text += (
        f"Images were grouped into {' and '.join(groups)}. S(A) = 1 − E[Var(Y|A)] / Var(Y), with E[Var(Y|A)] "
        "measured inside each bin by the residual variance of a straight line in the rank of A (the bin means "
        "alone would count the change of E[Y|A] across a bin as noise), and, in bins where the output steps "
        "within the bin, by differences between neighbours in A's order (Rice's estimator); within exact groups "
        "by the within-group variance, with the between-group variance's expected excess from noise, "
        "Σ_k w_k (1 − w_k) s²_k / n_k, subtracted (an ω²-type correction). The score is clipped to [0, 1]. "
    )
    draws = meta.get("n_boot")
    if draws:
        level = f"{float(meta.get('ci_level', 0.95)):.0%}"
        text += (
            f"The {level} confidence intervals are percentile intervals of {draws} bootstrap resamples of the "
            f"(output, feature value) pairs (seed {meta.get('seed', 0)}), re-centred on the corrected estimate."
        )
    elif draws == 0:
        text += "No confidence intervals were computed (0 bootstrap draws)."
    return text


def _diffusion_ci(meta: dict, n_per_value) -> str:
    method, level = meta.get("ci_method"), f"{float(meta.get('ci_level', 0.95)):.0%}"
    seed = meta.get("seed", 0)
    if method == "generator_refits":
        return (
            f"The {level} confidence intervals are the 2.5th and 97.5th percentiles of the scores of "
            f"{meta.get('ci_refits')} generators refitted on bootstrap resamples of the training subjects, each "
            f"sampled afresh (base seed {seed}), so they hold the generator's fitting error as well as the sampling "
            "noise."
        )
    if method == "parametric_bootstrap":
        n, dof, over = ("N", "N − 1", "(N − 1)") if n_per_value is None else (n_per_value, *[n_per_value - 1] * 2)
        return (
            f"The {level} confidence intervals are percentile intervals of {meta.get('n_boot')} parametric bootstrap "
            f"draws (seed {seed}): each per-value mean redrawn from Normal(m_k, s²_k / {n}) and each variance from "
            f"s²_k · χ²({dof}) / {over}. They hold the sampling noise of the generated images, not the "
            "generator's own error."
        )
    if method is None and meta.get("n_boot"):  # the method was not recorded
        return f"The {level} confidence intervals are percentile intervals of {meta['n_boot']} bootstrap draws."
    return "No confidence intervals were computed (0 bootstrap draws)."


def _diffusion_method(meta: dict, report: ScoreReport, *, compared: bool = False) -> str:
    k, n = diffusion_kn(meta, report.table)
    dataset = meta.get("dataset", {}).get("name", "the dataset")
    generator = meta.get("diffusion", "a conditional diffusion model")
    k_text, n_text = ("K" if k is None else f"K = {k}"), ("N" if n is None else f"N = {n}")
    lead = (
        f"The generator's own scores (cross-hatched bars, model-based) were estimated from images sampled from "
        f"{generator} instead of data."
        if compared
        else f"S(A) was estimated from images sampled from the conditional diffusion model {generator} instead of "
        "from data (the diffusion path, for scarce data)."
    )
    sampler = meta.get("sampler", "").rstrip(".")
    sampler = sampler[:1].lower() + sampler[1:]
    return (
        f"{lead} For each feature A, {k_text} values a_k were taken (for a continuous feature the means of K "
        f"equal-mass bins of its distribution in {dataset}, each of weight 1/K; for a categorical one its levels, "
        f"weighted by their frequencies), and {n_text} images were sampled from p(x | A = a_k) at each value with "
        "independent noise seeds, from the plain conditional model (no classifier-free guidance, which narrows "
        f"p(x | a) and inflates scores){'; ' + sampler if sampler else ''}. Var(E[Y|A]) was estimated "
        "by the weighted variance of the K per-value means of Y minus its expected excess from noise, "
        f"Σ_k w_k (1 − w_k) s²_k / {'N' if n is None else n} (an ω²-type correction), and E[Var(Y|A)] by the "
        f"weighted mean of the per-value variances. {_diffusion_ci(meta, n)}"
    )


def _debiased_method(meta: dict, report: ScoreReport) -> str:
    n, split = meta.get("n") or 0, meta.get("split")
    folds = meta.get("cross_fitted") or 0
    clamped = meta.get("clamped") or {}
    text = (
        f"S(A) was estimated from images sampled from the generator {meta.get('diffusion', '')}, debiased by the "
        f"{n:,} real {split}-split images (prediction-powered inference: Angelopoulos et al. 2023; the "
        "prediction-powered bootstrap, Zrnic 2024). Each real image got a twin, an image generated under that "
        f"subject's recorded features, and {meta.get('n_generated')} subjects were generated under feature vectors "
        f"drawn from {meta.get('generated_from')}. With S_real, S_twin and S_gen the data-path estimates on the real "
        "images, their twins and the generated subjects, the score is S_real + λ (S_gen − S_twin): the generator's "
        "score with its bias, as the twins show it against the real images, taken out; λ in [0, 1] minimises the "
        "variance (0 is the data path, 1 the plain debiased estimate; the table gives it per score). "
    )
    if folds:
        text += (
            f"The generator had seen some of these images, so it was cross-fitted: each of {folds} folds' twins and "
            "generated subjects came from a generator refitted without that fold. "
        )
    if clamped:
        text += (
            "Recorded values outside the generator's training range were clamped to it for the twins: "
            + ", ".join(f"{k} ({v})" for k, v in clamped.items())
            + ". "
        )
    if meta.get("n_boot"):
        text += (
            f"The {float(meta.get('ci_level', 0.95)):.0%} intervals are percentile intervals of {meta['n_boot']} "
            "bootstrap draws that resample the real images together with their twins, and the generated subjects "
            "apart, centred on the estimate. The generator's own score is given beside it: a model-based estimate "
            "whose interval holds the sampling noise, not the generator's error."
        )
    return text


def compared_words(source: str, about: dict, report: ScoreReport) -> str:
    if source == "diffusion":
        k, n = diffusion_kn(about, report.table[report.table["source"] == "diffusion"])
        kn = "" if k is None else f", {k} values × {n} samples per feature"
        return f"{about.get('diffusion', 'a diffusion model')}{kn}; CI {ci_words(about) or 'as in the table'}"
    if source == "truth":
        return f"the estimator on the model's exact target, {about.get('definition', '')}".rstrip(", ")
    return "; ".join(f"{k}: {v}" for k, v in about.items())


def _truth_method(about: dict, report: ScoreReport) -> str:
    rows = ok_rows(report.table[report.table["source"] == "truth"])
    n = f", on all {int(rows['n'].iloc[0]):,} images" if len(rows) else ""
    definition = about.get("definition")
    return (
        "The ground truth (dotted bars) is the same estimator applied to the exact target the model was trained to "
        f"predict{n}: the score a perfect model of its target would get."
        + (f" The target: {definition}." if definition else "")
    )


def methods_paragraphs(report: ScoreReport) -> list[str]:
    """The report's methods section as plain-text paragraphs, written from its metadata and table
    (the path it took, what the model was fed, n, the interval, the seed), citing the paper; one
    more paragraph per source `compare` put beside its scores."""
    meta = report.metadata
    model = meta.get("model", {}).get("name", "the model")
    outputs = ", ".join(report.output_names)
    fed, words = input_phrase(meta), explained_words(meta)
    first = (
        "The attribution score of a feature A is the fraction of the variance of the model's output Y = f(X) that "
        "A explains, S(A) = Var(E[Y|A]) / Var(Y), from the law of total variance Var(Y) = Var(E[Y|A]) + "
        f"E[Var(Y|A)] (Jin, Zhu & Fletcher, MIDL 2025). Here Y was the output"
        f"{'s' if len(report.output_names) > 1 else ''} {outputs} of {model}"
        + (f", fed {fed}" if fed else "")
        + f". Y is {'an' if words[0] in 'aeiou' else 'a'} {words}."
        + (f" Note: {meta['warning']}" if meta.get("warning") else "")
    )
    if meta.get("method") == "diffusion":
        second = _diffusion_method(meta, report)
    elif meta.get("method") == "debiased":
        second = _debiased_method(meta, report)
    else:
        second = _data_method(meta, report)
    paragraphs = [first, second]
    compared = meta.get("compared", {})
    if "diffusion" in compared:
        paragraphs.append(
            _diffusion_method(
                {"dataset": meta.get("dataset", {}), **compared["diffusion"]}, _only(report, "diffusion"), compared=True
            )
        )
    if "truth" in compared:
        paragraphs.append(_truth_method(compared["truth"], report))
    return paragraphs


def _only(report: ScoreReport, source: str) -> ScoreReport:
    return replace(report, table=report.table[report.table["source"] == source])


def results_sentences(report: ScoreReport) -> list[str]:
    """One sentence per output: the features by score, each with its interval."""
    table = primary_rows(report.table)
    sentences = []
    for out in report.output_names:
        ok = ok_rows(table[table["output"] == out]).sort_values("score", ascending=False)
        if ok.empty:
            continue
        parts = [
            f"{r.feature} {r.score:.0%}" + ("" if math.isnan(r.ci_low) else f" ({r.ci_low:.0%}–{r.ci_high:.0%})")
            for r in ok.itertuples()
        ]
        sentences.append(f"Share of the variance of {out} explained: {'; '.join(parts)}.")
    if sentences:
        sentences.append(
            "Correlated features share explained variance, so the scores need not add up to the total (nor to 100%)."
        )
    return sentences


def primary_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of the report's own method (without compared sources)."""
    if "source" not in table.columns:
        return table
    return table[table["source"] == table["source"].iloc[0]] if len(table) else table


def compare(
    report: ScoreReport,
    *,
    diffusion: pd.DataFrame | None = None,
    diffusion_settings: dict | None = None,
    truth: pd.DataFrame | None = None,
    truth_definition: str | None = None,
) -> ScoreReport:
    """A one-output report with other sources' scores beside its own, as the app's scores page shows
    them: diffusion-path rows (`diffusion_settings`: `engine.scores.service.diffusion_settings`) and
    ground-truth rows. The table gains a `source` column; rows of other sources take the report's
    output name."""
    if len(report.output_names) != 1:
        raise ValueError("compare() takes a report of one output")
    output = report.output_names[0]
    parts = [report.table.assign(source=report.metadata.get("method", "data"))]
    compared = {}
    for source, rows, about in (
        ("diffusion", diffusion, diffusion_settings or {}),
        ("truth", truth, {"definition": truth_definition} if truth_definition else {}),
    ):
        if rows is None or rows.empty:
            continue
        kept = rows[[*SCORE_COLUMNS, *(["source"] if "source" in rows.columns else [])]]
        parts.append(kept.assign(output=output, source=kept["source"] if "source" in kept.columns else source))
        compared[source] = about
    table = pd.concat(parts, ignore_index=True)
    return replace(report, table=table, metadata={**report.metadata, "compared": compared})
