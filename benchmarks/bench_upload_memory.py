"""The server's memory around a large upload (issue 37): does it go back?

    .venv/bin/python benchmarks/bench_upload_memory.py [--n 45] [--views 12] [--after 25] [--expire] [--trim]

Writes a cohort of `--n` copies of Colin27 (Debian's mricron-data, 181 x 217 x 181, 1 mm; each with its
own intensity gain, `bench_cohort_1mm.write_cohort`) with a features.csv (`file`, `gain`), zips it
(stored: the volumes are gzip already; 45 copies ~ 150 MB), starts `streamlit run app.py` on a free port,
and in headless Chromium opens the app, chooses "Your folder", drops the zip on the uploader, then makes
`--views` page views (the sidebar's pages in turn, each until drawn). Printed, and written to
`benchmarks/results/upload_memory.json`: the server's resident memory (VmRSS) on a fresh server (first
page drawn), after the upload, after the views and its peak while they ran (sampled every 0.2 s), with
what Streamlit counts as held (`/_stcore/metrics`: caches, session state, uploads), and `--after` s after the
browser closed; with `--expire`, also once Streamlit has dropped the closed session (it keeps one for
reconnection for 2 minutes, and drops it when a later connection comes: one more page load, 130 s later).
With `--trim`, last, the server runs a full garbage collection, then glibc's `malloc_trim(0)` (SIGUSR1 and
SIGUSR2 handlers installed by a `sitecustomize` on the server's PYTHONPATH): what the collection gives back
was held by reference cycles, what the trim gives back is memory the allocator kept after Python freed it,
what stays is held by live objects (caches, modules, Streamlit's own).

The fresh server has had one warm-up session (closed) that chose "Your folder" and opened every page
without a dataset, so the modules the pages import are loaded before "fresh" is read.

`MALLOC_ARENA_MAX` and the like are passed through from the environment, to compare allocators' settings.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_cohort_1mm import write_cohort  # noqa: E402
from benchmarks.browser import CHROMIUM, CHROMIUM_ARGS, SETTLED_JS, start_server  # noqa: E402
from benchmarks.machine import describe  # noqa: E402

# installed in the server by --trim: SIGUSR1 -> a full garbage collection, SIGUSR2 -> glibc's malloc_trim(0)
TRIM_HOOK = """import ctypes, gc, signal

