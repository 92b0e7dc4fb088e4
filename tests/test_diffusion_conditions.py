"""`engine/diffusion/conditions.py`: the feature schema's encoding and free features from the training table."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_diffusion_toys import linked_table, with_table

from engine.diffusion import FeatureClampWarning
from engine.diffusion.conditions import NEIGHBOURS_MIN, FeatureTable
from engine.errors import EveInputError

# --- the schema ---------------------------------------------------------------------------------


def test_encoding_puts_each_feature_in_its_slots(tiny):
    c, m, slot = tiny.conditions.encode({"brightness": [0.5, -1.0], "sex": "M"}, 2)
    assert c.tolist() == [[0.0, 0.5, 0.0, 1.0], [0.0, -1.0, 0.0, 1.0]]
    assert m.tolist() == [[0.0, 1.0, 1.0]] * 2 and slot.tolist() == [[0.0, 1.0, 1.0, 1.0]] * 2


def test_encoding_rows_matches_encoding_each_condition(tiny):
    table = linked_table(6)
    c, spans = tiny.conditions.encode_rows(table)
    assert spans == [(0, 1), (1, 1), (2, 2)]
    asked, _, _ = tiny.conditions.encode({name: table[name].tolist() for name in table}, len(table))
    torch.testing.assert_close(c, asked)


def test_out_of_range_value_is_clamped_with_a_warning(tiny):
    with pytest.warns(FeatureClampWarning, match="outside the training range"):
        high = tiny.sample({"size": 9.0}, 2, seed=0, steps=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FeatureClampWarning)
        at_max = tiny.sample({"size": 2.0}, 2, seed=0, steps=3)
    assert torch.equal(high, at_max)


@pytest.mark.parametrize(
    "condition, match",
    [
        ({"volume": 1.0}, "Unknown feature 'volume'"),
        ({"sex": "X"}, "not a level of 'sex'"),
        ({"size": float("nan")}, "NaN or infinite"),
        ({"size": [0.0, 1.0]}, "2 values given"),
    ],
)
def test_bad_conditions_raise_clear_errors(tiny, condition, match):
    with pytest.raises(EveInputError, match=match):
        tiny.sample(condition, 3, seed=0, steps=2)
    with pytest.raises(EveInputError, match=match):
        tiny.conditions.encode(condition, 3)


def test_feature_range_and_unknown_feature(tiny):
    assert tiny.feature_range("size") == (-2.0, 2.0)
    assert tiny.feature_range("sex") == ("F", "M")
    with pytest.raises(EveInputError, match="choose one of size, brightness, sex"):
        tiny.feature_range("age")


def test_feature_info_is_the_cards_json_entry(tiny):
    info = tiny.feature_info("sex")
    assert info == {"name": "sex", "kind": "categorical", "levels": ["F", "M"], "data_frequencies": [0.25, 0.75]}
    assert tiny.feature("size").data_percentiles[50] == pytest.approx(0.0)


# --- free features from the training table --------------------------------------------------


def test_feature_table_round_trips_through_its_tensors(tabled):
    table = linked_table()
    got = tabled.feature_table
    assert list(got.columns) == ["size", "brightness", "sex"] and (got["sex"] == table["sex"]).all()
    np.testing.assert_allclose(got[["size", "brightness"]], table[["size", "brightness"]], atol=1e-6)
    assert tabled.table.values.dtype == torch.float32 and tabled.table.values.shape == (1000, 3)


def test_stored_rows_are_clipped_to_the_training_range(tiny):
    """float32 storage can round an extreme row just outside the range: it reads back inside."""
    table = FeatureTable.from_frame(
        tiny.conditions, pd.DataFrame({"size": [2.0 + 1e-9, -3.0], "brightness": [0.0, 0], "sex": ["F", "M"]})
    )
    assert table.rows["size"].tolist() == [2.0, -2.0]


def test_free_features_follow_the_table_link_near_the_asked_value(tabled):
    """m = 32 of 1,000 uniform rows: sizes within ~0.07 of 1.0, so brightness ~ 0.5 +- 0.1."""
    drawn = tabled.table.complete({"size": 1.0}, 400, seed=0)
    assert drawn["size"] == 1.0
    brightness = np.asarray(drawn["brightness"])
    assert brightness.mean() == pytest.approx(0.5, abs=0.04) and 0.07 < brightness.std() < 0.14
    assert np.mean(np.asarray(drawn["sex"]) == "M") > 0.9  # P(M | size = 1) = 0.977


def test_asked_level_is_matched_and_free_numbers_follow_it(tabled):
    drawn = tabled.table.complete({"sex": "F"}, 300, seed=1)
    table = linked_table()
    assert drawn["sex"] == "F"
    assert np.mean(drawn["size"]) == pytest.approx(table.loc[table["sex"] == "F", "size"].mean(), abs=0.1)


def test_a_sweep_draws_near_each_samples_own_value(tabled):
    values = np.linspace(-1.5, 1.5, 7)
    drawn = tabled.table.complete({"size": values}, 7, seed=2)
    np.testing.assert_allclose(drawn["brightness"], 0.5 * values, atol=0.35)


@settings(max_examples=25, deadline=None)
@given(value=st.floats(-3.0, 3.0), n=st.integers(1, 12), seed=st.integers(0, 2**31 - 1))
def test_drawn_rows_are_among_the_nearest_and_do_not_depend_on_the_batch(tabled, value, n, seed):
    table = tabled.feature_table
    drawn = tabled.table.complete({"size": value}, n, seed=seed)
    distance = np.abs(table["size"].to_numpy() - np.clip(value, -2, 2))
    rows = [int(np.flatnonzero(table["brightness"].to_numpy() == b)[0]) for b in drawn["brightness"]]
    assert distance[rows].max() <= np.sort(distance)[NEIGHBOURS_MIN - 1] + 1e-12
    tail = tabled.table.complete({"size": value}, n - n // 2, seed=seed, first_index=n // 2)
    np.testing.assert_array_equal(drawn["brightness"][n // 2 :], tail["brightness"])


def test_shared_noise_draws_one_row_for_every_sample(tabled):
    drawn = tabled.table.complete({"size": 0.0}, 5, seed=3, shared_noise=True)
    assert len(set(drawn["brightness"])) == 1 and len(set(drawn["sex"])) == 1


def test_every_feature_asked_leaves_nothing_to_draw(tabled):
    asked = {"size": 0.5, "brightness": 0.1, "sex": "F"}
    assert tabled.table.complete(asked, 3, seed=0) == asked


def test_table_errors_are_clear(tiny, tabled):
    with pytest.raises(EveInputError, match="not a level of 'sex'"):
        tabled.table.complete({"sex": "X"}, 2)
    only_f = with_table(tiny, linked_table().assign(sex="F"))
    with pytest.raises(EveInputError, match="No training row has"):
        only_f.table.complete({"sex": "M"}, 2)
