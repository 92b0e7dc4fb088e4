"""Many users with real-size cohorts (issue 37, part 3): concurrent sessions each upload a ~150 MB zip, then browse.

Full scenario (8 sessions x 45 volumes, both scenarios; about 30 minutes on this 2-core machine), its results
written into `benchmarks/results/load.json` under "uploads" (the file's other keys are left as they are):

    .venv/bin/python benchmarks/bench_load_uploads.py --trim

A tiny check (a few minutes; a configuration smaller than 8 sessions x 30 volumes is written to
/tmp/bench_load_uploads.json unless `--out` names a file, never to the results file):

    .venv/bin/python benchmarks/bench_load_uploads.py --sessions 2 --volumes 3 --views 4 --no-expire

Options: `--scenario own|same|both` (both), `--sessions` (8), `--volumes` in each cohort (45: ~150 MB), `--views`
page views per session after its upload (12), `--pages` they cycle through ("Browse MRIs,Attribution scores,
Compare,Overview"), `--model` (synthbrain-diagnosis), `--warm-volumes` (2), `--after` seconds to wait after the
sessions close (25), `--no-expire` (skip waiting for Streamlit to drop the closed sessions), `--trim` (last, a gc
and glibc's malloc_trim in the server), `--keep DIR` (write the cohort zips there and reuse them in later runs),
`--timeout` seconds one step (an upload, a page view) may take (900), `--out FILE`. Progress goes to stderr.

Each scenario has a fresh `streamlit run app.py` on a free localhost port with its own, empty upload root
(`EVE_UPLOAD_ROOT`), and one headless Chromium (`benchmarks/browser.py`'s executable and flags):

1. Warm-up, one session, closed: "Your folder", every page without a dataset (what `bench_upload_memory.py`'s
   warm-up does; the server's RSS after it is "fresh"), then a small cohort (`--warm-volumes`, 2) uploaded and
   every page again, so the modules, models and caches the pages load once per server are loaded before
   "before" (the server's RSS 5 s after the warm-up closed) is read.
2. `--sessions` browser contexts (a Streamlit session each) open the app at the same moment; each chooses "Your
   folder" in the sidebar and drops a zip on the uploader, and waits until the sidebar says "your folder (N
   images)", then chooses the built-in model `--model` (synthbrain-diagnosis; '' keeps the folder's default, the
   user's own model, none uploaded: the pages then run no model, as in `bench_upload_memory.py`) in the sidebar, so
   the Attribution scores page runs it over every volume. Scenario "own": each session its own cohort
   (`bench_cohort_1mm.write_cohort`: copies of Colin27 at 1 mm, each with its own intensity gain, from the
   session's own seed, so no two cohorts are alike); "same": every session the same zip, which the store must
   keep once on disk (a folder per distinct upload, named by its digest).
3. When every session's upload has loaded (the server's RSS then: "after_uploads"), each makes `--views` page
   views (clicking the sidebar's pages in turn; a view's time is from the click to the end of the last script
   run it caused, read from the server's `script_finished` message on the page's websocket, then the page fully
   drawn), all sessions at once.
4. The contexts stay open until every session is done ("all_done_open"), then all close: the server's RSS 2 s
   after ("after_close") and `--after` s after; then, unless `--no-expire`, once Streamlit has dropped the
   closed sessions (it keeps a closed session 2 minutes for reconnection, and drops the expired ones when a
   later connection comes: one more page load 130 s after the close, RSS read 40 s after it, once the
   server's housekeeping thread (`components/housekeeping.py`) has had its look). With `--trim`, last, a full
   garbage collection and then `malloc_trim(0)` in the server (`bench_upload_memory.TRIM_HOOK`):
   what each gives back was held by reference cycles / kept by the allocator; what stays is live objects.

The server's VmRSS is sampled every 0.2 s from before the sessions open until the end (peak, the peak during
the uploads, and a timeline of 5-s maxima), and at each session's upload completion. Also recorded: what
Streamlit counts as held (`/_stcore/metrics`: caches, uploaded files in memory) at each point, upload and
page-view times (p50/p90, per page), errors (Streamlit exception boxes, upload error messages, page errors,
timeouts), the upload folders the sessions added under the upload root and their bytes on disk (the volumes
and features.csv, and the `.eve_cache/` the engine writes beside them), and the server's CPU seconds.
Per-session growth: (after_uploads - before) / sessions and (all_done_open - before) / sessions.
`after_over_before`: the last RSS read before `--trim` (after the sessions expired, or `--after` s after the
close) over "before"; `within_10pct`: whether it is at most 1.10.

`MALLOC_ARENA_MAX` and the like are passed through from the environment to the server (recorded under "env").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_cohort_1mm import write_cohort  # noqa: E402
from benchmarks.bench_live import cpu_seconds  # noqa: E402
from benchmarks.bench_upload_memory import TRIM_HOOK, live_mb  # noqa: E402
from benchmarks.browser import CHROMIUM, CHROMIUM_ARGS, SETTLED_JS, start_server  # noqa: E402
from benchmarks.machine import describe  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "load.json"
TINY_OUT = Path("/tmp/bench_load_uploads.json")
KEY = "uploads"
EXPIRED_WAIT_S = 40  # after the expired sessions are dropped: components.housekeeping.CHECK_S (30 s) and a margin
PAGES = ["Browse MRIs", "Attribution scores", "Compare", "Overview"]  # after the upload the app is on Overview
ALL_PAGES = ["Overview", "Browse MRIs", "Attribution scores", "Feature explorer (live)", "Compare", "Ground truth"]
NAV = '[data-testid="stSidebar"] [data-testid="stSidebarNav"] a'
MODEL = "synthbrain-diagnosis"  # the built-in model chosen for the uploaded folders (2D axial slices, 64 px)
WARM_SEED, OWN_SEED = 999, 1000  # cohort seeds: the warm-up's, and session i's own is OWN_SEED + i
# the upload has loaded (the sidebar names the folder and its size) or the sidebar shows an error
LOADED_JS = """(text) => document.body.innerText.includes(text)
    || !!document.querySelector('[data-testid="stSidebar"] [data-testid="stAlertContentError"]')"""


TIMEOUT_MS = 900_000  # `--timeout`: 8 sessions on 2 cores: an upload or a first scores page can wait its turn long
T0 = time.perf_counter()


def log(message: str) -> None:
    """Progress on stderr (the results go to stdout and the results file)."""
    print(f"[{time.perf_counter() - T0:7.1f} s] {message}", file=sys.stderr, flush=True)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError("no VmRSS")


def quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))], 2)


# -- the cohorts -------------------------------------------------------------------------------------------


def cohort_zip(where: Path, n: int, seed: int) -> Path:
    """`where/cohort-<seed>-<n>.zip` (stored: the volumes are gzip already), one top folder; reused if there."""
    name = f"cohort-{seed}-{n}"
    path = where / f"{name}.zip"
    if path.is_file():
        return path
    with tempfile.TemporaryDirectory(dir=where) as tmp:
        folder = Path(tmp) / name
        folder.mkdir()
        write_cohort(folder, n, seed)
        partial = where / f"{name}.zip.partial"
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_STORED) as archive:
            for file in sorted(folder.iterdir()):
                archive.write(file, f"{name}/{file.name}")
        partial.rename(path)
    return path


# -- what the server holds ------------------------------------------------------------------------------------


class Sampler:
    """The server's VmRSS every `every_s` in a thread (the event loop's stalls do not delay it)."""

    def __init__(self, pid: int, every_s: float = 0.2):
        self.pid, self.every_s, self.t0 = pid, every_s, time.perf_counter()
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError, RuntimeError):
                self.samples.append((time.perf_counter() - self.t0, rss_mb(self.pid)))
            time.sleep(self.every_s)

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def now(self) -> float:
        return time.perf_counter() - self.t0

    def peak(self, start: float = 0.0, end: float = float("inf")) -> float | None:
        window = [mb for t, mb in self.samples if start <= t <= end]
        return max(window) if window else None

    def timeline(self, bin_s: float = 5.0) -> list[list[float]]:
        """[t, the largest RSS in the bin] per `bin_s` bin."""
        bins: dict[int, float] = {}
        for t, mb in self.samples:
            bins[int(t // bin_s)] = max(bins.get(int(t // bin_s), 0.0), mb)
        return [[round(k * bin_s, 1), mb] for k, mb in sorted(bins.items())]


def units(root: Path) -> set[Path]:
    """The store's finished upload folders (`UploadStore.units`: no `.partial` one)."""
    if not root.is_dir():
        return set()
    return {p for p in root.iterdir() if p.is_dir() and not p.name.endswith(".partial")}


