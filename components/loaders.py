"""The app's cache layer: thin `st.cache_*` wrappers over engine calls, nothing computed here.

* `st.cache_resource` for shared objects (datasets, models, the diffusion model), never
  mutated by a page;
* `st.cache_data` for derived arrays and tables, keyed on hashable inputs only: a dataset
  is named by its `source` (an embedded name or a folder path), a model by its
  `engine.cards.ModelRef`, a split by its name (`engine.scores.service.split_rows` says which rows).
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import streamlit as st
import torch

from engine.cards import ModelCard, ModelRef
from engine.data.defaults import BUILDERS, open_dataset
from engine.data.defaults import building as _building
from engine.data.defaults import is_built as _is_built
from engine.data.slicing import SliceSpec, normalise_intensity
from engine.errors import EveInputError
from engine.models import list_cards, load
from engine.models.zoo import forward
from engine.options import SCORE
from engine.pixelmaps import methods
from engine.reports.figures import conditional_curve_figure
from engine.scores import service
from engine.scores.tvd import conditional_curve

EMBEDDED = tuple(BUILDERS)
RAY_ENV = "EVE_RAY"  # "local", or a Ray cluster's address: the model's outputs and diffusion samples run there

# -- datasets ----------------------------------------------------------------------------


def is_built(source: str) -> bool:
    """False only for an embedded dataset that still has to be generated (minutes)."""
    return source not in EMBEDDED or _is_built(source)


def building(source: str) -> tuple[int, int] | None:
    """(subjects written, subjects) while another process builds an embedded dataset (`make run`'s
    background build); None otherwise."""
    return None if source not in EMBEDDED else _building(source)


@st.cache_resource(show_spinner=False, max_entries=8)
def dataset(source: str):
    """The `Dataset` for an embedded name or a folder path (raises DatasetError)."""
    return open_dataset(source)


@st.cache_data(show_spinner=False, max_entries=16)
def feature_table(source: str) -> pd.DataFrame:
    """subject, split, labels and features of a dataset (the 'file' column left out)."""
    return dataset(source).table.drop(columns=["file"])


@st.cache_data(show_spinner=False, max_entries=24)
def volume(source: str, subject: str, register: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(intensity-normalised volume in RAS+ (or a 2D image), affine); registered to MNI152 if asked."""
    data, affine = dataset(source).volume(subject, register=register)
    return normalise_intensity(data), affine


def split_rows(source: str, split: str) -> np.ndarray:
    """Row indices of a split (`engine.scores.service.split_rows`: raises for an empty one)."""
    return service.split_rows(dataset(source), split)


def default_split(source: str) -> str:
    return service.default_split(dataset(source))


# -- models ------------------------------------------------------------------------------


@st.cache_data(show_spinner=False)
def zoo_cards() -> list[ModelCard]:
    """Every built-in model card."""
    return list_cards()


def cards_offered(dataset_name: str, is_3d: bool) -> list[str]:
    """Built-in models to offer: those of the dataset; for a user folder, those of the embedded
    set of the same kind (synthbrain models for 3D MNI-space volumes, shapes models for 2D)."""
    trained_on = ("synthbrain" if is_3d else "shapes") if dataset_name == "user" else dataset_name
    return [card.name for card in zoo_cards() if card.dataset == trained_on]


@st.cache_resource(show_spinner=False, max_entries=8)
def model(ref: ModelRef, device: str = "cpu"):
    """(model in eval mode on `device`, its ModelCard)."""
    return load(ref, device)


def same_explained(name: str, like: ModelRef) -> ModelRef:
    """Built-in model `name`, explaining what `like` explains where it can (a logit's probability)."""
    logit = next(c for c in zoo_cards() if c.name == name).output_kind == "logit"
    return ModelRef(name=name, explain=like.explain if logit else "output")


def card(ref: ModelRef, device: str = "cpu") -> ModelCard:
    return model(ref, device)[1]


def output_names(ref: ModelRef, device: str = "cpu") -> list[str]:
    return list(card(ref, device).output_names)


@st.cache_data(show_spinner=False, max_entries=16)
def model_inputs(source: str, spec: SliceSpec) -> np.ndarray:
    """(N, 1, S, S) float32 model inputs for every row, (N, 1, S, S, S) for a volume input
    (disk-cached by the engine)."""
    return dataset(source).model_inputs(spec).numpy()


