"""Memory goes back when sessions end: a full garbage collection each time Streamlit drops sessions.

A session's objects (its state, its uploaded files, the script runner) form reference cycles, so they are freed
only by a full collection, and `runner.postScriptGC` is off (a collection after every run held the GIL 0.25 s).
Python's own schedule runs a full collection rarely in a process this large: after 8 sessions had each uploaded
a 150 MB cohort and been dropped, the server still held 2.0 GB against 1.0 GB before them, and 1.0 GB after one
`gc.collect()` (`benchmarks/bench_load_uploads.py`). So a thread of the server's own looks every `CHECK_S`
seconds at how many sessions Streamlit holds, and collects when the number has fallen.
"""

from __future__ import annotations

import gc
import threading

CHECK_S = 30.0  # how often the thread looks (a collection costs ~0.25 s of the GIL, only when sessions ended)

_started = threading.Event()
_start_lock = threading.Lock()


def sessions() -> int | None:
    """How many sessions the server holds (connected or kept for reconnection); None outside a server."""
    from streamlit import runtime

    if not runtime.exists():
        return None
    manager = getattr(runtime.get_instance(), "_session_mgr", None)  # Streamlit has no public count of its sessions
    count = getattr(manager, "num_sessions", None)  # (AppTest's stand-in runtime has no manager)
    return None if count is None else int(count())


def collect_when_sessions_end(check_s: float = CHECK_S, stop: threading.Event | None = None) -> int:
    """Every `check_s`, a full collection when the server holds fewer sessions than at the last look; runs until
    `stop` is set (forever in the server). Returns the collections made."""
    stop = stop or threading.Event()
    last, collections = sessions(), 0
    while not stop.wait(check_s):
        now = sessions()
        if now is not None and last is not None and now < last:
            gc.collect()
            collections += 1
        last = now
    return collections


def start() -> None:
    """Start the thread once per server process (every run calls this; the first starts it)."""
    if _started.is_set():
        return
    with _start_lock:
        if not _started.is_set() and sessions() is not None:
            threading.Thread(target=collect_when_sessions_end, name="eve-housekeeping", daemon=True).start()
            _started.set()
