"""Saving and loading diffusion models: `<dataset>.safetensors` (weights) beside `<dataset>.json` (the card).

The weights file holds every tensor under the prefix of its part: `codec.`, `denoiser.`,
`probe.`, `readout.` and `table.` (the training feature table). `build` turns a card and those
tensors into a `ConditionalDiffusion`; `load_diffusion` reads the committed ones.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from engine.cards import DiffusionCard
from engine.diffusion.autoencoder import AutoencoderCodec
from engine.diffusion.codec import PCACodec
from engine.diffusion.conditions import FeatureSchema, FeatureTable
from engine.diffusion.gaussian import LatentGaussian
from engine.diffusion.networks import Denoiser, DenoiserConfig, LatentReadout
from engine.diffusion.pipeline import ConditionalDiffusion
from engine.diffusion.probes import build_probe
from engine.errors import EveInputError
from engine.paths import DIFFUSION_ASSETS

ASSETS = DIFFUSION_ASSETS
PARTS = ("codec", "denoiser", "probe", "readout", "table")


def build_codec(info: dict, size: int) -> nn.Module:
    """A card's latent space (its "codec" entry), untrained: a PCA (`kind` "pca", the default) or a
    conv autoencoder."""
    if info.get("kind", "pca") == "pca":
        return PCACodec(size, info["d"], info.get("whiten", 1.0))
    if info["kind"] == "autoencoder":
        return AutoencoderCodec(
            size,
            info["latent_dim"],
            tuple(info["channels"]),
            info["stripe_period"],
            info.get("centred_stripes", False),
            info.get("noise_estimate", "residual"),
        )
    raise EveInputError(f"Unknown codec kind {info['kind']!r} in a diffusion card: retrain the model.")


def build_readout(info: dict | None, latent_dim: int, tensors: dict) -> LatentReadout:
    """A card's read-out (its "readout" entry: `hidden` widths; None or none: linear) with its weights."""
    if "weight" in tensors:  # a linear read-out saved before `LatentReadout` (bare weight, bias)
        tensors = {"net.0.weight": tensors["weight"], "net.0.bias": tensors["bias"]}
    hidden = (info or {}).get("hidden", [])
    n_features = tensors[f"net.{2 * len(hidden)}.bias"].shape[0]
    readout = LatentReadout(latent_dim, n_features, hidden)
    readout.load_state_dict(tensors)
    return readout.eval().requires_grad_(False)


def build(card: DiffusionCard, tensors: dict[str, torch.Tensor] | None = None) -> ConditionalDiffusion:
    """A model from its card and its weights file's tensors (None: untrained, with no probe,
    read-out or table). A part whose tensors are absent is left out."""
    parts = {part: {} for part in PARTS}
    for key, value in (tensors or {}).items():
        part, _, name = key.partition(".")
        parts.setdefault(part, {})[name] = value
    codec = build_codec(card.codec, card.spec.size)
    if card.denoiser.get("kind") == LatentGaussian.kind:
        denoiser = LatentGaussian(card.denoiser["cond_dim"], card.denoiser["latent_dim"])
        if "rows" in parts["denoiser"]:  # the training rows it keeps, whatever their number
            denoiser.rows = torch.empty_like(parts["denoiser"]["rows"])
    else:
        denoiser = Denoiser(DenoiserConfig.from_json(card.denoiser))
    if tensors is not None:
        codec.load_state_dict(parts["codec"])
        denoiser.load_state_dict(parts["denoiser"])
    probe = readout = None
    if parts["probe"]:
        probe = build_probe(card.probe, card.spec.size, len(card.probe_features), parts["probe"])
    if parts["readout"]:
        readout = build_readout(card.readout, card.denoiser["latent_dim"], parts["readout"])
    return ConditionalDiffusion(codec, denoiser, card, readout=readout, probe=probe, table=_table(card, parts))


def _table(card: DiffusionCard, parts: dict) -> FeatureTable | None:
    schema = FeatureSchema(card.dataset, card.features)
    return FeatureTable(schema, parts["table"]["values"]) if "values" in parts["table"] else None


def model_tensors(model: ConditionalDiffusion) -> dict[str, torch.Tensor]:
    """Every tensor of `model` under its part's prefix, as `build` takes them."""
    tensors = {f"codec.{k}": v for k, v in model.codec.state_dict().items()}
    tensors |= {f"denoiser.{k}": v for k, v in model.denoiser.state_dict().items()}
    tensors |= {f"probe.{k}": v for k, v in (model.probe.state_dict() if model.probe else {}).items()}
    tensors |= {f"readout.{k}": v for k, v in (model.readout.state_dict() if model.readout else {}).items()}
    tensors |= {f"table.{k}": v for k, v in (model.table.to_tensors() if model.table else {}).items()}
    return tensors


def save(model: ConditionalDiffusion, directory: Path = ASSETS) -> Path:
    """Weights to `<dataset>.safetensors`, the card to `<dataset>.json`; returns the card's path."""
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model_tensors(model).items()}, directory / f"{model.dataset}.safetensors")
    (directory / f"{model.dataset}.json").write_text(json.dumps(model.card.to_json(), indent=2))
    return directory / f"{model.dataset}.json"


_LOADED: dict[str, ConditionalDiffusion] = {}


def load_diffusion(name_or_dataset: str | Path) -> ConditionalDiffusion:
    """The committed model for a dataset ("synthbrain", "shapes", "synthbrain-diffusion")
    or a card path (`<dataset>.json` next to its `.safetensors`). Cached per path."""
    text = str(name_or_dataset)
    path = Path(text) if text.endswith(".json") else ASSETS / f"{text.removesuffix('-diffusion')}.json"
    if not path.is_file():
        known = sorted(p.stem for p in ASSETS.glob("*.json") if not p.stem.endswith(("-validation", "-benchmark")))
        raise EveInputError(
            f"No diffusion model {text!r} ({path} is missing): use one of {', '.join(known) or 'none yet'}, "
            "or train one with `python -m engine train-diffusion DATASET`."
        )
    key = str(path.resolve())
    if key not in _LOADED:
        card = DiffusionCard.from_json(json.loads(path.read_text()), path)
        _LOADED[key] = build(card, load_file(path.with_suffix(".safetensors")))
    return _LOADED[key]
