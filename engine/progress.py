"""Progress, one protocol: long work calls `progress(done, total)` after each step (images, scores,
methods, samples), and whoever runs it shows it: the CLI through `bar` (tqdm on stderr), the app
through `st.progress` (`components.progress`)."""

from __future__ import annotations

from collections.abc import Callable

from tqdm import tqdm

Progress = Callable[[int, int], None]  # progress(done, total)


def bar(desc: str, unit: str) -> tuple[Progress, tqdm]:
    """A `Progress` that draws a tqdm bar on stderr, and the bar (a context manager) to close."""
    shown = tqdm(desc=desc, unit=unit, leave=False)

    def progress(done: int, total: int) -> None:
        shown.total = total
        shown.update(done - shown.n)

    return progress, shown
