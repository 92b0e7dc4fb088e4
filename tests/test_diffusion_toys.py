"""Shared toys of the diffusion tests (`tests/test_diffusion_*.py` import them; each module makes
its own fixtures of them): a tiny untrained model on a 16 x 16 toy card, the same model with a
training table or a read-out, a linear classifier and its card, and the committed models
(skipped when missing).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from engine.cards import DiffusionCard, ModelCard
from engine.data.slicing import SliceSpec
from engine.diffusion import ConditionalDiffusion, load_diffusion
from engine.diffusion.codec import PCACodec
from engine.diffusion.conditions import FeatureTable
from engine.diffusion.networks import DenoiserConfig, LatentReadout
from engine.diffusion.storage import ASSETS, build, model_tensors

SIZE = 16


def toy_card_json(dataset: str = "toy") -> dict:
    """Two numeric features (standardised already: mean 0, sd 1, range [-2, 2]) and sex (F 1/4, M 3/4)."""
    percentiles = np.linspace(-2.0, 2.0, 101).tolist()
    numeric = [
        {
            "name": name,
            "kind": "numeric",
            "mean": 0.0,
            "sd": 1.0,
            "min": -2.0,
            "max": 2.0,
            "data_sd": 1.0,
            "data_percentiles": percentiles,
        }
        for name in ("size", "brightness")
    ]
    categorical = {"name": "sex", "kind": "categorical", "levels": ["F", "M"], "data_frequencies": [0.25, 0.75]}
    config = DenoiserConfig(
        latent_dim=5, cond_dim=4, n_features=3, numeric_slots=(0, 1), width=16, depth=1, n_fourier=2, emb_dim=16
    )
    return {
        "dataset": dataset,
        "spec": {"plane": "axial", "index": None, "size": SIZE},
        "features": [*numeric, categorical],
        "probe_features": [],
        "codec": {"d": 4},
        "denoiser": config.to_json(),
    }


def toy_card(dataset: str = "toy") -> DiffusionCard:
    return DiffusionCard.from_json(toy_card_json(dataset))


def toy_model() -> ConditionalDiffusion:
    """A random (untrained) tiny model: deterministic weights, a codec fit on random blobs."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    images = torch.rand(40, 1, SIZE, SIZE, generator=g) * 0.2 + 0.4
    model = build(toy_card())
    model.codec.load_state_dict(PCACodec.fit(images, 4).state_dict())
    for p in model.denoiser.out.parameters():  # zero-initialised: give it a non-trivial output
        torch.nn.init.normal_(p, std=0.1, generator=g)
    return model


def linked_table(n: int = 1000) -> pd.DataFrame:
    """brightness = 0.5 size + N(0, 0.1^2); sex M exactly when size + N(0, 0.5^2) > 0."""
    rng = np.random.default_rng(0)
    size = rng.uniform(-2, 2, n)
    return pd.DataFrame(
        {
            "size": size,
            "brightness": 0.5 * size + rng.normal(0, 0.1, n),
            "sex": np.where(size + rng.normal(0, 0.5, n) > 0, "M", "F"),
        }
    )


def with_table(model: ConditionalDiffusion, table: pd.DataFrame) -> ConditionalDiffusion:
    """A copy of `model` with `table` as its training rows (through the float32 storage)."""
    values = FeatureTable.from_frame(model.conditions, table).values
    return build(model.card, model_tensors(model) | {"table.values": values})


def with_readout(model: ConditionalDiffusion) -> ConditionalDiffusion:
    """A copy of the tiny model with a fixed linear read-out of its two numeric features, saved in
    the bare (weight, bias) form of the first read-outs; brightness is read too poorly to guide by."""
    g = torch.Generator().manual_seed(7)
    readout = {
        "readout.weight": torch.randn(2, model.codec.latent_dim, generator=g) * 0.5,
        "readout.bias": torch.zeros(2),
    }
    card = replace(model.card, readout_validation_mae_over_sd={"size": 0.05, "brightness": 0.5})
    return build(card, model_tensors(model) | readout)


def with_mlp_readout(model: ConditionalDiffusion) -> ConditionalDiffusion:
    """A copy of the tiny model with a fixed random MLP read-out of its two numeric features."""
    torch.manual_seed(3)
    readout = LatentReadout(model.codec.latent_dim, 2, (16,)).state_dict()
    card = replace(
        model.card, readout={"hidden": [16]}, readout_validation_mae_over_sd={"size": 0.05, "brightness": 0.05}
    )
    return build(card, model_tensors(model) | {f"readout.{k}": v for k, v in readout.items()})


def classifier() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(SIZE * SIZE, 1))


def classifier_card(dataset: str = "toy", spec: SliceSpec | None = None) -> ModelCard:
    return ModelCard(
        name="toy-classifier",
        kind="cnn",
        spec=spec or SliceSpec("axial", None, SIZE),
        output_names=("y",),
        dataset=dataset,
    )


committed = pytest.mark.committed  # needs the committed generators: missing ones fail (`committed_model`)


def committed_model(dataset: str) -> ConditionalDiffusion:
    if not (ASSETS / f"{dataset}.json").is_file():
        pytest.fail(f"the committed {dataset} diffusion model is missing from assets/diffusion/")
    return load_diffusion(dataset)


def test_toy_card_reads_back_what_it_was_given():
    card = toy_card()
    assert card.to_json() == toy_card_json()
    assert [f.name for f in card.features] == ["size", "brightness", "sex"] and card.spec.size == SIZE
