"""Many users at once: 8 browser sessions open the Feature explorer together, then move its value.

    .venv/bin/python benchmarks/bench_load.py [--sessions 8] [--moves 3] [--client protocol|browser|both]

Starts `streamlit run app.py` on a free localhost port and waits for its health check; one warm-up
session opens the explorer and closes (what a server that has been up a while has done; the server's
memory is read after it: "before"). Then `--sessions` sessions (a context each: a Streamlit session each)
open the explorer at the same moment, each at its own seed (nothing shared), with live scrubbing on as by
default, and each, once drawn, moves the explorer's value `--moves` times to values no session has drawn yet
and back. Printed, and written to `benchmarks/results/load.json`:

* first page: from `goto` to the page fully drawn (no spinner, the script not running), per session;
* a value move, per move: the light client lets go of the scrubber at the next position (the `released`
  trigger a browser sends after a drag or an arrow key, sent as a page run: `ProtocolSession.release`),
  timed from sending it to the end of the page run it starts; meanwhile it runs the scrubber's fill timer as
  a browser does, and the time to each session's full bank is recorded. The Chromium sessions switch live
  scrubbing off after their first page and press the plain slider's arrow keys (with the fill timer on, the
  page's script state no longer tells a move's end);
* light interactions while heavy work runs: the Browse slice slider in one session while another
  computes diffusion scores (the Scores page's button);
* errors: Streamlit exception boxes and page errors in any session;
* the server's resident memory (VmRSS of the streamlit process) before, at the peak, and 20 s after the
  sessions closed;

Two kinds of client: Chromium (`browser`), and a light one (`protocol`) that loads the server as a browser
does without rendering: it GETs every URL the warm-up browser fetched from the server (the page, its scripts,
styles and fonts, six connections at a time), then speaks Streamlit's own protocol over the websocket (the
BackMsg a browser sends to run a page or move a widget, read until the run's script_finished). Eight users'
browsers run on eight machines; here 8 Chromium renderers share the server's 2 cores, and the browser numbers
then measure the browsers too. That the light client loads the server as a browser does is measured in the
same run: the server's CPU seconds for one first page of each (`server_cpu_s_per_first_page`).
"""

from __future__ import annotations

import argparse
import asyncio
import builtins
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from playwright.async_api import TimeoutError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_app import WATCH_JS  # noqa: E402
from benchmarks.bench_live import cpu_seconds  # noqa: E402
from benchmarks.browser import CHROMIUM, CHROMIUM_ARGS, SETTLED_JS, start_server  # noqa: E402
from benchmarks.machine import describe  # noqa: E402

VALUE_SLIDER = " = a"  # the explorer's value slider is labelled "<feature> = a"


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def _settled(page, timeout_ms: int = 600_000) -> None:
    await page.wait_for_selector('[data-testid="stApp"]', timeout=timeout_ms)
    await asyncio.sleep(0.3)
    await page.wait_for_function(SETTLED_JS, timeout=timeout_ms)


async def _errors(page) -> list[str]:
    boxes = page.locator('[data-testid="stException"]')
    return [await boxes.nth(i).inner_text() for i in range(await boxes.count())]


async def _move(page, slider, key: str) -> float:
    t0 = await page.evaluate("performance.now()")
    await slider.focus()
    await page.keyboard.press(key)
    await page.wait_for_function(f"window.__eveDone > {t0}", timeout=120_000)
    await page.wait_for_function(SETTLED_JS, timeout=120_000)
    return (await page.evaluate("window.__eveDone") - t0) / 1000


