"""Map-quality metrics on glass-box models whose right answer is known: curves, ROAD's imputation,
completeness, sparseness, complexity, localisation, robustness, the random-logit test, the table."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from torch import nn

from engine.errors import EveInputError
from engine.pixelmaps.quality import (
    METRICS,
    ROAD_FRACTIONS,
    completeness_gap,
    complexity,
    curve_auc,
    deletion_curve,
    insertion_curve,
    local_lipschitz,
    noisy_linear_imputation,
    quality_table,
    random_logit,
    relevance_mass,
    relevance_rank,
    road_curve,
    sparseness,
)

SIZE = 12


class Weighted(nn.Module):
    """y_k = Σ w_k · x, no bias: w_k · x is each output's exact attribution, summing to y_k − y_k(0)."""

    def __init__(self, weights: torch.Tensor):
        super().__init__()
        self.register_buffer("w", weights)  # (K, 1, ...) one weight map per output

    def forward(self, x):
        return (x[:, None] * self.w[None]).flatten(2).sum(2)


def square(size: int = SIZE, lo: int = 3, hi: int = 8) -> torch.Tensor:
    inside = torch.zeros(1, size, size, dtype=torch.bool)
    inside[:, lo:hi, lo:hi] = True
    return inside


def square_model() -> Weighted:
    """Positive weights on a 5×5 square, 0 elsewhere."""
    w = torch.rand(1, SIZE, SIZE, generator=torch.Generator().manual_seed(3)) + 0.5
    return Weighted((w * square())[None]).eval()


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(3, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0)) * 0.9 + 0.1


def exact(model: Weighted, images: torch.Tensor, k: int = 0) -> torch.Tensor:
    return model.w[k][None] * images


# ---------------------------------------------------------------- deletion and insertion


def test_the_true_map_deletes_faster_and_inserts_faster_than_a_random_or_reversed_map(images):
    model = square_model()
    true = exact(model, images)
    others = {
        "random": torch.randn(images.shape, generator=torch.Generator().manual_seed(5)),
        "reversed": -true,
    }
    fractions, deleted = deletion_curve(model, images, true, steps=12)
    _, inserted = insertion_curve(model, images, true, steps=12)
    assert fractions.shape == (13,) and deleted.shape == inserted.shape == (3, 13)
    assert fractions[0] == 0 and fractions[-1] == 1
    for name, other in others.items():
        _, deleted_other = deletion_curve(model, images, other, steps=12)
        _, inserted_other = insertion_curve(model, images, other, steps=12)
        assert (curve_auc(fractions, deleted) < curve_auc(fractions, deleted_other)).all(), name
        assert (curve_auc(fractions, inserted) > curve_auc(fractions, inserted_other)).all(), name


def test_the_curves_start_and_end_at_the_model_outputs(images):
    model = square_model()
    f_x = model(images)[:, 0].double().numpy()
    maps = torch.randn(images.shape, generator=torch.Generator().manual_seed(1))
    _, deleted = deletion_curve(model, images, maps, steps=5, baseline=0.25, batch_size=4)
    _, inserted = insertion_curve(model, images, maps, steps=5, baseline=0.25, batch_size=4)
    f_blank = model(torch.full_like(images, 0.25))[:, 0].double().numpy()
    np.testing.assert_allclose(deleted[:, 0], f_x, rtol=1e-6)
    np.testing.assert_allclose(inserted[:, -1], f_x, rtol=1e-6)
    np.testing.assert_allclose(deleted[:, -1], f_blank, rtol=1e-6)
    np.testing.assert_allclose(inserted[:, 0], f_blank, rtol=1e-6)


def test_ties_go_in_pixel_order():
    """A map of zeros deletes pixel 0 first: a model reading pixel 0 alone drops at the first chunk."""
    w = torch.zeros(1, 1, 4, 4)
    w[0, 0, 0, 0] = 1.0
    model = Weighted(w).eval()
    images = torch.ones(1, 1, 4, 4)
    _, outputs = deletion_curve(model, images, torch.zeros_like(images), steps=16)
    np.testing.assert_array_equal(outputs[0], [1.0] + [0.0] * 16)


