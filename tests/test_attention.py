"""Attention maps of Eve's Vision Transformer: a glass-box ViT whose every query attends to one
patch gets CLS attention and rollout there; the zoo ViT's maps beside the captum ones; and the
maps refused, with the reason, for a model without attention."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.cards import ModelRef
from engine.errors import EveInputError
from engine.models import load
from engine.models.architectures import SmallCNN, SmallViT
from engine.pixelmaps.attention import ATTENTION_METHODS
from engine.pixelmaps.methods import attribution_map, available_methods, unavailable

DECIDING_PATCH = 9  # of the 4 x 4 patches, row-major: row 2, column 1


def glass_box_vit() -> SmallViT:
    """Every token's query is 50·u and patch 9's position embedding is 10·u in dimensions that pixels
    never reach (u sums to 0, so layer norm's mean leaves no trace of u on other tokens): each query
    attends to patch 9 alone, and the class token reads only its pixels."""
    vit = SmallViT(size=16, patch=4, dim=8, depth=2, heads=1, mlp=8).eval()
    u = torch.tensor([0, 0, 0, 0, 1.0, -1.0, 1.0, -1.0])
    with torch.no_grad():
        for parameter in vit.parameters():
            parameter.zero_()
        for norm in [vit.norm, *(n for b in vit.blocks for n in (b.norm1, b.norm2))]:
            norm.weight.fill_(1.0)
        vit.embed.weight[:4] = torch.randn(4, 16, generator=torch.Generator().manual_seed(0))  # pixels: dims 0..3
        vit.position[0, 1 + DECIDING_PATCH] = 10 * u
        for block in vit.blocks:
            block.attn.qkv.bias[:8] = 50 * u  # queries
            block.attn.qkv.weight[8:16] = torch.eye(8)  # keys: the normalised token
            block.attn.qkv.weight[16:24] = torch.eye(8)  # values: the normalised token
            block.attn.proj.weight.copy_(torch.eye(8))
        vit.head.weight[0, :4] = 1.0
    return vit


@pytest.mark.parametrize("method", ["AttentionCLS", "AttentionRollout"])
def test_attention_maps_find_the_one_patch_a_glass_box_vit_attends_to(method):
    vit = glass_box_vit()
    images = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    maps = attribution_map(vit, images, method)
    per_patch = maps[:, 0, ::4, ::4].reshape(3, 16)  # one value per 4 x 4 patch
    assert (per_patch.argmax(1) == DECIDING_PATCH).all()
    assert (per_patch[:, DECIDING_PATCH] / per_patch.sum(1) > 0.99).all()
    assert torch.equal(maps[:, :, 8:12, 4:8], per_patch[:, DECIDING_PATCH, None, None, None].expand(3, 1, 4, 4))


def test_the_glass_box_vits_output_depends_on_the_deciding_patch_alone():
    vit = glass_box_vit()
    image = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    saliency = attribution_map(vit, image, "Saliency")[0, 0]
    inside = saliency[8:12, 4:8].sum()
    outside = saliency.clone()
    outside[8:12, 4:8] = 0
    assert inside > 0 and outside.sum() < 1e-5 * inside  # the other patches reach the class token through ~0 weights
    relevance = attribution_map(vit, image, "AttentionGradient")
    assert torch.isfinite(relevance).all() and (relevance >= 0).all()


def test_the_zoo_vit_explains_with_every_family_but_the_convolutional_ones():
    model, card = load(ModelRef.builtin("synthbrain-diagnosis-vit"), "cpu")
    assert card.metrics["auc"] > 0.75  # held-out, n = 120: it learnt the diagnosis
    methods = available_methods(model, slow=False)
    assert set(ATTENTION_METHODS) <= set(methods) and {"IntegratedGradients", "Occlusion"} <= set(methods)
    assert "convolution" in unavailable(model, "LayerGradCam") and "LayerNorm" in unavailable(model, "LRP")
    images = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    for method in methods:
        maps = attribution_map(model, images, method)
        assert maps.shape == images.shape and torch.isfinite(maps).all()


def test_attention_maps_on_a_cnn_are_refused_naming_why():
    cnn = SmallCNN(size=16, widths=(2,), pooled=2, hidden=0, dropout=0.0).eval()
    assert "attention layers" in unavailable(cnn, "AttentionRollout")
    assert not set(ATTENTION_METHODS) & set(available_methods(cnn))
    with pytest.raises(EveInputError, match=r"AttentionRollout cannot explain this model \(it reads a Vision"):
        attribution_map(cnn, torch.rand(1, 1, 16, 16), "AttentionRollout")
    assert np.isfinite(attribution_map(cnn, torch.rand(1, 1, 16, 16), "Saliency").numpy()).all()
