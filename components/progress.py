"""The engine's one progress protocol, `progress(done, total)` (`engine.progress`), drawn as a Streamlit
progress bar."""

from __future__ import annotations

from engine.progress import Progress


def on(bar, text: str | None = None, start: float = 0.0, end: float = 1.0) -> Progress:
    """A `Progress` that moves `bar` (an `st.progress`) from `start` to `end` of its length, with `text`
    and the count beside it ("3 of 8")."""

    def progress(done: int, total: int) -> None:
        share = start + (end - start) * (done / total if total else 1.0)
        bar.progress(min(1.0, share), text=f"{text} ({done} of {total})" if text else None)

    return progress
