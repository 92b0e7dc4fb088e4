"""Eve's engine: datasets, models and explained-variance scores, with no UI.

Everything here runs from a notebook or the command line (`python -m engine ...`);
nothing imports streamlit.
"""

from __future__ import annotations

import torch

from engine.errors import EveInputError


def default_device() -> torch.device:
    """CUDA when present, otherwise the CPU (every test and the default app run there)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


__all__ = ["EveInputError", "default_device"]
