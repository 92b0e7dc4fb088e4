"""Typed cards: what a model sees and computes, and how Eve names a model.

* `ModelCard` — a classifier's card (`assets/models/<name>.json`, or built for a user's
  TorchScript file): its input (`spec`, a `SliceSpec`), its outputs, where it came from.
* `ModelRef` — a hashable name for a model: a built-in card name, or a TorchScript file
  with the input contract it is fed. It is the cache key of every loader and the one thing
  a page, the CLI or a test passes around to say "this model".

The card's JSON keys are the dataclass's fields; keys Eve does not know are kept in
`extra` and written back, so reading and writing a card never loses a field.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from engine.data.bundle import MODEL_FILE as BUNDLE_MODEL
from engine.data.bundle import is_bundle, read_bundle
from engine.data.slicing import INPUT_KINDS, ORIENTATIONS, PLANES, SliceSpec
from engine.errors import EveInputError, reason

REQUIRED_KEYS = ("name", "kind", "spec", "output_names", "architecture")
OUTPUT_KINDS = ("logit", "probability", "regression")
EXPLAINED = ("output", "probability")  # ModelRef.explain
TORCHSCRIPT = "torchscript"  # ModelCard.kind of a user's model


def spec_from_json(spec: dict) -> SliceSpec:
    """A card's {"input", "plane", "index", "size", "spacing", "intensity", "register", "orientation"} as a
    `SliceSpec`. Left out: a slice input; intensity Eve's `p99` and orientation Eve's `ras`, what every card
    written before the keys existed was trained on; no registration. A volume input needs no plane or index."""
    volume = spec.get("input") == "volume"
    return SliceSpec(
        spec.get("plane", "axial") if volume else spec["plane"],
        None if volume else spec["index"],
        int(spec["size"]),
        spec.get("intensity", "p99"),
        bool(spec.get("register")),
        spec.get("input", "slice"),
        spec.get("spacing"),
        spec.get("orientation", "ras"),
        spec.get("bundle"),
    )


def spec_to_json(spec: SliceSpec) -> dict:
    """The inverse of `spec_from_json`; defaults are left implicit, as in the committed cards."""
    if spec.bundle is not None:
        return {"bundle": spec.bundle, "size": int(spec.size), "input": spec.input}
    if spec.is_volume:
        data = {"input": "volume", "size": int(spec.size)}
        if spec.spacing is not None:
            data["spacing"] = float(spec.spacing)
    else:
        data = {"plane": spec.plane, "index": spec.index, "size": int(spec.size)}
    if spec.intensity != "p99":
        data["intensity"] = spec.intensity
    if spec.orientation != "ras":
        data["orientation"] = spec.orientation
    return {**data, "register": True} if spec.register else data


def _set_fields(card, keep_empty: tuple[str, ...]) -> dict[str, Any]:
    """A card's fields in order, without `extra`, those left at None, and the empty ((), {}, "")
    ones not named in `keep_empty`."""
    data: dict[str, Any] = {}
    for f in fields(card):
        value = getattr(card, f.name)
        if f.name == "extra" or value is None or (f.name not in keep_empty and value in ((), {}, "")):
            continue
        data[f.name] = value
    return data


def _event(name: str) -> str:
    """'P(label=1)' -> 'that label = 1'; 'P(AD)' or 'AD' -> 'of AD'."""
    inner = name[2:-1] if name.startswith("P(") and name.endswith(")") else name
    if re.search(r"[<>=]", inner):
        return "that " + re.sub(r"\s*(<=|>=|!=|=|<|>)\s*", r" \1 ", inner)
    return f"of {inner}"


@dataclass(frozen=True)
class ModelCard:
    """A classifier's card. Build with `ModelCard.from_json` (a zoo file) or directly."""

    name: str
    kind: str  # "cnn" | "glass-box" | "torchscript"
    spec: SliceSpec  # the model's input
    output_names: tuple[str, ...]  # one name per output column
    architecture: dict = field(default_factory=dict, compare=False)  # {class, kwargs}; TorchScript for user models
    description: str = ""
    dataset: str | None = None  # the dataset it was trained on (None: a user's model)
    target: str | None = None  # the target column it was trained to predict
    target_definition: str | None = None
    task: str | None = None  # "binary" | "regression" | "readout"
    depends_on: tuple[str, ...] = ()  # features the target depends on by construction
    normalisation: str | None = None  # what the model is fed, in words
    outputs: str | None = None  # what the outputs are (logit, probability, ...), in words
    output_unit: str | None = None  # a regression output's unit ("mL", "pixels", "SD units")
    function: str | None = None  # glass-box: the exact function computed
    metrics: dict = field(default_factory=dict, compare=False)  # held-out metrics on the test split
    training: dict = field(default_factory=dict, compare=False)  # config, seed, wall time, machine
    xtrain: dict = field(
        default_factory=dict, compare=False
    )  # XtrAIn maps stored with the weights (engine.models.xtrain)
    calibration: dict = field(default_factory=dict, compare=False)  # glass-box: fitted constants
    command: str | None = None  # the command that rebuilt it
    weights: str | None = None  # safetensors file beside the card (None: glass-box or TorchScript)
    weights_sha256: str | None = None
    sha256: str | None = None  # a TorchScript file's checksum
    n_parameters: int | None = None
    torch_version: str | None = None
    extra: dict = field(default_factory=dict, compare=False)  # keys this version does not know

    @classmethod
    def from_json(cls, data: dict, source: str | Path = "the card") -> ModelCard:
        """A card from its JSON object; `source` names the file in messages."""
        missing = [k for k in REQUIRED_KEYS if k not in data]
        if missing:
            name = Path(source).stem if isinstance(source, Path) else data.get("name", "NAME")
            raise EveInputError(
                f"Model card {source} lacks {', '.join(missing)}: rebuild it with "
                f"`python -m engine train-classifier {name}`."
            )
        known = {f.name for f in fields(cls)} - {"extra"}
        values = {k: v for k, v in data.items() if k in known}
        values["spec"] = spec_from_json(data["spec"])
        values["output_names"] = tuple(str(n) for n in data["output_names"])
        values["depends_on"] = tuple(data.get("depends_on", ()))
        return cls(**values, extra={k: v for k, v in data.items() if k not in known})

    def to_json(self) -> dict:
        """The JSON object (field order as written by the zoo; unset optional fields left out)."""
        data = _set_fields(self, keep_empty=REQUIRED_KEYS)
        data["spec"] = spec_to_json(self.spec)
        data["output_names"] = list(self.output_names)
        if self.depends_on:
            data["depends_on"] = list(self.depends_on)
        return {**data, **self.extra}

    def output_index(self, output: int | str) -> int:
        """Column of an output given by name or index (an index may be a digit string)."""
        names = list(self.output_names)
        if isinstance(output, str) and output in names:
            return names.index(output)
        if isinstance(output, (int, np.integer)) or (isinstance(output, str) and output.lstrip("-").isdigit()):
            index = int(output)
            if 0 <= index < len(names):
                return index
            raise EveInputError(
                f"Output index {index} is out of range: the model has {len(names)} output(s) "
                f"({', '.join(names) or 'none'}); use an index from 0 to {len(names) - 1}."
            )
        raise EveInputError(
            f"Unknown output {output!r}: choose one of the model's outputs, {', '.join(names) or 'none'}."
        )

    @property
    def is_torchscript(self) -> bool:
        return self.kind == TORCHSCRIPT

    def describe_output(self, index: int) -> str:
        """Output `index` in plain words, for a reader who does not know what a logit is: "the model's
        probability that label = 1", "the model's logit (log-odds) that label = 1", "the model's
        predicted z(size)+z(texture) (SD units)"."""
        name = self.output_names[index]
        if (self.outputs or "").startswith("probability") or self.output_kind == "probability":
            return f"the model's probability {_event(name)}"
        if self.output_kind == "logit":
            return f"the model's logit (log-odds) {_event(name.removeprefix('logit '))}"
        unit = f" ({self.output_unit})" if self.output_unit else ""
        predicted = self.output_kind == "regression" and self.task != "readout"
        return f"the model's {'predicted' if predicted else 'output'} {name}{unit}"

    @property
    def output_range(self) -> tuple[float, float] | None:
        """The range the explained outputs cannot leave: a probability's (0, 1); None where unbounded or unknown."""
        probability = (self.outputs or "").startswith("probability") or self.output_kind == "probability"
        return (0.0, 1.0) if probability else None

    @property
    def output_kind(self) -> str | None:
        """ "logit", "probability" or "regression" where the card says (a zoo model by its task, a
        user's by its card's outputs kind); None when nobody said."""
        if self.outputs in OUTPUT_KINDS:
            return self.outputs
        return {"binary": "logit", "regression": "regression", "readout": "regression"}.get(self.task)


