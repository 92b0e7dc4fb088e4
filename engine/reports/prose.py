"""A report in words, written from its own metadata and table, so it says what this run did: the phrases
the HTML page's rows use (`input_phrase`, `ci_words`, ...), the methods paragraphs (`methods_paragraphs`;
`joint_method` for the features scored together), the results (`results_sentences`; `through_others` is the
one rule for "explains the output only through features correlated with it", which the app's words use too),
and `compare`, which puts other sources' scores beside a report's."""

from __future__ import annotations

import math
from dataclasses import replace

import pandas as pd

from engine.cards import spec_from_json
from engine.data import SliceSpec
from engine.data.slicing import INTENSITIES, NAMED_SLICES
from engine.errors import EveInputError
from engine.scores.service import JOINT_COLUMNS, JOINT_ON_ROWS, SCORE_COLUMNS, ScoreReport

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
    if report.joint is not None:
        paragraphs.append(joint_method(meta.get("joint", {}), report.joint))
    return paragraphs


# the features together (engine.scores.service.with_joint): what they explain jointly and how it splits

ALONE_HIGH = 0.20  # a first-order score at least this, with an added score at most
ADDED_NEAR_ZERO = 0.05  # this, is read as "explains the output only through features correlated with it"
SHAPLEY_HONESTY = (
    "A Shapley effect is a fair share of what the features explain together, not evidence that the model reads the "
    "feature: a feature the model never reads that is correlated with one it does keeps a share of the variance they "
    "explain together, by the definition of a fair share (of two features correlated ρ that explain S together, "
    "only one of them read, the other's Shapley effect is about ρ²S/2). The added score is the one that is near 0 "
    "for such a feature."
)


def through_others(row) -> bool:
    """A (feature, output) row whose feature explains much on its own (`score` >= ALONE_HIGH) but adds almost
    nothing to the other features (`added` <= ADDED_NEAR_ZERO): what it explains, it explains only through
    features correlated with it."""
    return row.status == "ok" and row.joint_status == "ok" and row.score >= ALONE_HIGH and row.added <= ADDED_NEAR_ZERO


def _together_how(about: dict) -> str:
    if about.get("exact", True):
        subsets = about.get("n_subsets")
        return (
            f"every subset of the features was scored ({subsets:,} subsets)" if subsets else "every subset was scored"
        )
    return (
        f"with more than {about.get('max_exact')} features, the Shapley effects were averaged over "
        f"{about.get('n_perm')} random orders of the features (sampled, not exact; their intervals resample the "
        "orders too, so they hold the sampling of orders as well as of the images)"
    )


def joint_method(about: dict, joint: pd.DataFrame) -> str:
    """The methods paragraph of the features scored together: what the joint score, the added score and the
    Shapley effect are, how they were estimated (`engine.scores.joint`) and what a Shapley effect does not say;
    or, when they could not be computed, why and that the scores above are one feature at a time."""
    failed = joint[joint["status"] != "ok"]
    if len(failed) == len(joint):
        reason = str(failed["message"].iloc[0]).rstrip(".")
        return (
            f"The features were not scored together ({failed['status'].iloc[0]}): {reason}. The scores are each "
            "feature on its own, and correlated features share the variance they explain."
        )
    together = about.get("together") or []
    draws = about.get("n_boot")
    level = f"{float(about.get('ci_level', 0.95)):.0%}"
    cats = about.get("categorical") or []
    text = (
        f"The {len(together)} features were also scored together. The joint score S(all) = Var(E[Y | all features]) "
        "/ Var(Y) is the share of the variance of Y that the recorded features explain together; the image carries "
        "the rest. The added score of A, S(all) − S(all but A), is what A adds to all the other features: near 0 "
        "for a feature that explains Y only through features correlated with it. The Shapley effect of A (Owen "
        "2014; Song, Nelson & Staum 2016) is A's added share averaged over all orders in which the features can "
        "be added: the effects are at least 0 and add up to S(all), so correlated features split what they "
        f"explain together instead of each claiming it. {SHAPLEY_HONESTY} "
        "S(u) of a set u was estimated by a least-squares fit of Y on a restricted cubic spline of each numeric "
        "feature in u (4 knots; Harrell 2015)"
        + (" and the pairwise products of their linear terms" if "no pairs" not in about.get("estimator", "") else "")
        + ", with its adjusted R², plus what the fit missed, from the products of each image's residual with its "
        "nearest neighbours' in the features of u (Broto, Bachoc & Depecker 2020); "
        f"{_together_how(about)}."
    )
    if cats:
        text += (
            f" Categorical feature{'s' if len(cats) > 1 else ''} ({', '.join(cats)}): one column per level but one "
            "(exact level means), neighbours taken within the same level; an interaction of a level with a numeric "
            "feature is left to the neighbour step."
        )
    text += _together_path(about, joint)
    if draws:
        resampled = (
            "the real images with their twins, and of the generated subjects apart"
            if about.get("path") == "debiased"
            else "the images"
        )
        text += (
            f" The {level} intervals are percentile intervals of {draws} bootstrap resamples of {resampled} (seed "
            f"{about.get('seed', 0)}), every score of a resample from the same images, so joint, added and Shapley "
            "intervals are of one set of replicates."
        )
        if about.get("path") == "generator":
            text += " They hold the sampling noise only, not the generator's own error."
    for r in failed.itertuples():
        text += f" For {r.output} they were not computed ({r.status}): {r.message}"
    return text


