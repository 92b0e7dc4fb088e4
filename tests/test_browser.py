"""Real-browser test: Playwright drives Debian's Chromium against `streamlit run app.py`.

Visits every page, moves the feature slider on the feature explorer, checks that no
Streamlit exception box appears, and saves one screenshot per page to `test-artifacts/`.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PAGES = [  # (url path, title shown on the page, screenshot name)
    ("", "Eve — the Explained-Variance Explorer", "1-overview"),
    ("browse", "Browse MRIs", "2-browse"),
    ("scores", "Attribution scores", "3-scores"),
    ("explorer", "Feature explorer", "4-explorer"),
    ("compare", "Compare", "5-compare"),
    ("truth", "Ground truth", "6-truth"),
]
PAGE_TIMEOUT_MS = 240_000
# the script run has finished and nothing is still loading
SETTLED_JS = """() => {
    const app = document.querySelector('[data-testid="stApp"]');
    return app && app.getAttribute('data-test-script-state') === 'notRunning'
        && !document.querySelector(
            '[data-testid="stSpinner"], [data-testid="stSkeleton"], [data-testid="stAppSkeleton"]');
}"""  # first visits compute model outputs and maps on a shared 2-core CPU


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (make test installs it)")
    port = _free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    ARTIFACTS.mkdir(exist_ok=True)
    log = open(ARTIFACTS / "streamlit.log", "w")  # noqa: SIM115 (closed with the server)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            "app.py",
            "--server.port",
            str(port),
            "--server.address",
            "127.0.0.1",
            "--server.headless",
            "true",
            "--browser.gatherUsageStats",
            "false",
            "--server.fileWatcherType",
            "none",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"{url}/_stcore/health", timeout=1)
            break
        except OSError:
            time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail("streamlit did not start within 60 s")
    yield url
    proc.terminate()
    log.close()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1440, "height": 2400})
        page = context.new_page()
        page.set_default_timeout(PAGE_TIMEOUT_MS)
        yield page
        browser.close()


@pytest.fixture()
def app_page(server, page):
    """The page after one visit of the root URL: a fresh server's first script run has then gone
    through app.py, so page URLs open directly (see test_deep_link_on_a_fresh_server_recovers)."""
    page.goto(server)
    _settle(page)
    return page


def _settle(page) -> None:
    """Wait until the app has finished running (no running indicator, no spinners)."""
    page.wait_for_selector('[data-testid="stApp"]')
    time.sleep(0.5)
    page.wait_for_function(SETTLED_JS, timeout=PAGE_TIMEOUT_MS)
    time.sleep(1.0)  # plotly draws after the script run ends


def _no_exception(page, where: str) -> None:
    boxes = page.locator('[data-testid="stException"]')
    if boxes.count():
        pytest.fail(f"{where}: Streamlit exception box: {boxes.first.inner_text()[:2000]}")


def test_deep_link_on_a_fresh_server_recovers(server, page):
    """The first request of a fresh server for a page URL runs that file alone (Streamlit's legacy
    pages/ folder mode); the app must route it through app.py instead of failing."""
    page.goto(f"{server}/scores")
    _settle(page)
    page.get_by_text("Eve — the Explained-Variance Explorer").first.wait_for()
    _no_exception(page, "deep link on a fresh server")


def test_first_sidebar_choice_takes_effect(server, page):
    """Continues the first session: its first widget change must not be lost (it was, when the
    sidebar was drawn before st.navigation)."""
    if not page.url.startswith(server):  # run on its own: open the first session here
        page.goto(server)
        _settle(page)
    page.locator('[data-testid="stSidebar"] label').filter(has_text="Shapes (2D synthetic)").click()
    _settle(page)
    assert page.get_by_role("radio", name="Shapes (2D synthetic)").is_checked()
    page.locator('[data-testid="stMain"]').get_by_text("Shapes (2D synthetic)").first.wait_for()
    _no_exception(page, "overview after choosing shapes")


def test_every_page_renders_without_exception(server, app_page):
    page = app_page
    for path, title, shot in PAGES:
        page.goto(f"{server}/{path}")
        _settle(page)
        page.get_by_text(title).first.wait_for()
        _no_exception(page, path or "overview")
        page.screenshot(path=str(ARTIFACTS / f"{shot}.png"), full_page=True)


def test_feature_slider_moves_without_exception(server, app_page):
    page = app_page
    page.goto(f"{server}/explorer")
    _settle(page)
    # the feature-value slider is labelled "<feature> = a"
    sliders = page.locator('[data-testid="stSlider"]').filter(has_text=" = a").locator('input[type="range"]')
    if not sliders.count():
        pytest.skip("the feature explorer shows no slider (its engine piece is not ready)")
    slider = sliders.first
    before = slider.input_value()
    slider.focus()
    for _ in range(5):
        page.keyboard.press("ArrowRight")
    _settle(page)
    after = sliders.first.input_value()
    assert after != before
    _no_exception(page, "explorer after moving the slider")
    page.screenshot(path=str(ARTIFACTS / "4-explorer-moved.png"), full_page=True)


def test_diffusion_scores_join_the_bars(server, app_page):
    page = app_page
    page.goto(f"{server}/scores")
    _settle(page)
    page.get_by_text("Diffusion-based scores (for scarce data)").first.click()
    button = page.get_by_role("button", name="Compute diffusion-based scores")
    if not button.count():
        pytest.skip("no diffusion model for this dataset and model yet")
    for label, value in (("Feature values K", "4"), ("Samples per value N", "4")):  # small: a quick check
        field = page.get_by_label(label)
        field.fill(value)
        field.press("Enter")
        _settle(page)
    button.click()
    _settle(page)
    _no_exception(page, "scores after computing diffusion scores")
    page.get_by_text("from diffusion samples").first.wait_for()
    page.screenshot(path=str(ARTIFACTS / "3-scores-diffusion.png"), full_page=True)


def test_shapes_explorer_slider_moves_without_exception(server, app_page):
    """Last: it leaves the session on Shapes. The explorer on the second embedded dataset."""
    page = app_page
    page.locator('[data-testid="stSidebar"] label').filter(has_text="Shapes (2D synthetic)").click()
    _settle(page)
    # in-app navigation keeps the session (and its dataset); a new URL would start a fresh one
    page.locator('[data-testid="stSidebarNav"] a').filter(has_text="Feature explorer").first.click()
    _settle(page)
    page.locator('[data-testid="stMain"]').get_by_text("Feature explorer").first.wait_for()
    _no_exception(page, "shapes explorer")
    sliders = page.locator('[data-testid="stSlider"]').filter(has_text=" = a").locator('input[type="range"]')
    if not sliders.count():
        pytest.skip("no shapes diffusion model: the explorer says so instead of showing a slider")
    before = sliders.first.input_value()
    sliders.first.focus()
    for _ in range(8):
        page.keyboard.press("ArrowRight")
    _settle(page)
    assert sliders.first.input_value() != before
    _no_exception(page, "shapes explorer after moving the slider")
    page.screenshot(path=str(ARTIFACTS / "7-explorer-shapes.png"), full_page=True)
