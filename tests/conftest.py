"""Shared fixtures: the embedded default datasets (built by `make test` before pytest runs)."""

import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def synthbrain():
    from engine.data.defaults import load_default

    return load_default("synthbrain")


@pytest.fixture(scope="session")
def shapes():
    from engine.data.defaults import load_default

    return load_default("shapes")
