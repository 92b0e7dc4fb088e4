"""The app's cache layer: thin `st.cache_*` wrappers over engine calls, nothing computed here.

* `st.cache_resource` for shared objects (datasets, models, the diffusion model), never
  mutated by a page;
* `st.cache_data` for derived arrays and tables, keyed on hashable inputs only: a dataset
  is named by its `source` (an embedded name or a folder path), a model by its `model_id`
  (`zoo:<card name>` or `torchscript:<file>|<plane>|<slice>|<size>`).

Engine pieces still being built are imported lazily: `engine_status(name)` says whether
one is importable, and pages show a plain "not ready" note instead of fake numbers.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import asdict, is_dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

EMBEDDED = ("synthbrain", "shapes")

# engine piece -> what it brings to the app (for the "not ready" notes)
ENGINE_PIECES = {
    "engine.models.zoo": "the model zoo (built-in classifiers and TorchScript uploads)",
    "engine.baselines": "the captum baseline maps",
    "engine.diffusion": "the conditional diffusion model",
}


def engine_status(module: str) -> str | None:
    """None when `module` imports and has what the app needs; else a sentence saying why not."""
    what = ENGINE_PIECES.get(module, module)
    try:
        if importlib.util.find_spec(module) is None:
            return f"Not ready yet: {what} ({module}) is still being built."
        mod = importlib.import_module(module)
    except Exception as exc:  # an engine module mid-edit can fail in any way
        return f"Not ready yet: {what} ({module}) does not import ({type(exc).__name__}: {exc})."
    needed = {
        "engine.models.zoo": ("list_cards", "load_model"),
        "engine.baselines": ("METHODS", "attribution_map"),
        "engine.diffusion": ("load_diffusion",),
    }.get(module, ())
    missing = [name for name in needed if not hasattr(mod, name)]
    if missing:
        return f"Not ready yet: {what} ({module}) has no {', '.join(missing)} yet."
    return None


# -- datasets ----------------------------------------------------------------------------


def is_built(source: str) -> bool:
    """False only for an embedded dataset that still has to be generated (minutes)."""
    if source not in EMBEDDED:
        return True
    from engine.data.defaults import is_built as built

    return built(source)


@st.cache_resource(show_spinner=False, max_entries=8)
def dataset(source: str):
    """The `Dataset` for an embedded name or a folder path (raises DatasetError)."""
    if source in EMBEDDED:
        from engine.data.defaults import load_default

        return load_default(source)
    from engine.data import load_dataset

    return load_dataset(source)


@st.cache_data(show_spinner=False, max_entries=16)
def feature_table(source: str) -> pd.DataFrame:
    """subject, split, labels and features of a dataset (the 'file' column left out)."""
    ds = dataset(source)
    return ds.table.drop(columns=["file"])


@st.cache_data(show_spinner=False, max_entries=24)
def volume(source: str, subject: str) -> tuple[np.ndarray, np.ndarray]:
    """(intensity-normalised volume in RAS+ (or a 2D image), affine)."""
    from engine.data.slicing import normalise_intensity

    data, affine = dataset(source).volume(subject)
    return normalise_intensity(data), affine


def split_rows(source: str, split: str) -> np.ndarray:
    """Row indices of 'train'/'test', or every row for 'all' (or when the split is empty)."""
    ds = dataset(source)
    if split == "all":
        return np.arange(len(ds))
    rows = ds.split_indices(split)
    return rows if len(rows) else np.arange(len(ds))


# -- models ------------------------------------------------------------------------------


def card_value(card, key: str, default=None):
    """A field of a model card, whether the zoo gives a dataclass, a dict or an object."""
    if card is None:
        return default
    if isinstance(card, dict):
        return card.get(key, default)
    return getattr(card, key, default)


def card_dict(card) -> dict:
    if card is None:
        return {}
    if isinstance(card, dict):
        return dict(card)
    if is_dataclass(card):
        return asdict(card)
    return {k: v for k, v in vars(card).items() if not k.startswith("_")}


def card_spec(card):
    """The card's SliceSpec (the zoo may store it as a SliceSpec or a dict)."""
    from engine.data import SliceSpec

    spec = card_value(card, "spec")
    if isinstance(spec, SliceSpec):
        return spec
    if isinstance(spec, dict):
        return SliceSpec(spec.get("plane", "axial"), spec.get("index"), int(spec.get("size", 64)))
    return SliceSpec(card_value(card, "plane", "axial"), card_value(card, "index"), int(card_value(card, "size", 64)))


