"""Real-browser test: Playwright drives Debian's Chromium against `streamlit run app.py`.

Visits every page, moves the feature slider on the feature explorer, checks that no
Streamlit exception box appears, and saves one screenshot per page to `test-artifacts/`.
"""

from __future__ import annotations

import html
import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.browser import CHROMIUM, CHROMIUM_ARGS, SETTLED_JS, free_port, launch_server, wait_until_healthy

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
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
# first visits compute model outputs and maps on a shared 2-core CPU


@pytest.fixture(scope="module")
def server():
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (make test installs it)")
    port = free_port()
    ARTIFACTS.mkdir(exist_ok=True)
    log = open(ARTIFACTS / "streamlit.log", "w")  # noqa: SIM115 (closed with the server)
    proc = launch_server(port, log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(proc, url)
    except RuntimeError as exc:
        pytest.fail(str(exc))
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


def test_a_shared_link_is_the_first_request_of_a_fresh_server(server, page):
    """The first visitor after a server start opens a copied link: that page and its query, not the
    Overview (what a `pages/` folder beside app.py did: Streamlit's legacy mode ran the first request)."""
    page.goto(f"{server}/explorer?seed=3")
    _settle(page)
    main = page.locator('[data-testid="stMain"]')
    main.get_by_role("heading", name="Feature explorer (live)").first.wait_for()
    assert page.url.startswith(f"{server}/explorer") and "seed=3" in page.url, page.url
    assert main.get_by_role("spinbutton", name="Seed").input_value() == "3"
    _no_exception(page, "a shared link on a fresh server")
    page.locator('[data-testid="stSidebarNav"]').get_by_text("Overview").click()  # on, in the same session
    _settle(page)


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
    # live scrubbing is on by default: switched off, the page's own slider draws on the server
    page.locator('[data-testid="stMain"] [data-testid="stCheckbox"]').filter(has_text="Live scrubbing").click()
    _settle(page)
    # the feature-value slider is labelled "<feature> = a"
    sliders = page.locator('[data-testid="stSlider"]').filter(has_text=" = a").locator('input[type="range"]')
    if not sliders.count():
        pytest.fail("the feature explorer shows no slider: is the committed synthbrain generator missing?")
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


def test_explorer_scrubbing_swaps_frames_in_the_browser_without_a_rerun(server, app_page):
    """Live scrubbing (components.scrubber): once every value's samples are in the browser, dragging its
    slider shows other frames while the browser sends the server nothing (no rerun, the app never runs);
    letting go sends the value, and the page (its URL) follows."""
    page = app_page
    sent = []  # WebSocket messages to the server: every rerun is one
    page.on("websocket", lambda ws: ws.on("framesent", lambda _: sent.append(time.monotonic())))
    page.goto(f"{server}/explorer?dataset=shapes&feature=size&seed=3")  # a seed no bank was drawn at
    _settle(page)  # live scrubbing is on by default: the bank fills from the page's value outwards
    page.wait_for_function(
        "() => window.eveScrubber && window.eveScrubber.k > 0 && window.eveScrubber.ready === window.eveScrubber.k",
        timeout=PAGE_TIMEOUT_MS,
        polling=200,
    )
    _settle(page)  # the full bank's last page run: the fragment's timer is off
    _no_exception(page, "explorer with live scrubbing")
    page.evaluate("""() => {  // any script run from now on flips the app's state to running
        const app = document.querySelector('[data-testid="stApp"]');
        window.__runs = 0;
        new MutationObserver(() => { if (app.dataset.testScriptState === 'running') window.__runs += 1; })
            .observe(app, {attributes: true, attributeFilter: ['data-test-script-state']});
    }""")
    slider = page.locator(".eve-scrubber input.range")
    tile = page.locator(".eve-scrubber canvas").first
    box = slider.bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + 8, y)
    page.mouse.down()
    before, swaps, quiet = tile.evaluate("c => c.toDataURL()"), page.evaluate("window.eveScrubber.swaps"), len(sent)
    for f in np.linspace(0, 0.7, 30):
        page.mouse.move(box["x"] + 8 + f * (box["width"] - 16), y)
    page.wait_for_timeout(300)
    shown = page.evaluate("({...window.eveScrubber})")
    assert tile.evaluate("c => c.toDataURL()") != before  # another frame on the canvas
    assert shown["swaps"] - swaps >= 10 and shown["shown"] == shown["want"] > 0
    assert len(sent) == quiet and page.evaluate("window.__runs") == 0  # all of it in the browser
    page.screenshot(path=str(ARTIFACTS / "11-explorer-scrubbing.png"), full_page=True)
    page.mouse.up()
    label = page.locator(".eve-scrubber .current").inner_text()
    page.wait_for_function(f"() => window.location.search.includes('value={label}')", timeout=PAGE_TIMEOUT_MS)
    assert len(sent) > quiet
    _settle(page)
    _no_exception(page, "explorer after letting go of the scrubber")