def test_curves_on_volumes_and_torchscript():
    w = torch.rand(1, 1, 4, 4, 4, generator=torch.Generator().manual_seed(2))
    model = torch.jit.script(Weighted(w).eval())
    images = torch.rand(2, 1, 4, 4, 4, generator=torch.Generator().manual_seed(3))
    fractions, outputs = deletion_curve(model, images, w[0] * images, steps=8)
    assert outputs.shape == (2, 9) and np.allclose(outputs[:, -1], 0, atol=1e-6)
    assert (np.diff(outputs, axis=1) <= 1e-6).all()  # deleting positive evidence only ever lowers y
    assert curve_auc(fractions, outputs).shape == (2,)


# ---------------------------------------------------------------- ROAD


def test_imputing_a_constant_image_gives_the_constant():
    images = torch.full((1, 1, 8, 8), 0.7)
    removed = torch.zeros(1, 8, 8, dtype=torch.bool)
    removed[0, 3, 4] = removed[0, 0, 0] = removed[0, 5, 7] = True  # inside, a corner, an edge
    filled = noisy_linear_imputation(images, removed, noise=0.0)
    torch.testing.assert_close(filled, images)


@pytest.mark.parametrize("axis", [0, 1])
def test_imputing_a_ramp_gives_the_ramp_inside(axis):
    """The stencil is symmetric, so a linear function is its own weighted neighbour mean: interior
    pixels, alone or in a block, come back exactly."""
    ramp = torch.arange(10, dtype=torch.float32) / 10
    images = (ramp[:, None] if axis == 0 else ramp[None, :]).expand(10, 10)[None, None].contiguous()
    for block in [(slice(4, 5), slice(5, 6)), (slice(2, 7), slice(3, 8))]:
        removed = torch.zeros(1, 10, 10, dtype=torch.bool)
        removed[(0, *block)] = True
        filled = noisy_linear_imputation(images, removed, noise=0.0)
        torch.testing.assert_close(filled, images, atol=1e-6, rtol=0)


def test_imputing_a_volume_ramp_with_face_neighbours():
    z, y, x = torch.meshgrid(*(torch.arange(6.0),) * 3, indexing="ij")
    images = (0.1 * z + 0.05 * y - 0.02 * x)[None, None]
    removed = torch.zeros(1, 6, 6, 6, dtype=torch.bool)
    removed[0, 1:5, 2:4, 1:5] = True
    torch.testing.assert_close(noisy_linear_imputation(images, removed, noise=0.0), images, atol=1e-6, rtol=0)


@pytest.mark.parametrize("shape", [(7, 9), (4, 5, 6)])
def test_every_imputed_pixel_is_the_mean_of_the_neighbours_that_exist(shape):
    """The joint solution, read pixel by pixel: borders and corners included, weights renormalised."""
    g = torch.Generator().manual_seed(11)
    images = torch.rand(1, 1, *shape, generator=g, dtype=torch.float64).float()
    removed = torch.rand(1, 1, *shape, generator=g) < 0.6
    filled = noisy_linear_imputation(images, removed, noise=0.0)[0, 0].double().numpy()
    if len(shape) == 2:
        stencil = {(i, j): 1 / 6 if 0 in (i, j) else 1 / 12 for i in (-1, 0, 1) for j in (-1, 0, 1) if (i, j) != (0, 0)}
    else:
        stencil = {tuple(int(k == axis) * s for k in range(3)): 1 / 6 for axis in range(3) for s in (-1, 1)}
    for pixel in zip(*np.nonzero(removed[0, 0].numpy()), strict=True):
        total = weight = 0.0
        for offset, w in stencil.items():
            near = tuple(p + o for p, o in zip(pixel, offset, strict=True))
            if all(0 <= c < n for c, n in zip(near, shape, strict=True)):
                total, weight = total + w * filled[near], weight + w
        assert filled[pixel] == pytest.approx(total / weight, abs=1e-6)