@st.cache_data(show_spinner=False, max_entries=256)
def input_location(source: str, row: int, spec: SliceSpec) -> str:
    """Where a slice model's input is cut from row `row`'s volume, in words (`Dataset.input_location`)."""
    return dataset(source).input_location(int(row), spec)


# -- the Ray cluster the app was started with ------------------------------------------------


def ray_address() -> str:
    return os.environ.get(RAY_ENV, "").strip()


@st.cache_resource(show_spinner="Connecting to the Ray cluster…")
def cluster_connection(address: str):
    """(the `engine.compute.cluster.Cluster` at `address`, None) — one per server, shared by every session —
    or (None, why not) when it cannot be reached; (None, None) without an address. Kept either way:
    a cluster that does not answer is not asked again on every rerun."""
    if not address:
        return None, None
    from engine.compute.cluster import Cluster  # Ray (~2 s to import) only when the app is started with one

    try:
        return Cluster.connect(None if address == "local" else address), None
    except EveInputError as exc:
        return None, str(exc)


def cluster():
    """The connected cluster, or None (none asked for, or it could not be reached: `cluster_connection`)."""
    return cluster_connection(ray_address())[0]


@st.cache_data(show_spinner=False, max_entries=16)
def model_outputs(source: str, ref: ModelRef, device: str = "cpu") -> np.ndarray:
    """(N, K) model outputs for every row of the dataset, in row order (on the Ray cluster when the
    app has one: the same numbers, `engine.compute.cluster`)."""
    connected = cluster()
    net, found = model(ref, device)
    runner = None if connected is None else connected.outputs_runner(ref, device)
    return service.model_outputs(net, dataset(source), found.spec, runner=runner)


# -- scores ------------------------------------------------------------------------------


@st.cache_data(show_spinner=False, max_entries=32)
def data_scores(
    source: str, ref: ModelRef, device: str, output: int, split: str, features: tuple[str, ...], n_boot: int
) -> pd.DataFrame:
    """Data-based S(A) per feature for one output on a split (`engine.scores.service.score_outputs`)."""
    rows = split_rows(source, split)
    y = model_outputs(source, ref, device)[rows, output]
    return service.score_outputs(y, dataset(source), features, rows, [str(output)], n_boot=n_boot, seed=0)


@st.cache_data(show_spinner=False, max_entries=32)
def curve(source: str, ref: ModelRef, device: str, output: int, split: str, feature: str):
    """(CurveResult of E[f | A = a], outputs, feature values) on the chosen rows."""
    ds = dataset(source)
    rows = split_rows(source, split)
    y = model_outputs(source, ref, device)[rows, output]
    a = ds.feature_values(feature)[rows]
    return conditional_curve(y, a, categorical=feature in ds.categorical_features), y, a


@st.cache_resource(show_spinner=False, max_entries=64)
def curve_figure(
    source: str, ref: ModelRef, device: str, output: int, split: str, feature: str, output_name: str, color: str
) -> dict:
    """`curve`'s figure without a marker, as plotly's dict: the explorer's, built once and shared, never
    changed (`curves.marked` copies what it adds for each value)."""
    found, y, a = curve(source, ref, device, output, split, feature)
    categorical = feature in dataset(source).categorical_features
    bounds = card(ref, device).output_range
    return conditional_curve_figure(
        found,
        y,
        a,
        feature=feature,
        output_name=output_name,
        color=color,
        categorical=categorical,
        height=280,
        bounds=bounds,
    ).to_dict()


# -- baselines ---------------------------------------------------------------------------


def baseline_methods(ref: ModelRef, device: str = "cpu", *, slow: bool = False) -> list[str]:
    """The attribution methods that can explain the model (`engine.pixelmaps.methods.available_methods`),
    without the slow sampling ones (Shapley, LIME, KernelSHAP) unless asked."""
    return methods.available_methods(model(ref, device)[0], slow=slow)


def unavailable_methods(ref: ModelRef, device: str = "cpu") -> dict[str, str]:
    """{method: why it cannot explain this model}."""
    net = model(ref, device)[0]
    why = {m: methods.unavailable(net, m) for m in methods.ALL_METHODS}
    return {m: reason for m, reason in why.items() if reason}


def xtrain_tracking(ref: ModelRef, device: str = "cpu"):
    """What the model's training stored for XtrAIn (`engine.models.xtrain.Tracking`), or None."""
    from engine.models import xtrain

    return xtrain.Tracking.from_card(card(ref, device))


