"""App benchmark: start-to-first-page time and slider-move latency, in a real browser.

    .venv/bin/python benchmarks/bench_app.py [--moves 4]

Starts `streamlit run app.py` on a free localhost port, drives Debian's Chromium with
Playwright and prints:

* start to first page: from launching the server to the Overview page fully drawn
  (budget: under 10 s);
* feature-slider latency on the Feature explorer: a move to a value never drawn before
  (fresh: diffusion sampling of 8 images at 64×64, budget 2 s) and back to values already
  drawn (cached, budget 1 s), from the key press to the end of the rerun;
* the same for Browse MRIs' slice slider (a cached volume, new slice), for reference.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.browser import CHROMIUM, CHROMIUM_ARGS, SETTLED_JS, free_port, launch_server, wait_until_healthy  # noqa: E402

# records when each rerun ends (performance.now() ms), so a move's latency is measured in the page
WATCH_JS = """() => {
    window.__eveDone = 0;
    const app = document.querySelector('[data-testid="stApp"]');
    new MutationObserver(() => {
        if (app.getAttribute('data-test-script-state') === 'notRunning') window.__eveDone = performance.now();
    }).observe(app, {attributes: true, attributeFilter: ['data-test-script-state']});
}"""


def _move(page, slider, key: str) -> float:
    """Press `key` on a focused slider; seconds until the rerun it triggers has ended."""
    t0 = page.evaluate("performance.now()")
    slider.focus()
    page.keyboard.press(key)
    page.wait_for_function(f"window.__eveDone > {t0}", timeout=120_000)
    page.wait_for_function(SETTLED_JS, timeout=120_000)
    return (page.evaluate("window.__eveDone") - t0) / 1000


def _slider_latency(
    page, url: str, path: str, title: str, label: str, moves: int
) -> tuple[list[float], list[float]] | None:
    page.goto(f"{url}/{path}")
    page.get_by_text(title).first.wait_for(timeout=300_000)
    page.wait_for_function(SETTLED_JS, timeout=300_000)
    time.sleep(1.0)
    sliders = page.locator('[data-testid="stSlider"]').filter(has_text=label).locator('input[type="range"]')
    if not sliders.count():
        return None
    page.evaluate(WATCH_JS)
    slider = sliders.first
    fresh = [_move(page, slider, "ArrowRight") for _ in range(moves)]  # values never drawn
    cached = [_move(page, slider, "ArrowLeft") for _ in range(moves)]  # back over drawn values
    return fresh, cached


def _fmt(values: list[float]) -> str:
    return f"median {statistics.median(values):.2f} s (min {min(values):.2f}, max {max(values):.2f}, n={len(values)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--moves", type=int, default=4, help="slider moves per direction")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 1600})
        start = time.perf_counter()
        server = launch_server(port)
        try:
            wait_until_healthy(server, url, timeout_s=120, poll_s=0.05)
            up = time.perf_counter() - start
            page.goto(url)
            page.get_by_text("Eve — the Explained-Variance Explorer").first.wait_for(timeout=120_000)
            page.wait_for_function(SETTLED_JS, timeout=120_000)
            first = time.perf_counter() - start
            print(f"server up (health check):      {up:.2f} s")
            print(f"start to first page (Overview): {first:.2f} s   (budget 10 s)")

            found = _slider_latency(page, url, "explorer", "Feature explorer", " = a", args.moves)
            if found is None:
                print("feature slider: no slider on the Feature explorer (no diffusion model for this dataset)")
            else:
                print(f"feature slider, fresh (8 new samples): {_fmt(found[0])}   (budget 2 s)")
                print(f"feature slider, cached:                {_fmt(found[1])}   (budget 1 s)")
            found = _slider_latency(page, url, "browse", "Browse MRIs", "axial slice", args.moves)
            if found is not None:
                print(f"browse slice slider, new slice:        {_fmt(found[0])}")
                print(f"browse slice slider, back:             {_fmt(found[1])}")
        finally:
            browser.close()
            server.terminate()
            server.wait(10)


if __name__ == "__main__":
    main()
