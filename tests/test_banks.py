"""The explorer's banks (`engine.diffusion.banks`): one rule for the slider's positions and for what a
position draws, and a store on disk that gives back exactly what a live draw gives, for the values it
holds and nothing else."""

from __future__ import annotations

import threading
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from engine.diffusion import banks, load_diffusion
from engine.options import EXPLORER


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("EVE_DATA_DIR", str(tmp_path))
    banks._OPEN.clear()
    yield tmp_path
    banks._OPEN.clear()


@pytest.fixture(scope="module")
def shapes():
    return load_diffusion("shapes")


def test_positions_span_the_training_range_rounded_and_inside_it(shapes):
    lo, hi = shapes.feature_range("size")
    values = banks.positions(shapes, "size")
    assert len(values) == EXPLORER.steps and values == sorted(values)
    assert lo <= values[0] and values[-1] <= hi
    assert all(float(f"{v:.4g}") == v or v in (lo, hi) for v in values)
    assert banks.positions(load_diffusion("synthbrain"), "sex") == ["F", "M"]  # a categorical one's levels


def test_a_stored_bank_gives_back_what_a_live_draw_gives(data_dir, shapes):
    folder = banks.draw_bank(shapes, "size", n=2, seed=3, steps=4)
    assert folder.is_relative_to(data_dir) and not list(folder.parent.glob("*.partial"))
    for value in banks.positions(shapes, "size", 4):
        images, measured = banks.stored(shapes, "size", value, 2, 3, EXPLORER.guidance)
        live_images, live_measured = banks.conditional(shapes, "size", value, 2, 3, EXPLORER.guidance)
        assert images.shape == (2, *live_images.shape[1:]) and images.dtype == np.float32
        assert np.array_equal(images, live_images) and np.array_equal(measured, live_measured)
    middle = banks.positions(shapes, "size", 5)[1]  # not one of the bank's four
    assert banks.stored(shapes, "size", middle, 2, 3, EXPLORER.guidance) is None
    assert banks.stored(shapes, "size", banks.positions(shapes, "size", 4)[0], 2, 4, EXPLORER.guidance) is None  # seed
    assert banks.stored(shapes, "aspect", 1.0, 2, 3, EXPLORER.guidance) is None  # no bank of that feature


def test_a_categorical_bank_and_an_unprobed_feature(data_dir):
    synthbrain = load_diffusion("synthbrain")
    banks.draw_bank(synthbrain, "sex", n=2)
    images, measured = banks.stored(synthbrain, "sex", "M", 2, EXPLORER.seed, EXPLORER.guidance)
    assert measured is None and np.array_equal(images, banks.conditional(synthbrain, "sex", "M", 2, 0, 1.0)[0])
    assert banks.stored(synthbrain, "sex", "X", 2, EXPLORER.seed, EXPLORER.guidance) is None


def test_a_bank_is_drawn_once_and_an_interrupted_one_is_never_read(data_dir, shapes, monkeypatch):
    drawn = []
    real = banks.conditional
    monkeypatch.setattr(banks, "conditional", lambda *a: drawn.append(a) or real(*a))
    banks.draw_bank(shapes, "size", n=1, steps=3)
    banks.draw_bank(shapes, "size", n=1, steps=3)
    assert len(drawn) == 3  # the second call found it

    def broken(*a):
        raise KeyboardInterrupt

    monkeypatch.setattr(banks, "conditional", broken)
    with pytest.raises(KeyboardInterrupt):
        banks.draw_bank(shapes, "aspect", n=1, steps=3)
    assert banks.stored(shapes, "aspect", banks.positions(shapes, "aspect", 3)[0], 1, 0, 1.0) is None


def test_a_retrained_generator_never_reads_the_old_bank(data_dir, shapes):
    retrained = SimpleNamespace(dataset=shapes.dataset, card=replace(shapes.card, command="retrained"))
    assert banks.bank_dir(retrained, "size", 8, 0, 1.0) != banks.bank_dir(shapes, "size", 8, 0, 1.0)
    assert banks.bank_dir(shapes, "size", 8, 0, 1.5) != banks.bank_dir(shapes, "size", 8, 0, 1.0)


def test_two_sessions_asking_for_the_same_position_at_once_draw_it_once(monkeypatch):
    """The server-wide cache (`loaders.conditional_samples`, st.cache_data) holds one compute lock a key:
    the second session waits for the first's draw instead of drawing it again."""
    from components import loaders

    calls = []
    real = banks.conditional

    def slow(*args):
        calls.append(args)
        threading.Event().wait(0.3)
        return real(*args)

    monkeypatch.setattr(banks, "conditional", slow)
    value = banks.positions(load_diffusion("shapes"), "size")[7]
    loaders.conditional_samples.clear()
    results = [None, None]

    def session(i):
        results[i] = loaders.conditional_samples("shapes", "size", value, 2, 11, 1.0)

    threads = [threading.Thread(target=session, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert np.array_equal(results[0][0], results[1][0])
