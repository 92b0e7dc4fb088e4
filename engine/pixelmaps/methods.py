"""Pixel-attribution baselines: captum's maps, side by side with Eve's feature scores.

They say *where* a model looks; Eve's scores say *which human feature* drives it.

    attribution_map(model, images, method, target=0, **params)   # (B, 1, S, S) → (B, 1, S, S)
                                                                  # (B, 1, S, S, S) volumes: 3D maps
    display_normalise(maps, signed=True, percentile=99)           # for showing maps
    infidelity(...), sensitivity_max(...), captum_metrics_table(...)  # captum.metrics per method
    randomisation_check(model, images, methods)                    # Adebayo et al. sanity check

The nine methods (`METHODS`), each with captum's contract (construct with the model, call
`attribute(inputs, target=...)`) and Eve's defaults for (B, 1, S, S) images in [0, 1]:

* Saliency — |∂y/∂x| (Simonyan et al., 2014).
* IntegratedGradients — (x − x̄) ∫ ∂y/∂x(x̄ + α(x − x̄)) dα, black baseline x̄ = 0
  (Sundararajan et al., 2017). Completeness: Σ maps = y(x) − y(x̄) up to the
  convergence delta (`return_delta=True`).
* GradientShap — expected gradients × (x − x̄) with x̄ drawn from a baseline
  distribution and Gaussian noise on the inputs (Lundberg & Lee, 2017).
* DeepLift — the Rescale rule against a black baseline (Shrikumar et al., 2017).
* InputXGradient — x · ∂y/∂x (Shrikumar et al., 2016).
* Occlusion — drop in y when a window is replaced by black (Zeiler & Fergus, 2014).
* LayerGradCam — ReLU(Σ_c mean(∂y/∂A_c) A_c) at the model's `cam_layer`, upsampled
  bilinearly to the image (trilinearly to a volume) (Selvaraju et al., 2017).
* GuidedBackprop — gradients with negative ReLU gradients zeroed (Springenberg et al., 2015).
* SmoothGrad — captum's NoiseTunnel over Saliency: mean |∂y/∂x| over noisy copies
  (Smilkov et al., 2017).
* LRP — layer-wise relevance propagation (Bach et al., 2015): the ε-rule (ε = 1e-9) on every
  convolution, batch norm and linear layer (`rule="epsilon"`, LRP-0 in effect), or the γ-rule
  (γ = 0.25) on the convolutions and ε on the rest (`rule="gamma"`, Montavon et al. 2019's choice
  for lower layers); ReLU and pooling pass relevance through, Flatten passes it by the ε-rule.
  2D models only (captum has no rule for 3D convolutions).

Attention maps of a Vision Transformer (`attention`; `engine.pixelmaps.attention`, not captum; one value per
patch): AttentionCLS, AttentionRollout (Abnar & Zuidema, 2020), AttentionGradient (Chefer et
al., 2021). Unavailable, with the reason, for a model without attention layers.

Region methods (`regional`: maps are constant on each region of `regions`, a label map shaped like
one image, or "grid": square cells of side S/8 in 2D, S/4 in 3D; `engine.pixelmaps.regions` makes anatomy
and atlas label maps):

* FeatureAblation — output drop when one region is set to the baseline (black).
* ShapleyValueSampling — Shapley values of the regions from `n_samples` random permutations
  (Castro et al., 2009; Štrumbelj & Kononenko, 2010); they add up to f(x) − f(baseline).
* Lime — a linear model of the output on regions switched on and off at random, weighted by
  closeness to the image (Ribeiro, Singh & Guestrin, 2016), a ridge regression (α = 1) as the
  lime package fits it.
* KernelShap — the Shapley kernel's weighted linear regression on random coalitions of regions
  (Lundberg & Lee, 2017).

Training-trajectory methods (`TRAINING_METHODS`, `training`; `engine.models.xtrain`, not captum), for a fully
connected network (`MLP`) only: XtrAIn and XtrAIn+ (Lymperopoulos, Kakogeorgiou & Kanellopoulou, 2026;
`stored`: summed over every training step and stored with the weights, so available only for a model
trained with tracking — its card's `xtrain` — and only for the images it tracked), and Xstep (one step
from the constant model to the trained one: any image). `available_methods(model, training=True)` adds
them; `METHODS` keeps the methods computed from the model alone, `method_info` looks up either.

Random methods (GradientShap, SmoothGrad, and the quality metrics) take a `seed` and do
not disturb the global random state. Every method works on volumes of a 3D model as well
(Occlusion with a cube window); a map has the input's shape.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from captum import attr as captum_attr
from captum import metrics as captum_metrics
from scipy import stats
from torch import nn

from engine.devices import placed
from engine.errors import EveInputError, reason

DEFAULT_BATCH = 32  # images per captum call
FORWARD_BATCH = 64  # images per forward pass inside a method (IG steps, occlusions, noisy copies): larger
#                     passes fall out of the CPU's cache and run slower per image


@dataclass(frozen=True)
class Method:
    """One baseline: its captum class, defaults and properties."""

    captum: str  # captum class it wraps
    description: str
    defaults: dict = field(default_factory=dict)  # per-call parameters and their defaults
    signed: bool = True  # maps carry a sign with the defaults
    hooks: bool = False  # needs module hooks: not available for TorchScript models
    random: bool = False  # draws random numbers (seeded by `seed`)
    delta: bool = False  # supports `return_delta=True` (captum's convergence delta)
    regional: bool = False  # one value per region of `regions`
    slow: bool = False  # a forward pass per sample (hundreds an image): the app computes these on request
    attention: bool = False  # a Vision Transformer's attention maps (`engine.pixelmaps.attention`), not captum's
    training: bool = False  # from the training trajectory (`engine.models.xtrain`): an MLP's first-layer weight swaps
    stored: bool = False  # stored by training with XtrAIn tracking (the card's `xtrain`): the tracked images only


METHODS: dict[str, Method] = {
    "Saliency": Method("Saliency", "absolute input gradient |dy/dx|", {"abs": True}, signed=False),
    "IntegratedGradients": Method(
        "IntegratedGradients",
        "path integral of gradients from a black image",
        {"baseline": 0.0, "n_steps": 50, "integration": "gausslegendre"},
        delta=True,
    ),
    "GradientShap": Method(
        "GradientShap",
        "expected gradients from a baseline distribution, with input noise",
        {"baselines": None, "n_samples": 16, "stdevs": 0.1, "seed": 0},
        random=True,
        delta=True,
    ),
    "DeepLift": Method(
        "DeepLift", "DeepLift rescale rule against a black image", {"baseline": 0.0}, hooks=True, delta=True
    ),
    "InputXGradient": Method("InputXGradient", "input times gradient"),
    "Occlusion": Method(
        "Occlusion",
        "output drop when a square window is blacked out",
        {"window": None, "stride": None, "baseline": 0.0},
    ),
    "LayerGradCam": Method(
        "LayerGradCam",
        "Grad-CAM at the model's last feature map, upsampled to the image",
        {"layer": None, "relu": True, "interpolate_mode": "bilinear"},
        signed=False,
        hooks=True,
    ),
    "GuidedBackprop": Method("GuidedBackprop", "gradients through ReLUs that pass only positive gradients", hooks=True),
    "SmoothGrad": Method(
        "NoiseTunnel",
        "SmoothGrad: mean absolute gradient over noisy copies (NoiseTunnel)",
        {"nt_samples": 16, "stdevs": 0.1, "abs": True, "seed": 0},
        signed=False,
        random=True,
    ),
    "LRP": Method(
        "LRP",
        "layer-wise relevance propagation, ε-rule (or γ on the convolutions)",
        {"rule": "epsilon"},
        hooks=True,
        delta=True,
    ),
    "FeatureAblation": Method(
        "FeatureAblation",
        "output drop when each region is blacked out",
        {"regions": "grid", "baseline": 0.0},
        regional=True,
    ),
    "ShapleyValueSampling": Method(
        "ShapleyValueSampling",
        "Shapley values of the regions, from sampled permutations",
        {"regions": "grid", "n_samples": 25, "baseline": 0.0, "seed": 0},
        random=True,
        regional=True,
        slow=True,
    ),
    "Lime": Method(
        "Lime",
        "LIME: a linear model of the output on regions switched off at random",
        {"regions": "grid", "n_samples": 200, "baseline": 0.0, "seed": 0},
        random=True,
        regional=True,
        slow=True,
    ),
    "KernelShap": Method(
        "KernelShap",
        "KernelSHAP: the Shapley kernel's regression on random coalitions of regions",
        {"regions": "grid", "n_samples": 200, "baseline": 0.0, "seed": 0},
        random=True,
        regional=True,
        slow=True,
    ),
}
METHODS |= {
    "AttentionCLS": Method("", "the last layer's attention from the class token (a ViT)", signed=False, attention=True),
    "AttentionRollout": Method(
        "", "attention rollout through the layers (Abnar & Zuidema, 2020; a ViT)", signed=False, attention=True
    ),
    "AttentionGradient": Method(
        "",
        "gradient-weighted attention relevance (Chefer et al., 2021; a ViT)",
        signed=False,
        hooks=True,
        attention=True,
    ),
}
TRAINING_METHODS: dict[str, Method] = {
    "XtrAIn": Method(
        "",
        "training-guided occlusion: first-layer weight swaps summed over every training step (Lymperopoulos et al.)",
        training=True,
        stored=True,
    ),
    "XtrAIn+": Method(
        "", "XtrAIn over the updates that raised the output only", signed=False, training=True, stored=True
    ),
    "Xstep": Method(
        "", "XtrAIn's swaps in one step, from the constant model (W1 = 0) to the trained one", training=True
    ),
}
ALL_METHODS = METHODS | TRAINING_METHODS
LRP_RULES = ("epsilon", "gamma")
LRP_EPSILON = 1e-9
LRP_GAMMA = 0.25
GRID_CELLS = {2: 8, 3: 4}  # "grid" regions: cells per side of an image / a volume
LIME_RIDGE_ALPHA = 1.0  # the lime package's default regressor, Ridge(alpha=1)


# 1. validation -----------------------------------------------------------------------------


def is_torchscript(model) -> bool:
    return isinstance(model, torch.jit.ScriptModule)


# the layers captum's LRP has a rule for (or, for the nonlinearities and Flatten, passes relevance through)
LRP_LAYERS = (
    *(nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.Flatten, nn.ReLU, nn.Dropout, nn.Tanh),
    *(nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d),
)


def _transformer(model):
    from engine.pixelmaps.attention import transformer

    return transformer(model)


def method_info(method: str) -> Method:
    """The `Method` record of any method, captum's or the training trajectory's."""
    if method not in ALL_METHODS:
        raise EveInputError(f"Unknown attribution method {method!r}: use one of {', '.join(ALL_METHODS)}.")
    return ALL_METHODS[method]


def unavailable(model, method: str) -> str | None:
    """Why `method` cannot explain `model`, in words (None: it can). The app lists a method that does
    not apply with this reason; `attribution_map` refuses it with the same one."""
    info = method_info(method)
    if info.training:
        from engine.models import xtrain

        return xtrain.unavailable(model, method)
    if info.attention and _transformer(model) is None:
        return "it reads a Vision Transformer's attention layers, and the model has none"
    if info.hooks and is_torchscript(model):
        return "it needs the model's layers (module hooks), which a TorchScript model does not expose"
    if method == "LRP":
        leaves = {type(m).__name__ for m in model.modules() if not list(m.children()) and not isinstance(m, LRP_LAYERS)}
        if leaves:
            return f"captum's LRP has no rule for the model's {', '.join(sorted(leaves))} layers"
    if method == "LayerGradCam" and getattr(model, "cam_layer", None) is None:
        if not any(isinstance(m, (nn.Conv2d, nn.Conv3d)) for m in model.modules()):
            return "it needs a convolutional feature map, and the model has no convolution"
    return None


def available_methods(model, *, slow: bool = True, training: bool = False) -> list[str]:
    """The methods that can explain `model` (without the `slow` ones if asked; with the training
    trajectory's, `TRAINING_METHODS`, if asked)."""
    registry = ALL_METHODS if training else METHODS
    return [m for m, info in registry.items() if unavailable(model, m) is None and (slow or not info.slow)]


def _check_method(method: str, model, *, layer_given: bool = False) -> Method:
    method_info(method)
    why = None if (method == "LayerGradCam" and layer_given) else unavailable(model, method)
    if why:
        usable = [m for m in available_methods(model, training=True) if m != method]
        raise EveInputError(
            f"{method} cannot explain this model ({why}): choose one of {', '.join(usable)}, or, for a "
            "TorchScript model, load it as a built-in."
        )
    return ALL_METHODS[method]


def _check_params(method: str, params: dict) -> dict:
    allowed = ALL_METHODS[method].defaults
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        names = ", ".join(allowed) or "none"
        raise EveInputError(f"{method} has no parameter {', '.join(map(repr, unknown))}: pass only its own ({names}).")
    return {**allowed, **params}


def check_images(images) -> torch.Tensor:
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if not isinstance(images, torch.Tensor):
        raise EveInputError(
            f"images are a {type(images).__name__}, not a torch tensor: give a tensor shaped (B, 1, S, S)."
        )
    if images.ndim not in (4, 5) or images.shape[1] != 1 or images.shape[0] < 1 or min(images.shape[2:]) < 2:
        hint = (
            " (add the batch and channel axes, e.g. images[None, None])"
            if images.ndim == 2
            else (" (add the batch axis, e.g. images[None])" if images.ndim == 3 else "")
        )
        raise EveInputError(
            f"images have shape {tuple(images.shape)}: give a batch shaped (B, 1, S, S), "
            f"or (B, 1, S, S, S) for volumes{hint}."
        )
    if not images.is_floating_point():
        raise EveInputError(f"images have dtype {images.dtype}: convert them to float32 in [0, 1].")
    if not torch.isfinite(images).all():
        raise EveInputError("images contain NaN or Inf: replace them before computing attribution maps.")
    return images.detach().to(torch.float32)


def check_outputs(model, images: torch.Tensor, target) -> torch.Tensor:
    """Forward once; check (B, K), finiteness and the target. Returns the target as a tensor."""
    if getattr(model, "training", False):
        raise EveInputError("The model is in training mode: call model.eval() before computing attribution maps.")
    try:
        with torch.no_grad():
            out = model(images)
    except Exception as exc:
        raise EveInputError(
            f"The model failed on images of shape {tuple(images.shape)} ({reason(exc, typed=True)}): "
            "give images of the size the model takes."
        ) from exc
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != len(images):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise EveInputError(f"The model returned {shape} for {len(images)} images: it must return (B, K).")
    bad = (~torch.isfinite(out)).any(dim=1)
    if bad.any():
        rows = bad.nonzero().flatten().tolist()
        raise EveInputError(
            f"The model returned NaN or Inf for image(s) {rows[:5]}{'...' if len(rows) > 5 else ''}: "
            "attribution maps need finite outputs; check the model and those images."
        )
    k = out.shape[1]
    target_t = torch.as_tensor(target)
    if target_t.is_floating_point() or target_t.ndim > 1 or (target_t.ndim == 1 and len(target_t) != len(images)):
        raise EveInputError(f"target {target!r} is not an output index: give an int, or one index per image.")
    if ((target_t < 0) | (target_t >= k)).any():
        raise EveInputError(
            f"target {target!r} is out of range: the model has {k} output(s), indices 0..{k - 1}; use one of them."
        )
    return target_t.to(images.device)


# 2. the methods ------------------------------------------------------------------------------


@contextlib.contextmanager
def _seeded(seed: int | None, device: torch.device):
    """Run with torch's and numpy's global RNGs seeded, restoring their states afterwards (captum's
    GradientShap draws its path coefficients with `np.random.uniform`, its noise with torch)."""
    if seed is None:
        yield
        return
    devices = [device] if device.type == "cuda" else []
    numpy_state = np.random.get_state()
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(int(seed))
            np.random.seed(int(seed) % 2**32)
            yield
    finally:
        np.random.set_state(numpy_state)


def _cam_layer(model, layer) -> nn.Module:
    if isinstance(layer, nn.Module):
        return layer
    if isinstance(layer, str):
        modules = dict(model.named_modules())
        if layer not in modules:
            raise EveInputError(f"The model has no layer {layer!r}: name one of {', '.join(n for n in modules if n)}.")
        return modules[layer]
    if getattr(model, "cam_layer", None) is not None:
        return model.cam_layer
    convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d))]
    if not convs:
        raise EveInputError(
            "LayerGradCam needs a feature-map layer: the model has no Conv2d/Conv3d and no `cam_layer`; "
            "pass layer=<module or name>."
        )
    return convs[-1]