def training_methods(ref: ModelRef, device: str, subject: str) -> list[str]:
    """The training trajectory's methods for one image: Xstep for any image of an MLP, XtrAIn and XtrAIn+
    for the images its training tracked (`engine.pixelmaps.methods.TRAINING_METHODS`)."""
    tracking = xtrain_tracking(ref, device)
    tracked = tracking is not None and subject in tracking.images
    found = methods.available_methods(model(ref, device)[0], training=True)
    info = methods.method_info
    return [m for m in found if info(m).training and (tracked or not info(m).stored)]


def region_kinds(ref: ModelRef, device: str = "cpu") -> list[str]:
    """The regions the region methods can use for this model's input: a grid always; anatomy and the
    atlases for a named MNI slice (`engine.pixelmaps.regions`), an atlas only where Debian's package is there."""
    from engine.pixelmaps import regions as engine_regions

    spec = card(ref, device).spec
    if spec.is_volume or not isinstance(spec.index, str):
        return ["grid"]
    atlases = [
        a for a, (volume, _, _) in engine_regions.ATLASES.items() if (engine_regions.ATLAS_DIR / volume).is_file()
    ]
    return ["grid", "anatomy", *atlases]


@st.cache_resource(show_spinner=False, max_entries=8)
def regions(spec: SliceSpec, kind: str):
    """`engine.pixelmaps.regions.Regions` of a model input (anatomy builds SynthBrain's template once, ~5 s)."""
    from engine.pixelmaps import regions as engine_regions

    return engine_regions.regions_for(kind, spec)


@st.cache_data(show_spinner=False, max_entries=128)
def attribution(
    source: str, ref: ModelRef, device: str, row: int, method: str, target: int, region_kind: str = "grid"
) -> np.ndarray:
    """(S, S) attribution map of one image (the model's input for that row); (S, S, S) for a volume.
    A region method's regions are `region_kind`'s (`regions`)."""
    net, found = model(ref, device)
    image = torch.from_numpy(model_inputs(source, found.spec)[row : row + 1]).to(device)
    params = {"regions": regions(found.spec, region_kind).labels} if methods.method_info(method).regional else {}
    amap = methods.attribution_map(net, image, method, target=target, **params).detach().cpu().numpy()
    return amap[0, 0].astype(np.float32)


def region_table(source: str, ref: ModelRef, device: str, row: int, target: int, found: np.ndarray, kind: str):
    """(regions, table, f(x) − f(black)) of a region method's map `found` of one image: what each region
    carries (`engine.pixelmaps.regions.region_shares`) and the output difference its shares are of."""
    from engine.pixelmaps.regions import region_shares
    from engine.pixelmaps.report import output_difference

    net, card_ = model(ref, device)
    image = torch.from_numpy(model_inputs(source, card_.spec)[row : row + 1]).to(device)
    difference = float(output_difference(net, image, target)[0])
    chosen = regions(card_.spec, kind)
    return chosen, region_shares(found, chosen, regional=True, whole=difference), difference


def contrasting_model(like: ModelRef, names: list[str]) -> str:
    """The built-in model of `names` to compare `like` with by default (`engine.models.zoo.contrasting_model`)."""
    from engine.models.zoo import contrasting_model as contrasting

    cards = {c.name: c for c in zoo_cards()}
    mine = cards.get(like.name) if like.name else None
    if mine is None:
        return names[0]
    return contrasting(mine, [cards[n] for n in names if n in cards]) or names[0]


def display_maps(maps: dict[str, np.ndarray], signed: bool) -> dict[str, np.ndarray]:
    """Each map scaled for display (`engine.pixelmaps.methods.display_normalise`): a pixel map by its own 99th
    percentile of |value|; a region method's by its largest region, since one region covering most of the
    image would otherwise be the 99th percentile and every region would show at full brightness."""
    shown = {}
    for method, amap in maps.items():
        percentile = 100.0 if method in methods.METHODS and methods.method_info(method).regional else 99.0
        tensor = torch.from_numpy(np.asarray(amap)[None])
        shown[method] = methods.display_normalise(tensor, signed=signed, percentile=percentile).numpy()[0]
    return shown