def test_live_scrubbing_works_from_the_first_drag_on_a_fresh_server(page):
    """What a person demoing Eve meets: `make run` draws the explorer's banks at its defaults (here: the
    default feature's, as its background build does); a fresh server's explorer then has live scrubbing
    on, the whole bank in the browser once the page settles, and a drag within a second swaps frames with
    nothing sent to the server."""
    from engine.diffusion import load_diffusion
    from engine.diffusion.banks import draw_bank

    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (make test installs it)")
    generator = load_diffusion("synthbrain")
    draw_bank(generator, generator.features[0])  # the explorer's default feature, at its defaults
    port = free_port()
    ARTIFACTS.mkdir(exist_ok=True)
    with open(ARTIFACTS / "streamlit-fresh.log", "w") as log:
        proc = launch_server(port, log)  # its own server: nothing cached in it yet
        context = page.context.browser.new_context(viewport={"width": 1366, "height": 900})
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until_healthy(proc, url)
            page = context.new_page()
            page.set_default_timeout(PAGE_TIMEOUT_MS)
            sent = []
            page.on("websocket", lambda ws: ws.on("framesent", lambda _: sent.append(time.monotonic())))
            page.goto(f"{url}/explorer")
            page.wait_for_selector('[data-testid="stApp"]')
            page.wait_for_function(SETTLED_JS, timeout=PAGE_TIMEOUT_MS, polling=50)
            settled = time.monotonic()
            page.wait_for_function("() => window.eveScrubber && window.eveScrubber.k > 0", timeout=1000, polling=50)
            stats = page.evaluate("({...window.eveScrubber})")
            assert stats["ready"] == stats["k"] == 41, stats  # every position is in the browser
            quiet = len(sent)
            slider = page.locator(".eve-scrubber input.range")
            tile = page.locator(".eve-scrubber canvas").first
            box = slider.bounding_box()
            y = box["y"] + box["height"] / 2
            before = tile.evaluate("c => c.toDataURL()")
            page.mouse.move(box["x"] + 8, y)
            page.mouse.down()
            for f in np.linspace(0, 0.9, 12):
                page.mouse.move(box["x"] + 8 + f * (box["width"] - 16), y)
            changed = tile.evaluate("c => c.toDataURL()") != before
            elapsed = time.monotonic() - settled
            assert changed and len(sent) == quiet, (changed, len(sent) - quiet)  # swapped in the browser alone
            assert elapsed < 1.0, f"the first drag's frames came {elapsed:.2f} s after the page settled"
            page.screenshot(path=str(ARTIFACTS / "12-explorer-first-drag.png"))
            page.mouse.up()
        finally:
            context.close()
            proc.terminate()
            proc.wait(10)


def test_what_if_shows_a_subjects_counterfactual(server, app_page):
    page = app_page
    page.goto(f"{server}/browse")
    _settle(page)
    page.get_by_text("Change one of this subject's features").click()
    _settle(page)
    _no_exception(page, "browse after asking what if")
    assert page.get_by_text("read from the image").count() == 1
    assert page.get_by_text("round trip").count() >= 1
    page.get_by_text("What if").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "10-browse-what-if.png"), full_page=True)


