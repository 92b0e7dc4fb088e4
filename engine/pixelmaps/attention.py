"""Attention maps of a Vision Transformer (`models.architectures.SmallViT`, or any model with
`attention_layers` that keep their attention probabilities): where its class token looks.

    attention_map(model, images, "AttentionRollout", target)   # (B, 1, S, S), one value per patch

* AttentionCLS — the last layer's attention from the class token to each patch, mean over heads.
* AttentionRollout — attention rollout (Abnar & Zuidema, 2020): each layer's head-mean attention
  with the residual added (½A + ½I, rows renormalised), multiplied through the layers; the class
  token's row. Target-independent.
* AttentionGradient — gradient-weighted attention relevance (Chefer, Gur & Wolf, 2021, "Generic
  attention-model explainability"): R = I, then per layer R += mean_h[(∇A ⊙ A)⁺] R; the class
  token's row. It depends on the output explained, through ∇A.

Maps are per patch, shown on the image by repeating each patch's value over its pixels.
"""

from __future__ import annotations

import torch

ATTENTION_METHODS = ("AttentionCLS", "AttentionRollout", "AttentionGradient")


def transformer(model):
    """The Vision Transformer inside `model` (itself, or wrapped, e.g. by `zoo.Probability`), or None."""
    if getattr(model, "attention_layers", None):
        return model
    modules = model.modules() if hasattr(model, "modules") else []
    return next((m for m in modules if m is not model and getattr(m, "attention_layers", None)), None)


def _to_image(per_patch: torch.Tensor, vit) -> torch.Tensor:
    """(B, patches) → (B, 1, S, S): each patch's value on its pixels (row-major patches, as the ViT cuts them)."""
    grid, patch = vit.grid, vit.patch
    maps = per_patch.reshape(-1, 1, grid, grid)
    return maps.repeat_interleave(patch, dim=2).repeat_interleave(patch, dim=3)


def attention_map(model, images: torch.Tensor, method: str, target) -> torch.Tensor:
    """One of `ATTENTION_METHODS` for a batch; `target` an int or one index per image."""
    vit = transformer(model)
    with torch.enable_grad():
        outputs = model(images)  # the model explained (a probability wrapper's too): the gradients are its
        layers = vit.attention_layers
        attentions = [layer.attention for layer in layers]
        if method == "AttentionGradient":
            index = torch.as_tensor(target, device=outputs.device).expand(len(outputs))
            outputs.gather(1, index[:, None]).sum().backward()
            gradients = [a.grad for a in attentions]
    tokens = attentions[0].shape[-1]
    eye = torch.eye(tokens, device=images.device).expand(len(images), tokens, tokens)
    if method == "AttentionCLS":
        per_patch = attentions[-1].mean(1)[:, 0, 1:]
    elif method == "AttentionRollout":
        rollout = eye
        for a in attentions:
            mixed = 0.5 * a.mean(1) + 0.5 * eye
            rollout = (mixed / mixed.sum(-1, keepdim=True)) @ rollout
        per_patch = rollout[:, 0, 1:]
    elif method == "AttentionGradient":
        relevance = eye.clone()
        for a, g in zip(attentions, gradients, strict=True):
            relevance = relevance + (g * a).clamp(min=0).mean(1) @ relevance
        per_patch = relevance[:, 0, 1:]
    else:
        raise ValueError(method)
    for layer in layers:  # the next forward pass starts clean
        layer.attention = None
    return _to_image(per_patch.detach(), vit)
