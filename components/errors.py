"""How a page shows a failure: a user's problem as its message, a bug with its traceback.

    with errors.shown("The data-based scores"):
        scores = loaders.data_scores(...)

An `EveInputError` names the problem and the fix, so it is shown as it is. Anything else is
a defect: it is named in one line with the traceback in an expander, never swallowed into a
vague note. Either way the rest of the page still draws (the block is skipped, not the page).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import streamlit as st

from engine.errors import EveInputError, reason


@contextmanager
def shown(what: str, target=st) -> Iterator[None]:
    """Run a block; on failure show why (in `target`, a container or `st`) and carry on."""
    try:
        yield
    except EveInputError as exc:
        target.error(str(exc))
    except Exception as exc:  # a defect: show it whole rather than hide it
        target.error(f"{what} failed: {reason(exc, typed=True)}. This is a bug in Eve; the details are below.")
        with target.expander("Details (traceback)"):
            st.exception(exc)
