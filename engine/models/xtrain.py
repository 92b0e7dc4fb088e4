"""XtrAIn, XtrAIn+ and Xstep: training-guided occlusion, in parameter space.

Lymperopoulos, Kakogeorgiou & Kanellopoulou, "XtrAIn: Training-Guided Occlusion for Feature
Attribution" (arXiv:2606.10877, 2026). Occlusion moves from the input to the parameters: for every
optimisation step θ_t → θ_{t+1}, pixel i's first-layer weights W₁[:, i] are swapped between the old
and the new state, in both directions, and the change of the output for a tracked image x is summed
over the training trajectory. The published form is for fully connected networks (`MLP`).

    tracker = Tracker(model, images)                   # the training loop calls tracker.step(old, new)
    tracker.maps()                                     # (explained, method, K, N, 1, S, S)
    xstep(model, images, target=0)                     # (B, 1, S, S): any image, one step (or checkpoints)
    stored_maps(model, images, "XtrAIn", target=0)     # (B, 1, S, S): the tracked images, from the weights
    zoo.stored_attributions("shapes-elongated-mlp")    # a zoo model's stored maps and their subjects

Code name -> symbol:
    x                 (B, P) flattened image, P = S² pixels; x[:, i] = x_i
    w_old, w_new      W₁ at θ_t and θ_{t+1}, (H, P); b_old, b_new their biases b₁
    dw                ΔW = W₁(θ_{t+1}) − W₁(θ_t), (H, P); dw[:, i] = ΔW_i
    z_old, z_new      first-layer pre-activations z = W₁ x + b₁ at θ_t, θ_{t+1}, (B, H)
    rest(state, z)    g_θ(z): the network after its first layer, so f_θ(x) = g_θ(W₁ x + b₁)
    f_old, f_new      f_{θ_t}(x), f_{θ_{t+1}}(x), (B, K)
    forward           a_{t,i} = f(θ_t with W₁[:, i] from θ_{t+1}) − f(θ_t)
    backward          r_{t,i} = f(θ_{t+1}) − f(θ_{t+1} with W₁[:, i] from θ_t)
    c                 c_{t,i} = (a_{t,i} + r_{t,i}) / 2, one step's attribution of pixel i
    squash            σ: the identity ("output"), or the sigmoid / softmax of a logit ("probability")

Derivation of the batched swap. Replacing column i of W₁ by W'[:, i] changes the pre-activation by
one rank-one term: W'x = W₁x + (W'[:, i] − W₁[:, i]) x_i. Hence

    f(θ_t with W₁[:, i] from θ_{t+1})(x) = g_{θ_t}(z_old + x_i ΔW_i)        (1)
    f(θ_{t+1} with W₁[:, i] from θ_t)(x) = g_{θ_{t+1}}(z_new − x_i ΔW_i)    (2)

so the P swaps of an image are P rows z ± x_i ΔW_i of one batch through g (H inputs), not P forward
passes through the first layer (P × H each): the first layer is computed once per state. A pixel with
x_i = 0 or ΔW_i = 0 changes nothing, so c_{t,i} = 0 exactly and its row is skipped. The rows go
through g in chunks of `CHUNK`, in float64 (one step's change is small against the output).

    XtrAIn_i  = Σ_t c_{t,i}                                                  (3)
    XtrAIn+_i = Σ_t max(c_{t,i}, 0)                                          (4)

XtrAIn+ keeps only the updates that raise the target output (step t's update of pixel i's weights,
where c_{t,i} > 0), so XtrAIn+ ≥ max(XtrAIn, 0) ≥ XtrAIn pixel by pixel. Xstep is (3) over a few
checkpoints θ_0 → θ_1 → … → θ_T instead of every step; by default one step, from the constant model
(the trained θ with W₁ = 0, whose output does not depend on the image) to the trained model, so it
needs nothing stored and maps any image. With that start (1) is the output of the model that sees
pixel i alone minus the constant output, and (2) the output minus that of the model blind to pixel i.

Models: an `engine.models.architectures.MLP` (`first`, a Linear(P, H), then `rest`), or the
`Probability` wrapper of one (the "probability" maps). Training stores XtrAIn and XtrAIn+ of every
output, for the model's output and, for a logit, its probability, in the MLP's float16 buffers
`xtrain_inputs` (N, 1, S, S) and `xtrain_maps` (explained, method, K, N, 1, S, S) — axes `EXPLAINED`
and `STORED_METHODS` — which the weights file keeps; the card lists them under `xtrain` (`Tracking`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call

from engine.errors import EveInputError
from engine.models.architectures import EXPLAINED, STORED_METHODS, Probability

METHODS = (*STORED_METHODS, "Xstep")  # Xstep is computed when asked, for any image
CHUNK = 16384  # swapped rows per pass through g
INPUT_TOLERANCE = 2e-3  # max |x − stored x| for an image to be a tracked one (inputs stored as float16)
STORED_AS = "float16 buffers xtrain_inputs (N, 1, S, S) and xtrain_maps (explained, method, K, N, 1, S, S) in {}"


# 1. the model and its parameter states ------------------------------------------------------


def _parts(model) -> tuple[nn.Module | None, bool]:
    """(the MLP, whether its probability is explained), or (None, False) for a model of another form."""
    probability = isinstance(model, Probability)
    inner = model.model if probability else model
    if isinstance(getattr(inner, "first", None), nn.Linear) and isinstance(getattr(inner, "rest", None), nn.Module):
        return inner, probability
    return None, False


def mlp_of(model) -> nn.Module:
    """The MLP whose first layer XtrAIn swaps (inside a probability wrapper too); refused for any other model."""
    return _mlp(model)[0]


def _mlp(model) -> tuple[nn.Module, bool]:
    mlp, probability = _parts(model)
    if mlp is None:
        raise EveInputError(
            f"XtrAIn swaps a fully connected first layer's per-pixel weights, and a {type(model).__name__} has "
            "none: use an MLP (engine.models.architectures.MLP, e.g. a zoo model whose name ends in -mlp)."
        )
    return mlp, probability


def parameters(model) -> dict[str, torch.Tensor]:
    """The MLP's parameters by name (first.weight, first.bias, rest.*), detached: one state θ."""
    mlp, _ = _mlp(model)
    return {name: p.detach() for name, p in mlp.named_parameters()}