def disk(folders: set[Path]) -> dict:
    """Bytes under `folders`: the upload's own files, and the `.eve_cache/` the engine wrote beside them."""
    data = cache = 0
    for folder in folders:
        for parent, _dirs, files in os.walk(folder):
            for name in files:
                with contextlib.suppress(OSError):
                    size = os.lstat(os.path.join(parent, name)).st_size
                    if ".eve_cache" in Path(parent).relative_to(folder).parts:
                        cache += size
                    else:
                        data += size
    return {"folders": len(folders), "upload_mb": round(data / 2**20, 1), "eve_cache_mb": round(cache / 2**20, 1)}


def held(url: str) -> dict[str, float]:
    """`live_mb`, or the reason it could not be read (the metrics endpoint busy past its timeout)."""
    try:
        return live_mb(url)
    except OSError as exc:
        return {"unreadable": str(exc)[:100]}


# -- the sessions ------------------------------------------------------------------------------------------


class Runs:
    """When a page's script runs end: the server's ForwardMsg `script_finished` on the page's websocket, read as the
    browser receives it (a run's end on the page itself, `data-test-script-state`, is not seen when a fast run
    starts and ends within one React commit)."""

    def __init__(self, page):
        self.ends: list[tuple[float, int]] = []  # (perf_counter, ScriptFinishedStatus)
        page.on("websocket", self._socket)

    def _socket(self, socket) -> None:
        if socket.url.endswith("/_stcore/stream"):
            socket.on("framereceived", self._frame)

    def _frame(self, payload) -> None:
        from google.protobuf.message import DecodeError
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        if isinstance(payload, str) or len(payload) > 1024:  # a script_finished message is a few bytes
            return
        message = ForwardMsg()
        try:
            message.ParseFromString(payload)
        except DecodeError:
            return
        if message.WhichOneof("type") == "script_finished":
            self.ends.append((time.perf_counter(), message.script_finished))

    async def ended_after(self, t0: float, timeout_s: float) -> float:
        """Until a run that was not cut short for a rerun has ended after `t0`; the time it ended."""
        deadline = time.perf_counter() + timeout_s
        while time.perf_counter() < deadline:
            ends = [t for t, status in self.ends if t > t0 and status != FINISHED_EARLY_FOR_RERUN]
            if ends:
                return ends[0]
            await asyncio.sleep(0.05)
        raise TimeoutError(f"no script run ended within {timeout_s:g} s")


