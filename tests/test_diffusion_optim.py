"""`engine/diffusion/optim.py`: the shared AdamW + warm-up-cosine step is the loop the trainers had inline."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.diffusion.optim import WarmupCosineAdamW, warmup_cosine


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.SiLU(), torch.nn.Linear(8, 2))


def _loss(net, g):
    x = torch.randn(16, 4, generator=g)
    return (net(x) - x[:, :2] ** 2).pow(2).mean()


@pytest.mark.parametrize("max_grad_norm", [None, 0.05])
def test_the_shared_step_reproduces_the_inline_loop_bit_for_bit(max_grad_norm):
    steps, warmup = 30, 4
    inline, g = _net(), torch.Generator().manual_seed(1)
    opt = torch.optim.AdamW(inline.parameters(), lr=1e-2, weight_decay=1e-4)
    sched = warmup_cosine(opt, steps, warmup)
    for _ in range(steps):
        loss = _loss(inline, g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(inline.parameters(), max_grad_norm)
        opt.step()
        sched.step()
    shared, g = _net(), torch.Generator().manual_seed(1)
    optimiser = WarmupCosineAdamW(
        shared.parameters(), steps=steps, lr=1e-2, weight_decay=1e-4, warmup=warmup, max_grad_norm=max_grad_norm
    )
    for _ in range(steps):
        optimiser.step(_loss(shared, g))
    for a, b in zip(inline.parameters(), shared.parameters(), strict=True):
        assert torch.equal(a, b)


def test_warmup_cosine_rises_linearly_then_decays_to_zero():
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = warmup_cosine(opt, steps=100, warmup=10)
    rates = []
    for _ in range(101):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    np.testing.assert_allclose(rates[:3], [0.1 * 0.5 * (1 + np.cos(np.pi * s / 100)) * (s + 1) for s in range(3)])
    assert max(rates) == pytest.approx(rates[9]) and rates[100] == pytest.approx(0.0, abs=1e-12)