def constant_state(model) -> dict[str, torch.Tensor]:
    """Xstep's default start: the model's parameters with W₁ = 0, whose output is the same for every image."""
    state = dict(parameters(model))
    state["first.weight"] = torch.zeros_like(state["first.weight"])
    return state


def _squash(out: torch.Tensor, probability: bool) -> torch.Tensor:
    """σ of the last axis of (..., K) outputs: identity, or a logit's probability (as `Probability`)."""
    if not probability:
        return out
    return torch.sigmoid(out) if out.shape[-1] == 1 else torch.softmax(out, dim=-1)


def _rest(mlp: nn.Module, state: dict, z: torch.Tensor) -> torch.Tensor:
    """g_θ(z): the layers after the first at state θ, on pre-activations z (R, H) → (R, K)."""
    return functional_call(mlp.rest, {k.removeprefix("rest."): v for k, v in state.items() if k.startswith("rest.")}, z)


# 2. one step's swaps, batched -----------------------------------------------------------------


def _as64(state: dict, device) -> dict:
    return {k: v.detach().to(device=device, dtype=torch.float64) for k, v in state.items()}


@torch.no_grad()
def _contributions(
    mlp: nn.Module, old: dict, new: dict, x: torch.Tensor, explained: Sequence[bool], chunk: int = CHUNK
) -> torch.Tensor:
    """c_{t,i} of equations (1)-(2) for flattened images x (B, P): (len(explained), B, P, K) float64, one
    slice per squash (False: the output, True: its probability)."""
    device = x.device
    old, new = _as64(old, device), _as64(new, device)
    x = x.to(torch.float64)
    # 1. the first layer once per state: z = W₁ x + b₁, and the outputs f_old, f_new
    z_old = x @ old["first.weight"].T + old["first.bias"]  # (B, H)
    z_new = x @ new["first.weight"].T + new["first.bias"]
    f_old, f_new = _rest(mlp, old, z_old), _rest(mlp, new, z_new)  # (B, K)
    # 2. the swaps that change anything: x_i ≠ 0 and ΔW_i ≠ 0
    dw_t = (new["first.weight"] - old["first.weight"]).T  # (P, H): row i is ΔW_i
    moved = (x != 0) & (dw_t != 0).any(dim=1)[None]  # (B, P)
    rows, pixels = moved.nonzero(as_tuple=True)
    b, p, k = len(x), x.shape[1], f_old.shape[1]
    forward = f_old[:, None, :].expand(b, p, k).clone()  # unchanged rows keep f: a, r = 0 there
    backward = f_new[:, None, :].expand(b, p, k).clone()
    # 3. equations (1) and (2): rows z ± x_i ΔW_i through g, in chunks
    for start in range(0, len(rows), chunk):
        r, i = rows[start : start + chunk], pixels[start : start + chunk]
        step = x[r, i, None] * dw_t[i]  # (R, H): x_i ΔW_i
        forward[r, i] = _rest(mlp, old, z_old[r] + step)
        backward[r, i] = _rest(mlp, new, z_new[r] - step)
    # 4. c = (a + r) / 2 under each squash σ
    out = []
    for probability in explained:
        a = _squash(forward, probability) - _squash(f_old, probability)[:, None]
        r = _squash(f_new, probability)[:, None] - _squash(backward, probability)
        out.append((a + r) / 2)
    return torch.stack(out)


