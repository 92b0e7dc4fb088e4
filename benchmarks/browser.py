"""How the browser tests and benchmarks run Eve: `streamlit run app.py` on a free localhost port, Debian's
headless Chromium with the flags this machine needs, and the test for "the page has finished drawing"."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
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
# the script run has finished and nothing is still loading
SETTLED_JS = """() => {
    const app = document.querySelector('[data-testid="stApp"]');
    return app && app.getAttribute('data-test-script-state') === 'notRunning'
        && !document.querySelector(
            '[data-testid="stSpinner"], [data-testid="stSkeleton"], [data-testid="stAppSkeleton"]');
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_server(port: int, log=subprocess.DEVNULL) -> subprocess.Popen:
    """`streamlit run app.py` on 127.0.0.1:`port`, its output to `log`; returns at once."""
    return subprocess.Popen(
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
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def wait_until_healthy(proc: subprocess.Popen, url: str, timeout_s: float = 60, poll_s: float = 0.3) -> None:
    """Until the server's health check answers; kills it and raises RuntimeError after `timeout_s`."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"{url}/_stcore/health", timeout=1)
            return
        except OSError:
            time.sleep(poll_s)
    proc.kill()
    raise RuntimeError(f"streamlit did not start within {timeout_s:g} s")


def start_server(log=subprocess.DEVNULL) -> tuple[subprocess.Popen, str]:
    """A server on a free port, once it answers its health check: (process, url)."""
    port = free_port()
    proc = launch_server(port, log)
    url = f"http://127.0.0.1:{port}"
    wait_until_healthy(proc, url)
    return proc, url
