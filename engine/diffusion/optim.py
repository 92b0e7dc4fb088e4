"""The optimiser every step-based trainer of the diffusion package shares: AdamW with a linear
warm-up and a cosine decay to 0 (the denoiser, the shapes autoencoder, the CNN probe and the
MLP read-out).

Each trainer keeps its own loop (how it draws a batch, what it logs, an EMA or early stopping);
`WarmupCosineAdamW.step(loss)` is the part they had in common, in the order they all did it:
zero the gradients, backpropagate, clip (the denoiser only), step the optimiser, then the
learning rate.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch


def warmup_cosine(optimizer: torch.optim.Optimizer, steps: int, warmup: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Learning rate: linear warm-up over `warmup` steps, then cosine decay to 0 at `steps`."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + np.cos(np.pi * min(1.0, s / steps)))
    )


class WarmupCosineAdamW:
    """AdamW (peak `lr`, `weight_decay`) under `warmup_cosine(steps, warmup)`.

    Args:
        parameters: what to optimise.
        steps: optimiser steps in all (the cosine reaches 0 there).
        lr: peak learning rate.
        weight_decay: AdamW's decoupled weight decay.
        warmup: linear warm-up steps.
        max_grad_norm: clip the gradients' global norm to this before each step (None: no clipping).
    """

    def __init__(
        self,
        parameters: Iterable[torch.nn.Parameter],
        *,
        steps: int,
        lr: float,
        weight_decay: float,
        warmup: int,
        max_grad_norm: float | None = None,
    ):
        self.parameters = list(parameters)
        self.optimizer = torch.optim.AdamW(self.parameters, lr=lr, weight_decay=weight_decay)
        self.schedule = warmup_cosine(self.optimizer, steps, warmup)
        self.max_grad_norm = max_grad_norm

    def step(self, loss: torch.Tensor) -> None:
        """One update from a batch's `loss`."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.parameters, self.max_grad_norm)
        self.optimizer.step()
        self.schedule.step()