def _check_images(images, size: int) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1:] != (1, size, size):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise EveInputError(f"images have shape {shape}: give a batch shaped (B, 1, S, S) with S = {size} pixels.")
    return images.detach()


def _size(mlp: nn.Module) -> int:
    return int(round(mlp.first.in_features**0.5))


def _target_maps(c: torch.Tensor, target, size: int) -> torch.Tensor:
    """(B, P, K) per-pixel values → the target output's maps (B, 1, S, S) float32."""
    b, _, k = c.shape
    target = torch.as_tensor(target, device=c.device).long()
    if ((target < 0) | (target >= k)).any():
        raise EveInputError(f"target {target.tolist()} is out of range: the model has {k} output(s); use 0..{k - 1}.")
    index = target.expand(b) if target.ndim == 0 else target
    picked = c.gather(2, index.view(b, 1, 1).expand(b, c.shape[1], 1))[..., 0]  # (B, P)
    return picked.reshape(b, 1, size, size).float()


def swap_step(model, old: dict, new: dict, images: torch.Tensor, target=0) -> torch.Tensor:
    """One step's c_{t,i} (equations (1)-(2)) of images (B, 1, S, S) for the step from state `old` to `new`
    (`parameters`-style dicts of the MLP): (B, 1, S, S); a `Probability` model explains the probability."""
    mlp, probability = _mlp(model)
    size = _size(mlp)
    x = _check_images(images, size).flatten(1)
    return _target_maps(_contributions(mlp, old, new, x, (probability,))[0], target, size)


# 3. tracking during training ---------------------------------------------------------------------