def test_a_click_on_the_axial_plane_moves_the_crosshair_in_the_other_planes(server, app_page):
    """Browse's linked crosshair: a click in one plane (on its click layer: a heatmap returns no
    selection) moves the other two planes' slices to the clicked voxel and reads it out."""
    page = app_page
    page.goto(f"{server}/browse")
    _settle(page)
    sliders = page.locator('[data-testid="stSlider"]')

    def slices() -> dict[str, int]:
        ranges = {plane: sliders.filter(has_text=f"{plane} slice") for plane in ("axial", "coronal", "sagittal")}
        return {plane: int(r.locator('input[type="range"]').input_value()) for plane, r in ranges.items()}

    before = slices()
    axial = page.locator('[data-testid="stPlotlyChart"]').filter(has_text="axial · voxel").first
    columns, rows = axial.locator(".js-plotly-plot").evaluate(
        "g => [g._fullLayout.xaxis.range[1] + 0.5, g._fullLayout.yaxis.range[0] + 0.5]"
    )
    box = axial.locator(".nsewdrag").first.bounding_box()  # the image's area
    col, row = round(columns * 0.25), round(rows * 0.3)  # the patient's left, anterior (neurological view)
    x, y = box["x"] + (col + 0.5) / columns * box["width"], box["y"] + (row + 0.5) / rows * box["height"]
    page.mouse.move(x, y, steps=5)  # plotly picks the point under the pointer as it hovers
    time.sleep(0.5)
    page.mouse.click(x, y)
    _settle(page)
    _no_exception(page, "browse after a click on the axial plane")
    after = slices()
    assert after == {"axial": before["axial"], "coronal": rows - 1 - row, "sagittal": col}, (before, after)
    assert page.get_by_text(f"voxel ({col}, {rows - 1 - row}, {before['axial']})").count() == 1
    page.get_by_text("Crosshair at voxel").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "12-browse-crosshair.png"), full_page=True)


def test_a_shared_link_opens_its_view_and_the_address_bar_follows_the_view(server, app_page):
    page = app_page
    page.goto(f"{server}/explorer?dataset=shapes&feature=size&value=11.3&seed=7")
    _settle(page)
    _no_exception(page, "explorer opened from a shared link")
    assert page.get_by_role("radio", name="Shapes (2D synthetic)").is_checked()
    main = page.locator('[data-testid="stMain"]')
    assert main.get_by_role("spinbutton", name="Seed").input_value() == "7"
    main.get_by_text("size = a").first.wait_for()
    assert "seed=7" in page.url and "feature=size" in page.url and "dataset=shapes" in page.url
    page.locator('[data-testid="stSidebar"] summary').filter(has_text="Share this view").click()
    link = page.locator('[data-testid="stSidebar"] [data-testid="stCode"]').inner_text()
    assert link.startswith(f"{server}/explorer?") and "seed=7" in link
    page.screenshot(path=str(ARTIFACTS / "9-shared-link.png"), full_page=True)


def test_diffusion_scores_join_the_bars(server, app_page):
    page = app_page
    page.goto(f"{server}/scores")
    _settle(page)
    page.get_by_text("Generator-based scores (for scarce data)").first.click()
    button = page.get_by_role("button", name="Compute generator-based scores")
    if not button.count():
        pytest.fail("no generator panel button: is the committed generator missing?")
    for label, value in (("Feature values K", "4"), ("Samples per value N", "4")):  # small: a quick check
        field = page.get_by_label(label)
        field.fill(value)
        field.press("Enter")
        _settle(page)
    button.click()
    _settle(page)
    _no_exception(page, "scores after computing diffusion scores")
    page.get_by_text("generator, debiased by the real images").first.wait_for()
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
    # live scrubbing is on by default: switched off, the page's own slider draws on the server
    page.locator('[data-testid="stMain"] [data-testid="stCheckbox"]').filter(has_text="Live scrubbing").click()
    _settle(page)
    sliders = page.locator('[data-testid="stSlider"]').filter(has_text=" = a").locator('input[type="range"]')
    if not sliders.count():
        pytest.fail("no shapes explorer slider: is the committed shapes generator missing?")
    before = sliders.first.input_value()
    sliders.first.focus()
    for _ in range(8):
        page.keyboard.press("ArrowRight")
    _settle(page)
    assert sliders.first.input_value() != before
    _no_exception(page, "shapes explorer after moving the slider")
    page.screenshot(path=str(ARTIFACTS / "7-explorer-shapes.png"), full_page=True)