FINISHED_EARLY_FOR_RERUN = 2  # ForwardMsg.ScriptFinishedStatus


async def settled(page) -> None:
    await page.wait_for_selector('[data-testid="stApp"]', timeout=TIMEOUT_MS)
    await asyncio.sleep(0.5)
    await page.wait_for_function(SETTLED_JS, timeout=TIMEOUT_MS, polling=100)


async def exceptions(page) -> list[str]:
    """The texts of the page's exception boxes (a box without text: its HTML)."""
    boxes = page.locator('[data-testid="stException"]')
    found = []
    for i in range(await boxes.count()):
        box = boxes.nth(i)
        text = (await box.inner_text()).strip() or (
            await box.text_content() or ""
        ).strip()  # a folded box: no inner text
        found.append(text[:600] or (await box.inner_html())[:300])
    return found


async def choose_your_folder(page) -> None:
    await page.locator('[data-testid="stSidebar"] label').filter(has_text="Your folder").click()
    await settled(page)


async def upload(page, zip_path: Path, n: int) -> None:
    """Drop the zip on the dataset uploader; until the sidebar says the folder loaded (raises its error if not)."""
    sidebar = page.locator('[data-testid="stSidebar"]')
    uploader = sidebar.locator('[data-testid="stFileUploader"]').filter(has_text="features.csv")
    await uploader.locator('input[type="file"]').set_input_files(str(zip_path))
    loaded = f"your folder ({n} images)"
    await page.wait_for_function(LOADED_JS, arg=loaded, timeout=TIMEOUT_MS, polling=250)
    await settled(page)
    if loaded not in await page.locator("body").inner_text():
        alerts = sidebar.locator('[data-testid="stAlertContentError"]')
        raise RuntimeError(f"upload refused: {(await alerts.first.inner_text())[:300] if await alerts.count() else ''}")


