"""`engine/diffusion/storage.py` and the diffusion card (`engine.cards.DiffusionCard`): saving, loading, building."""

from __future__ import annotations

import json
from dataclasses import replace

import pandas as pd
import pytest
import torch
from test_diffusion_toys import linked_table, toy_card, toy_card_json, with_mlp_readout, with_table

from engine.cards import DiffusionCard, DiffusionFeature
from engine.diffusion import SamplerConfig, load_diffusion
from engine.diffusion.storage import ASSETS, build, model_tensors, save
from engine.errors import EveInputError


def test_save_and_load_round_trip(tiny, tmp_path):
    path = save(tiny, tmp_path)
    loaded = load_diffusion(path)
    assert loaded.card == tiny.card and loaded.card.to_json() == json.loads(path.read_text())
    torch.testing.assert_close(
        loaded.sample({"size": 0.3}, 2, 1, SamplerConfig(steps=3)),
        tiny.sample({"size": 0.3}, 2, 1, SamplerConfig(steps=3)),
    )


def test_table_is_saved_with_the_model(tiny, tmp_path):
    tabled = with_table(tiny, linked_table())
    loaded = load_diffusion(save(tabled, tmp_path))
    pd.testing.assert_frame_equal(loaded.feature_table, tabled.feature_table)
    table_way = SamplerConfig(steps=3, free_features="table")
    a, b = loaded.sample({"size": 0.5}, 3, 4, table_way), tabled.sample({"size": 0.5}, 3, 4, table_way)
    torch.testing.assert_close(a, b)


def test_mlp_readout_saves_and_reloads(tiny, tmp_path):
    model = with_mlp_readout(tiny)
    loaded = load_diffusion(save(model, tmp_path))
    assert loaded.readout.hidden == (16,)
    z = torch.randn(5, model.codec.latent_dim)
    torch.testing.assert_close(loaded.readout(z), model.readout(z))
    asked, guided = {"size": 0.5, "brightness": -0.2}, SamplerConfig(steps=5, readout_guidance=100.0)
    torch.testing.assert_close(loaded.sample(asked, 3, 4, guided), model.sample(asked, 3, 4, guided))


def test_build_takes_every_part_from_its_prefix(tiny):
    model = with_mlp_readout(with_table(tiny, linked_table()))
    tensors = model_tensors(model)
    assert {key.partition(".")[0] for key in tensors} == {"codec", "denoiser", "readout", "table"}
    rebuilt = build(model.card, tensors)
    assert rebuilt.readout is not None and rebuilt.table is not None and rebuilt.probe is None
    for key, value in model_tensors(rebuilt).items():
        assert torch.equal(value, tensors[key]), key


def test_load_unknown_diffusion_model_names_the_fix():
    with pytest.raises(EveInputError, match="train-diffusion"):
        load_diffusion("no-such-dataset")


def test_unknown_codec_kind_is_a_clear_error():
    with pytest.raises(EveInputError, match="codec kind 'wavelet'"):
        build(replace(toy_card(), codec={"kind": "wavelet"}))


# --- the card ----------------------------------------------------------------------------------


@pytest.mark.parametrize("dataset", ["synthbrain", "shapes"])
def test_committed_cards_read_and_write_back_unchanged(dataset):
    path = ASSETS / f"{dataset}.json"
    if not path.is_file():
        pytest.fail(f"the committed {dataset} diffusion model is missing from assets/diffusion/")
    data = json.loads(path.read_text())
    card = DiffusionCard.from_json(data, path)
    assert card.to_json() == data and card.extra == {}
    assert card.dataset == dataset and card.probe_features == tuple(data["probe_features"])
    assert all(isinstance(f, DiffusionFeature) for f in card.features)


def test_unknown_keys_are_kept_on_a_round_trip():
    data = toy_card_json() | {"added_later": {"x": 1}}
    data["features"][2] = data["features"][2] | {"ordered": False}
    card = DiffusionCard.from_json(data)
    assert card.extra == {"added_later": {"x": 1}} and card.features[2].extra == {"ordered": False}
    assert card.to_json() == data


def test_typed_fields():
    card = toy_card()
    size, sex = card.features[0], card.features[2]
    assert (size.range, size.width, size.is_categorical) == ((-2.0, 2.0), 1, False)
    assert (sex.range, sex.width, sex.levels) == (("F", "M"), 2, ("F", "M"))
    assert card.spec.plane == "axial" and isinstance(hash(card), int)


@pytest.mark.parametrize("drop, match", [("features", "lacks features"), ("denoiser", "lacks denoiser")])
def test_a_card_without_a_required_key_names_the_fix(drop, match):
    data = {k: v for k, v in toy_card_json().items() if k != drop}
    with pytest.raises(EveInputError, match=f"{match}.*train-diffusion toy"):
        DiffusionCard.from_json(data)


def test_a_feature_without_its_standardisation_is_a_clear_error():
    data = toy_card_json()
    del data["features"][0]["sd"]
    with pytest.raises(EveInputError, match="'size'.*lacks sd"):
        DiffusionCard.from_json(data)