def test_imputation_noise_is_seeded_and_leaves_the_global_rng(images):
    removed = torch.rand(images.shape, generator=torch.Generator().manual_seed(4)) < 0.3
    torch_state, numpy_state = torch.random.get_rng_state(), np.random.get_state()[1].copy()
    a = noisy_linear_imputation(images, removed, noise=0.05, seed=7)
    b = noisy_linear_imputation(images, removed, noise=0.05, seed=7)
    c = noisy_linear_imputation(images, removed, noise=0.05, seed=8)
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, c)
    torch.testing.assert_close(a[~removed], images[~removed])  # known pixels stay
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    assert (np.random.get_state()[1] == numpy_state).all()


def test_road_morf_falls_faster_than_lerf():
    """Bright square on a dark background, the model reading the square: removing the square first
    (MoRF) fills it in from the dark surround; removing the background first (LeRF) costs nothing."""
    g = torch.Generator().manual_seed(6)
    images = torch.rand(2, 1, SIZE, SIZE, generator=g) * 0.1
    images = torch.where(square(), 0.9 + images, images)
    model = square_model()
    true = exact(model, images)
    fractions, morf = road_curve(model, images, true, order="morf")
    _, lerf = road_curve(model, images, true, order="lerf")
    assert tuple(fractions) == ROAD_FRACTIONS and morf.shape == lerf.shape == (2, 9)
    assert (curve_auc(fractions, morf) < 0.5 * curve_auc(fractions, lerf)).all()
    _, again = road_curve(model, images, true, order="morf")
    np.testing.assert_array_equal(morf, again)  # seeded


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"order": "up"}, "ROAD order 'up' is unknown: use 'morf'"),
        ({"fractions": (0.5, 0.2)}, "not increasing numbers in"),
        ({"fractions": (0.2, 1.0)}, "not increasing numbers in"),
        ({"noise": -1}, "noise = -1: use"),
    ],
)
def test_road_rejects_bad_parameters(images, kwargs, match):
    model = square_model()
    with pytest.raises(EveInputError, match=match):
        road_curve(model, images, exact(model, images), **kwargs)


# ---------------------------------------------------------------- completeness


def test_the_exact_map_is_complete_and_a_doubled_map_is_off_by_one(images):
    model = square_model()
    true = exact(model, images)
    assert (completeness_gap(model, images, true) < 1e-6).all()
    np.testing.assert_allclose(completeness_gap(model, images, 2 * true), 1.0, rtol=1e-6)


def test_completeness_is_undefined_when_the_output_does_not_change(images):
    model = square_model()
    outside = torch.where(square(), 0.0, images)  # the square black: y(x) = y(0) = 0
    assert np.isnan(completeness_gap(model, outside, torch.ones_like(images))).all()


# ---------------------------------------------------------------- sparseness and complexity


def test_sparseness_of_one_hot_and_flat_maps():
    n = 16
    one_hot = torch.zeros(1, 1, 4, 4)
    one_hot[0, 0, 1, 2] = -3.0  # the magnitude counts, not the sign
    assert sparseness(one_hot)[0] == pytest.approx((n - 1) / n)
    assert sparseness(torch.full((2, 1, 4, 4), 0.3)) == pytest.approx([0.0, 0.0], abs=1e-12)
    assert np.isnan(sparseness(torch.zeros(1, 1, 4, 4))).all()