async def view(page, runs: Runs, title: str) -> float:
    """Click the sidebar's page `title`: seconds to the end of the last script run it caused, the page drawn."""
    t0 = time.perf_counter()
    await page.locator(NAV).filter(has_text=title).first.click()
    await runs.ended_after(t0, TIMEOUT_MS / 1000)
    await page.wait_for_function(SETTLED_JS, timeout=TIMEOUT_MS, polling=100)
    return max(t for t, status in runs.ends if status != FINISHED_EARLY_FOR_RERUN) - t0


async def choose_model(page, name: str) -> None:
    """Choose the built-in model `name` in the sidebar's Model box (a folder's default is the user's own model)."""
    label = page.locator('[data-testid="stWidgetLabel"]').filter(has_text=re.compile(r"^\s*Model\s*$"))
    box = page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').filter(has=label)
    await box.first.click()
    await page.get_by_role("option", name=re.compile(rf"^{re.escape(name)} · ")).first.click()
    await settled(page)


async def warm_up(browser, url: str, pid: int, zip_path: Path | None, n: int, model: str) -> float:
    """bench_upload_memory's warm-up (every page, no dataset), then, with `zip_path`, the same with it
    uploaded (and `model` chosen); closed. Returns the server's RSS after the first part ("fresh")."""
    context = await browser.new_context(viewport={"width": 1440, "height": 1600})
    page = await context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    runs = Runs(page)
    await page.goto(url)
    await settled(page)
    await choose_your_folder(page)
    for title in ALL_PAGES[1:] + ALL_PAGES[:1]:
        await view(page, runs, title)
    fresh = rss_mb(pid)
    if zip_path is not None:
        await upload(page, zip_path, n)
        if model:
            await choose_model(page, model)
        for title in ALL_PAGES[1:] + ALL_PAGES[:1]:
            await view(page, runs, title)
    errors = await exceptions(page)
    await context.close()
    if errors:
        log(f"warm-up: {len(errors)} exception boxes: {errors[0][:200]}")
    return fresh


async def session(
    index: int,
    page,
    url: str,
    zip_path: Path,
    n: int,
    args: argparse.Namespace,
    sampler: Sampler,
    uploaded,
    all_uploaded: asyncio.Event,
) -> dict:
    """One user: open the app, upload (and choose the model), wait for everyone's upload (`uploaded()` says this
    one is done), browse."""
    out: dict = {"upload_s": None, "views": [], "errors": []}
    page_errors: list[str] = []
    page.on("pageerror", lambda exc: page_errors.append(f"page error: {str(exc)[:300]}"))
    runs = Runs(page)
    ok = False
    try:
        await page.goto(url)
        await settled(page)
        await choose_your_folder(page)
        t0 = time.perf_counter()
        await upload(page, zip_path, n)
        out["upload_s"] = round(time.perf_counter() - t0, 2)
        out["upload_done_at_s"] = round(sampler.now(), 1)
        out["rss_at_upload_done_mb"] = rss_mb(sampler.pid)
        log(f"session {index}: uploaded in {out['upload_s']:.1f} s, server RSS {out['rss_at_upload_done_mb']:.0f} MB")
        if args.model:
            await choose_model(page, args.model)
        out["errors"] += [f"upload: {e}" for e in await exceptions(page)]
        ok = True
    except Exception as exc:  # noqa: BLE001 (a timeout or a refusal: recorded, the other sessions go on)
        out["errors"].append(f"upload: {type(exc).__name__}: {str(exc)[:300]}")
        log(f"session {index}: {out['errors'][-1]}")
    finally:
        uploaded()
    await all_uploaded.wait()
    if ok:
        for i in range(args.views):
            title = args.pages[i % len(args.pages)]
            try:
                out["views"].append((title, round(await view(page, runs, title), 2)))
            except Exception as exc:  # noqa: BLE001
                out["errors"].append(f"{title}: {type(exc).__name__}: {str(exc)[:300]}")
                log(f"session {index}: {out['errors'][-1]}")
                continue
            out["errors"] += [f"{title}: {e}" for e in await exceptions(page)]
        log(f"session {index}: {len(out['views'])} views done, server RSS {rss_mb(sampler.pid):.0f} MB")
    out["errors"] += page_errors
    return out