class _BrightLogit(torch.nn.Module):
    """A user's classifier as TorchScript: the logit that an image's mean (p99-normalised) intensity is high."""

    def forward(self, x):
        return 20.0 * (x.mean((2, 3)) - 0.25)


def _upload(page, label: str, path: Path) -> None:
    """Drop a file on the sidebar's uploader labelled `label`, as a user would, and wait for the rerun."""
    uploader = page.locator('[data-testid="stSidebar"] [data-testid="stFileUploader"]').filter(has_text=label)
    uploader.locator('input[type="file"]').set_input_files(str(path))
    _settle(page)


def test_a_users_folder_and_model_are_scored_in_their_words_and_reported_with_their_contract(server, page, tmp_path):
    """A clinician's first hour: their own cohort (.zip) and TorchScript model with its card, uploaded
    in the sidebar; the scores speak of the model's probability, the report states what the model
    was fed, and a built-in model trained elsewhere carries a visible warning."""
    from test_app import _shapes_cohort_zip

    cohort = tmp_path / "my-discs.zip"
    cohort.write_bytes(_shapes_cohort_zip(tmp_path, with_generator=False))
    model = tmp_path / "bright.pt"
    torch.jit.save(torch.jit.script(_BrightLogit()), str(model))
    card = tmp_path / "bright.json"
    card.write_text(
        json.dumps(
            {
                "name": "my bright-disc model",
                "input": {"kind": "slice", "plane": "axial", "size": 64},
                "intensity": "p99",
                "outputs": {"names": ["logit P(bright)"], "kind": "logit"},
            }
        )
    )
    page.goto(server)
    _settle(page)
    sidebar = page.locator('[data-testid="stSidebar"]')
    sidebar.locator("label").filter(has_text="Your folder").click()
    _settle(page)
    _upload(page, "features.csv", cohort)
    page.get_by_text("your folder (60 images)").first.wait_for()
    _upload(page, "Model card", card)
    _upload(page, "TorchScript model", model)
    _no_exception(page, "sidebar after the uploads")

    sidebar.locator('[data-testid="stSidebarNav"] a').filter(has_text="Attribution scores").first.click()
    _settle(page)
    main = page.locator('[data-testid="stMain"]')
    main.get_by_text("of the variation in the model's probability of bright").first.wait_for()
    assert sidebar.get_by_role("radio", name="probability").is_checked()  # probability first, the logit a click away
    _no_exception(page, "scores of the user's model")
    page.screenshot(path=str(ARTIFACTS / "8-user-model-scores.png"), full_page=True)

    with page.expect_download() as download:
        main.get_by_role("button", name="Download HTML report").click()
    download.value.save_as(ARTIFACTS / "8-user-model-report.html")
    report = html.unescape((ARTIFACTS / "8-user-model-report.html").read_text())
    contract = report[report.index("Input contract") :][:3000]
    assert "axial" in contract and "64 × 64 px" in contract and "p99" in contract, contract
    assert "my bright-disc model on my-discs" in report  # the user's names for their model and cohort
    assert "P(bright): the model's probability of bright" in report and "Jin, Zhu & Fletcher" in report

    sidebar.locator('[data-testid="stSelectbox"]').filter(has_text="Model").first.click()
    page.get_by_role("option").filter(has_text="shapes-elongated").first.click()
    _settle(page)
    warning = sidebar.locator('[data-testid="stAlertContentWarning"]')
    assert "trained on" in warning.first.inner_text() and "shapes" in warning.first.inner_text()
    _no_exception(page, "scores of a built-in model on the user's folder")
    page.screenshot(path=str(ARTIFACTS / "9-user-folder-built-in-warning.png"), full_page=True)