async def _session(browser, url: str, index: int, moves: int, start: asyncio.Event) -> dict:
    context = await browser.new_context(viewport={"width": 1440, "height": 1400})
    page = await context.new_page()
    page_errors: list[str] = []
    page.on("pageerror", lambda exc: page_errors.append(str(exc)))
    await start.wait()
    t0 = time.perf_counter()
    await page.goto(f"{url}/explorer?seed={index}")  # its own samples: no session rides another's cache
    await _settled(page)
    first = time.perf_counter() - t0
    times = []
    # live scrubbing is on by default; off, the plain slider's moves end with the page's script state
    await page.locator('[data-testid="stMain"] [data-testid="stCheckbox"]').filter(has_text="Live scrubbing").click()
    await _settled(page)
    sliders = page.locator('[data-testid="stSlider"]').filter(has_text=VALUE_SLIDER).locator('input[type="range"]')
    if await sliders.count():
        await page.evaluate(WATCH_JS)
        for key in ["ArrowRight"] * moves + ["ArrowLeft"] * moves:
            try:
                times.append(await _move(page, sliders.first, key))
            except TimeoutError:  # playwright's: a key press that started no rerun within 2 minutes
                page_errors.append(f"{key}: no rerun ended within 120 s")
    found = await _errors(page)
    await context.close()
    return {"first_page_s": first, "move_s": times, "errors": found + page_errors}