async def drive(
    url: str, pid: int, root: Path, zips: list[Path], n: int, warm: Path | None, args: argparse.Namespace
) -> dict:
    from playwright.async_api import async_playwright

    sessions = len(zips)
    rss: dict[str, float | None] = {}
    streamlit_held: dict[str, dict] = {}
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        rss["fresh"] = await warm_up(browser, url, pid, warm, args.warm_volumes, args.model)
        await asyncio.sleep(5)
        rss["before"] = rss_mb(pid)
        log(f"warm-up done: server RSS fresh {rss['fresh']:.0f} MB, before {rss['before']:.0f} MB")
        streamlit_held["before"] = held(url)
        units_before = units(root)
        cpu0 = cpu_seconds(pid)
        sampler = Sampler(pid).start()
        contexts = [await browser.new_context(viewport={"width": 1440, "height": 1600}) for _ in range(sessions)]
        pages = [await context.new_page() for context in contexts]
        for page in pages:
            page.set_default_timeout(TIMEOUT_MS)
        all_uploaded = asyncio.Event()
        count = [0]
        rss_t = {"start": sampler.now()}

        def uploaded() -> None:
            count[0] += 1
            if count[0] == sessions:
                rss["after_uploads"] = rss_mb(pid)
                rss_t["uploads_done"] = sampler.now()
                all_uploaded.set()

        results = await asyncio.gather(
            *(
                session(i, page, url, zip_path, n, args, sampler, uploaded, all_uploaded)
                for i, (page, zip_path) in enumerate(zip(pages, zips, strict=True))
            )
        )
        rss["all_done_open"] = rss_mb(pid)
        streamlit_held["all_done_open"] = held(url)
        disk_open = disk(units(root) - units_before)
        await asyncio.gather(*(context.close() for context in contexts))
        closed = time.perf_counter()
        await asyncio.sleep(2)
        rss["after_close"] = rss_mb(pid)
        await asyncio.sleep(max(0.0, args.after - 2))
        rss[f"after_close_{args.after:g}s"] = rss_mb(pid)
        log(
            f"sessions closed: server RSS {rss['after_close']:.0f} MB, {args.after:g} s after "
            f"{rss[f'after_close_{args.after:g}s']:.0f} MB"
        )
        streamlit_held[f"after_close_{args.after:g}s"] = held(url)
        last = f"after_close_{args.after:g}s"
        if args.expire:
            await asyncio.sleep(max(0.0, 130 - (time.perf_counter() - closed)))  # past Streamlit's 2-minute hold
            context = await browser.new_context()  # a later connection: Streamlit drops the expired sessions
            page = await context.new_page()
            await page.goto(url)
            await settled(page)
            await context.close()
            await asyncio.sleep(EXPIRED_WAIT_S)  # the server's housekeeping collects within CHECK_S of the drop
            rss["after_sessions_expired"] = rss_mb(pid)
            log(f"closed sessions dropped: server RSS {rss['after_sessions_expired']:.0f} MB")
            streamlit_held["after_sessions_expired"] = held(url)
            last = "after_sessions_expired"
        await browser.close()
    if args.trim:
        os.kill(pid, signal.SIGUSR1)
        await asyncio.sleep(5)
        rss["after_gc"] = rss_mb(pid)
        os.kill(pid, signal.SIGUSR2)
        await asyncio.sleep(5)
        rss["after_gc_and_malloc_trim"] = rss_mb(pid)
    sampler.stop()
    cpu = cpu_seconds(pid) - cpu0
    rss["peak"] = sampler.peak()
    rss["peak_during_uploads"] = sampler.peak(rss_t["start"], rss_t.get("uploads_done", float("inf")))
    at_upload = sorted((r["upload_done_at_s"], r["rss_at_upload_done_mb"]) for r in results if "upload_done_at_s" in r)
    views_s = [s for r in results for _, s in r["views"]]
    by_page: dict[str, list[float]] = {}
    for r in results:
        for title, s in r["views"]:
            by_page.setdefault(title, []).append(s)
    errors = [e for r in results for e in r["errors"]]
    uploads_s = [r["upload_s"] for r in results if r["upload_s"] is not None]
    before = rss["before"]
    after = rss[last]
    return {
        "sessions": sessions,
        "volumes": n,
        "upload_mb": round(zips[0].stat().st_size / 2**20, 1),
        "distinct_uploads": len(set(zips)),
        "views_per_session": args.views,
        "pages": args.pages,
        "model": args.model or None,
        "rss_mb": rss,
        "growth_per_session_mb": {
            "uploads": round((rss["after_uploads"] - before) / sessions, 1) if "after_uploads" in rss else None,
            "uploads_and_views": round((rss["all_done_open"] - before) / sessions, 1),
        },
        "rss_at_each_upload_done_mb": [[round(t - rss_t["start"], 1), mb] for t, mb in at_upload],
        "after_over_before": {"point": last, "ratio": round(after / before, 3), "within_10pct": after <= 1.10 * before},
        "held_by_streamlit_mb": streamlit_held,
        "disk_added_by_the_sessions": {"with_sessions_open": disk_open, "at_end": disk(units(root) - units_before)},
        "upload_s": uploads_s,
        "upload_p50_s": quantile(uploads_s, 0.5),
        "upload_p90_s": quantile(uploads_s, 0.9),
        "page_views": len(views_s),
        "view_p50_s": quantile(views_s, 0.5),
        "view_p90_s": quantile(views_s, 0.9),
        "view_s_by_page": {
            title: {"n": len(s), "p50": quantile(s, 0.5), "p90": quantile(s, 0.9), "max": round(max(s), 2)}
            for title, s in by_page.items()
        },
        "errors": len(errors),
        "error_texts": errors[:8],
        "server_cpu_s": round(cpu, 1),
        "sessions_wall_s": round(closed - sampler.t0, 1),
        "rss_timeline_mb": sampler.timeline(),
    }


