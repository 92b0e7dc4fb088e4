"""Eve's built-in model architectures: a small CNN, a small Vision Transformer, a fully connected
network (MLP) and glass-box read-outs.

Every model follows Eve's model contract: (B, 1, S, S) float32 images in [0, 1] — or
(B, 1, S, S, S) volumes for a 3D model — → (B, K) float32 outputs (logits for a classifier,
K = 1 for a binary one).

Attribution-friendly by construction (captum's hook-based methods need it):

* every non-linearity is its own `nn.ReLU` / `nn.Sigmoid` module, never re-used and
  never in place (DeepLift, GuidedBackprop);
* every model names the layer Grad-CAM should look at in `cam_layer`.

Glass-box models have no trained weights: their output is an exact, differentiable
function of the image, stated in `formula()` and recorded in the model card, so Eve's
scores can be checked against a known read-out.
"""

from __future__ import annotations

import torch
from torch import nn

# the stored XtrAIn maps' buffer layout (`MLP.xtrain_maps`; `engine.models.xtrain` reads and fills it)
EXPLAINED = ("output", "probability")  # axis 0: f itself, or σ(f) of a logit
STORED_METHODS = ("XtrAIn", "XtrAIn+")  # axis 1: tracked during training, stored with the weights

# 1. a small CNN -----------------------------------------------------------------------


class SmallCNN(nn.Module):
    """conv3×3 → BN → ReLU → maxpool ×len(widths), then a small MLP head; in 2D or 3D.

    Args:
        size: input side S (the image is (B, 1, S, S)); recorded for the card, any S works.
        dims: 2 for images, 3 for volumes (B, 1, S, S, S): 3×3×3 convolutions and pools.
        outputs: K, number of outputs.
        widths: channels of each conv block; each block halves the side.
        pooled: side of the adaptive average pool before the head (keeps coarse position).
        hidden: width of the head's hidden layer (0: a linear head).
        dropout: dropout before the last layer (inactive in eval mode).
    """

    __jit_unused_properties__ = ["cam_layer"]  # lets torch.jit.script skip it

    def __init__(
        self,
        size: int = 64,
        outputs: int = 1,
        widths: tuple[int, ...] = (8, 16, 32),
        pooled: int = 4,
        hidden: int = 32,
        dropout: float = 0.2,
        dims: int = 2,
    ):
        super().__init__()
        if dims not in (2, 3):
            raise ValueError(f"dims must be 2 or 3, not {dims}")
        conv, norm, pool, adaptive = (
            (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d)
            if dims == 2
            else (nn.Conv3d, nn.BatchNorm3d, nn.MaxPool3d, nn.AdaptiveAvgPool3d)
        )
        blocks, channels = [], 1
        for width in widths:
            blocks += [conv(channels, width, 3, padding=1, bias=False), norm(width), nn.ReLU(), pool(2)]
            channels = width
        self.features = nn.Sequential(*blocks)  # (B, C, S / 2**L, ...)
        self.pool = adaptive(pooled)  # (B, C, pooled, ...)
        flat = channels * pooled**dims
        if hidden:
            head = [nn.Flatten(), nn.Linear(flat, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, outputs)]
        else:  # a linear read-out of the pooled feature map
            head = [nn.Flatten(), nn.Dropout(dropout), nn.Linear(flat, outputs)]
        self.head = nn.Sequential(*head)
        self.size = size

    @property
    def cam_layer(self) -> nn.Module:
        """The last conv block's ReLU: Grad-CAM's usual choice (last spatial feature map)."""
        return [m for m in self.features if isinstance(m, nn.ReLU)][-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, S, S) or (B, 1, S, S, S) → (B, K)
        return self.head(self.pool(self.features(x)))


# 2. a small Vision Transformer ------------------------------------------------------------