@st.cache_data(show_spinner=False, ttl=60)
def zoo_cards() -> list:
    """Every built-in model card (re-read every minute while the zoo grows)."""
    from engine.models.zoo import list_cards

    return list(list_cards())


def cards_for(dataset_name: str) -> list[str]:
    """Names of the built-in models trained on `dataset_name`."""
    if engine_status("engine.models.zoo") is not None:
        return []
    names = []
    for card in zoo_cards():
        if card_value(card, "dataset") == dataset_name:
            names.append(str(card_value(card, "name")))
    return names


def cards_offered(dataset_name: str, is_3d: bool) -> list[str]:
    """Built-in models to offer: those of the dataset; for a user folder, those of the embedded
    set of the same kind (synthbrain models for 3D MNI-space volumes, shapes models for 2D)."""
    if dataset_name == "user":
        return cards_for("synthbrain" if is_3d else "shapes")
    return cards_for(dataset_name)


@st.cache_resource(show_spinner=False, max_entries=8)
def model(model_id: str, device: str = "cpu"):
    """(model in eval mode on `device`, card) for `zoo:<name>` or `torchscript:<file>|plane|slice|size`."""
    from engine.data import SliceSpec
    from engine.models import zoo

    if model_id.startswith("zoo:"):
        return zoo.load_model(model_id[4:], device)
    path, plane, index, size = model_id[len("torchscript:") :].split("|")
    spec = SliceSpec(plane, _slice_value(index), int(size))
    data = Path(path).read_bytes()  # bytes, so messages say "the uploaded file", not a temp path
    return zoo.load_torchscript(data, spec, name="your TorchScript model", device=device)


def _slice_value(text: str):
    """'None' -> None, '45' -> 45, 'ventricles' -> 'ventricles'."""
    if text in ("", "None"):
        return None
    return int(text) if text.lstrip("-").isdigit() else text


def model_id_for(name: str, upload_path: str | None, plane: str, index, size: int) -> str:
    if upload_path is not None and name == "upload":
        return f"torchscript:{upload_path}|{plane}|{index}|{size}"
    return f"zoo:{name}"


def output_names(model_id: str, device: str = "cpu") -> list[str]:
    _, card = model(model_id, device)
    names = card_value(card, "output_names") or ["output"]
    return [str(n) for n in names]


@st.cache_data(show_spinner=False, max_entries=16)
def model_inputs(source: str, plane: str, index, size: int) -> np.ndarray:
    """(N, 1, S, S) float32 model inputs for every row (disk-cached by the engine)."""
    from engine.data import SliceSpec

    return dataset(source).model_inputs(SliceSpec(plane, index, size)).numpy()


@st.cache_data(show_spinner=False, max_entries=16)
def model_outputs(source: str, model_id: str, device: str = "cpu") -> np.ndarray:
    """(N, K) model outputs for every row of the dataset, in row order."""
    import torch

    from engine.models.train import predict

    net, card = model(model_id, device)
    spec = card_spec(card)
    images = torch.from_numpy(model_inputs(source, spec.plane, spec.index, spec.size)).to(device)
    y = predict(net, images)  # (N, K), batched, inference mode
    return y.float().reshape(len(y), -1).cpu().numpy()


# -- scores ------------------------------------------------------------------------------


@st.cache_data(show_spinner=False, max_entries=32)
def data_scores(
    source: str, model_id: str, device: str, output: int, split: str, features: tuple[str, ...], n_boot: int
) -> pd.DataFrame:
    """Data-based S(A) per feature for one output: engine.tvd.score_table on the chosen rows."""
    from engine.tvd import score_table

    ds = dataset(source)
    rows = split_rows(source, split)
    y = model_outputs(source, model_id, device)[rows, output]
    values = {f: ds.feature_values(f)[rows] for f in features}
    cats = tuple(f for f in features if f in ds.categorical_features)
    return score_table(y, values, categorical=cats, output_names=[str(output)], n_boot=n_boot, seed=0)


@st.cache_data(show_spinner=False, max_entries=32)
def curve(source: str, model_id: str, device: str, output: int, split: str, feature: str):
    """(CurveResult of E[f | A = a], outputs, feature values) on the chosen rows."""
    from engine.tvd import conditional_curve

    ds = dataset(source)
    rows = split_rows(source, split)
    y = model_outputs(source, model_id, device)[rows, output]
    a = ds.feature_values(feature)[rows]
    return conditional_curve(y, a, categorical=feature in ds.categorical_features), y, a