@settings(max_examples=60, deadline=None)
@given(
    values=hnp.arrays(np.int64, (1, 1, 4, 4), elements=st.integers(-1000, 1000)),
    scale=st.floats(0.01, 100.0),
)
def test_sparseness_is_in_the_unit_interval_and_scale_free(values, scale):
    maps = torch.from_numpy(values / 10.0)
    gini = sparseness(maps)
    if not values.any():
        assert np.isnan(gini).all()
        return
    assert -1e-12 <= gini[0] <= 1
    assert sparseness(maps * scale)[0] == pytest.approx(gini[0], abs=1e-12)


def test_complexity_of_flat_and_one_hot_maps():
    assert complexity(torch.full((1, 1, 4, 4), 2.0))[0] == pytest.approx(math.log(16))
    one_hot = torch.zeros(1, 1, 4, 4)
    one_hot[0, 0, 3, 3] = 1.0
    assert complexity(one_hot)[0] == pytest.approx(0.0, abs=1e-15)
    assert np.isnan(complexity(torch.zeros(1, 1, 4, 4))).all()


# ---------------------------------------------------------------- localisation


def test_relevance_mass_and_rank_of_the_mask_itself_and_of_a_flat_map():
    mask = square()  # one map's shape (1, S, S): used for every map
    as_map = mask.float().expand(2, 1, SIZE, SIZE)
    np.testing.assert_array_equal(relevance_mass(as_map, mask), [1.0, 1.0])
    np.testing.assert_array_equal(relevance_rank(as_map, mask), [1.0, 1.0])
    flat = torch.full((1, 1, SIZE, SIZE), 0.2)
    assert relevance_mass(flat, mask)[0] == pytest.approx(25 / SIZE**2)


def test_relevance_counts_only_positive_relevance_and_ranks_the_top_k():
    mask = torch.zeros(1, 1, 2, 2, dtype=torch.bool)
    mask[0, 0, 0] = True  # the top row, K = 2
    maps = torch.tensor([[[[3.0, -5.0], [1.0, 0.5]]]])
    assert relevance_mass(maps, mask)[0] == pytest.approx(3.0 / 4.5)
    assert relevance_rank(maps, mask)[0] == pytest.approx(0.5)  # the top 2 are 3.0 (inside) and 1.0 (outside)
    assert np.isnan(relevance_mass(-maps.abs(), mask)).all()
    assert np.isnan(relevance_rank(maps, torch.zeros_like(mask))).all()


def test_masks_that_do_not_broadcast_are_rejected():
    with pytest.raises(EveInputError, match=r"masks have shape \(3, 3\), which does not broadcast"):
        relevance_mass(torch.ones(2, 1, 4, 4), torch.ones(3, 3, dtype=torch.bool))
    with pytest.raises(EveInputError, match="values other than 0 and 1"):
        relevance_mass(torch.ones(2, 1, 4, 4), torch.full((1, 4, 4), 0.5))


# ---------------------------------------------------------------- robustness and the random-logit test


def test_local_lipschitz_of_linear_and_constant_explanations(images):
    np.testing.assert_allclose(local_lipschitz(lambda x: 3 * x, images), 3.0, rtol=1e-4)
    assert (local_lipschitz(lambda x: torch.ones_like(x), images) == 0).all()
    torch_state = torch.random.get_rng_state()
    a = local_lipschitz(lambda x: x**2, images, seed=1)
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    np.testing.assert_array_equal(a, local_lipschitz(lambda x: x**2, images, seed=1))


def test_local_lipschitz_checks_what_explain_returns(images):
    with pytest.raises(EveInputError, match=r"returned \(3, 144\) for images of shape \(3, 1, 12, 12\)"):
        local_lipschitz(lambda x: x.flatten(1), images)