class SelfAttention(nn.Module):
    """Multi-head self-attention that keeps its last attention probabilities, (B, heads, T, T), and,
    when the forward pass tracks gradients, their gradient after a backward pass: what the attention
    maps read (`engine.pixelmaps.attention`)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not a multiple of heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.softmax = nn.Softmax(dim=-1)
        self.attention: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attention = self.softmax(q @ k.transpose(-2, -1) * (d // self.heads) ** -0.5)
        if attention.requires_grad:
            attention.retain_grad()
        self.attention = attention
        return self.proj((attention @ v).transpose(1, 2).reshape(b, t, d))


class TransformerBlock(nn.Module):
    """Pre-norm block: x + attention(norm(x)), then x + MLP(norm(x))."""

    def __init__(self, dim: int, heads: int, mlp: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp), nn.GELU(), nn.Linear(mlp, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class SmallViT(nn.Module):
    """A Vision Transformer for (B, 1, S, S) images (Dosovitskiy et al., 2021): non-overlapping
    patch x patch patches, each flattened and mapped linearly to a token (no convolution), a learnt
    class token and position embedding, `depth` pre-norm blocks, and a linear head on the class token.

    Args:
        size: image side S (a multiple of `patch`).
        patch: patch side; S / patch patches a side.
        dim, depth, heads, mlp: token width, blocks, attention heads, MLP width.
        outputs: K, number of outputs.
    """

    def __init__(
        self,
        size: int = 64,
        patch: int = 8,
        dim: int = 64,
        depth: int = 4,
        heads: int = 4,
        mlp: int = 128,
        outputs: int = 1,
    ):
        super().__init__()
        if size % patch:
            raise ValueError(f"size {size} is not a multiple of patch {patch}")
        self.size, self.patch, self.grid = size, patch, size // patch
        self.embed = nn.Linear(patch * patch, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.position = nn.Parameter(torch.randn(1, 1 + self.grid**2, dim) * 0.02)
        self.blocks = nn.ModuleList([TransformerBlock(dim, heads, mlp) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, outputs)

    @property
    def attention_layers(self) -> list[SelfAttention]:
        return [block.attn for block in self.blocks]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, S, S) → (B, K)
        b, p = x.shape[0], self.patch
        patches = x[:, 0].unfold(1, p, p).unfold(2, p, p).reshape(b, self.grid**2, p * p)  # row-major patches
        tokens = torch.cat([self.cls_token.expand(b, -1, -1), self.embed(patches)], dim=1) + self.position
        for block in self.blocks:
            tokens = block(tokens)
        return self.head(self.norm(tokens)[:, 0])


# 3. a fully connected network (XtrAIn's form) ---------------------------------------------


class MLP(nn.Module):
    """Flatten → Linear(S², h₁) → ReLU → … → Linear(h_last, K): the fully connected network for which
    XtrAIn's first-layer swaps are published (`engine.models.xtrain`). No dropout or batch norm, so training
    and evaluation compute the same function (XtrAIn evaluates it during training).

    Args:
        size: image side S (the image is (B, 1, S, S); the first layer takes P = S² pixels).
        outputs: K, number of outputs.
        hidden: widths of the hidden layers, at least one.
        tracked: images whose XtrAIn maps training stored with the weights (0: none). The buffers
            `xtrain_inputs` (N, 1, S, S) and `xtrain_maps` (explained, method, K, N, 1, S, S), float16,
            hold them (axes in `engine.models.xtrain`); `engine.models.train` fills them, the weights file keeps them.

    `first` is the first layer and `rest` maps its output to (B, K): model(x) = rest(first(x.flatten(1))).
    No `cam_layer`: without a feature map, Grad-CAM does not apply.
    """

    def __init__(self, size: int = 64, outputs: int = 1, hidden: tuple[int, ...] = (32, 32), tracked: int = 0):
        super().__init__()
        hidden = tuple(int(h) for h in hidden)
        if not hidden:
            raise ValueError("an MLP needs at least one hidden layer")
        self.size = size
        self.flatten = nn.Flatten()
        self.first = nn.Linear(size * size, hidden[0])
        layers: list[nn.Module] = []
        for width_in, width_out in zip(hidden, hidden[1:], strict=False):
            layers += [nn.ReLU(), nn.Linear(width_in, width_out)]
        self.rest = nn.Sequential(*layers, nn.ReLU(), nn.Linear(hidden[-1], outputs))
        if tracked:
            shape = (len(EXPLAINED), len(STORED_METHODS), outputs, int(tracked), 1, size, size)
            self.register_buffer("xtrain_inputs", torch.zeros(int(tracked), 1, size, size, dtype=torch.float16))
            self.register_buffer("xtrain_maps", torch.zeros(shape, dtype=torch.float16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, S, S) → (B, K)
        return self.rest(self.first(self.flatten(x)))


# 4. glass-box read-outs ----------------------------------------------------------------


def _window_mask(size: int, window: tuple[int, int, int, int] | None) -> torch.Tensor:
    """(1, 1, S, S) mask that is 1 on rows r0:r1, cols c0:c1 (half open), or everywhere."""
    mask = torch.zeros(1, 1, size, size)
    if window is None:
        mask[:] = 1.0
    else:
        r0, r1, c0, c1 = window
        mask[..., r0:r1, c0:c1] = 1.0
    return mask


def _border_mask(size: int, border: int) -> torch.Tensor:
    mask = torch.ones(1, 1, size, size)
    mask[..., border : size - border, border : size - border] = 0.0
    return mask


class DarkPixelCount(nn.Module):
    """Soft count of dark pixels inside a fixed window.

        y = Σ_{(r, c) ∈ window} sigmoid((threshold − x[r, c]) / temperature)

    On SynthBrain's coronal hippocampus slice, a window over the lateral ventricles makes
    this a ventricle-size read-out (CSF is dark on T1; the window holds no background).
    """

    __jit_unused_properties__ = ["cam_layer"]

    def __init__(
        self,
        size: int = 64,
        window: tuple[int, int, int, int] | None = None,
        threshold: float = 0.45,
        temperature: float = 0.05,
    ):
        super().__init__()
        self.size, self.window = size, None if window is None else tuple(int(v) for v in window)
        self.threshold, self.temperature = float(threshold), float(temperature)
        self.register_buffer("mask", _window_mask(size, self.window), persistent=False)
        self.dark = nn.Sigmoid()  # soft indicator of x < threshold

    @property
    def cam_layer(self) -> nn.Module:
        return self.dark

    def formula(self) -> str:
        where = (
            "all pixels"
            if self.window is None
            else (f"rows {self.window[0]}..{self.window[1] - 1}, cols {self.window[2]}..{self.window[3] - 1}")
        )
        return (
            f"y = sum over {where} of sigmoid(({self.threshold:g} - x[r, c]) / {self.temperature:g}) "
            "(x: the (S, S) input image, rows top to bottom)"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, S, S) → (B, 1)
        soft = self.dark((self.threshold - x) / self.temperature)  # (B, 1, S, S) in (0, 1)
        return (soft * self.mask).sum(dim=(2, 3))


class BrightAreaAboveBackground(nn.Module):
    """Soft area of the object: pixels brighter than halfway between background and white.

        b = mean of the `border`-pixel frame of the image          (background level)
        y = Σ_{r, c} sigmoid((x[r, c] − (1 + b) / 2) / temperature)

    On `shapes` the frame never holds the object, so b is the (normalised) background and
    y reads out the ellipse's area ≈ π · size² · aspect.
    """

    __jit_unused_properties__ = ["cam_layer"]

    def __init__(self, size: int = 64, border: int = 4, temperature: float = 0.05):
        super().__init__()
        self.size, self.border, self.temperature = size, int(border), float(temperature)
        frame = _border_mask(size, self.border)
        self.register_buffer("frame", frame / frame.sum(), persistent=False)  # averaging weights
        self.bright = nn.Sigmoid()

    @property
    def cam_layer(self) -> nn.Module:
        return self.bright

    def formula(self) -> str:
        return (
            f"b = mean of x over the {self.border}-pixel border frame; "
            f"y = sum over all pixels of sigmoid((x[r, c] - (1 + b) / 2) / {self.temperature:g})"
        )

    def threshold(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, 1, 1): halfway between each image's background (its frame's mean) and white."""
        background = (x * self.frame).sum(dim=(2, 3), keepdim=True)
        return (1.0 + background) / 2.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, S, S) → (B, 1)
        soft = self.bright((x - self.threshold(x)) / self.temperature)
        return soft.sum(dim=(2, 3))