def _occlusion_geometry(size: tuple[int, ...], window, stride) -> tuple[int, int]:
    side = min(size)
    window = max(1, side // 8) if window is None else int(window)
    stride = max(1, window // 2) if stride is None else int(stride)
    if not 1 <= window <= side or stride < 1:
        raise EveInputError(
            f"Occlusion window {window} / stride {stride} do not fit a {'x'.join(map(str, size))} input: "
            f"use 1 <= window <= {side} and stride >= 1."
        )
    return window, stride


def _compute(model, x: torch.Tensor, method: str, target: torch.Tensor, p: dict, return_delta: bool = False):
    """One captum call on a batch x (B, 1, H, W) or (B, 1, D, H, W); parameters already complete and checked."""
    if method == "Saliency":
        return captum_attr.Saliency(model).attribute(x, target=target, abs=p["abs"])
    if method == "IntegratedGradients":
        return captum_attr.IntegratedGradients(model).attribute(
            x,
            baselines=p["baseline"],
            target=target,
            n_steps=int(p["n_steps"]),
            method=p["integration"],
            internal_batch_size=max(len(x), FORWARD_BATCH),
            return_convergence_delta=return_delta,
        )
    if method == "GradientShap":
        baselines = p["baselines"]
        if baselines is None:
            baselines = torch.zeros_like(x[:1])  # black image; add noise with `stdevs`
        elif isinstance(baselines, torch.Tensor) and baselines.ndim == 3:
            baselines = baselines[None]
        return captum_attr.GradientShap(model).attribute(
            x,
            baselines=baselines.to(x),
            n_samples=int(p["n_samples"]),
            stdevs=float(p["stdevs"]),
            target=target,
            return_convergence_delta=return_delta,
        )
    if method == "DeepLift":
        with warnings.catch_warnings():  # captum warns that it sets requires_grad; expected here
            warnings.simplefilter("ignore", UserWarning)
            return captum_attr.DeepLift(model).attribute(
                x, baselines=p["baseline"], target=target, return_convergence_delta=return_delta
            )
    if method == "InputXGradient":
        return captum_attr.InputXGradient(model).attribute(x, target=target)
    if method == "Occlusion":
        spatial = x.ndim - 2
        window, stride = _occlusion_geometry(tuple(x.shape[2:]), p["window"], p["stride"])
        return captum_attr.Occlusion(model).attribute(
            x,
            sliding_window_shapes=(1,) + (window,) * spatial,
            strides=(1,) + (stride,) * spatial,
            baselines=p["baseline"],
            target=target,
            perturbations_per_eval=max(1, FORWARD_BATCH // len(x)),
        )
    if method == "LayerGradCam":
        cam = captum_attr.LayerGradCam(model, _cam_layer(model, p["layer"]))
        maps = cam.attribute(x, target=target, relu_attributions=bool(p["relu"]))  # (B, 1, h, w[, d])
        if maps.ndim != x.ndim:
            raise EveInputError(
                f"The Grad-CAM layer's output has shape {tuple(maps.shape)}: choose a layer with "
                f"a feature map shaped like the input, (B, C{', h, w' if x.ndim == 4 else ', d, h, w'})."
            )
        mode = "trilinear" if x.ndim == 5 and p["interpolate_mode"] == "bilinear" else p["interpolate_mode"]
        maps = captum_attr.LayerAttribution.interpolate(maps, tuple(x.shape[2:]), mode)
        return maps.expand_as(x)
    if method == "GuidedBackprop":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return captum_attr.GuidedBackprop(model).attribute(x, target=target)
    if ALL_METHODS[method].training:
        from engine.models import xtrain

        return xtrain.attribute(model, x, method, target)
    if METHODS[method].attention:
        from engine.pixelmaps.attention import attention_map

        return attention_map(model, x, method, target)
    if method == "LRP":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return captum_attr.LRP(_lrp_ready(model, p["rule"])).attribute(
                x, target=target, return_convergence_delta=return_delta
            )
    if METHODS[method].regional:
        return _regional(model, x, method, target, p)
    if method == "SmoothGrad":
        tunnel = captum_attr.NoiseTunnel(captum_attr.Saliency(model))
        return tunnel.attribute(
            x,
            nt_type="smoothgrad",
            nt_samples=int(p["nt_samples"]),
            stdevs=float(p["stdevs"]),
            nt_samples_batch_size=max(1, FORWARD_BATCH // len(x)),
            target=target,
            abs=p["abs"],
        )
    raise AssertionError(method)


def _lrp_ready(model: nn.Module, rule: str) -> nn.Module:
    """A copy of the model with captum's LRP rules attached (captum writes them onto the modules)."""
    from captum.attr._utils.lrp_rules import EpsilonRule, GammaRule

    if rule not in LRP_RULES:
        raise EveInputError(f"LRP rule {rule!r} is unknown: use one of {', '.join(LRP_RULES)}.")
    ready = copy.deepcopy(model)
    for module in ready.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.Flatten)):
            # ε on a reshape passes relevance through unchanged (captum's identity rule keeps the output's shape)
            module.rule = EpsilonRule(LRP_EPSILON)
        if rule == "gamma" and isinstance(module, nn.Conv2d):
            module.rule = GammaRule(LRP_GAMMA)
    return ready


def region_labels(regions, shape: tuple[int, ...]) -> torch.Tensor:
    """A label map (one int per pixel, regions numbered 0..R-1) for one image of `shape` (H, W) or
    (D, H, W): "grid" cells, a cell side (int), or a given label map of that shape."""
    if isinstance(regions, str):
        if regions != "grid":
            raise EveInputError(f"regions = {regions!r}: give 'grid', a cell side in pixels, or a label map.")
        regions = max(1, min(shape) // GRID_CELLS[len(shape)])
    if isinstance(regions, (int, np.integer)):
        side = int(regions)
        if not 1 <= side <= min(shape):
            raise EveInputError(
                f"Grid cells of side {side} do not fit a {'x'.join(map(str, shape))} image: use 1..{min(shape)}."
            )
        axes = [torch.arange(n) // side for n in shape]
        cells = [int(a.max()) + 1 for a in axes]
        grids = torch.meshgrid(*axes, indexing="ij")
        labels = torch.zeros(shape, dtype=torch.long)
        for grid, later in zip(grids, [int(np.prod(cells[i + 1 :])) for i in range(len(cells))], strict=True):
            labels += grid * later
        return labels
    labels = torch.as_tensor(np.asarray(regions)).long()
    if tuple(labels.shape) != tuple(shape):
        raise EveInputError(
            f"The region map has shape {tuple(labels.shape)} but one image is {tuple(shape)}: give one label per pixel."
        )
    _, dense = torch.unique(labels, return_inverse=True)  # captum wants labels 0..R-1
    return dense.reshape(shape)


def _regional(model, x: torch.Tensor, method: str, target: torch.Tensor, p: dict) -> torch.Tensor:
    """A region method on a batch: one captum call per image (LIME and KernelSHAP fit one image at a time)."""
    labels = region_labels(p["regions"], tuple(x.shape[2:]))[None, None].to(x.device)
    if method == "Lime":  # ridge, as the lime package fits (captum's default Lasso zeroes small effects)
        from captum._utils.models.linear_model import SkLearnRidge

        explainer = captum_attr.Lime(model, interpretable_model=SkLearnRidge(alpha=LIME_RIDGE_ALPHA))
    else:
        explainer = getattr(captum_attr, METHODS[method].captum)(model)
    per_eval = max(1, FORWARD_BATCH)
    maps = []
    for i in range(len(x)):
        t = target if target.ndim == 0 else target[i : i + 1]
        kwargs = dict(target=t, baselines=p["baseline"], feature_mask=labels, perturbations_per_eval=per_eval)
        if "n_samples" in p:
            kwargs["n_samples"] = int(p["n_samples"])
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # captum: "you are providing multiple inputs..." for one
            maps.append(explainer.attribute(x[i : i + 1].detach(), **kwargs))
    return torch.cat(maps)


def _compute_batched(model, images, method, target, p, batch_size, return_delta=False):
    maps, deltas = [], []
    seed = p.get("seed") if ALL_METHODS[method].random else None
    if method == "GradientShap":  # captum runs all B × n_samples copies in one forward pass
        batch_size = min(batch_size, max(1, FORWARD_BATCH // int(p["n_samples"])))
    with _seeded(seed, images.device):
        for start in range(0, len(images), batch_size):
            x = images[start : start + batch_size].clone().requires_grad_()  # a copy: images stay unchanged
            t = target if target.ndim == 0 else target[start : start + batch_size]
            result = _compute(model, x, method, t, p, return_delta)
            if return_delta:
                result, delta = result
                deltas.append(delta.detach())
            maps.append(result.detach())
    maps = torch.cat(maps).to(torch.float32)
    return (maps, torch.cat(deltas)) if return_delta else maps


def attribution_map(
    model,
    images: torch.Tensor,
    method: str,
    target: int | torch.Tensor = 0,
    *,
    batch_size: int = DEFAULT_BATCH,
    return_delta: bool = False,
    **params,
):
    """A pixel-attribution map per image, from one of `METHODS` or `TRAINING_METHODS` (`ALL_METHODS`).

    Args:
        model: an `nn.Module` (or TorchScript module) in eval mode: (B, 1, S, S) → (B, K).
        images: (B, 1, S, S) float tensor; left unchanged.
        method: a key of `ALL_METHODS`.
        target: output index (int) or one index per image (LongTensor (B,)).
        batch_size: images per captum call.
        return_delta: for IntegratedGradients / DeepLift / GradientShap, also return captum's
            convergence delta, Σ maps − (y(x) − y(baseline)), per image (per sample for GradientShap).
        **params: the method's parameters (`ALL_METHODS[method].defaults` lists them and their defaults).

    Returns:
        maps (B, 1, S, S) float32, detached, on the images' device (and the delta if asked).

    Raises `EveInputError` for an unknown method or parameter, badly shaped or non-finite
    images, a model that fails or returns NaN/Inf, a target out of range, non-finite maps.
    """
    info = _check_method(method, model, layer_given=params.get("layer") is not None)
    p = _check_params(method, params)
    if return_delta and not info.delta:
        raise EveInputError(
            f"{method} has no convergence delta: use return_delta only with "
            f"{', '.join(m for m, i in METHODS.items() if i.delta)}."
        )
    if int(batch_size) < 1:
        raise EveInputError(f"batch_size = {batch_size}: use 1 or more.")
    images = check_images(images)
    home, images = images.device, placed(model, images)  # computed where the model is, returned where asked
    target_t = check_outputs(model, images, target)
    if info.hooks:
        model, p = _own_copy(model, p)
    result = _compute_batched(model, images, method, target_t, p, int(batch_size), return_delta)
    result = (result[0].to(home), result[1].to(home)) if return_delta else result.to(home)
    maps = result[0] if return_delta else result
    if not torch.isfinite(maps).all():
        raise EveInputError(
            f"{method} produced NaN or Inf values for this model: its gradients are not finite; "
            "try another method or check the model."
        )
    return result


def _own_copy(model: nn.Module, p: dict) -> tuple[nn.Module, dict]:
    """A hook-based method's own copy of the model (and its parameters, a layer named rather than held). captum
    attaches hooks to the modules (LRP its rules too) while it runs, and the app's models are shared by every
    session's thread: another thread's forward pass through a hooked module breaks both (measured: two sessions'
    Compare pages at once raised IndexError inside captum). A copy of a zoo model takes about a millisecond."""
    layer = p.get("layer")
    if isinstance(layer, nn.Module):
        names = {id(m): name for name, m in model.named_modules()}
        if id(layer) in names:
            p = {**p, "layer": names[id(layer)]}
    return copy.deepcopy(model), p


def display_normalise(maps: torch.Tensor, signed: bool = True, percentile: float = 99.0) -> torch.Tensor:
    """Scale each map for display: divide by its `percentile`-th |value|, clip.

    signed=True keeps the sign (values in [−1, 1], 0 stays 0, for a diverging colour map);
    signed=False shows magnitudes (|map| in [0, 1]). Percentile clipping keeps a few extreme
    pixels from washing out the rest. A map of zeros stays zeros.
    """
    maps = torch.as_tensor(maps).detach().to(torch.float32)
    if not 0 < float(percentile) <= 100:
        raise EveInputError(f"percentile = {percentile}: use a value in (0, 100].")
    if maps.ndim < 2:
        raise EveInputError(f"maps have shape {tuple(maps.shape)}: give one map per image, (B, ...).")
    if not torch.isfinite(maps).all():
        raise EveInputError("maps contain NaN or Inf: recompute them.")
    flat = maps.abs().flatten(1)  # (B, P)
    scale = torch.quantile(flat, float(percentile) / 100.0, dim=1)
    scale = torch.where(scale > 0, scale, flat.amax(dim=1))  # sparse maps: fall back to the max
    scale = torch.where(scale > 0, scale, torch.ones_like(scale)).view(-1, *([1] * (maps.ndim - 1)))
    if signed:
        return (maps / scale).clamp(-1.0, 1.0)
    return (maps.abs() / scale).clamp(0.0, 1.0)


# 3. quality of the maps ---------------------------------------------------------------------


def infidelity(
    model,
    images: torch.Tensor,
    method: str,
    target: int = 0,
    *,
    n_perturb_samples: int = 10,
    noise_scale: float = 0.05,
    seed: int = 0,
    maps: torch.Tensor | None = None,
    **params,
) -> torch.Tensor:
    """captum's infidelity of a method's maps, per image (B,); lower is better.

    INFD = E_I[(Iᵀ·φ(x) − (y(x) − y(x − I)))²] with I ~ N(0, noise_scale²) per pixel
    (Yeh et al., 2019), maps rescaled by the best scalar first (`normalize=True`), so
    methods on different scales compare.
    """
    maps = attribution_map(model, images, method, target, **params) if maps is None else maps
    images = check_images(images)
    target_t = check_outputs(model, images, target)

    def perturb(inputs):
        noise = torch.randn_like(inputs) * noise_scale
        return noise, inputs - noise

    with _seeded(seed, images.device):
        return captum_metrics.infidelity(
            model,
            perturb,
            images.clone(),
            maps,
            target=target_t,
            n_perturb_samples=int(n_perturb_samples),
            normalize=True,
        ).detach()


def sensitivity_max(
    model,
    images: torch.Tensor,
    method: str,
    target: int = 0,
    *,
    n_perturb_samples: int = 10,
    radius: float = 0.02,
    seed: int = 0,
    **params,
) -> torch.Tensor:
    """captum's max-sensitivity of a method's maps, per image (B,); lower is more stable.

    max over perturbations δ ~ U(−radius, radius) per pixel of ‖φ(x + δ) − φ(x)‖ / ‖φ(x)‖
    (Yeh et al., 2019).
    """
    _check_method(method, model)
    p = _check_params(method, params)
    images = check_images(images)
    target_t = check_outputs(model, images, target)

    def explain(inputs, target):  # captum passes a tuple of inputs and repeats `target` per copy
        inputs = inputs[0] if isinstance(inputs, tuple) else inputs
        return (_compute_batched(model, inputs, method, torch.as_tensor(target), p, DEFAULT_BATCH),)

    with _seeded(seed, images.device):
        return captum_metrics.sensitivity_max(
            explain,
            images.clone(),
            perturb_radius=float(radius),
            n_perturb_samples=int(n_perturb_samples),
            target=target_t,
        ).detach()


def captum_metrics_table(
    model,
    images: torch.Tensor,
    methods: list[str] | None = None,
    target: int = 0,
    *,
    n_perturb_samples: int = 10,
    seed: int = 0,
    params: dict | None = None,
) -> pd.DataFrame:
    """Infidelity and max-sensitivity per method (mean and sd over images) as a DataFrame."""
    methods = _default_methods(model) if methods is None else list(methods)
    params = params or {}
    rows = []
    for method in methods:
        _check_method(method, model)
        p = params.get(method, {})
        infd = infidelity(model, images, method, target, n_perturb_samples=n_perturb_samples, seed=seed, **p)
        sens = sensitivity_max(model, images, method, target, n_perturb_samples=n_perturb_samples, seed=seed, **p)
        rows.append(
            {
                "method": method,
                "infidelity": float(infd.mean()),
                "infidelity_sd": float(infd.std()),
                "sensitivity_max": float(sens.mean()),
                "sensitivity_max_sd": float(sens.std()),
                "n_images": len(infd),
            }
        )
    return pd.DataFrame(rows)


def _default_methods(model) -> list[str]:
    """The quality checks' methods: every one that applies, but the region methods (their maps are
    constant on regions, and the slow ones take hundreds of passes an image)."""
    return [m for m in available_methods(model) if not METHODS[m].regional]


# 4. model-parameter randomisation check -------------------------------------------------------


def randomisable_layers(model: nn.Module) -> list[str]:
    """Names of the layers with weights (Conv, Linear), from the output back to the input."""
    kinds = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
    return [name for name, m in model.named_modules() if isinstance(m, kinds)][::-1]


def spearman(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Spearman rank correlation per image of two map batches (B, ...); NaN if a map is constant."""
    a, b = a.flatten(1).cpu().numpy(), b.flatten(1).cpu().numpy()
    out = np.full(len(a), np.nan)
    for i in range(len(a)):
        if np.ptp(a[i]) > 0 and np.ptp(b[i]) > 0:
            out[i] = stats.spearmanr(a[i], b[i]).statistic
    return out


def randomisation_check(
    model: nn.Module,
    images: torch.Tensor,
    methods: list[str] | None = None,
    target: int = 0,
    *,
    mode: str = "cascading",
    seed: int = 0,
    params: dict | None = None,
) -> pd.DataFrame:
    """Model-parameter randomisation test (Adebayo et al., "Sanity Checks for Saliency Maps", 2018).

    Re-initialise the weights of the model's layers (PyTorch's default initialisation, seeded)
    from the top (output) layer down — cumulatively (`mode="cascading"`) or one layer at a time
    (`"independent"`) — and compare each method's maps with the trained model's maps by the
    Spearman rank correlation, of the signed maps and of their absolute values. A method whose
    maps barely change (correlation near 1) when the weights are randomised does not explain
    the model. BatchNorm statistics are left as trained; the model itself is not modified.

    Returns a DataFrame, one row per (method, step): step 0 is the trained model (correlation 1),
    step k has randomised `layer` (and, cascading, every layer above it); `spearman` /
    `spearman_abs` are means over images, `spearman_abs_sd` their sd.
    """
    if is_torchscript(model) or not isinstance(model, nn.Module):
        raise EveInputError(
            "The randomisation check re-initialises the model's layers, which needs a regular "
            "nn.Module, not a TorchScript model: run it on a built-in model."
        )
    if mode not in ("cascading", "independent"):
        raise EveInputError(f"Unknown randomisation mode {mode!r}: use 'cascading' or 'independent'.")
    methods = _default_methods(model) if methods is None else list(methods)
    params = {m: dict(p) for m, p in (params or {}).items()}
    for method in methods:
        _check_method(method, model)
        _check_params(method, params.get(method, {}))
        layer = params.get(method, {}).get("layer")
        if isinstance(layer, nn.Module):  # refer to it by name, so it can be found in the copies
            names = {id(m): n for n, m in model.named_modules()}
            params[method]["layer"] = names[id(layer)]
    images = check_images(images)
    check_outputs(model, images, target)
    reference = {m: attribution_map(model, images, m, target, **params.get(m, {})) for m in methods}
    rows = [
        {
            "method": m,
            "step": 0,
            "layer": "none (trained)",
            "spearman": 1.0,
            "spearman_abs": 1.0,
            "spearman_abs_sd": 0.0,
        }
        for m in methods
    ]
    layers = randomisable_layers(model)
    randomised = copy.deepcopy(model).eval()
    for step, name in enumerate(layers, start=1):
        if mode == "independent":
            randomised = copy.deepcopy(model).eval()
        with _seeded(seed + step, images.device), torch.no_grad():
            dict(randomised.named_modules())[name].reset_parameters()
        for m in methods:
            try:
                maps = attribution_map(randomised, images, m, target, **params.get(m, {}))
            except EveInputError as exc:  # e.g. a randomised model overflowing: record, don't stop
                rows.append(
                    {
                        "method": m,
                        "step": step,
                        "layer": name,
                        "spearman": np.nan,
                        "spearman_abs": np.nan,
                        "spearman_abs_sd": np.nan,
                        "error": str(exc),
                    }
                )
                continue
            rho = spearman(reference[m], maps)
            rho_abs = spearman(reference[m].abs(), maps.abs())
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN means a constant map
                rows.append(
                    {
                        "method": m,
                        "step": step,
                        "layer": name,
                        "spearman": float(np.nanmean(rho)),
                        "spearman_abs": float(np.nanmean(rho_abs)),
                        "spearman_abs_sd": float(np.nanstd(rho_abs)),
                    }
                )
    return pd.DataFrame(rows)