signal.signal(signal.SIGUSR1, lambda *_: gc.collect())
signal.signal(signal.SIGUSR2, lambda *_: ctypes.CDLL("libc.so.6").malloc_trim(0))
"""
PAGES = ["Overview", "Browse MRIs", "Attribution scores", "Feature explorer (live)", "Compare", "Ground truth"]
TIMEOUT_MS = 300_000


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def live_mb(url: str) -> dict[str, float]:
    """What Streamlit counts as held (its `/_stcore/metrics`, byte families): the st.cache_* entries by
    function, session state, uploaded files; in MB, the sizes of the objects, not of the process."""
    text = urllib.request.urlopen(f"{url}/_stcore/metrics", timeout=60).read().decode()
    held: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name, _, value = line.rpartition(" ")
        family, _, labels = name.partition("{")
        if "bytes" not in family:
            continue
        cache = re.search(r'cache="([^"]*)"', labels)
        key = f"{family}:{cache.group(1).rsplit('.', 1)[-1]}" if cache else family
        held[key] = round(held.get(key, 0.0) + float(value) / 2**20, 1)
    return {k: v for k, v in sorted(held.items()) if v >= 0.1}


def cohort_zip(folder: Path, n: int) -> Path:
    """`folder/colin-cohort.zip`: n gain-scaled copies of Colin27 and their features.csv, in one top folder."""
    cohort = folder / "colin-cohort"
    cohort.mkdir()
    write_cohort(cohort, n)
    path = folder / "colin-cohort.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for file in sorted(cohort.iterdir()):
            archive.write(file, f"colin-cohort/{file.name}")
    return path


def settle(page) -> None:
    page.wait_for_selector('[data-testid="stApp"]')
    time.sleep(0.5)
    page.wait_for_function(SETTLED_JS, timeout=TIMEOUT_MS)
    time.sleep(0.5)


def exceptions(page) -> list[str]:
    boxes = page.locator('[data-testid="stException"]')
    return [boxes.nth(i).inner_text()[:300] for i in range(boxes.count())]


def open_page(page, title: str) -> None:
    page.locator('[data-testid="stSidebar"] [data-testid="stSidebarNav"] a').filter(has_text=title).first.click()
    settle(page)


def warm_up(browser, url: str) -> None:
    """One session that imports what the pages import: "Your folder" (none uploaded), every page once."""
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    settle(page)
    page.locator('[data-testid="stSidebar"] label').filter(has_text="Your folder").click()
    settle(page)
    for title in PAGES:
        open_page(page, title)
    context.close()


def measure(url: str, pid: int, upload: Path, n: int, views: int, after_s: float, expire: bool, trim: bool) -> dict:
    from playwright.sync_api import sync_playwright

    peak = [0.0]
    done = threading.Event()

    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], rss_mb(pid))
            time.sleep(0.2)

    threading.Thread(target=watch, daemon=True).start()
    out: dict = {"upload_mb": round(upload.stat().st_size / 2**20, 1), "volumes": n, "views": views}
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_context(viewport={"width": 1440, "height": 1600}).new_page()
        page.set_default_timeout(TIMEOUT_MS)
        warm_up(browser, url)
        page.goto(url)
        settle(page)
        out["rss_fresh_mb"] = rss_mb(pid)
        out["live_fresh_mb"] = live_mb(url)
        sidebar = page.locator('[data-testid="stSidebar"]')
        sidebar.locator("label").filter(has_text="Your folder").click()
        settle(page)
        t0 = time.perf_counter()
        uploader = sidebar.locator('[data-testid="stFileUploader"]').filter(has_text="features.csv")
        uploader.locator('input[type="file"]').set_input_files(str(upload))
        settle(page)
        page.get_by_text(f"your folder ({n} images)").first.wait_for()
        out["upload_s"] = round(time.perf_counter() - t0, 1)
        out["rss_after_upload_mb"] = rss_mb(pid)
        errors += exceptions(page)
        peak[0] = 0.0  # from here: the peak while the views run
        for i in range(views):
            title = PAGES[i % len(PAGES)]
            open_page(page, title)
            errors += [f"{title}: {e}" for e in exceptions(page)]
        out["rss_after_views_mb"] = rss_mb(pid)
        out["rss_peak_during_views_mb"] = peak[0]
        out["live_after_views_mb"] = live_mb(url)
        browser.close()
    time.sleep(after_s)
    out[f"rss_{after_s:g}s_after_close_mb"] = rss_mb(pid)
    out[f"live_{after_s:g}s_after_close_mb"] = live_mb(url)
    if expire:
        time.sleep(max(0.0, 130 - after_s))  # past Streamlit's 2-minute hold of a closed session
        with sync_playwright() as p:  # a later connection: Streamlit then drops the expired session
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page()
            page.goto(url)
            settle(page)
            browser.close()
        time.sleep(5)
        out["rss_after_session_expired_mb"] = rss_mb(pid)
        out["live_after_session_expired_mb"] = live_mb(url)
    if trim:
        os.kill(pid, signal.SIGUSR1)
        time.sleep(5)
        out["rss_after_gc_mb"] = rss_mb(pid)
        os.kill(pid, signal.SIGUSR2)
        time.sleep(5)
        out["rss_after_gc_and_malloc_trim_mb"] = rss_mb(pid)
    done.set()
    out["growth_from_fresh_mb"] = round(out["rss_after_views_mb"] - out["rss_fresh_mb"], 1)
    out["growth_after_upload_mb"] = round(out["rss_after_views_mb"] - out["rss_after_upload_mb"], 1)
    out["errors"] = errors
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=45, help="volumes in the uploaded cohort (45: ~150 MB)")
    parser.add_argument("--views", type=int, default=12, help="page views after the upload")
    parser.add_argument("--after", type=float, default=25, help="seconds to wait after the browser closes")
    parser.add_argument("--expire", action="store_true", help="also measure once the closed session is dropped")
    parser.add_argument("--trim", action="store_true", help="last, gc + malloc_trim(0) in the server, and measure")
    parser.add_argument("--label", default="", help="a name for this run in the results file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        upload = cohort_zip(Path(tmp), args.n)
        if args.trim:
            (Path(tmp) / "sitecustomize.py").write_text(TRIM_HOOK)
            os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [tmp, os.environ.get("PYTHONPATH")]))
        log = open(Path(tmp) / "streamlit.log", "w")  # noqa: SIM115 (closed below)
        proc, url = start_server(log)
        try:
            result = measure(url, proc.pid, upload, args.n, args.views, args.after, args.expire, args.trim)
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()
    result["env"] = {k: v for k, v in os.environ.items() if k.startswith(("MALLOC_", "EVE_UPLOAD"))}
    result["machine"] = describe()
    print(json.dumps(result, indent=2))
    out = ROOT / "benchmarks" / "results" / "upload_memory.json"
    runs = json.loads(out.read_text()) if out.is_file() else {}
    runs[args.label or "latest"] = result
    out.write_text(json.dumps(runs, indent=2) + "\n")


if __name__ == "__main__":
    main()