# the quality table's columns as the compare page heads them (what each is: `QUALITY_COLUMNS`)
QUALITY_LABELS = {
    "randomised_spearman_abs": "rank corr. after randomising all layers (|map|)",
    "randomised_spearman": "rank corr. (signed)",
    "infidelity": "infidelity",
    "sensitivity_max": "max-sensitivity",
    "local_lipschitz": "local Lipschitz",
    "random_logit": "rank corr. with another output's map",
    "deletion_auc": "deletion AUC",
    "insertion_auc": "insertion AUC",
    "road_morf_auc": "ROAD MoRF AUC",
    "completeness_gap": "completeness gap",
    "sparseness": "sparseness (Gini)",
    "complexity": "complexity (entropy)",
    "relevance_mass": "relevance mass in the read pixels",
    "relevance_rank": "relevance rank accuracy",
}


def map_quality(
    source: str, ref: ModelRef, device: str, output: int, rows: tuple[int, ...], progress=None
) -> pd.DataFrame:
    """The one quality table (`engine.pixelmaps.report.quality_report`) of the baseline methods' maps of
    the images `rows`, its columns named for a reader (`QUALITY_LABELS`); `progress(done, total)`."""
    from engine.pixelmaps.report import quality_report

    net, found = model(ref, device)
    images = torch.from_numpy(model_inputs(source, found.spec)[list(rows)]).to(device)
    maps = {m: methods.attribution_map(net, images, m, target=output) for m in baseline_methods(ref, device)}
    table = quality_report(net, found, images, maps, output, progress=progress)
    shown = [c for c in QUALITY_LABELS if c in table and table[c].notna().any()]
    return table[["method", *shown]].rename(columns=QUALITY_LABELS)


# -- diffusion ---------------------------------------------------------------------------
# engine.diffusion imports diffusers (~3 s): loaded on the first page that samples, not at app start.


@st.cache_resource(show_spinner=False, max_entries=4)
def diffusion(generator: str):
    """A generator: the committed diffusion model of an embedded dataset, or a card path (a user
    folder's, `Selection.generator`); raises EveInputError."""
    from engine.diffusion import load_diffusion

    return load_diffusion(generator)


def cohort_generator(source: str, ref: ModelRef | None, device: str = "cpu") -> str | None:
    """The card of the generator trained on a user's folder (`<folder>/eve-generators/`) that makes
    the chosen model's input, preferring the kind that measured better on scarce data; None if none."""
    from engine.diffusion.cohort import find_generators

    spec = None if ref is None else card(ref, device).spec
    found = find_generators(source, spec)
    return None if not found else str(found[0])


def train_linear_gaussian(source: str, ref: ModelRef, device: str = "cpu"):
    """Learn the linear-Gaussian generator of a user's folder from its subjects alone, for the model's
    input, and save it in `<folder>/eve-generators/` (atomically); its card's path. Raises EveInputError
    for what the recipe cannot learn from (too few subjects, a constant feature...)."""
    from engine.data.dataset import GENERATORS_DIR
    from engine.diffusion.cohort import CohortRecipe, save_cohort_model, train_on_cohort

    folder = dataset(source)
    recipe = CohortRecipe(kind="linear-gaussian")
    generator = train_on_cohort(folder, card(ref, device).spec, recipe=recipe, log=_quiet)  # the varying features
    return save_cohort_model(generator, folder.root / GENERATORS_DIR)


def _quiet(_message: str) -> None:
    """Training's progress lines have no place on a page (the spinner says it runs)."""


def diffusion_unavailable(sel) -> str | None:
    """None when the selection has a generator; else why not, and how to get one, in plain words."""
    if sel.generator is not None:
        return None
    from engine.data.dataset import GENERATORS_DIR

    model = "" if sel.model_ref is None or sel.model_ref.is_torchscript else f" --model {sel.model_ref.name}"
    here = "with the button below" if sel.model_ref is not None else "once you choose a model"
    return (
        f"No generator for your folder yet. One is learnt from your subjects alone: a linear-Gaussian one in about "
        f"a second, {here}, or a diffusion model in minutes with `python -m engine train-diffusion --data "
        f"YOUR_FOLDER{model}`, after which you upload the folder again as a .zip with its {GENERATORS_DIR}/ subfolder."
    )


def generator_trust(generator: str) -> str | None:
    """When to trust this generator's scores (`engine.diffusion.cohort.trust_note`); None for ample-data ones."""
    from engine.diffusion.cohort import trust_note

    return trust_note(diffusion(generator).card)


def diffusion_features(generator: str) -> list[str]:
    return list(diffusion(generator).features)