@dataclass(frozen=True)
class ModelRef:
    """A model by name: a built-in card (`name`), or a TorchScript file (`path`) with its input.

    Hashable, so it is the cache key for loaded models and everything computed from them.
    """

    name: str | None = None  # a built-in card name (engine.models.list_cards)
    path: str | None = None  # a user's TorchScript file
    spec: SliceSpec | None = None  # the input a TorchScript model is fed (built-in: its card's)
    label: str | None = None  # what to call a TorchScript model in messages and reports
    output_names: tuple[str, ...] | None = None  # a TorchScript model's outputs (None: output_0, ...)
    output_kind: str | None = None  # a TorchScript model's outputs: one of OUTPUT_KINDS (None: not stated)
    output_unit: str | None = None  # a TorchScript regression's unit (None: not stated)
    uploaded: bool = False  # an upload's temporary file: messages say "the uploaded file", not its path
    explain: str = "output"  # what is explained: the model's "output" as it is, or the "probability" of a logit

    def __post_init__(self):
        if self.explain not in EXPLAINED:
            raise EveInputError(f"Unknown explained output {self.explain!r}: use one of {', '.join(EXPLAINED)}.")
        if (self.name is None) == (self.path is None):
            raise ValueError("a ModelRef names a built-in model or a TorchScript file, not both or neither")
        if self.path is not None and self.spec is None:
            raise ValueError("a TorchScript ModelRef needs the input spec it is fed")

    @classmethod
    def builtin(cls, name: str) -> ModelRef:
        return cls(name=name)

    @classmethod
    def torchscript(
        cls,
        path: str | Path,
        spec: SliceSpec,
        label: str | None = None,
        *,
        output_names=None,
        output_kind: str | None = None,
        output_unit: str | None = None,
        uploaded: bool = False,
    ) -> ModelRef:
        names = None if output_names is None else tuple(str(n) for n in output_names)
        return cls(
            path=str(path),
            spec=spec,
            label=label,
            output_names=names,
            output_kind=output_kind,
            output_unit=output_unit,
            uploaded=uploaded,
        )

    @property
    def is_torchscript(self) -> bool:
        return self.path is not None

    def __str__(self) -> str:
        if self.name is not None:
            return self.name
        name = self.label or Path(self.path).name
        if self.spec.bundle is not None:
            return f"{name} (MONAI bundle)"
        if self.spec.is_volume:
            return f"{name} (volume, {self.spec.size}^3 voxels, {self.spec.orientation})"
        index = "middle" if self.spec.index is None else self.spec.index
        return f"{name} ({self.spec.plane}, slice {index}, {self.spec.size} px, {self.spec.orientation})"


