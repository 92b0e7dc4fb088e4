"""Eve's engine: datasets, models and explained-variance scores, with no UI.

Everything here runs from a notebook or the command line (`python -m engine ...`);
nothing imports streamlit.
"""

from __future__ import annotations

import os
import platform

import torch

from engine.errors import EveInputError


def default_device() -> torch.device:
    """CUDA when present, otherwise the CPU (every test and the default app run there)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def machine() -> str:
    """This machine as a card records it, read off the machine: CPU, cores, memory, GPU."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        memory = f", {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB"
    except (ValueError, OSError, AttributeError):  # not every OS reports it
        memory = ""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.machine()}, {cores} CPU cores{memory}, {gpu}, torch {torch.__version__}"


__all__ = ["EveInputError", "default_device", "machine"]
