"""Time to the first page of `make run` on a fresh clone, install included, as a new user meets it.

Clones this repository's HEAD into a temporary folder (no `.venv`, no `data/`), runs `make run` there with
the server on a free local port, and times, from the start of `make run`:

* `setup_done_s`: the virtual environment installed (the line that builds Shapes starts);
* `server_up_s`: the app's health check answers;
* `first_page_s`: the Overview opened in Chromium and fully drawn (its scores and morph included);
* `synthbrain_ready_s` and `banks_done_s`: the background build's end of SynthBrain and of the explorer's
  banks (every feature of both generators), read from the clone's `data/` while the server runs.

    .venv/bin/python benchmarks/bench_first_page.py            # writes benchmarks/results/first_page.json
    .venv/bin/python benchmarks/bench_first_page.py --no-wait  # stop at the first page

The pip install reads the machine's wheel cache and package index as `make run` does on any machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import machine  # noqa: E402
from benchmarks.browser import CHROMIUM, CHROMIUM_ARGS, SETTLED_JS, free_port  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "first_page.json"
BANKS = 16  # explorer banks of both committed generators: 9 SynthBrain features + 7 Shapes features


def _healthy(url: str) -> bool:
    try:
        urllib.request.urlopen(f"{url}/_stcore/health", timeout=1)
        return True
    except OSError:
        return False


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-wait", action="store_true", help="stop at the first page (no background times)")
    parser.add_argument("--limit-s", type=float, default=1800, help="give up on the background build after this")
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="eve-fresh-"))
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(folder)], check=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "STREAMLIT_SERVER_PORT": str(port),
        "STREAMLIT_SERVER_ADDRESS": "127.0.0.1",
        "STREAMLIT_SERVER_HEADLESS": "true",
        "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false",
    }
    env.pop("EVE_DATA_DIR", None)
    env.pop("VIRTUAL_ENV", None)
    marks: dict[str, float] = {}
    t0 = time.monotonic()
    proc = subprocess.Popen(
        ["make", "run"],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    log = []

    def read() -> None:
        for line in proc.stdout:
            log.append(f"{time.monotonic() - t0:7.1f} {line.rstrip()}")
            if "build-data shapes" in line and "setup_done_s" not in marks:
                marks["setup_done_s"] = time.monotonic() - t0

    threading.Thread(target=read, daemon=True).start()
    try:
        while not _healthy(url):
            if proc.poll() is not None:
                raise SystemExit("make run ended before the server answered:\n" + "\n".join(log[-30:]))
            time.sleep(0.5)
        marks["server_up_s"] = time.monotonic() - t0
        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_context(viewport={"width": 1366, "height": 768}).new_page()
            page.set_default_timeout(600_000)
            page.goto(url)
            page.wait_for_selector('[data-testid="stApp"]')
            time.sleep(0.5)
            page.wait_for_function(SETTLED_JS, polling=200)
            marks["first_page_s"] = time.monotonic() - t0
            shot = ROOT / "test-artifacts" / "first-page-fresh-clone.png"
            shot.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(shot))
            marks["first_page_dataset"] = page.get_by_role("radio", checked=True).first.get_attribute("aria-label")
            browser.close()
        while not args.no_wait and time.monotonic() - t0 < args.limit_s:
            data = folder / "data"
            if "synthbrain_ready_s" not in marks and (data / "synthbrain" / "truth.json").is_file():
                marks["synthbrain_ready_s"] = time.monotonic() - t0
            banks = [p for p in (data / ".cache" / "banks").glob("*/*") if not p.name.endswith(".partial")]
            if len(banks) >= BANKS:
                marks["banks_done_s"] = time.monotonic() - t0
                break
            time.sleep(2)
        marks["banks_drawn"] = len(banks) if not args.no_wait else None
        build_log = folder / "data" / "build.log"
        banks_bytes = sum(f.stat().st_size for f in (folder / "data" / ".cache" / "banks").rglob("*") if f.is_file())
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        subprocess.run(["pkill", "-f", f"{folder}/.venv/bin/python -m engine build-data"], check=False)
    result = {
        "machine": machine.describe(load_average_1_min=os.getloadavg()[0]),
        "command": "make run on a fresh clone (git clone of HEAD; no .venv, no data/)",
        **{k: round(v, 1) if isinstance(v, float) else v for k, v in marks.items()},
        "banks_bytes": banks_bytes,
        "make_run_log_tail": log[-12:],
        "build_log_tail": build_log.read_text().splitlines()[-5:] if build_log.is_file() else [],
    }
    print(json.dumps(result, indent=2))
    if not args.no_wait:
        OUT.write_text(json.dumps(result, indent=2) + "\n")
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