# --- a user's model card --------------------------------------------------------------------------

USER_CARD_KEYS = ("name", "input", "intensity", "outputs")
USER_CARD_EXAMPLE = (
    '{"name": "my model", "input": {"kind": "slice", "plane": "coronal", "slice": "hippocampus", "size": 64, '
    '"orientation": "stored"}, "intensity": "raw", "outputs": {"names": ["logit AD"], "kind": "logit"}}, or for a '
    '3D model {"input": {"kind": "volume", "size": 96, "spacing": 2.0}, ...} (a regression\'s outputs may add '
    '"unit": "mL")'
)
# What a user's model is fed where neither its card nor the user (a CLI flag, a sidebar field) says: what
# the file holds. The array as stored (most training pipelines feed `nib.load(f).get_fdata()`), the stored
# values (raw), the middle slice (a named MNI slice assumes MNI space), 64 px; a volume: a 64^3 cube fitted
# to the field of view. Eve's own models say `ras` and `p99` in their cards.
USER_DEFAULT = SliceSpec(plane="axial", index=None, size=64, intensity="raw", input="slice", orientation="stored")
TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".ts", ".jit", ".zip", ".torchscript")


def is_torchscript_source(source: str | Path) -> bool:
    """Whether a `--model` names a TorchScript file rather than a built-in model: a file, a TorchScript
    suffix or a path (a built-in name is a bare word). One rule for every command and the cohort trainer."""
    text, path = str(source), Path(source)
    return path.suffix.lower() in TORCHSCRIPT_SUFFIXES or path.is_file() or "/" in text or "\\" in text