class Tracker:
    """XtrAIn and XtrAIn+ of fixed images, accumulated over training (equations (3)-(4)).

    The training loop calls `step(old, new)` after every optimiser step, with the parameters before
    and after it (`{name: tensor}` of the MLP's `named_parameters()`); `maps()` gives the sums. Use
    plain SGD: the swaps are evaluated beside the trajectory and never change it, but the published
    form follows plain gradient steps.

    Args:
        model: the MLP being trained.
        images: (N, 1, S, S) the tracked images (e.g. test images).
        probability: also track the maps of the probability of a logit (sigmoid / softmax).
        chunk: swapped rows per pass (`CHUNK`).
    """

    def __init__(self, model: nn.Module, images: torch.Tensor, *, probability: bool = False, chunk: int = CHUNK):
        self.mlp, _ = _mlp(model)
        self.size = _size(self.mlp)
        self.x = _check_images(images, self.size).flatten(1).to(torch.float64)  # (N, P)
        self.explained = (False, True) if probability else (False,)
        self.chunk = int(chunk)
        k = self.mlp.rest(torch.zeros(1, self.mlp.first.out_features)).shape[1]
        shape = (len(EXPLAINED), len(self.x), self.x.shape[1], k)
        self.total = torch.zeros(shape, dtype=torch.float64)  # Σ_t c, (explained, N, P, K)
        self.positive = torch.zeros(shape, dtype=torch.float64)  # Σ_t max(c, 0)
        self.steps = 0
        self.seconds = 0.0  # wall time spent in `step`

    @torch.no_grad()
    def step(self, old: dict[str, torch.Tensor], new: dict[str, torch.Tensor]) -> None:
        start = time.perf_counter()
        c = _contributions(self.mlp, old, new, self.x.to(old["first.weight"].device), self.explained, self.chunk)
        c = c.cpu()
        self.total[: len(c)] += c
        self.positive[: len(c)] += c.clamp(min=0)
        self.steps += 1
        self.seconds += time.perf_counter() - start

    def maps(self) -> torch.Tensor:
        """(explained, method, K, N, 1, S, S) float32: XtrAIn and XtrAIn+ (`STORED_METHODS`) per output."""
        stacked = torch.stack([self.total, self.positive], dim=1)  # (E, M, N, P, K)
        e, m, n, _, k = stacked.shape
        return stacked.permute(0, 1, 4, 2, 3).reshape(e, m, k, n, 1, self.size, self.size).float()


def store(model: nn.Module, tracker: Tracker, images: torch.Tensor) -> None:
    """Write a tracker's maps and images into a freshly trained MLP's `xtrain_*` buffers (built with `tracked`)."""
    with torch.no_grad():
        model.xtrain_inputs.copy_(images.to(torch.float16))
        model.xtrain_maps.copy_(tracker.maps().to(torch.float16))


# 4. Xstep: a few checkpoints, or one step from the constant model ---------------------------------


def xstep(model, images: torch.Tensor, target=0, *, states: Sequence[dict] | None = None) -> torch.Tensor:
    """Xstep maps of any images (B, 1, S, S) → (B, 1, S, S): equation (3) over consecutive `states`.

    Args:
        model: an MLP, or its `Probability` wrapper (then the probability is explained).
        images: (B, 1, S, S) float images; left unchanged.
        target: output index, or one per image.
        states: θ_0, …, θ_T (`parameters`-style dicts, at least two; e.g. the initialisation and the trained
            weights, or a few checkpoints). Default: (`constant_state(model)`, `parameters(model)`).
    """
    mlp, probability = _mlp(model)
    states = [constant_state(model), parameters(model)] if states is None else list(states)
    if len(states) < 2:
        raise EveInputError(f"Xstep got {len(states)} parameter state(s): give at least two (start and end).")
    size = _size(mlp)
    x = _check_images(images, size).flatten(1)
    total = sum(_contributions(mlp, a, b, x, (probability,))[0] for a, b in zip(states, states[1:], strict=False))
    return _target_maps(total, target, size)


# 5. the stored maps: reading them back ---------------------------------------------------------


def has_stored(model) -> bool:
    mlp, _ = _parts(model)
    return mlp is not None and getattr(mlp, "xtrain_maps", None) is not None


def unavailable(model, method: str) -> str | None:
    """Why `method` (one of `METHODS`) cannot explain `model`, in words; None if it can."""
    if isinstance(model, torch.jit.ScriptModule):
        return "it swaps the first layer's weights, which a TorchScript model does not expose"
    if _parts(model)[0] is None:
        return "it swaps a fully connected first layer's per-pixel weights, and the model has none (an MLP has)"
    if method in STORED_METHODS and not has_stored(model):
        return "its maps are tracked while the model trains, and this model was not trained with XtrAIn tracking"
    return None


def tracked_rows(model, images: torch.Tensor) -> list[int | None]:
    """For each image (B, 1, S, S), the index of the tracked image it is (within `INPUT_TOLERANCE`), or None."""
    mlp, _ = _parts(model)
    if not has_stored(model):
        return [None] * len(images)
    stored = mlp.xtrain_inputs.flatten(1).to(images.device, torch.float32)  # (N, P)
    gap = (images.detach().flatten(1).float()[:, None, :] - stored[None]).abs().amax(dim=2)  # (B, N)
    gaps, rows = gap.min(dim=1)
    return [int(j) if g <= INPUT_TOLERANCE else None for g, j in zip(gaps.tolist(), rows.tolist(), strict=True)]


