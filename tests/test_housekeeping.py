"""The server's housekeeping thread collects garbage when, and only when, sessions have ended."""

import threading

from components import housekeeping


def test_a_collection_follows_each_fall_in_the_number_of_sessions(monkeypatch):
    counts = iter([3, 3, 4, 2, 2, 0, 1])  # the first is read before the first look
    stop = threading.Event()
    collected = []

    def sessions():
        n = next(counts, None)
        if n is None:
            stop.set()
            return 1
        return n

    monkeypatch.setattr(housekeeping, "sessions", sessions)
    monkeypatch.setattr(housekeeping.gc, "collect", lambda: collected.append(1))
    made = housekeeping.collect_when_sessions_end(check_s=0.001, stop=stop)
    assert made == len(collected) == 2  # 4 -> 2 and 2 -> 0; 3 -> 4 and 0 -> 1 are not ends


def test_outside_a_server_nothing_starts():
    assert housekeeping.sessions() is None
    housekeeping.start()
    assert not housekeeping._started.is_set()