@dataclass(frozen=True)
class UserCard:
    """What a user's JSON card beside their TorchScript file says; every field optional (None: not
    stated, so a CLI flag, a sidebar field or `USER_DEFAULT` decides)."""

    name: str | None = None
    input: str | None = None  # "slice" | "volume"
    plane: str | None = None
    slice: int | str | None = None  # as written: a voxel index, a named MNI slice or "middle"
    size: int | None = None
    spacing: float | None = None  # volume input: isotropic voxel size in mm
    orientation: str | None = None  # "stored" | "ras"
    intensity: str | None = None
    output_names: tuple[str, ...] | None = None
    output_kind: str | None = None
    output_unit: str | None = None

    @classmethod
    def from_json(cls, data, source: str = "the model card") -> UserCard:
        """A card from its parsed JSON; every problem raises `EveInputError` naming the key and the fix."""
        fix = f"write it like {USER_CARD_EXAMPLE}"
        if not isinstance(data, dict):
            raise EveInputError(f"{source} is not a JSON object: {fix}.")
        unknown = sorted(set(data) - set(USER_CARD_KEYS))
        if unknown:
            raise EveInputError(f"{source} has unknown keys {', '.join(unknown)}: use {', '.join(USER_CARD_KEYS)}.")
        given = data.get("input", {})
        outputs = data.get("outputs", {})
        if not isinstance(given, dict) or not isinstance(outputs, dict):
            raise EveInputError(f"{source}: 'input' and 'outputs' must be objects: {fix}.")
        for key, value in (("name", data.get("name")), ("intensity", data.get("intensity"))):
            if value is not None and not isinstance(value, str):
                raise EveInputError(f"{source}: {key} {value!r:.60} is not a text: {fix}.")
        for key in ("kind", "plane", "orientation"):
            if given.get(key) is not None and not isinstance(given[key], str):
                raise EveInputError(f"{source}: input {key} {given[key]!r:.60} is not a text: {fix}.")
        typed = given.get("slice")
        if typed is not None and (isinstance(typed, bool) or not isinstance(typed, (int, str))):
            raise EveInputError(
                f"{source}: input slice {typed!r:.60} is neither a voxel index nor a name: give a whole number, "
                "'middle', or a named MNI slice (e.g. \"hippocampus\")."
            )
        if given.get("plane") is not None and given["plane"] not in PLANES:
            raise EveInputError(
                f"{source}: input plane {given['plane']!r:.60} is not one of {', '.join(PLANES)}: {fix}."
            )
        kind = given.get("kind")
        if kind is not None and kind not in INPUT_KINDS:
            raise EveInputError(f"{source}: input kind {kind!r} is not one of {', '.join(INPUT_KINDS)}: {fix}.")
        orientation = given.get("orientation")
        if orientation is not None and orientation not in ORIENTATIONS:
            raise EveInputError(
                f"{source}: input orientation {orientation!r} is not one of {', '.join(ORIENTATIONS)}: use stored "
                "for the arrays as your files store them (what nib.load(f).get_fdata() gives), ras for Eve's RAS+ "
                "convention."
            )
        spacing = given.get("spacing")
        if spacing is not None and (isinstance(spacing, bool) or not isinstance(spacing, (int, float))):
            raise EveInputError(
                f"{source}: input spacing {spacing!r} is not a number: give it in millimetres, e.g. 2.0."
            )
        if outputs.get("kind") is not None and outputs["kind"] not in OUTPUT_KINDS:
            raise EveInputError(
                f"{source}: outputs kind {outputs['kind']!r} is unknown: use one of {', '.join(OUTPUT_KINDS)}."
            )
        names = outputs.get("names")
        if names is not None and (not isinstance(names, list) or not names):
            raise EveInputError(
                f"{source}: outputs names {names!r} are not a non-empty list: give one name per output column."
            )
        size = given.get("size")
        if size is not None and (isinstance(size, bool) or not isinstance(size, int)):
            raise EveInputError(f"{source}: input size {size!r} is not a whole number: give it in pixels, e.g. 64.")
        return cls(
            name=data.get("name"),
            input=kind,
            plane=given.get("plane"),
            slice=given.get("slice"),
            size=size,
            spacing=None if spacing is None else float(spacing),
            orientation=orientation,
            intensity=data.get("intensity"),
            output_names=None if names is None else tuple(str(n) for n in names),
            output_kind=outputs.get("kind"),
            output_unit=None if outputs.get("unit") is None else str(outputs["unit"]),
        )

    @classmethod
    def beside(cls, model_path: str | Path) -> UserCard | None:
        """The card next to a TorchScript file: `<model>.json`, else `model.json` in its folder; None if neither."""
        model_path = Path(model_path)
        for path in (model_path.with_suffix(".json"), model_path.parent / "model.json"):
            if path.is_file():
                return cls.read(path)
        return None

    @classmethod
    def read(cls, path: str | Path) -> UserCard:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError, RecursionError) as exc:  # RecursionError: nested deeper than Python's stack
            raise EveInputError(
                f"Model card {path} is not readable JSON ({reason(exc)}): fix it or remove it."
            ) from exc
        return cls.from_json(data, source=f"Model card {path}")

    def contract(
        self,
        *,
        input=None,
        plane=None,
        slice=None,
        size=None,
        spacing=None,
        orientation=None,
        intensity=None,
        register: bool = False,
    ) -> SliceSpec:
        """The one card -> contract rule (the CLI, the sidebar, the cohort trainer and a Ray worker all
        come through it): what is given (CLI flags, sidebar fields; None: not given) over the card over
        `USER_DEFAULT`. A slice index or name is parsed as typed (`SliceSpec.parse_index`)."""
        kind = input or self.input or USER_DEFAULT.input
        volume = kind == "volume"
        typed = slice if slice is not None else self.slice
        return SliceSpec(
            plane or self.plane or USER_DEFAULT.plane,
            None if volume else SliceSpec.parse_index(typed) if typed is not None else USER_DEFAULT.index,
            int(size or self.size or USER_DEFAULT.size),
            intensity or self.intensity or USER_DEFAULT.intensity,
            bool(register),
            kind,
            (spacing if spacing is not None else self.spacing) if volume else None,
            orientation or self.orientation or USER_DEFAULT.orientation,
        )

    def ref(self, model_path: str | Path, *, label=None, uploaded: bool = False, **given) -> ModelRef:
        """The `ModelRef` of the model this card describes, fed `contract(**given)`."""
        return ModelRef.torchscript(
            model_path,
            self.contract(**given),
            label=label or self.name,
            output_names=self.output_names,
            output_kind=self.output_kind,
            output_unit=self.output_unit,
            uploaded=uploaded,
        )