def _together_path(about: dict, joint: pd.DataFrame) -> str:
    """Where the features-together numbers come from when a generator drew them (`engine.scores.debias`)."""
    if about.get("path") == "debiased":
        lams = ", ".join(f"{x:.2f}" for x in joint.get("lam", pd.Series(dtype=float)).dropna())
        return (
            " Every S(u) was estimated three times, on the real images, on their twins (each generated under its "
            "image's recorded features) and on the generated subjects, and combined as S_real(u) + λ (S_gen(u) − "
            f"S_twin(u)) with one λ per output ({lams or 'none scored'}), tuned to the smallest variance of the "
            "joint, first-order and added scores (prediction-powered inference; Angelopoulos et al. 2023): the real "
            "images keep the numbers honest where the generator is wrong, and with one λ for every subset the "
            "Shapley effects still add up to the joint score. The generator's own numbers beside them are "
            "model-based."
        )
    if about.get("path") == "generator":
        return (
            f" They come from {about.get('generated', 'the')} generated subjects alone, each conditioned on one "
            f"feature vector of {about.get('generated_from', 'the generator')}: they describe the generator's "
            "world (model-based), not the model on real images."
        )
    return ""


def _only(report: ScoreReport, source: str) -> ScoreReport:
    return replace(report, table=report.table[report.table["source"] == source])


def _pct(value, low=math.nan, high=math.nan) -> str:
    return f"{value:.0%}" + ("" if math.isnan(low) else f" ({low:.0%}–{high:.0%})")


def results_sentences(report: ScoreReport) -> list[str]:
    """Per output: the features by score, each with its interval; with the features scored together, what
    they explain together, what each adds to the others, their fair shares, and which features explain the
    output only through others."""
    table = primary_rows(report.table)
    joint = None if report.joint is None else report.joint.set_index("output")
    sentences, shared = [], False
    for out in report.output_names:
        ok = ok_rows(table[table["output"] == out]).sort_values("score", ascending=False)
        if ok.empty:
            continue
        parts = [f"{r.feature} {_pct(r.score, r.ci_low, r.ci_high)}" for r in ok.itertuples()]
        alone = "each feature on its own" if joint is not None else "explained"
        sentences.append(f"Share of the variance of {out} {alone}: {'; '.join(parts)}.")
        if joint is None or out not in joint.index or joint.loc[out, "status"] != "ok":
            shared = True
            continue
        sentences += _together_sentences(out, joint.loc[out], ok[ok["joint_status"] == "ok"])
    if shared:
        sentences.append(
            "Correlated features share explained variance, so the scores need not add up to the total (nor to 100%)."
        )
    return sentences


def _together_sentences(out: str, joint, rows: pd.DataFrame) -> list[str]:
    total = joint["score"]
    sentences = [
        f"Together the recorded features explain {_pct(total, joint['ci_low'], joint['ci_high'])} of the variance "
        f"of {out}; the image carries the other {1 - total:.0%}, beyond these features."
    ]
    added = rows.sort_values("added", ascending=False)
    big = [
        f"{r.feature} {_pct(r.added, r.added_ci_low, r.added_ci_high)}" for r in added.itertuples() if r.added >= 0.01
    ]
    small = len(added) - len(big)
    sentences.append(
        "Added to all the others: "
        + ("; ".join(big) if big else "no feature adds 1% or more")
        + (f"; the other {small} add under 1% each." if big and small else ".")
    )
    fair = rows.sort_values("shapley", ascending=False)
    shares = [f"{r.feature} {_pct(r.shapley, r.shapley_ci_low, r.shapley_ci_high)}" for r in fair.itertuples()]
    sentences.append(f"Fair shares (Shapley effects, adding up to {total:.0%}): {'; '.join(shares)}.")
    for r in rows.itertuples():
        if through_others(r):
            sentences.append(
                f"{r.feature} explains {r.score:.0%} of {out} on its own but adds {r.added:.0%} to the others: it "
                "explains the output only through features correlated with it."
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
    output name, and keep the features-together columns they carry (the generator path's, `JOINT_COLUMNS`)."""
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
        together = [c for c in (*JOINT_COLUMNS, *JOINT_ON_ROWS) if c in rows.columns]  # the generator's set scores
        kept = rows[[*SCORE_COLUMNS, *together, *(["source"] if "source" in rows.columns else [])]]
        parts.append(kept.assign(output=output, source=kept["source"] if "source" in kept.columns else source))
        compared[source] = about
    table = pd.concat(parts, ignore_index=True)
    return replace(report, table=table, metadata={**report.metadata, "compared": compared})
