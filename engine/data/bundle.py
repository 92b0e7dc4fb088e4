"""A MONAI bundle: a model that brings its own input contract, run by MONAI itself.

Medical-imaging models are shared as MONAI bundles: `models/model.ts` (TorchScript),
`configs/metadata.json` (`network_data_format`: the input's channels and spatial shape, the outputs)
and `configs/inference.json`, whose `preprocessing` is a list of MONAI transform records
(`LoadImaged`, `EnsureChannelFirstd`, `Orientationd`, `Spacingd`, `ScaleIntensityd`,
`ResizeWithPadOrCropd`, ...). Eve feeds each volume through exactly those transforms, parsed and run by
MONAI (`monai.bundle.ConfigParser`), so the model sees what it was trained on; the report states them.

A config can name any Python callable (`_target_`) and evaluate expressions (`$...`). A bundle from the
command line is the user's own code on their own machine: Eve trusts it (`trust`) and says so. Anywhere
else (an upload to the app, a Ray worker that was not told) only `ALLOWED_TRANSFORMS` run, with no
expressions: anything else is refused with its name.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engine.errors import EveInputError, reason

MODEL_FILE = Path("models") / "model.ts"
METADATA_FILE = Path("configs") / "metadata.json"
INFERENCE_FILE = Path("configs") / "inference.json"
PREPROCESSING = "preprocessing"  # the inference config's key of the transforms Eve runs
# The MONAI transforms an untrusted bundle may use: loading, channels, orientation, spacing, intensity,
# padding/cropping and types. None of them runs code a config names.
ALLOWED_TRANSFORMS = frozenset(
    {
        "Compose",
        "LoadImaged",
        "EnsureChannelFirstd",
        "AddChanneld",
        "Orientationd",
        "Spacingd",
        "ScaleIntensityd",
        "ScaleIntensityRanged",
        "ScaleIntensityRangePercentilesd",
        "NormalizeIntensityd",
        "ResizeWithPadOrCropd",
        "SpatialPadd",
        "CenterSpatialCropd",
        "CropForegroundd",
        "Resized",
        "EnsureTyped",
        "ToTensord",
        "CastToTyped",
    }
)
MAX_CHANNELS = 64  # input channels a bundle may state
MAX_SIDE = 512  # an input's side, in voxels (a 2D slice's largest; Eve's volume cubes go to 256)
MAX_INPUT_VOXELS = 256**3  # one input's voxels, channels included: what Eve's largest volume cube holds
_TRUSTED: set[str] = set()  # bundle folders whose configs run unchecked in this process (`trust`)


def is_bundle(source: str | Path) -> bool:
    """Whether `source` is a MONAI bundle folder (its metadata and TorchScript model inside)."""
    root = Path(source)
    return root.is_dir() and (root / METADATA_FILE).is_file() and (root / MODEL_FILE).is_file()


def trust(root: str | Path) -> None:
    """Let this bundle's configs name any callable in this process (the command line's own bundles)."""
    _TRUSTED.add(str(Path(root).resolve()))


def is_trusted(root: str | Path) -> bool:
    return str(Path(root).resolve()) in _TRUSTED


def _read_json(root: Path, name: Path) -> dict:
    path = root / name
    if not path.is_file():
        raise EveInputError(
            f"The MONAI bundle {root} has no {name}: add it (a bundle needs {METADATA_FILE} and {INFERENCE_FILE})."
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as exc:  # RecursionError: nested deeper than Python's stack
        raise EveInputError(f"{path} is not readable JSON ({reason(exc)}): fix the bundle's config.") from exc
    if not isinstance(data, dict):
        raise EveInputError(f"{path} is not a JSON object: fix the bundle's config.")
    return data


@dataclass(frozen=True)
class BundleInfo:
    """What a bundle's configs say: its input (channels + spatial shape), outputs and preprocessing."""

    root: Path
    name: str
    shape: tuple[int, ...]  # one input without the batch axis: (C, X, Y[, Z])
    output_names: tuple[str, ...] | None  # from the outputs' channel_def; None: not stated
    output_kind: str | None  # "probability" | "logit" | None
    transforms: tuple[str, ...]  # the preprocessing records, in words ("Orientationd(axcodes=RAS)")
    digest: str  # of the configs: keys the input cache

    @property
    def spatial(self) -> tuple[int, ...]:
        return self.shape[1:]

    def describe(self) -> str:
        return f"the MONAI bundle {self.name}'s own preprocessing, run by MONAI: {' -> '.join(self.transforms)}"


