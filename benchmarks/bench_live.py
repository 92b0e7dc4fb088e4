"""The feature explorer's live scrubbing (`components.scrubber`) in a real browser: Playwright drives Debian's
Chromium against `streamlit run app.py`.

Live scrubbing is on by default. For 8 and 16 samples (a seed no earlier run drew, so nothing is cached; the
server warmed first on other seeds), on SynthBrain's first feature:

* the time from opening the explorer (or, for 16, from choosing 16 samples) to the first frame in the browser
  and to a full bank (every slider position's samples in the browser), and the bytes of that bank (the WebP
  data URLs as sent);
* the same at the explorer's defaults (seed 0, 8 samples) when `make run`'s background build has drawn the
  bank beforehand (`python -m engine build-data synthbrain --banks`; drawn here first if missing);
* the browser's CPU-idle check of a disconnect: a session closed mid-bank, then the server's CPU seconds over
  the next few seconds (the fragment's timer lives in the browser, so the filling should stop);
* once the bank is full, a drag back and forth across the slider's range, with the frames the page displays
  counted in requestAnimationFrame: frames/s = distinct frames shown per second of dragging (target >= 30),
  beside the display's own rate, the pointer moves Playwright got through, and the WebSocket messages the
  browser sent meanwhile (0: no server round trip);
* Play at 40 values a second, counted the same way.

    .venv/bin/python benchmarks/bench_live.py    # writes benchmarks/results/live.json
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.browser import CHROMIUM, CHROMIUM_ARGS, SETTLED_JS, start_server  # noqa: E402
from benchmarks.machine import describe  # noqa: E402

TIMEOUT_MS = 120_000
SAMPLES = (8, 16)
SWEEPS = 6  # drags across the whole range, alternating direction
SWEEP_S = 1.0  # seconds a sweep takes: 41 positions a second, a brisk human drag
# counts, in requestAnimationFrame, the frames the scrubber puts on screen (its `stats.swaps`)
COUNT_JS = """() => {
    const c = window.__eveCount = {
        frames: 0, ticks: 0, last: window.eveScrubber.swaps, t0: performance.now(), on: true};
    const f = () => {
        const s = window.eveScrubber.swaps;
        if (s !== c.last) { c.frames += 1; c.last = s; }
        c.ticks += 1;
        if (c.on) requestAnimationFrame(f);
    };
    requestAnimationFrame(f);
}"""
STOP_JS = "() => { const c = window.__eveCount; c.on = false; c.t1 = performance.now(); return c; }"


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def settle(page) -> None:
    page.wait_for_selector('[data-testid="stApp"]')
    time.sleep(0.5)
    page.wait_for_function(SETTLED_JS, timeout=TIMEOUT_MS)


def open_explorer(page, url: str, n: int, seed: int) -> float:
    """The explorer with n samples and `seed` (a URL carries the seed), live scrubbing on as by default;
    the time (perf_counter) its bank started: the explorer's opening, or the choice of n samples."""
    page.goto(url)
    settle(page)
    t0 = time.perf_counter()
    page.goto(f"{url}/explorer?dataset=synthbrain&seed={seed}")
    settle(page)
    main = page.locator('[data-testid="stMain"]')
    if n != 8:
        samples = main.locator('[data-testid="stSlider"]').filter(has_text="Samples").get_by_role("slider")
        samples.focus()
        t0 = time.perf_counter()
        for _ in range([4, 8, 12, 16].index(n) - 1):
            page.keyboard.press("ArrowRight")
    return t0


def first_frame(page, n: int) -> None:
    page.wait_for_function(
        f"() => window.eveScrubber && window.eveScrubber.n === {n} && window.eveScrubber.ready > 0",
        timeout=TIMEOUT_MS,
        polling=50,
    )


def wait_full_bank(page, timeout_s: float = 600) -> dict:
    page.wait_for_function(
        "() => window.eveScrubber && window.eveScrubber.k > 0 && window.eveScrubber.ready === window.eveScrubber.k",
        timeout=timeout_s * 1000,
        polling=100,
    )
    return page.evaluate("() => ({...window.eveScrubber})")