def halves_model() -> Weighted:
    """Two outputs reading disjoint halves of the image."""
    w = torch.zeros(2, 1, SIZE, SIZE)
    w[0, :, :, : SIZE // 2] = 1.0
    w[1, :, :, SIZE // 2 :] = 1.0
    return Weighted(w * (torch.rand(SIZE, SIZE, generator=torch.Generator().manual_seed(9)) + 0.5)).eval()


def gradient_x_input(model: Weighted):
    def explain(images, target):
        index = torch.as_tensor(target).expand(len(images))
        return model.w[index] * images

    return explain


def test_random_logit_of_disjoint_outputs_is_low(images):
    model = halves_model()
    rho = random_logit(gradient_x_input(model), images, 0, 2)
    assert rho.shape == (3,) and (rho < 0.5).all()
    same = random_logit(lambda x, target: x, images, 1, 2)  # a map that ignores the target: correlation 1
    np.testing.assert_allclose(same, 1.0)


def test_random_logit_draws_another_output_per_image():
    w = torch.rand(5, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    seen = []

    def explain(images, target):
        seen.append(torch.as_tensor(target).expand(len(images)).clone())
        return w[torch.as_tensor(target).expand(len(images))] * images

    images = torch.rand(20, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    random_logit(explain, images, 2, 5, seed=3)
    assert (seen[0] == 2).all() and (seen[1] != 2).all() and len(set(seen[1].tolist())) > 1


def test_random_logit_needs_two_outputs(images):
    with pytest.raises(EveInputError, match="needs a model with 2 or more outputs, not 1: use it on a multi-output"):
        random_logit(lambda x, t: x, images, 0, 1)
    with pytest.raises(EveInputError, match="target 2 is not an output index below 2"):
        random_logit(lambda x, t: x, images, 2, 2)


# ---------------------------------------------------------------- validation and the table


def test_maps_must_be_one_finite_map_per_image(images):
    model = square_model()
    with pytest.raises(EveInputError, match=r"maps have shape \(3, 12, 12\) and the images \(3, 1, 12, 12\): give"):
        deletion_curve(model, images, images[:, 0])
    with pytest.raises(EveInputError, match="maps contain NaN or Inf"):
        completeness_gap(model, images, images * float("nan"))
    with pytest.raises(EveInputError, match=r"maps have shape \(3,\): give one map per image"):
        sparseness(torch.ones(3))
    with pytest.raises(EveInputError, match="steps = 0: use"):
        deletion_curve(model, images, images, steps=0)


def test_quality_table_has_a_row_per_method_and_nan_where_a_metric_does_not_apply(images):
    model = square_model()
    maps = {"IntegratedGradients": exact(model, images), "Random": torch.randn(images.shape)}
    table = quality_table(model, images, maps, steps=6)
    assert list(table.columns) == ["method", *METRICS, "n_images"]
    assert table["method"].tolist() == list(maps) and (table["n_images"] == 3).all()
    ig, rand = table.iloc[0], table.iloc[1]
    assert ig["completeness_gap"] < 1e-6 and np.isnan(rand["completeness_gap"])
    assert np.isnan(table["relevance_mass"]).all() and np.isnan(table["relevance_rank"]).all()
    assert ig["deletion_auc"] < rand["deletion_auc"] and ig["insertion_auc"] > rand["insertion_auc"]
    assert ig["road_morf_auc"] < ig["road_lerf_auc"]

    with_masks = quality_table(model, images, maps, steps=6, masks=square(), road=False)
    assert with_masks.iloc[0]["relevance_mass"] == pytest.approx(1.0)
    assert with_masks.iloc[0]["relevance_rank"] == pytest.approx(1.0)
    assert np.isnan(with_masks["road_morf_auc"]).all() and np.isnan(with_masks["road_lerf_auc"]).all()
    np.testing.assert_allclose(with_masks["deletion_auc"], table["deletion_auc"])
    assert all(("lower is better" in text) != ("higher is better" in text) for text in METRICS.values())

    with pytest.raises(EveInputError, match="'Random' maps have shape"):
        quality_table(model, images, {"Random": torch.randn(2, 1, SIZE, SIZE)})
    with pytest.raises(EveInputError, match="maps_by_method is empty"):
        quality_table(model, images, {})