# -- a scenario on its own server ------------------------------------------------------------------------------


@contextlib.contextmanager
def environment(**values: str):
    """os.environ with `values` while the block runs (the server started in it inherits them)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def scenario(name: str, zips: list[Path], n: int, warm: Path | None, work: Path, args: argparse.Namespace) -> dict:
    root = work / f"uploads-{name}"
    shutil.rmtree(root, ignore_errors=True)
    env = {"EVE_UPLOAD_ROOT": str(root)}
    if args.trim:
        hook = work / "trim-hook"
        hook.mkdir(exist_ok=True)
        (hook / "sitecustomize.py").write_text(TRIM_HOOK)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")]))
    t0 = time.perf_counter()
    with open(work / f"streamlit-{name}.log", "w") as log, environment(**env):
        proc, url = start_server(log)
        try:
            result = asyncio.run(drive(url, proc.pid, root, zips, n, warm, args))
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
    result["scenario_wall_s"] = round(time.perf_counter() - t0, 1)
    if result["errors"]:  # the server's log, with the tracebacks, outlives the temporary folder
        kept = Path(tempfile.gettempdir()) / f"bench-load-uploads-{name}.log"
        shutil.copy(work / f"streamlit-{name}.log", kept)
        result["server_log"] = str(kept)
    shutil.rmtree(root, ignore_errors=True)
    return result


def summary(name: str, r: dict) -> str:
    rss = r["rss_mb"]
    lines = [
        f"{name}: {r['sessions']} sessions x {r['upload_mb']} MB ({r['volumes']} volumes, "
        f"{r['distinct_uploads']} distinct), {r['views_per_session']} views each, {r['scenario_wall_s']:.0f} s",
        "  RSS MB: " + ", ".join(f"{k} {v:.0f}" for k, v in rss.items() if v is not None),
        f"  growth per session: {r['growth_per_session_mb']}; after/before: {r['after_over_before']}",
        f"  disk added: {r['disk_added_by_the_sessions']['at_end']}",
        f"  upload p50/p90 {r['upload_p50_s']}/{r['upload_p90_s']} s; view p50/p90 {r['view_p50_s']}/"
        f"{r['view_p90_s']} s over {r['page_views']} views; errors {r['errors']}",
    ]
    return "\n".join(lines)


def main() -> None:
    global TIMEOUT_MS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=("own", "same", "both"), default="both")
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--volumes", type=int, default=45, help="volumes in each cohort (45: ~150 MB)")
    parser.add_argument("--views", type=int, default=12, help="page views per session after its upload")
    parser.add_argument("--pages", type=lambda s: [p.strip() for p in s.split(",")], default=PAGES)
    parser.add_argument("--model", default=MODEL, help="built-in model chosen after the upload ('': none)")
    parser.add_argument("--timeout", type=float, default=TIMEOUT_MS / 1000, help="seconds one step may wait")
    parser.add_argument("--warm-volumes", type=int, default=2, help="the warm-up's upload (0: none)")
    parser.add_argument("--after", type=float, default=25, help="seconds to wait after the sessions close")
    parser.add_argument("--no-expire", dest="expire", action="store_false", help="skip the 130 s wait")
    parser.add_argument("--trim", action="store_true", help="last, gc + malloc_trim(0) in the server, and measure")
    parser.add_argument("--keep", type=Path, help="write the cohort zips here, and reuse them in later runs")
    parser.add_argument("--out", type=Path, help=f"results file (default: {RESULTS}, or {TINY_OUT} for a tiny run)")
    args = parser.parse_args()
    TIMEOUT_MS = int(args.timeout * 1000)
    full = args.sessions >= 8 and args.volumes >= 30
    out = args.out or (RESULTS if full else TINY_OUT)
    names = ("own", "same") if args.scenario == "both" else (args.scenario,)
    with tempfile.TemporaryDirectory(prefix="bench-load-uploads-") as tmp:
        work = Path(tmp)
        where = args.keep or work
        where.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        own = [cohort_zip(where, args.volumes, OWN_SEED + i) for i in range(args.sessions if "own" in names else 1)]
        warm = cohort_zip(where, args.warm_volumes, WARM_SEED) if args.warm_volumes else None
        log(f"cohorts ready in {time.perf_counter() - t0:.0f} s")
        zips = {"own": own, "same": [own[0]] * args.sessions}
        results = {}
        for name in names:
            log(f"scenario {name}: a fresh server")
            results[name] = scenario(name, zips[name], args.volumes, warm, work, args)
            print(summary(name, results[name]), flush=True)
    stored = json.loads(out.read_text()) if out.is_file() else {}
    section = stored.get(KEY, {})
    section.update(results)  # a scenario not run this time keeps its last results
    section["machine"] = describe()
    section["env"] = {k: v for k, v in os.environ.items() if k.startswith(("MALLOC_", "EVE_UPLOAD"))}
    section["command"] = " ".join(["benchmarks/bench_load_uploads.py", *sys.argv[1:]])
    stored[KEY] = section
    out.write_text(json.dumps(stored, indent=2) + "\n")
    print(f"wrote {out} [{KEY!r}]")


if __name__ == "__main__":
    main()