def bank_bytes(page) -> int:
    """Bytes of the frames' data URLs the browser holds (what the last payload carried)."""
    return page.locator(".eve-scrubber").evaluate(
        """root => {
            let bytes = 0;
            for (const imgs of root.scrubber.images.values()) for (const img of imgs) bytes += img.src.length;
            return bytes;
        }"""
    )


def new_page(browser) -> tuple:
    """(context, page, the times of the WebSocket messages the page sends to the server)."""
    context = browser.new_context(viewport={"width": 1440, "height": 1400})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    sent: list[float] = []
    page.on("websocket", lambda ws: ws.on("framesent", lambda _: sent.append(time.perf_counter())))
    return context, page, sent


def drag(page, sent: list, sweeps: int = SWEEPS, sweep_s: float = SWEEP_S) -> dict:
    """Hold the scrubber's slider and drag it end to end `sweeps` times; frames shown, display ticks,
    pointer moves and WebSocket messages sent meanwhile. Released at the end (one message then)."""
    slider = page.locator(".eve-scrubber input.range")
    slider.scroll_into_view_if_needed()
    box = slider.bounding_box()
    y = box["y"] + box["height"] / 2
    left, right = box["x"] + 8, box["x"] + box["width"] - 8
    page.mouse.move(left, y)
    page.mouse.down()
    page.evaluate(COUNT_JS)
    before = len(sent)
    moves = 0
    t0 = time.perf_counter()
    for k in range(sweeps):
        start = time.perf_counter()
        while (f := (time.perf_counter() - start) / sweep_s) < 1:
            x = left + (right - left) * (f if k % 2 == 0 else 1 - f)
            page.mouse.move(x, y)
            moves += 1
        page.mouse.move(right if k % 2 == 0 else left, y)
    elapsed = time.perf_counter() - t0
    counted = page.evaluate(STOP_JS)
    during = len(sent) - before
    page.mouse.up()
    return {
        "seconds": round(elapsed, 2),
        "frames_shown": counted["frames"],
        "frames_per_second": round(counted["frames"] / ((counted["t1"] - counted["t0"]) / 1000), 1),
        "display_ticks_per_second": round(counted["ticks"] / ((counted["t1"] - counted["t0"]) / 1000), 1),
        "pointer_moves_per_second": round(moves / elapsed, 1),
        "positions_crossed_per_second": round(sweeps * (page.evaluate("() => window.eveScrubber.k") - 1) / elapsed, 1),
        "websocket_messages_sent_while_dragging": during,
    }


def play(page, speed: int = 40, seconds: float = 3.0) -> dict:
    """Play at `speed` values per second for `seconds`: frames shown per second (the display's own loop)."""
    page.locator(".eve-scrubber .speed select").select_option(str(speed))
    page.locator(".eve-scrubber button.play").click()
    page.evaluate(COUNT_JS)
    time.sleep(seconds)
    counted = page.evaluate(STOP_JS)
    page.locator(".eve-scrubber button.play").click()  # pause: sends the value, the page reruns once
    elapsed = (counted["t1"] - counted["t0"]) / 1000
    return {
        "speed_values_per_second": speed,
        "frames_per_second": round(counted["frames"] / elapsed, 1),
        "display_ticks_per_second": round(counted["ticks"] / elapsed, 1),
    }