# -- baselines ---------------------------------------------------------------------------


def baseline_methods(model_id: str | None = None, device: str = "cpu") -> list[str]:
    """The captum methods available for a model (hook-based ones need a regular nn.Module)."""
    if engine_status("engine.baselines") is not None:
        return []
    from engine.baselines import METHODS

    scripted = model_id is not None and model_id.startswith("torchscript:")
    return [name for name, info in METHODS.items() if not (scripted and info.hooks)]


@st.cache_data(show_spinner=False, max_entries=64)
def attribution(source: str, model_id: str, device: str, row: int, method: str, target: int) -> np.ndarray:
    """(S, S) attribution map of one image (the model's input for that row)."""
    import torch

    from engine.baselines import attribution_map

    net, card = model(model_id, device)
    spec = card_spec(card)
    image = torch.from_numpy(model_inputs(source, spec.plane, spec.index, spec.size)[row : row + 1]).to(device)
    amap = attribution_map(net, image, method, target=target)
    amap = amap.detach().cpu().numpy() if hasattr(amap, "detach") else np.asarray(amap)
    return amap.reshape(amap.shape[-2:]).astype(np.float32)


def display_maps(maps: dict[str, np.ndarray], signed: bool) -> dict[str, np.ndarray]:
    """Each map scaled by its own 99th percentile of |value| (engine.baselines.display_normalise)."""
    import torch

    from engine.baselines import display_normalise

    if not maps:
        return {}
    stacked = display_normalise(torch.from_numpy(np.stack(list(maps.values()))), signed=signed).numpy()
    return dict(zip(maps, stacked, strict=True))


def map_quality_status() -> str | None:
    return engine_status("engine.baselines")


def map_quality(
    source: str, model_id: str, device: str, output: int, rows: tuple[int, ...], progress=None
) -> pd.DataFrame:
    """Per method: the randomisation check after every layer is randomised (Adebayo et al.),
    captum's infidelity and max-sensitivity, on the images `rows` (engine.baselines)."""
    import torch

    from engine.baselines import quality_table, randomisation_check

    net, card = model(model_id, device)
    spec = card_spec(card)
    images = torch.from_numpy(model_inputs(source, spec.plane, spec.index, spec.size)[list(rows)]).to(device)
    methods = baseline_methods(model_id, device)
    if progress:
        progress(0.05, "Randomising the weights layer by layer...")
    checks = randomisation_check(net, images, methods, target=output)
    last = checks[checks["step"] == checks["step"].max()].set_index("method")
    if progress:
        progress(0.5, "Infidelity and max-sensitivity (captum.metrics)...")
    quality = quality_table(net, images, methods, target=output, n_perturb_samples=5).set_index("method")
    table = pd.DataFrame(
        {
            "rank corr. after randomising all layers (|map|)": last["spearman_abs"],
            "rank corr. (signed)": last["spearman"],
            "infidelity": quality["infidelity"],
            "max-sensitivity": quality["sensitivity_max"],
        }
    )
    if progress:
        progress(1.0, "done")
    return table.reset_index().rename(columns={"index": "method"})


# -- diffusion ---------------------------------------------------------------------------


@st.cache_resource(show_spinner=False, max_entries=4)
def diffusion(dataset_name: str):
    """The committed conditional diffusion model of an embedded dataset (raises EveInputError)."""
    from engine.diffusion import load_diffusion

    return load_diffusion(dataset_name)


def diffusion_score_status(dataset_name: str) -> str | None:
    """None when a diffusion model for this dataset loads; else why not, in plain words."""
    if dataset_name not in EMBEDDED:
        return "No diffusion model for an uploaded folder: Eve trains them on its embedded datasets only."
    try:
        diffusion(dataset_name)
    except Exception as exc:
        return f"Not ready yet: the {dataset_name} diffusion model does not load ({exc})."
    return None


def diffusion_features(dataset_name: str) -> list[str]:
    return list(diffusion(dataset_name).features)


def diffusion_compatibility(dataset_name: str, model_id: str, device: str = "cpu") -> str | None:
    """None when the model sees the slice the diffusion model generates; else the reason."""
    from engine.diffusion.score import check_compatible

    _, card = model(model_id, device)
    try:
        check_compatible(card, diffusion(dataset_name))
    except Exception as exc:
        return str(exc)
    return None


SAMPLER_STEPS = 20  # DPM-Solver++ steps for the explorer's samples