class ProtocolSession:
    """One Streamlit session driven over its websocket, as the browser drives it (no rendering)."""

    def __init__(self, url: str):
        self.url = url.replace("http://", "ws://") + "/_stcore/stream"
        self.widgets: dict[str, object] = {}  # label -> the widget's proto, from the last run
        self.errors: list[str] = []
        self.positions: dict[str, int] = {}  # a moved slider's option index
        self.auto_rerun = None  # (interval s, fragment id) of a fragment whose timer the browser would run
        self.scrubber = None  # (component id, fragment id, its last data) of the explorer's live scrubber
        self.lock = asyncio.Lock()  # one run at a time on the websocket, as a browser queues them

    async def __aenter__(self):
        import websockets

        self.ws = await websockets.connect(self.url, subprotocols=["streamlit"], max_size=None)
        return self

    async def __aexit__(self, *exc):
        await self.ws.close()

    async def run(self, page: str, query: str = "", widgets=(), fragment: str = "") -> float:
        """Seconds from sending the rerun (of `fragment` only, as its timer does, if given) to its
        script_finished (a rerun the script asks for included)."""
        async with self.lock:
            return await self._run(page, query, widgets, fragment)

    async def _run(self, page: str, query: str, widgets, fragment: str) -> float:
        from streamlit.proto.BackMsg_pb2 import BackMsg
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        message = BackMsg()
        message.rerun_script.query_string = query
        message.rerun_script.page_name = page
        if fragment:
            message.rerun_script.fragment_id = fragment
            message.rerun_script.is_auto_rerun = True
        for state in widgets:
            message.rerun_script.widget_states.widgets.append(state)
        registered = None  # a fragment timer this run registers
        t0 = time.perf_counter()
        await self.ws.send(message.SerializeToString())
        while True:
            forward = ForwardMsg()
            try:
                forward.ParseFromString(await asyncio.wait_for(self.ws.recv(), RUN_TIMEOUT_S))
            except builtins.TimeoutError:  # (the module's TimeoutError is playwright's)
                self.errors.append(f"no end of the run in {RUN_TIMEOUT_S} s ({'fragment' if fragment else 'page'})")
                return time.perf_counter() - t0
            kind = forward.WhichOneof("type")
            if kind == "delta" and forward.delta.WhichOneof("type") == "new_element":
                element = forward.delta.new_element
                which = element.WhichOneof("type")
                if which == "exception":
                    self.errors.append(element.exception.message)
                elif which == "slider":
                    self.widgets[element.slider.label] = element.slider
                elif which == "checkbox":
                    self.widgets[element.checkbox.label] = element.checkbox
                elif which == "bidi_component":
                    data = json.loads(element.bidi_component.json or "{}")
                    self.scrubber = (element.bidi_component.id, forward.delta.fragment_id, data)
            elif kind == "auto_rerun":
                registered = (forward.auto_rerun.interval, forward.auto_rerun.fragment_id)
            elif (
                kind == "stop_auto_rerun"
                and self.auto_rerun
                and self.auto_rerun[1] in forward.stop_auto_rerun.fragment_ids
            ):
                self.auto_rerun = None
            if kind == "script_finished":
                if forward.script_finished == ForwardMsg.FINISHED_EARLY_FOR_RERUN:
                    registered = None  # the rerun it asked for registers its own timers
                    continue
                if forward.script_finished == ForwardMsg.FINISHED_SUCCESSFULLY:  # a page run: its timers replace all
                    self.auto_rerun = registered
                return time.perf_counter() - t0

    def slider_move(self, label_part: str, step: int):
        """The WidgetState that moves a select-slider `step` options along: the proto draws its position as
        an option index, the browser sends back the option's text (Streamlit's `SelectSliderSerde`)."""
        from streamlit.proto.WidgetStates_pb2 import WidgetState

        slider = next(w for label, w in self.widgets.items() if label_part in label)
        if slider.id not in self.positions:  # where the page drew it first
            self.positions[slider.id] = int((list(slider.value) or list(slider.default) or [0])[0])
        self.positions[slider.id] = min(max(self.positions[slider.id] + step, 0), len(slider.options) - 1)
        state = WidgetState(id=slider.id)
        state.string_array_value.data.append(slider.options[self.positions[slider.id]])
        return state

    def release(self, step: int) -> tuple[list, str]:
        """(the WidgetStates of letting go of the scrubber `step` positions from where it stands, its fragment):
        the component's own (empty) state and the `released` trigger it sends (`components.scrubber`)."""
        from streamlit.components.v2.bidi_component.main import _make_trigger_id
        from streamlit.proto.WidgetStates_pb2 import WidgetState

        component, _fragment, data = self.scrubber
        index = min(max(int(data["index"]) + step, 0), len(data["labels"]) - 1)
        trigger = WidgetState(id=_make_trigger_id(component, "events"))
        trigger.json_trigger_value = json.dumps({"event": "released", "value": index})
        # sent as a page run, not as the fragment's: a browser reruns the fragment, whose id changes when a page
        # run re-registers it (its timer stopped), and a rerun of a stale fragment id is dropped by the server
        # without an answer; the page run does the fragment's work and the page's (the server's cost is >= a
        # browser's), and the component's trigger is read the same way
        return [WidgetState(id=component, json_value="{}"), trigger], ""

    async def follow_timer(self, page: str, query: str, done: asyncio.Event) -> tuple[float | None, int]:
        """Run the scrubber's fill timer as the browser does (its interval after each run) until the page stops
        it (the bank is full) or `done`; (seconds to the full bank or None, fragment runs)."""
        t0, runs = time.perf_counter(), 0
        while self.auto_rerun is not None and not done.is_set():
            interval, fragment = self.auto_rerun
            await asyncio.sleep(interval)
            if done.is_set() or self.auto_rerun is None:
                break
            await self.run(page, query, fragment=fragment)
            runs += 1
        return (time.perf_counter() - t0 if self.auto_rerun is None else None), runs

    def toggle(self, label: str, value: bool):
        """The WidgetState that sets a toggle."""
        from streamlit.proto.WidgetStates_pb2 import WidgetState

        state = WidgetState(id=self.widgets[label].id)
        state.bool_value = value
        return state


def _fetched_by_a_browser(page, url: str) -> list[str]:
    """The server's URLs a page's browser GETs (the page, its scripts, styles, fonts; filled as it loads)."""
    urls: list[str] = []

    def record(request):
        if request.method == "GET" and request.url.startswith(url) and request.resource_type != "websocket":
            urls.append(request.url)

    page.on("request", record)
    return urls


async def _fetch_as_a_browser(assets: list[str], lanes: int = 6) -> None:
    """GET every asset over `lanes` kept-alive connections at a time, as a browser loads a page."""
    import requests

    def lane(urls):
        with requests.Session() as http:
            for asset in urls:
                http.get(asset, timeout=120)  # the body read whole; a 404 too, as the browser got one

    loop = asyncio.get_running_loop()
    await asyncio.gather(*(loop.run_in_executor(_LANES, lane, assets[i::lanes]) for i in range(lanes)))