def main() -> None:
    from playwright.sync_api import sync_playwright

    from engine.diffusion import load_diffusion
    from engine.diffusion.banks import draw_bank, is_drawn

    generator = load_diffusion("synthbrain")
    t = time.perf_counter()
    drawn = is_drawn(generator, generator.features[0], 8, 0, 1.0)
    draw_bank(generator, generator.features[0])
    drawn_s = None if drawn else round(time.perf_counter() - t, 1)  # None: drawn by an earlier run
    proc, url = start_server(open(Path(tempfile.gettempdir()) / "bench-live-server.log", "w"))  # kept for a failed run
    # other work on the machine slows the banks (2 cores): the load when this run started says how much
    results: dict = {"machine": describe(load_average_1_min=os.getloadavg()[0]), "feature": None, "banks": {}}
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            rng = random.Random(time.time_ns())
            # 0. warm the server: its first sampling calls for a batch size take seconds each (then ~0.1 s)
            for n in SAMPLES:
                context, page, _ = new_page(browser)
                open_explorer(page, url, n, rng.randrange(1000, 9999))
                page.wait_for_function(
                    "() => window.eveScrubber && window.eveScrubber.ready >= 8", timeout=TIMEOUT_MS, polling=200
                )
                context.close()
            # 1. a session closed mid-bank: does the server stop drawing?
            context, page, _ = new_page(browser)
            seed = rng.randrange(1000, 9999)
            open_explorer(page, url, 16, seed)
            try:
                page.wait_for_function(
                    "() => window.eveScrubber && window.eveScrubber.ready >= 3", timeout=TIMEOUT_MS, polling=200
                )
            except Exception:
                page.screenshot(path=str(Path(tempfile.gettempdir()) / "bench-live-failed.png"), full_page=True)
                print("scrubber:", page.evaluate("() => window.eveScrubber && JSON.stringify(window.eveScrubber)"))
                raise
            ready_at_close = page.evaluate("() => window.eveScrubber.ready")
            context.close()
            time.sleep(1.0)  # the run in flight finishes (one FILL_BUDGET_S of sampling at most)
            cpu0 = cpu_seconds(proc.pid)
            time.sleep(5.0)
            cpu = cpu_seconds(proc.pid) - cpu0
            # a new session on the same bank: the shared cache holds what the closed one drew, and one more
            context, page, _ = new_page(browser)
            open_explorer(page, url, 16, seed)
            page.wait_for_function("() => window.eveScrubber && window.eveScrubber.ready > 0", timeout=TIMEOUT_MS)
            results["disconnect"] = {
                "positions_ready_when_closed": ready_at_close,
                "server_cpu_s_in_5_s_after": round(cpu, 2),
                "positions_cached_for_the_next_session": page.evaluate("() => window.eveScrubber.ready") - 1,
            }
            context.close()
            print("disconnect mid-bank:", results["disconnect"])
            # 2. full banks, then a drag
            for n in SAMPLES:
                context, page, sent = new_page(browser)
                seed = rng.randrange(1000, 9999)
                t0 = open_explorer(page, url, n, seed)
                first_frame(page, n)
                first = time.perf_counter() - t0
                stats = wait_full_bank(page)
                seconds = time.perf_counter() - t0
                settle(page)
                size = bank_bytes(page)
                time.sleep(1.0)
                dragged = drag(page, sent)
                settle(page)
                played = play(page)
                settle(page)
                results["banks"][str(n)] = {
                    "seed": seed,
                    "positions": stats["k"],
                    "first_frame_s": round(first, 2),
                    "full_bank_s": round(seconds, 1),
                    "bank_bytes": size,
                    "bytes_per_frame": round(size / (stats["k"] * n)),
                    "drag": dragged,
                    "play": played,
                }
                results["feature"] = page.locator(".eve-scrubber .feature").inner_text()
                print(f"{n} samples:", results["banks"][str(n)])
                context.close()
            # 3. the defaults, with the bank drawn beforehand (make run's background build)
            context, page, sent = new_page(browser)
            t0 = open_explorer(page, url, 8, 0)
            first_frame(page, 8)
            first = time.perf_counter() - t0
            stats = wait_full_bank(page)
            results["drawn_beforehand"] = {
                "seed": 0,
                "first_frame_s": round(first, 2),
                "full_bank_s": round(time.perf_counter() - t0, 2),
                "positions": stats["k"],
                "draw_bank_s": drawn_s,
            }
            settle(page)
            results["drawn_beforehand"]["drag"] = drag(page, sent, sweeps=2)
            print("drawn beforehand:", results["drawn_beforehand"])
            context.close()
            browser.close()
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    results["frames_per_second"] = min(b["drag"]["frames_per_second"] for b in results["banks"].values())
    results["full_bank_s"] = {n: b["full_bank_s"] for n, b in results["banks"].items()}
    results["first_frame_s"] = {n: b["first_frame_s"] for n, b in results["banks"].items()}
    results["bank_bytes"] = {n: b["bank_bytes"] for n, b in results["banks"].items()}
    results["encoding"] = "WebP, quality 90, grey 8-bit, base64 data URLs in the component's JSON"
    out = ROOT / "benchmarks" / "results" / "live.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: results[k] for k in ("frames_per_second", "first_frame_s", "full_bank_s", "bank_bytes")}))
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