def diffusion_compatibility(generator: str, ref: ModelRef, device: str = "cpu") -> str | None:
    """None when the model sees the slice the diffusion model generates; else the reason."""
    from engine.scores.generator import check_compatible

    try:
        check_compatible(card(ref, device), diffusion(generator))
    except EveInputError as exc:
        return str(exc)
    return None


def explorer_sampler(guidance: float):
    """How the explorer samples (`SamplerConfig.for_explorer`): the other features left to the
    denoiser, so a fixed seed morphs one subject smoothly as the value moves."""
    from engine.diffusion import SamplerConfig

    return SamplerConfig.for_explorer(guidance)


def score_sampler(generator: str):
    """How a diffusion score samples (`SamplerConfig.for_scores`)."""
    from engine.diffusion import SamplerConfig

    return SamplerConfig.for_scores(diffusion(generator))


@st.cache_data(show_spinner=False, max_entries=1024)
def conditional_samples(
    generator: str, feature: str, value, n: int, seed: int, guidance: float
) -> tuple[np.ndarray, np.ndarray | None]:
    """((n, S, S) samples of p(x | feature = value), (n,) probe-measured feature or None): from a bank
    drawn beforehand when one holds them, else drawn now (`engine.diffusion.banks`)."""
    from engine.diffusion import banks

    dm = diffusion(generator)
    found = banks.stored(dm, feature, value, n, seed, guidance)
    return found if found is not None else banks.conditional(dm, feature, value, n, seed, guidance)


def bank_drawn(generator: str, feature: str, n: int, seed: int, guidance: float) -> bool:
    """Whether the explorer's whole bank at these settings was drawn beforehand (`make run`'s background build)."""
    from engine.diffusion import banks

    return banks.is_drawn(diffusion(generator), feature, n, seed, guidance)


@st.cache_data(show_spinner=False, max_entries=2048)
def conditional_frames(
    generator: str, feature: str, value, n: int, seed: int, guidance: float
) -> tuple[tuple[str, ...], tuple[float, ...] | None]:
    """The samples of `conditional_samples` as WebP data URLs (`components.samples.encoded_frames`),
    with their probe-measured values: one position of the explorer's scrubbing bank."""
    from components.samples import encoded_frames

    images, measured = conditional_samples(generator, feature, value, n, seed, guidance)
    return tuple(encoded_frames(images)), None if measured is None else tuple(float(m) for m in measured)


@st.cache_data(show_spinner=False, max_entries=1024)
def sample_outputs(
    generator: str, feature: str, value, n: int, seed: int, guidance: float, ref: ModelRef, device: str, output: int
) -> np.ndarray:
    """(n,) model outputs on the conditional samples above."""
    images, _ = conditional_samples(generator, feature, value, n, seed, guidance)  # the grid's cache key
    net, _ = model(ref, device)
    return forward(net, torch.from_numpy(images)[:, None])[:, output].numpy()


@st.cache_data(show_spinner=False, max_entries=256)
def counterfactual(
    source: str, generator: str, ref: ModelRef, device: str, subject: str, feature: str, value: float, output: int
):
    """The subject's slice with `feature` at `value`, its other features held (`engine.explanations.counterfactual`)."""
    from engine.explanations.counterfactual import subject_counterfactual

    net, found = model(ref, device)
    generated = diffusion(generator)
    return subject_counterfactual(net, found, generated, dataset(source), subject, feature, value, output=output)


def suggested_value(generator: str, feature: str, before: float) -> float:
    from engine.explanations.counterfactual import suggested_value

    return suggested_value(diffusion(generator), feature, before)