def _in_words(record: dict) -> str:
    name = str(record.get("_target_", "?")).rsplit(".", 1)[-1]
    args = ", ".join(f"{k}={v}" for k, v in record.items() if not k.startswith("_") and k != "keys")
    return f"{name}({args})" if args else name


def _preprocessing_records(config: dict, root: Path) -> list[dict]:
    pre = config.get(PREPROCESSING)
    if isinstance(pre, dict) and isinstance(pre.get("transforms"), list):
        return [r for r in pre["transforms"] if isinstance(r, dict)]
    if isinstance(pre, list):
        return [r for r in pre if isinstance(r, dict)]
    raise EveInputError(
        f"{root / INFERENCE_FILE} has no '{PREPROCESSING}' transforms (a Compose of MONAI transform records): "
        "add them, so Eve feeds your model what it was trained on."
    )


@functools.lru_cache(maxsize=32)
def _read(root: str, stamp: tuple) -> BundleInfo:
    path = Path(root)
    metadata, inference = _read_json(path, METADATA_FILE), _read_json(path, INFERENCE_FILE)
    data_format = metadata.get("network_data_format", {})
    data_format = data_format if isinstance(data_format, dict) else {}
    inputs, outputs = data_format.get("inputs", {}), data_format.get("outputs", {})
    image = next(iter(inputs.values()), None) if isinstance(inputs, dict) else None
    if not isinstance(image, dict) or "spatial_shape" not in image:
        raise EveInputError(
            f"{path / METADATA_FILE} does not state its input's network_data_format (inputs: image: num_channels, "
            "spatial_shape): add it, as MONAI's bundle specification asks."
        )
    try:
        spatial = tuple(int(n) for n in image["spatial_shape"])
        shape = (int(image.get("num_channels", 1)), *spatial)
    except (TypeError, ValueError, OverflowError) as exc:
        raise EveInputError(
            f"{path / METADATA_FILE}: spatial_shape {image['spatial_shape']!r} is not whole numbers: give one size "
            "per axis."
        ) from exc
    if len(spatial) not in (2, 3):
        raise EveInputError(f"{path / METADATA_FILE}: spatial_shape {spatial} is not 2D or 3D: give two or three sizes.")
    if (
        not 1 <= shape[0] <= MAX_CHANNELS
        or not all(2 <= n <= MAX_SIDE for n in spatial)
        or np.prod(shape) > MAX_INPUT_VOXELS
    ):
        raise EveInputError(
            f"{path / METADATA_FILE}: the input (num_channels, *spatial_shape) = {shape} is out of range: give 1 to "
            f"{MAX_CHANNELS} channels and sides of 2 to {MAX_SIDE} voxels, at most {MAX_INPUT_VOXELS:,} voxels in all."
        )
    pred = next(iter(outputs.values()), {}) if isinstance(outputs, dict) else {}
    pred = pred if isinstance(pred, dict) else {}
    channels = pred.get("channel_def")
    if isinstance(channels, dict) and not all(str(k).strip().lstrip("-").isdigit() for k in channels):
        raise EveInputError(
            f"{path / METADATA_FILE}: the outputs' channel_def keys {list(channels)[:5]} are not channel numbers: "
            'use each output\'s channel number as its key, e.g. {"0": "healthy", "1": "disease"}.'
        )
    names = tuple(str(channels[k]) for k in sorted(channels, key=int)) if isinstance(channels, dict) else None
    kind = pred.get("type") if isinstance(pred.get("type"), str) else None
    kind = {"probabilities": "probability", "probability": "probability", "logits": "logit"}.get(kind)
    transforms = tuple(_in_words(r) for r in _preprocessing_records(inference, path))
    digest = hashlib.sha256((path / METADATA_FILE).read_bytes() + (path / INFERENCE_FILE).read_bytes()).hexdigest()
    return BundleInfo(path, str(metadata.get("name", path.name)), shape, names, kind, transforms, digest[:16])


def read_bundle(root: str | Path) -> BundleInfo:
    """The bundle's `BundleInfo` (re-read when its configs change)."""
    path = Path(root).resolve()
    stamp = tuple((path / f).stat().st_mtime_ns if (path / f).is_file() else 0 for f in (METADATA_FILE, INFERENCE_FILE))
    return _read(str(path), stamp)


