"""Shared fixtures (the embedded default datasets, built by `make test` before pytest runs) and the test
tiers: `pytest_collection_modifyitems` marks every test by what it needs, so `make test-fast` can leave the
heavy tiers out while `make test` (and CI) runs them all.

* `browser`: Playwright driving Debian's Chromium against `streamlit run` (tests/test_browser.py and any
  test marked so);
* `app`: the app through `streamlit.testing.v1.AppTest` (every module that uses it);
* `cluster`: a local Ray cluster (tests/test_cluster.py);
* `slow`: long simulations, training, the committed generators and models on full embedded datasets
  (marked in place, plus the modules in `SLOW_MODULES`).
"""

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from test_diffusion_toys import linked_table, toy_model, with_table

torch.set_num_threads(2)

# uploads go to a folder of this run's own (set before the app's modules are imported, and inherited by the
# servers the browser tests start): a folder a server or an earlier run left in the shared default
# (`<temp>/eve-uploads`, one folder per distinct content) would otherwise be found again, generators and all
os.environ["EVE_UPLOAD_ROOT"] = tempfile.mkdtemp(prefix="eve-test-uploads-")
atexit.register(shutil.rmtree, os.environ["EVE_UPLOAD_ROOT"], ignore_errors=True)


@pytest.fixture(scope="module", autouse=True)
def _no_model_check_left_running():
    """A model check past its limit runs on in its thread (`zoo._within`): let a module's end before the next
    (and the interpreter's exit: torch's C++ would abort the process)."""
    yield
    from engine.models.zoo import wait_for_model_checks

    wait_for_model_checks()


# whole modules of the slow tier: the committed generators' scores, registration of real T1 volumes
SLOW_MODULES = {"test_diffusion_committed", "test_real_t1", "test_diffusion_train", "test_counterfactual"}
_USES_APPTEST: dict[Path, bool] = {}


def _uses_apptest(path: Path) -> bool:
    if path not in _USES_APPTEST:
        _USES_APPTEST[path] = "AppTest" in path.read_text()
    return _USES_APPTEST[path]


def pytest_collection_modifyitems(config, items):
    for item in items:
        path, module = Path(str(item.fspath)), Path(str(item.fspath)).stem
        if module == "test_browser":
            item.add_marker(pytest.mark.browser)
        if module == "test_cluster":
            item.add_marker(pytest.mark.cluster)
        if module in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
        if _uses_apptest(path) and "browser" not in item.keywords:
            item.add_marker(pytest.mark.app)


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