def stored_maps(model, images: torch.Tensor, method: str = "XtrAIn", target=0) -> torch.Tensor:
    """The XtrAIn or XtrAIn+ maps (B, 1, S, S) float32 that training stored for the tracked images among
    `images` (each recognised by its pixels); a `Probability` model reads the probability's maps."""
    if method not in STORED_METHODS:
        raise EveInputError(f"Unknown stored method {method!r}: use one of {', '.join(STORED_METHODS)}.")
    mlp, probability = _mlp(model)
    if not has_stored(model):
        raise EveInputError(
            f"This {type(mlp).__name__} was not trained with XtrAIn tracking: retrain it with a recipe that tracks "
            "images (e.g. `python -m engine train-classifier shapes-elongated-mlp`), or use Xstep."
        )
    images = _check_images(images, _size(mlp))
    found = tracked_rows(model, images)
    if None in found:
        missing = [b for b, j in enumerate(found) if j is None]
        n = len(mlp.xtrain_inputs)
        raise EveInputError(
            f"{method} maps are stored only for the {n} images tracked while the model trained, and image(s) "
            f"{missing[:5]} are not among them: choose tracked images (the card's xtrain images), or use Xstep, "
            "which maps any image."
        )
    stored = mlp.xtrain_maps[EXPLAINED.index("probability" if probability else "output"), STORED_METHODS.index(method)]
    per_pixel = stored[:, found].flatten(2).permute(1, 2, 0).float()  # (B, P, K)
    return _target_maps(per_pixel.to(images.device), target, _size(mlp))


def attribute(model, images: torch.Tensor, method: str, target=0) -> torch.Tensor:
    """A map of one of `METHODS`, (B, 1, S, S) float32 (what `engine.pixelmaps.methods.attribution_map` calls)."""
    if method == "Xstep":
        return xstep(model, images, target)
    return stored_maps(model, images, method, target)


# 6. the card: which maps a zoo model holds ---------------------------------------------------------


@dataclass(frozen=True)
class Tracking:
    """A card's `xtrain` entry: the maps training stored and the images they are of."""

    methods: tuple[str, ...]  # every XtrAIn method the model offers (METHODS)
    stored: tuple[str, ...]  # those stored with the weights (STORED_METHODS)
    images: tuple[str, ...]  # the tracked images' subject IDs, in buffer order
    split: str  # the split they come from
    explained: tuple[str, ...]  # the outputs tracked: "output" and, for a logit, "probability"
    steps: int  # optimisation steps tracked (every step of training)
    stored_as: str  # where the arrays are
    xstep: str  # what Xstep computes

    @classmethod
    def from_card(cls, card) -> Tracking | None:
        """The card's `xtrain` entry, or None for a model trained without tracking."""
        data = getattr(card, "xtrain", None) or {}
        if not data:
            return None
        return cls(
            methods=tuple(data["methods"]),
            stored=tuple(data["stored"]),
            images=tuple(str(s) for s in data["images"]),
            split=str(data["split"]),
            explained=tuple(data["explained"]),
            steps=int(data["steps"]),
            stored_as=str(data["stored_as"]),
            xstep=str(data["xstep"]),
        )

    def to_json(self) -> dict:
        return {
            "methods": list(self.methods),
            "stored": list(self.stored),
            "images": list(self.images),
            "split": self.split,
            "explained": list(self.explained),
            "steps": self.steps,
            "stored_as": self.stored_as,
            "xstep": self.xstep,
        }


XSTEP = "one step from the constant model (the trained weights with W1 = 0) to the trained model"


@dataclass(frozen=True)
class StoredMaps:
    """A zoo model's stored XtrAIn (or XtrAIn+) maps and what they are of."""

    method: str
    subjects: tuple[str, ...]  # the tracked images, as the card lists them
    images: torch.Tensor  # (N, 1, S, S) float32, the tracked model inputs
    maps: torch.Tensor  # (N, 1, S, S) float32