def _references(value) -> list[str]:
    """'@id' references inside a config value (MONAI's syntax), at any depth."""
    if isinstance(value, str):
        return [value[1:].split("#")[0]] if value.startswith("@") else []
    if isinstance(value, dict):
        return [r for v in value.values() for r in _references(v)]
    if isinstance(value, list):
        return [r for v in value for r in _references(v)]
    return []


def check_allowed(root: str | Path) -> None:
    """Refuse, naming it, any callable outside `ALLOWED_TRANSFORMS`, any expression (`$...`) or macro
    (`%...`) in the preprocessing or in what it references."""
    path = Path(root)
    config = _read_json(path, INFERENCE_FILE)
    todo, seen = [(PREPROCESSING, config.get(PREPROCESSING))], set()
    while todo:
        key, value = todo.pop()
        if key in seen:
            continue
        seen.add(key)
        for item in _walk(value):
            if isinstance(item, str) and item[:1] in ("$", "%"):
                raise EveInputError(
                    f"The bundle's {key} holds an expression ({item[:40]!r}): Eve runs only MONAI's transform records "
                    "from an uploaded bundle; write it without expressions, or score it from the command line "
                    "(python -m engine score --model BUNDLE_DIR), which runs your own bundle as it is."
                )
            if isinstance(item, dict) and "_target_" in item:
                target = str(item["_target_"]).removeprefix("monai.transforms.")
                if target not in ALLOWED_TRANSFORMS:
                    raise EveInputError(
                        f"The bundle's {key} names {item['_target_']!r}, which Eve does not run from an uploaded "
                        f"bundle (it may run any code): use MONAI's {', '.join(sorted(ALLOWED_TRANSFORMS))}; or "
                        "score it from the command line, which runs your own bundle as it is."
                    )
        todo += [(ref, config.get(ref)) for ref in _references(value)]


def _walk(value):
    yield value
    if isinstance(value, dict):
        for v in value.values():
            yield from _walk(v)
    elif isinstance(value, list):
        for v in value:
            yield from _walk(v)


def preprocessing(root: str | Path):
    """The bundle's preprocessing as a MONAI callable (dict -> dict), parsed by MONAI's ConfigParser;
    checked against `ALLOWED_TRANSFORMS` unless the bundle is trusted (`trust`)."""
    from monai.bundle import ConfigParser  # MONAI (~3 s to import) only for bundles

    path = Path(root)
    if not is_trusted(path):
        check_allowed(path)
    parser = ConfigParser()
    parser.read_config(str(path / INFERENCE_FILE))
    parser["bundle_root"] = str(path)
    try:
        return parser.get_parsed_content(PREPROCESSING, instantiate=True)
    except Exception as exc:  # MONAI raises many kinds for a bad config
        raise EveInputError(
            f"The bundle's preprocessing could not be built by MONAI ({reason(exc, typed=True)}): fix "
            f"{path / INFERENCE_FILE}."
        ) from exc


def image_key(root: str | Path) -> str:
    """The key the bundle's transforms read the image under (its `image_key`, else "image")."""
    config = _read_json(Path(root), INFERENCE_FILE)
    key = config.get("image_key", "image")
    return key if isinstance(key, str) and not key.startswith(("@", "$")) else "image"


def bundle_inputs(root: str | Path, paths: list[Path]) -> torch.Tensor:
    """Each file through the bundle's own preprocessing: a (N, C, *spatial) float32 tensor, checked
    against the shape its metadata states."""
    info, transform, key = read_bundle(root), preprocessing(root), image_key(root)
    out = []
    for path in paths:
        try:
            item = transform({key: str(path)})
        except Exception as exc:  # a transform failing on this file
            raise EveInputError(
                f"{path.name}: the bundle's preprocessing failed ({reason(exc, typed=True)}): check the file, or the "
                "bundle's transforms."
            ) from exc
        image = item[key] if isinstance(item, dict) else item
        try:
            array = torch.as_tensor(np.asarray(image), dtype=torch.float32)
        except (TypeError, ValueError, RuntimeError) as exc:  # a path left unloaded, a dict, text
            raise EveInputError(
                f"{path.name}: the bundle's preprocessing made a {type(image).__name__} ({reason(exc)}), not an "
                "image: add LoadImaged first in its transforms, so that the image is read into an array."
            ) from exc
        if tuple(array.shape) != info.shape:
            raise EveInputError(
                f"{path.name}: the bundle's preprocessing made {tuple(array.shape)}, and its metadata says the model "
                f"takes {info.shape}: add a ResizeWithPadOrCropd to the preprocessing, or correct the metadata."
            )
        out.append(array)
    return torch.stack(out)