RUN_TIMEOUT_S = 120  # a run whose end never comes is an error, not a hang
_LANES = ThreadPoolExecutor(max_workers=64)  # every light session's connections at once, as 8 browsers


async def _protocol_session(url: str, index: int, moves: int, start: asyncio.Event, assets: list[str]) -> dict:
    """Open the explorer (live scrubbing on, by default), follow its fill timer as the browser does, and let go of
    the scrubber `moves` positions up and back down; the first page, the moves, the time to the full bank."""
    async with ProtocolSession(url) as session:
        await start.wait()
        query = f"seed={index}"
        t0 = time.perf_counter()
        await _fetch_as_a_browser(assets)  # the page and its bundle come before a browser opens the websocket
        first = time.perf_counter() - t0 + await session.run("explorer", query)
        done = asyncio.Event()
        timer = asyncio.create_task(session.follow_timer("explorer", query, done))
        times = []
        if session.scrubber is None:
            session.errors.append("no live scrubber on the explorer")
        else:
            for step in [1] * moves + [-1] * moves:
                states, fragment = session.release(step)
                times.append(await session.run("explorer", query, states, fragment=fragment))
        finished, _ = await asyncio.wait({timer}, timeout=300)
        if finished:
            full_bank, runs = timer.result()
        else:
            done.set()
            await timer
            full_bank, runs = None, None
            session.errors.append("the bank was not full after 300 s")
        return {
            "first_page_s": first,
            "move_s": times,
            "errors": session.errors,
            "full_bank_s": full_bank,
            "fragment_runs": runs,
        }


async def _server_cpu_per_first_page(browser, url: str, pid: int, assets: list[str]) -> dict:
    """The server's CPU seconds for one explorer first page (a seed no one drew) from each kind of client."""
    out = {}
    before = cpu_seconds(pid)
    page = await (await browser.new_context()).new_page()
    await page.goto(f"{url}/explorer?seed=901")
    await _settled(page)
    await asyncio.sleep(2.0)
    out["browser"] = cpu_seconds(pid) - before
    await page.context.close()
    await asyncio.sleep(2.0)
    before = cpu_seconds(pid)
    async with ProtocolSession(url) as session:
        await _fetch_as_a_browser(assets)
        await session.run("explorer", "seed=902")
        await asyncio.sleep(2.0)
    out["protocol"] = cpu_seconds(pid) - before
    return out


async def _light_while_heavy(browser, url: str) -> dict:
    """Browse slice moves in one session, idle and while another session computes diffusion scores."""
    light = await (await browser.new_context(viewport={"width": 1440, "height": 1400})).new_page()
    await light.goto(f"{url}/browse")
    await _settled(light)
    await light.evaluate(WATCH_JS)
    slider = light.locator('[data-testid="stSlider"]').filter(has_text="axial slice").locator('input[type="range"]')
    idle = [await _move(light, slider.first, "ArrowRight") for _ in range(3)]
    heavy = await (await browser.new_context(viewport={"width": 1440, "height": 1400})).new_page()
    await heavy.goto(f"{url}/scores")
    await _settled(heavy)
    await heavy.get_by_text("Generator-based scores (for scarce data)").first.click()  # the expander holds it
    button = heavy.get_by_role("button", name="Compute generator-based scores")
    await button.first.wait_for(timeout=60_000)
    busy: list[float] = []
    if await button.count():
        await button.first.click()
        await asyncio.sleep(2.0)  # the heavy run has started
        busy = [await _move(light, slider.first, "ArrowRight") for _ in range(3)]
        await _settled(heavy)
    for page in (light, heavy):
        await page.context.close()
    return {"idle_move_s": idle, "move_during_heavy_s": busy}