def bundle_ref(root: str | Path, *, label=None, uploaded: bool = False) -> ModelRef:
    """A MONAI bundle's model (`models/model.ts`), fed the bundle's own preprocessing (`engine.data.bundle`);
    its outputs named and typed as its metadata says."""
    info = read_bundle(root)
    return ModelRef.torchscript(
        info.root / BUNDLE_MODEL,
        SliceSpec(bundle=str(info.root)),
        label=label or info.name,
        output_names=info.output_names,
        output_kind=info.output_kind,
        uploaded=uploaded,
    )


def model_ref(source: str | Path, *, explain: str = "output", **given) -> ModelRef:
    """The model a `--model` names: a MONAI bundle folder (its own preprocessing; the input flags do not
    apply), a TorchScript file fed the card beside it (`UserCard.beside`) under the given flags
    (`UserCard.contract`), or a built-in model, which takes its own card's input."""
    if is_bundle(source):
        stated = [f"--{k}" for k, v in given.items() if v not in (None, False)]
        if stated:
            raise EveInputError(
                f"{source} is a MONAI bundle: its own preprocessing is its input contract, so {', '.join(stated)} "
                "do not apply; drop them (or change the bundle's configs/inference.json)."
            )
        return replace(bundle_ref(source), explain=explain)
    if not is_torchscript_source(source):
        return replace(ModelRef.builtin(str(source)), explain=explain)
    card = UserCard.beside(source) or UserCard()
    return replace(card.ref(source, **given), explain=explain)


# --- diffusion models ---------------------------------------------------------------------------

FEATURE_KINDS = ("numeric", "categorical")