@st.cache_data(show_spinner=False, max_entries=1024)
def conditional_samples(
    dataset_name: str, feature: str, value, n: int, seed: int, guidance: float
) -> tuple[np.ndarray, np.ndarray | None]:
    """((n, S, S) samples of p(x | feature = value), (n,) probe-measured feature or None).

    Sample i has its own noise seeded from (seed, i), the same at every value: moving the
    value morphs each "subject" smoothly.
    """
    dm = diffusion(dataset_name)
    images = dm.sample({feature: value}, n=n, seed=seed, steps=SAMPLER_STEPS, guidance=guidance)  # (n, 1, S, S)
    measured = None
    if feature in dm.card.get("probe_features", []):
        measured = np.asarray(dm.measure_features(images)[feature], dtype=np.float32)
    return images[:, 0].cpu().numpy().astype(np.float32), measured


@st.cache_data(show_spinner=False, max_entries=1024)
def sample_outputs(
    dataset_name: str,
    feature: str,
    value,
    n: int,
    seed: int,
    guidance: float,
    model_id: str,
    device: str,
    output: int,
) -> np.ndarray:
    """(n,) model outputs on the conditional samples above."""
    import torch

    images, _ = conditional_samples(dataset_name, feature, value, n, seed, guidance)  # the grid's cache key
    net, _ = model(model_id, device)
    with torch.inference_mode():
        y = net(torch.from_numpy(images)[:, None].to(device))
    return y.float().reshape(len(y), -1)[:, output].cpu().numpy()


def diffusion_score_row(sel, feature: str, k_values: int, n_per_value: int, progress=None) -> tuple[dict, pd.DataFrame]:
    """(score_table-like row, per-value table) of the diffusion-based S(A), guidance 1."""
    from engine.diffusion import diffusion_score

    net, card = model(sel.model_id, sel.device)
    result, per_value = diffusion_score(
        net, card, diffusion(sel.dataset_name), feature, k_values=k_values, n_per_value=n_per_value,
        output=sel.output, seed=0, progress=progress,
    )  # fmt: skip
    row = dict(
        feature=feature, output=str(sel.output), score=result.score, ci_low=result.ci_low, ci_high=result.ci_high,
        unexplained=1 - result.score, n=result.n, n_groups=result.n_groups, status=result.status,
        message=result.message,
    )  # fmt: skip
    if "constraint_mae_over_sd" in per_value:  # how tightly the samples held the asked values
        row["constraint_mae_over_sd"] = float(np.average(per_value["constraint_mae_over_sd"],
                                                         weights=per_value["weight"]))  # fmt: skip
    return row, per_value


# -- ground truth ------------------------------------------------------------------------


def _truth_function(source: str, model_id: str, device: str) -> tuple[np.ndarray, str] | None:
    """(g(features) per row, definition) for a built-in model whose target is known."""
    if source not in EMBEDDED or not model_id.startswith("zoo:"):
        return None
    from engine.models.train import TARGETS

    _, card = model(model_id, device)
    target = TARGETS.get(card_value(card, "target"))
    ds = dataset(source)
    if target is None or ds.truth is None:
        return None
    if target.reference is not None:  # Bayes-optimal probability -> its logit
        p = np.clip(target.reference(ds.table, ds.truth), 1e-6, 1 - 1e-6)
        return np.log(p / (1 - p)), f"logit of the Bayes-optimal probability: {target.definition}"
    return np.asarray(target.values(ds.table, ds.truth), float), target.definition


@st.cache_data(show_spinner=False, max_entries=16)
def truth_table(source: str, model_id: str, device: str, features: tuple[str, ...]) -> tuple[pd.DataFrame, str] | None:
    """S(A) of the model's known target function g(features) on every row: what a perfect model
    of its target would score (the estimator on exact g values, n = all images), and g's definition."""
    found = _truth_function(source, model_id, device)
    if found is None:
        return None
    from engine.tvd import score_table

    g, definition = found
    ds = dataset(source)
    values = {f: ds.feature_values(f) for f in features}
    cats = tuple(f for f in features if f in ds.categorical_features)
    return score_table(g, values, categorical=cats, output_names=["truth"], n_boot=200, seed=0), definition


def truth_scores(sel, features: tuple[str, ...]) -> pd.DataFrame | None:
    """Ground-truth rows (source "truth") for the selected model where its target is known."""
    found = truth_table(sel.source, sel.model_id, sel.device, features) if sel.model_id else None
    return None if found is None else found[0].assign(source="truth")