async def _run(url: str, sessions: int, moves: int, pid: int, client: str) -> dict:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        warm = await (await browser.new_context()).new_page()
        assets = _fetched_by_a_browser(warm, url)
        t0 = time.perf_counter()
        await warm.goto(f"{url}/explorer")
        await _settled(warm)
        warm_up = time.perf_counter() - t0
        await warm.context.close()
        await asyncio.sleep(5)
        before = _rss_mb(pid)
        start = asyncio.Event()
        peak = [before]

        async def watch():
            while not start.is_set() or not done.is_set():
                peak[0] = max(peak[0], _rss_mb(pid))
                await asyncio.sleep(0.5)

        done = asyncio.Event()
        watcher = asyncio.create_task(watch())
        cpu = await _server_cpu_per_first_page(browser, url, pid, assets)
        one = _session if client == "browser" else lambda _, *a: _protocol_session(*a, assets)
        tasks = [asyncio.create_task(one(browser, url, i + 1, moves, start)) for i in range(sessions)]
        await asyncio.sleep(1.0)  # every context and page is open: the gotos start together
        start.set()
        results = await asyncio.gather(*tasks)
        done.set()
        await watcher
        await asyncio.sleep(20)
        after = _rss_mb(pid)
        contention = await _light_while_heavy(browser, url)
        await browser.close()
    firsts = [r["first_page_s"] for r in results]
    moves_s = [m for r in results for m in r["move_s"]]
    errors = [e for r in results for e in r["errors"]]
    return {
        "client": client,
        "assets_per_first_page": len(assets),
        "server_cpu_s_per_first_page": cpu,
        "sessions": sessions,
        "warm_up_first_page_s": warm_up,
        "first_page_s": firsts,
        "first_page_p50_s": statistics.median(firsts),
        "first_page_p90_s": _quantile(firsts, 0.9),
        "move_s": moves_s,
        "move_p50_s": statistics.median(moves_s) if moves_s else None,
        "move_p90_s": _quantile(moves_s, 0.9) if moves_s else None,
        "errors": len(errors),
        "error_texts": errors[:5],
        "memory_mb": {"before": before, "peak": peak[0], "after_close_20s": after},
        "memory_after_over_before": after / before,
        "light_while_heavy": contention,
        **_banks(results),
    }


def _banks(results: list[dict]) -> dict:
    """The light client's fills: every session's time to its full bank (None: not full within the limit)."""
    banks = [r.get("full_bank_s") for r in results if "full_bank_s" in r]
    if not banks:
        return {}
    full = [b for b in banks if b is not None]
    return {
        "live_scrubbing": "on (the default): fills follow the timer, moves let go of the scrubber",
        "full_bank_s": banks,
        "full_bank_p50_s": statistics.median(full) if full else None,
        "full_bank_p90_s": _quantile(full, 0.9) if full else None,
        "fragment_runs": [r.get("fragment_runs") for r in results],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--moves", type=int, default=3, help="value moves each way per session")
    parser.add_argument("--client", choices=("protocol", "browser", "both"), default="both")
    args = parser.parse_args()
    clients = ("protocol", "browser") if args.client == "both" else (args.client,)
    out = ROOT / "benchmarks" / "results" / "load.json"
    results = json.loads(out.read_text()) if out.is_file() else {}  # the other client's last run is kept
    results["machine"] = describe()
    results.pop("live_scrubbing", None)  # the old live-on-demand scenario: live scrubbing is now every session's
    for client in clients:
        results[client] = _serve_and_run(args.sessions, args.moves, client)
    out.write_text(json.dumps(results, indent=2) + "\n")
    for client in clients:
        shown = {k: v for k, v in results[client].items() if k not in ("first_page_s", "move_s")}
        print(json.dumps(shown, indent=2))
    print(f"wrote {out}")


def _serve_and_run(sessions: int, moves: int, client: str) -> dict:
    """A fresh server for one kind of client: start it, run the sessions, stop it."""
    server, url = start_server(open(Path(tempfile.gettempdir()) / f"bench-load-{client}-server.log", "w"))
    try:
        return asyncio.run(_run(url, sessions, moves, server.pid, client))
    finally:
        server.terminate()
        server.wait(20)


if __name__ == "__main__":
    main()