@dataclass(frozen=True)
class DiffusionFeature:
    """One feature of a diffusion card: its standardisation and training range (numeric) or levels
    (categorical), and its marginal in the dataset, which the score samples."""

    name: str
    kind: str  # "numeric" | "categorical"
    mean: float | None = None  # numeric: standardisation, over the training rows
    sd: float | None = None
    min: float | None = None  # numeric: the training range; asked values are clamped to it
    max: float | None = None
    data_sd: float | None = None  # numeric: sd in the dataset (the unit of a constraint's MAE / SD)
    data_percentiles: tuple[float, ...] | None = None  # numeric: the dataset's 0th..100th percentiles
    levels: tuple[str, ...] | None = None  # categorical: the levels trained on, in slot order
    data_frequencies: tuple[float, ...] | None = None  # categorical: each level's frequency in the dataset
    extra: dict = field(default_factory=dict, compare=False)  # keys this version does not know

    @classmethod
    def from_json(cls, data: dict, source: str | Path = "the card") -> DiffusionFeature:
        kind = data.get("kind")
        needed = ("mean", "sd", "min", "max") if kind == "numeric" else ("levels",)
        missing = [k for k in ("name", *needed) if k not in data]
        if kind not in FEATURE_KINDS or missing:
            raise EveInputError(
                f"Feature {data.get('name', '?')!r} of {source} has kind {kind!r} and lacks "
                f"{', '.join(missing) or 'nothing'}: retrain the diffusion model."
            )
        known = {f.name for f in fields(cls)} - {"extra"}
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in known}
        return cls(**values, extra={k: v for k, v in data.items() if k not in known})

    def to_json(self) -> dict:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        data = {k: list(v) if isinstance(v, tuple) else v for k, v in data.items() if v is not None}
        return {**data, **self.extra}

    @property
    def is_categorical(self) -> bool:
        return self.kind == "categorical"

    @property
    def width(self) -> int:
        """Condition slots: one per level (one-hot), or one."""
        return len(self.levels) if self.is_categorical else 1

    @property
    def range(self) -> tuple:
        """(min, max) of the training values, or the levels."""
        return tuple(self.levels) if self.is_categorical else (self.min, self.max)


DIFFUSION_REQUIRED_KEYS = ("dataset", "spec", "features", "codec", "denoiser")


@dataclass(frozen=True, kw_only=True)
class DiffusionCard:
    """A conditional diffusion model's card (`assets/diffusion/<dataset>.json`, written by
    `python -m engine train-diffusion`). Fields in the order the JSON file has them."""

    name: str | None = None  # "<dataset>-diffusion"
    dataset: str  # the dataset it generates
    spec: SliceSpec  # the slice it generates (a classifier must see the same)
    design: str | None = None  # the model, in words
    features: tuple[DiffusionFeature, ...]  # in the denoiser's condition order
    probe: dict | None = field(default=None, compare=False)  # {"kind": "pca-mlp" | "cnn", ...}; None: pca-mlp
    probe_features: tuple[str, ...] = ()  # the numeric features the probe reads, in its output order
    codec: dict = field(compare=False)  # the latent space: {"kind": "pca" | "autoencoder", ...}
    denoiser: dict = field(compare=False)  # `networks.DenoiserConfig` as JSON
    schedule: dict | None = field(default=None, compare=False)  # the training noise schedule
    training: dict | None = field(default=None, compare=False)  # config, sources, loss curve, wall time
    probe_report: dict | None = field(default=None, compare=False)  # held-out R², MAE, MAE / SD per probed feature
    readout: dict | None = field(default=None, compare=False)  # {"hidden": widths}; None: a linear read-out
    readout_validation_mae_over_sd: dict | None = field(default=None, compare=False)  # per numeric feature
    feature_table: dict | None = field(default=None, compare=False)  # the stored training rows; None: none
    command: str | None = None  # the command that rebuilt it
    extra: dict = field(default_factory=dict, compare=False)  # keys this version does not know

    @classmethod
    def from_json(cls, data: dict, source: str | Path = "the card") -> DiffusionCard:
        """A card from its JSON object; `source` names the file in messages."""
        missing = [k for k in DIFFUSION_REQUIRED_KEYS if k not in data]
        if missing:
            raise EveInputError(
                f"Diffusion card {source} lacks {', '.join(missing)}: retrain the model with "
                f"`python -m engine train-diffusion {data.get('dataset', 'DATASET')}`."
            )
        known = {f.name for f in fields(cls)} - {"extra"}
        values = {k: v for k, v in data.items() if k in known}
        values["spec"] = spec_from_json(data["spec"])
        values["features"] = tuple(DiffusionFeature.from_json(f, source) for f in data["features"])
        values["probe_features"] = tuple(data.get("probe_features", ()))
        return cls(**values, extra={k: v for k, v in data.items() if k not in known})

    def to_json(self) -> dict:
        """The JSON object (fields left at None are left out; `extra` written back)."""
        data = _set_fields(self, keep_empty=tuple(f.name for f in fields(self)))
        data["spec"] = spec_to_json(self.spec)
        data["features"] = [f.to_json() for f in self.features]
        data["probe_features"] = list(self.probe_features)
        return {**data, **self.extra}
