"""Conditions: the card's features as the denoiser's condition, and free features from the training table.

Code name -> symbol:
    c (n, C)       standardised feature values: (a - mean) / sd in one slot per numeric feature,
                   one-hot slots per categorical feature; slots of features left free are 0
    m (n, F)       per-feature mask: 1 = this feature is conditioned on, 0 = left free
    slot (n, C)    m spread over each feature's slots
    A_S = a_S      the asked features S and their values; the rest, A_-S, are free

`FeatureSchema` encodes a condition {feature: value} (values are checked, numeric ones clamped to
the training range with a `FeatureClampWarning`). `FeatureTable` draws the free features the
"table" way: p(x | A_S = a_S) = E_{A_-S ~ p(A_-S | A_S = a_S)} p(x | A_S = a_S, A_-S), with A_-S
taken from the training rows nearest a_S and the image from the joint condition, so the feature
links are those of the data, not the denoiser's looser learned ones (see assets/README.md).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from engine.cards import DiffusionFeature
from engine.errors import EveInputError

# `FeatureTable.complete` draws free features from the max(32, 1% of rows) training rows nearest
# the asked values: enough distinct subjects for N samples, few enough to stay near the value
NEIGHBOURS_MIN, NEIGHBOURS_FRACTION = 32, 0.01


class FeatureClampWarning(UserWarning):
    """A requested feature value lay outside the training range and was clamped to it."""


@dataclass(frozen=True)
class FeatureSchema:
    """The features a diffusion model conditions on (its card's, in slot order) and their encoding."""

    dataset: str  # names the model in messages
    features: tuple[DiffusionFeature, ...]

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def numeric_names(self) -> list[str]:
        return [f.name for f in self.features if not f.is_categorical]

    @property
    def cond_dim(self) -> int:
        """C, the condition slots."""
        return sum(f.width for f in self.features)

    def feature(self, name: str) -> DiffusionFeature:
        for f in self.features:
            if f.name == name:
                return f
        raise EveInputError(
            f"Unknown feature {name!r} for the {self.dataset} diffusion model: choose one of {', '.join(self.names)}."
        )

    def encode(self, condition: dict, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """{name: value or (n,) values} -> c (n, C), m (n, F), slot mask (n, C).

        Numeric values outside the training range are clamped with a `FeatureClampWarning`;
        unknown names, unknown levels and non-finite values raise `EveInputError`.
        """
        c, m, slot = torch.zeros(n, self.cond_dim), torch.zeros(n, len(self.features)), torch.zeros(n, self.cond_dim)
        for name in condition:
            self.feature(name)  # raises for unknown names
        offset = 0
        for j, info in enumerate(self.features):
            if info.name in condition:
                values = self.values(info, condition[info.name], n)
                m[:, j] = 1.0
                slot[:, offset : offset + info.width] = 1.0
                if info.is_categorical:
                    for i, v in enumerate(values):
                        c[i, offset + info.levels.index(v)] = 1.0
                else:
                    c[:, offset] = torch.from_numpy((values - info.mean) / info.sd)
            offset += info.width
        return c, m, slot

    def encode_rows(self, table: pd.DataFrame) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """Training rows (a column per feature) -> c (N, C) as `encode` gives them with every feature
        asked, and each feature's slots (offset, width)."""
        columns, spans, offset = [], [], 0
        for info in self.features:
            if not info.is_categorical:
                columns.append(((table[info.name].to_numpy(float) - info.mean) / info.sd)[:, None])
            else:
                codes = table[info.name].map({lv: i for i, lv in enumerate(info.levels)}).to_numpy()
                columns.append(np.eye(info.width)[codes])
            spans.append((offset, info.width))
            offset += info.width
        return torch.from_numpy(np.concatenate(columns, 1).astype(np.float32)), spans

    def values(self, info: DiffusionFeature, value, n: int, warn: bool = True) -> list | np.ndarray:
        """n values of one feature from a value or a sequence: levels checked, numeric values
        finite and clamped to the training range (with a `FeatureClampWarning` if `warn`)."""
        if info.is_categorical:
            values = [value] * n if isinstance(value, str) or np.ndim(value) == 0 else list(value)
            for v in values:
                if v not in info.levels:
                    raise EveInputError(f"{v!r} is not a level of {info.name!r}: use one of {', '.join(info.levels)}.")
        else:
            values = (
                np.broadcast_to(np.asarray(value, dtype=float), (n,))
                if np.ndim(value) == 0
                else (np.asarray(value, dtype=float))
            )
        if len(values) != n:
            raise EveInputError(
                f"{len(values)} values given for {info.name!r} but n={n} samples: give one value or n values."
            )
        return values if info.is_categorical else _clamp(info, values, warn)


def _clamp(info: DiffusionFeature, values: np.ndarray, warn: bool = True) -> np.ndarray:
    if not np.isfinite(values).all():
        raise EveInputError(f"The value of {info.name!r} is NaN or infinite: give a finite number.")
    low, high = info.min, info.max
    if warn and ((values < low).any() or (values > high).any()):
        warnings.warn(
            f"{info.name} = {values.min():.4g}..{values.max():.4g} lies outside the training range "
            f"[{low:.4g}, {high:.4g}]; clamped to it (the model does not extrapolate).",
            FeatureClampWarning,
            stacklevel=4,
        )
    return np.clip(values, low, high)


@dataclass(frozen=True, eq=False)
class FeatureTable:
    """The denoiser's training rows, stored with the model (`table.values`: (R, F) float32 in the
    schema's order, a categorical feature as its level's index), and the free features drawn from them."""

    schema: FeatureSchema
    values: torch.Tensor  # (R, F) float32
    # one column per feature, levels as strings; numeric values clipped to the training range
    # (float32 storage can round the extreme rows just outside it)
    rows: pd.DataFrame = field(init=False, repr=False)

    def __post_init__(self):
        columns = {}
        for j, info in enumerate(self.schema.features):
            column = self.values[:, j].double().numpy()
            if info.is_categorical:
                columns[info.name] = np.asarray(info.levels)[column.astype(int)]
            else:
                columns[info.name] = np.clip(column, info.min, info.max)
        object.__setattr__(self, "rows", pd.DataFrame(columns))

    @classmethod
    def from_frame(cls, schema: FeatureSchema, table: pd.DataFrame) -> FeatureTable:
        """From training rows (a column per feature), through the float32 storage."""
        columns = []
        for info in schema.features:
            column = table[info.name]
            if info.is_categorical:
                column = column.map({level: i for i, level in enumerate(info.levels)})
            columns.append(column.to_numpy(float))
        return cls(schema, torch.from_numpy(np.stack(columns, 1).astype(np.float32)))

    def to_tensors(self) -> dict[str, torch.Tensor]:
        return {"values": self.values}

    def complete(
        self, condition: dict, n: int, seed: int = 0, first_index: int = 0, shared_noise: bool = False
    ) -> dict:
        """{every feature: value or (n,) values}: the asked values, and for each sample the free
        features of a training row among the m nearest the asked values (standardised distance
        over the asked numeric features; asked levels must match; m = max(NEIGHBOURS_MIN,
        NEIGHBOURS_FRACTION x rows), plus rows tied with the m-th).

        Sample j = first_index + i (0 for all with `shared_noise`) takes the j-th of those rows
        in a random order seeded by `seed` (a new order every m samples): up to m samples get
        distinct rows, so their mean varies like that of independent subjects (what the score's
        small-N correction assumes; draws with replacement add the neighbourhood's own sampling
        noise), and a batch split does not change the draws."""
        table = self.rows
        # {asked feature: n values}, checked; numeric ones clamped silently (`FeatureSchema.encode`
        # warns when the images are sampled)
        asked = {
            name: list(self.schema.values(self.schema.feature(name), value, n, warn=False))
            for name, value in condition.items()
        }
        free = [name for name in self.schema.names if name not in condition]
        if not free:
            return dict(condition)
        m = max(NEIGHBOURS_MIN, math.ceil(NEIGHBOURS_FRACTION * len(table)))
        keys = list(zip(*asked.values(), strict=True)) if asked else [()] * n
        neighbours = {key: self._nearest_rows(dict(zip(asked, key, strict=True)), m) for key in set(keys)}
        orders: dict[tuple[int, int], np.ndarray] = {}
        rows = np.empty(n, dtype=int)
        for i, key in enumerate(keys):
            candidates = neighbours[key]
            cycle, position = divmod(first_index + (0 if shared_noise else i), len(candidates))
            if (cycle, len(candidates)) not in orders:
                orders[cycle, len(candidates)] = np.random.default_rng([seed, cycle]).permutation(len(candidates))
            rows[i] = candidates[orders[cycle, len(candidates)][position]]
        drawn = {name: table[name].to_numpy()[rows] for name in free}
        return {**condition, **{name: (list(v) if v.dtype == object else v) for name, v in drawn.items()}}

    def _nearest_rows(self, asked: dict, m: int) -> np.ndarray:
        """Indices of the m training rows nearest `asked` ({feature: one value}) and any tied with
        the m-th, nearest first."""
        table = self.rows
        distance = np.zeros(len(table))
        for name, value in asked.items():
            info = self.schema.feature(name)
            if info.is_categorical:
                distance[table[name].to_numpy() != value] = np.inf
            else:
                distance += ((table[name].to_numpy(float) - value) / info.sd) ** 2
        order = np.lexsort((np.arange(len(table)), distance))
        if not np.isfinite(distance[order[0]]):
            raise EveInputError(
                f"No training row has {asked}: the model cannot draw the free features there; "
                "ask for values the training rows hold, or use free_features='model'."
            )
        # rows tied with the m-th nearest are in too: asked only a level, every row of that level is
        return order[distance[order] <= distance[order[min(m, len(order)) - 1]]]


def feature_table_card(rows: int) -> dict:
    """The card's "feature_table" entry."""
    return {
        "rows": rows,
        "stored_as": "table.values in the weights file (the denoiser's training rows)",
        "free_features": f"drawn from the max({NEIGHBOURS_MIN}, {NEIGHBOURS_FRACTION:.0%} of rows) rows nearest "
        "the asked values (`conditions.FeatureTable.complete`)",
    }
