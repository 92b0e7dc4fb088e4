"""Shared fixtures: the embedded default datasets (built by `make test` before pytest runs)."""

import pytest
import torch
from test_diffusion_toys import linked_table, toy_model, with_table

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def synthbrain():
    from engine.data.defaults import load_default

    return load_default("synthbrain")


@pytest.fixture(scope="session")
def shapes():
    from engine.data.defaults import load_default

    return load_default("shapes")


@pytest.fixture(scope="module")
def tiny():
    """A tiny conditional diffusion model (`test_diffusion_toys.toy_model`); test_baselines has its own."""
    return toy_model()


@pytest.fixture(scope="module")
def tabled(tiny):
    """The tiny model with a training table whose features are linked (`linked_table`)."""
    return with_table(tiny, linked_table())