class BorderMean(nn.Module):
    """Linear read-out of the background: y = mean of x over the `border`-pixel frame.

    Linear in the image, so every gradient-based map is exact and easy to check.
    """

    __jit_unused_properties__ = ["cam_layer"]

    def __init__(self, size: int = 64, border: int = 4):
        super().__init__()
        self.size, self.border = size, int(border)
        frame = _border_mask(size, self.border)
        self.linear = nn.Conv2d(1, 1, size, bias=False)  # one S×S filter = a weighted sum
        with torch.no_grad():
            self.linear.weight.copy_(frame / frame.sum())
        self.linear.weight.requires_grad_(False)

    @property
    def cam_layer(self) -> nn.Module:
        return self.linear

    def formula(self) -> str:
        return f"y = mean of x over the {self.border}-pixel border frame (a fixed linear function)"

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, S, S) → (B, 1)
        return self.linear(x).flatten(1)


ARCHITECTURES: dict[str, type[nn.Module]] = {
    cls.__name__: cls for cls in (SmallCNN, SmallViT, MLP, DarkPixelCount, BrightAreaAboveBackground, BorderMean)
}


class Probability(nn.Module):
    """A logit model's probabilities: sigmoid of one logit column, softmax over K > 1 of them."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    @property
    def cam_layer(self):  # Grad-CAM's layer is the wrapped model's
        return getattr(self.model, "cam_layer", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        out = out.reshape(len(x), -1)
        return torch.sigmoid(out) if out.shape[1] == 1 else torch.softmax(out, dim=1)
