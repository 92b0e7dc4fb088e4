"""Eve's engine: datasets, models and explained-variance scores, with no UI.

Everything here runs from a notebook or the command line (`python -m engine ...`);
nothing imports streamlit.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
import tomllib

import numpy as np
import torch

from engine.devices import default_device
from engine.errors import EveInputError
from engine.paths import REPO_ROOT


def machine() -> str:
    """This machine as a card records it, read off the machine: CPU, cores, memory, GPU."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        memory = f", {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB"
    except (ValueError, OSError, AttributeError):  # not every OS reports it
        memory = ""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.machine()}, {cores} CPU cores{memory}, {gpu}, torch {torch.__version__}"


def eve_version() -> str:
    """Eve's version (pyproject.toml, or the installed package's), with the git commit when run
    from a checkout ("0.1.0, git 2258f01"; "-dirty" when the tree has uncommitted changes)."""
    root = REPO_ROOT
    try:
        version = tomllib.loads((root / "pyproject.toml").read_text())["project"]["version"]
    except (OSError, KeyError, ValueError):
        try:
            version = importlib.metadata.version("eve")
        except importlib.metadata.PackageNotFoundError:
            version = "unknown"
    if not (root / ".git").exists():
        return version
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return version
    return f"{version}, git {commit}" if commit else version


def software(*packages: str) -> dict[str, str]:
    """The versions a report records: Eve, Python, torch and numpy, then each of `packages`
    that is installed (e.g. "diffusers" for a diffusion score)."""
    found = {
        "eve": eve_version(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
    }
    for name in packages:
        module = sys.modules.get(name)
        try:
            found[name] = getattr(module, "__version__", None) or importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


__all__ = ["EveInputError", "default_device", "eve_version", "machine", "software"]
