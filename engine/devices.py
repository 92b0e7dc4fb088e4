"""Where a model runs, one rule for every door (the CLI, the app, the Python API, a Ray worker).

* `default_device()` — CUDA when present, else the CPU: where a model is loaded when nobody says.
* `resolve_device(device)` — what a `--device` flag or the sidebar asks for, checked (asking for CUDA on a
  machine without it is refused with the fix, never silently run elsewhere).
* `model_device(model)` and `placed(model, x)` — every call of a model puts its inputs where the model's
  weights live first (`zoo.forward` for outputs, `placed` where gradients are needed: maps, quality
  metrics, counterfactuals); results come back to the caller's device.
"""

from __future__ import annotations

import torch

from engine.errors import EveInputError


def default_device() -> torch.device:
    """CUDA when present, otherwise the CPU (every test and the default app run there)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """The device asked for (None: `default_device()`), refused with the fix when this machine lacks it."""
    if device is None:
        return default_device()
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise EveInputError(f"Unknown device {str(device)!r}: use cpu or cuda.") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise EveInputError("This machine has no CUDA GPU: use --device cpu (or leave --device out).")
    if device.type not in ("cpu", "cuda"):
        raise EveInputError(f"Device {device.type!r} is not one Eve runs on: use cpu or cuda.")
    return device


def model_device(model) -> torch.device:
    """Where a module's (or TorchScript model's) first parameter or buffer lives; the CPU if none."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def placed(model, x: torch.Tensor) -> torch.Tensor:
    """`x` on `model`'s device (a differentiable copy when it moves, `x` itself when it is there)."""
    return x.to(model_device(model))