def generator_scores(
    sel, features: tuple[str, ...], k_values: int, n_per_value: int, split: str, progress=None
) -> pd.DataFrame:
    """The generator path's scores of the selected model on the page's rows (the data path's split), debiased
    by the real images (`engine.scores.service.debiased_scores`: source "debiased") beside the generator's own
    (source "diffusion", model-based: its interval holds the sampling noise only), K x N generated subjects; with
    the features it conditions on scored together (`JOINT_COLUMNS` and `JOINT_ON_ROWS` on every row).
    A linear-Gaussian generator trained on these images is cross-fitted (a second a fold)."""
    net, found = model(sel.model_ref, sel.device)
    ds = dataset(sel.source)
    usable = [f for f in features if f in diffusion_features(sel.generator)]
    report = service.debiased_scores(
        net,
        found,
        ds,
        usable,
        diffusion=diffusion(sel.generator),
        split=split,
        output=sel.output,
        n_generated=k_values * n_per_value,
        sampler=score_sampler(sel.generator),
        progress=progress,
        joint=True,
    )
    joint = report.joint
    debiased = service.joint_on_rows(report.table, joint).assign(output=str(sel.output), source="debiased")
    own = joint.assign(
        score=joint["generator_score"], ci_low=joint["generator_ci_low"], ci_high=joint["generator_ci_high"]
    )
    generator = service.joint_on_rows(report.table, own).assign(
        score=debiased["generator_score"],
        ci_low=debiased["generator_ci_low"],
        ci_high=debiased["generator_ci_high"],
        **{c: report.table[g] for c, g in zip(service.JOINT_COLUMNS[:6], service.GENERATOR_JOINT_COLUMNS, strict=True)},
        output=str(sel.output),
        source="diffusion",
    )
    return pd.concat([debiased, generator], ignore_index=True)


# -- ground truth ------------------------------------------------------------------------


@st.cache_data(show_spinner=False, max_entries=16)
def truth_table(source: str, ref: ModelRef, device: str, features: tuple[str, ...]) -> tuple[pd.DataFrame, str] | None:
    """`engine.scores.truth.truth_table` of a built-in model on an embedded dataset (None for others)."""
    from engine.scores.truth import truth_table as scored

    if source not in EMBEDDED or ref.is_torchscript:
        return None
    return scored(dataset(source), card(ref, device), ref.explain, features)


def truth_scores(sel, features: tuple[str, ...]) -> pd.DataFrame | None:
    """Ground-truth rows (source "truth") for the selected model where its target is known."""
    found = truth_table(sel.source, sel.model_ref, sel.device, features) if sel.model_ref else None
    return None if found is None else found[0].assign(source="truth")


# -- the report --------------------------------------------------------------------------


def score_report(sel, split: str, features: tuple[str, ...], n_boot: int, diffusion_rows=None):
    """The scores page's view as one `ScoreReport`, the CLI's: its data scores (the cached outputs on the same
    rows, bootstrap and seed, so the same numbers) with the generator and ground-truth rows it shows beside
    them (`engine.reports.prose.compare`). Its JSON, CSV and HTML are the CLI's files."""
    from engine.reports import prose

    outputs = model_outputs(sel.source, sel.model_ref, sel.device)[split_rows(sel.source, split)]
    _, found = model(sel.model_ref, sel.device)
    truth = truth_table(sel.source, sel.model_ref, sel.device, features)
    settings = None
    if diffusion_rows is not None:
        diffusion_rows = diffusion_rows[diffusion_rows["feature"].isin(features)]
        settings = service.diffusion_settings(
            diffusion(sel.generator), score_sampler(sel.generator), n_boot=SCORE.n_boot, seed=SCORE.seed
        )
    scored = service.data_report(
        outputs,
        found,
        dataset(sel.source),
        list(features),
        split=split,
        n_boot=n_boot,
        seed=SCORE.seed,
        output=sel.output,
    )
    return prose.compare(
        scored,
        diffusion=diffusion_rows,
        diffusion_settings=settings,
        truth=None if truth is None else truth[0],
        truth_definition=None if truth is None else truth[1],
    )


# -- the features together (issue 36) ------------------------------------------------------------


@st.cache_data(show_spinner=False, max_entries=32)
def set_scores(
    source: str, ref: ModelRef, device: str, output: int, split: str, features: tuple[str, ...], n_boot: int
) -> service.SetScores:
    """The joint score of the features, and what each adds to the others and its Shapley effect, for one output on
    a split (`engine.scores.service.set_scores`): the same outputs, rows, output name and seed as `data_scores`,
    so its rows sit beside that table's."""
    rows = split_rows(source, split)
    y = model_outputs(source, ref, device)[rows, output]
    return service.set_scores(y, dataset(source), features, rows, [str(output)], n_boot=n_boot, seed=SCORE.seed)


def score_report_with_joint(sel, split: str, features: tuple[str, ...], n_boot: int, diffusion_rows=None):
    """`score_report` with the features scored together beside its data scores (`engine.scores.service.with_joint`),
    so the downloads carry the joint score, the added scores and the Shapley effects as the CLI's files do."""
    return service.with_joint(score_report(sel, split, features, n_boot, diffusion_rows))
