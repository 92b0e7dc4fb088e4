"""A subject's counterfactual scan: the same slice with one feature changed and the others held.

Code name -> symbol (Song et al. 2021, DDIM; Mokady et al. 2023 and Dhariwal & Nichol 2021 on inversion):
    x (1, 1, S, S)      the subject's slice, as the classifier and the diffusion model see it
    z_0 = E(x)          its clean latent (the diffusion model's codec), r = x - D(z_0) its residual detail
    a, a'               the subject's measured features, and the same with one feature changed
    z_T = inv(z_0 | a)  deterministic DDIM inversion under a: eta = 0 steps run from t = 0 to T
    z_0' = ddim(z_T | a')   the same deterministic path run back under a'
    z_0~ = ddim(z_T | a)    the round trip with no change: z_0 up to the solver's discretisation error
    x' = clip(x + D(z_0') - D(z_0~))   the counterfactual: the slice plus the change between the two
                        regenerations, so with no change x' = x exactly

The round trip's own error (`Counterfactual.reconstruction_rms`, x~ = clip(D(z_0~) + r) against x
with r = x - D(z_0)) is stated for every edit: it is how far the inversion is from exact, and the
size below which an edit's effect is noise. Applying the edit as a difference of regenerations
keeps what the codec does not hold (the subject's own noise and fine detail) and cancels the
round trip's error to first order. For a linear-Gaussian generator the inversion is exact: z = mu(a) + L eps, so
eps = L^-1 (z_0 - mu(a)) and z_0' = mu(a') + L eps.

Checks a reader can rerun (`benchmarks/bench_counterfactual.py`): the no-change reconstruction (RMS
and the classifier's output difference), the probe's reading of the changed feature on x' (error
in SD units), and where the edit lives (the share of |x' - x|^2 inside the feature's structure,
against an edit of the same latent size in a random direction).
"""

from __future__ import annotations

import re
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from diffusers import DDIMInverseScheduler, DDIMScheduler

from engine.cards import ModelCard
from engine.data import Dataset
from engine.diffusion.conditions import FeatureClampWarning
from engine.diffusion.gaussian import LatentGaussian
from engine.diffusion.pipeline import ConditionalDiffusion
from engine.diffusion.sampler import TRAIN_SCHEDULE
from engine.errors import EveInputError
from engine.models.zoo import forward
from engine.paths import output_path
from engine.scores.generator import check_compatible

INVERSION_STEPS = 50  # DDIM steps each way; the no-change RMS each edit reports says how close this is
# the template structure each SynthBrain volume feature lives in (`engine.pixelmaps.regions.ANATOMY`)
FEATURE_STRUCTURES = {
    "ventricle_volume": "ventricles",
    "hippocampal_volume": "hippocampi",
    "gm_volume": "grey matter",
}
# the edits a clinician asks first; any other numeric feature starts at +1 SD (`suggested_value`)
SUGGESTED_CHANGES = {"ventricle_volume": "+10", "hippocampal_volume": "-20%", "age": "+10", "icv": "+10%"}
_CHANGE = re.compile(r"^\s*([+-])\s*(\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)\s*(%?)\s*$")


@dataclass(frozen=True)
class Counterfactual:
    """One subject's edit and the numbers that say how far to trust it (images (S, S) float32)."""

    subject: str
    feature: str
    value_before: float  # the subject's recorded value of the feature
    value_asked: float  # after clamping to the generator's training range
    clamped: str | None  # why the asked value was moved into the range, or None
    original: np.ndarray  # x
    reconstruction: np.ndarray  # the round trip with no change
    counterfactual: np.ndarray  # x'
    output_name: str
    output_before: float  # f(x)
    output_reconstruction: float  # f(round trip)
    output_after: float  # f(x')
    probe_before: float | None  # the generator's probe on x, or None when it does not probe the feature
    probe_after: float | None  # the probe on x'
    feature_sd: float  # the feature's SD in the generator's training data (the probe error's unit)
    reconstruction_rms: float  # RMS of round trip - x (intensity units)
    seconds: float
    held: dict = field(default_factory=dict)  # the other features held at the subject's values
    # where the edit lives (`edit_locality`): the structure, the share of |x' - x|^2 inside it, and the
    # mean share of edits of the same latent size in random directions; {} when the feature has no structure
    locality: dict = field(default_factory=dict)

    @property
    def difference(self) -> np.ndarray:
        return self.counterfactual - self.original

    @property
    def output_change(self) -> float:
        return self.output_after - self.output_before

    @property
    def probe_error_sd(self) -> float | None:
        """|probe(x') - asked value| in SD units of the feature."""
        return None if self.probe_after is None else abs(self.probe_after - self.value_asked) / self.feature_sd

    def to_json(self) -> dict:
        keep = (
            "subject feature value_before value_asked clamped output_name output_before output_reconstruction "
            "output_after probe_before probe_after feature_sd reconstruction_rms seconds held locality"
        ).split()
        out = {k: getattr(self, k) for k in keep}
        out.update(
            output_change=self.output_change,
            probe_error_sd=self.probe_error_sd,
            reconstruction_output_change=self.output_reconstruction - self.output_before,
            difference_rms=float(np.sqrt(np.mean(self.difference**2))),
        )
        return out


def parse_change(text: str, before: float) -> float:
    """The asked value of a relative change: "+10" (units of the feature) or "-20%" of `before`."""
    match = _CHANGE.match(str(text))
    if match is None:
        raise EveInputError(
            f"--change {text!r} is not a change: give a signed amount such as +10 (the feature's units) or -20% "
            "(written --change=-20%)."
        )
    sign, amount, percent = match.groups()
    delta = float(amount) * (1 if sign == "+" else -1)
    return before * (1 + delta / 100) if percent else before + delta


def suggested_value(diffusion: ConditionalDiffusion, feature: str, before: float) -> float:
    """A first edit to show: `SUGGESTED_CHANGES` or +1 SD of the feature, inside the generator's range."""
    info = diffusion.feature(feature)
    change = SUGGESTED_CHANGES.get(feature)
    value = parse_change(change, before) if change else before + float(info.data_sd or info.sd)
    low, high = info.range
    return float(np.clip(value, low, high))


def _subject_condition(diffusion: ConditionalDiffusion, dataset: Dataset, row: int) -> dict:
    """The subject's recorded values of the generator's features that the dataset has (the others stay free)."""
    table = dataset.table
    condition = {}
    for name in diffusion.features:
        if name not in table.columns:
            continue
        value = table[name].iloc[row]
        if diffusion.feature(name).is_categorical:
            condition[name] = str(value)
        elif np.isfinite(float(value)):
            condition[name] = float(value)
    return condition


def asked_value(diffusion: ConditionalDiffusion, feature: str, value: float) -> tuple[float, str | None]:
    """The value clamped to the generator's training range, and a warning when it was moved."""
    info = diffusion.feature(feature)
    if info.is_categorical:
        raise EveInputError(
            f"{feature!r} is categorical: a counterfactual changes a numeric feature; choose one of "
            f"{', '.join(diffusion.numeric_features)}."
        )
    if not np.isfinite(value):
        raise EveInputError(f"The asked {feature} value {value} is not a number: give a finite value.")
    low, high = info.range
    if low <= value <= high:
        return float(value), None
    kept = float(np.clip(value, low, high))
    return kept, (
        f"{feature} = {value:.4g} is outside the generator's training range ({low:.4g} to {high:.4g}): "
        f"it was clamped to {kept:.4g}, since an image beyond what the generator saw would be extrapolation."
    )


class LatentEditor:
    """Inversion and regeneration of latents under a condition, for a diffusion or linear-Gaussian generator."""

    def __init__(self, diffusion: ConditionalDiffusion, steps: int = INVERSION_STEPS):
        self.diffusion, self.steps = diffusion, int(steps)

    def _encoded(self, condition: dict, n: int):
        with warnings.catch_warnings():  # measured values just outside the range are held at its edge
            warnings.simplefilter("ignore", FeatureClampWarning)
            return self.diffusion.conditions.encode(condition, n)

    @torch.inference_mode()
    def invert(self, z0: torch.Tensor, condition: dict) -> torch.Tensor:
        """z_T (n, D) whose deterministic path under `condition` ends at z0 (n, D)."""
        c, m, slot = self._encoded(condition, len(z0))
        denoiser = self.diffusion.denoiser
        if isinstance(denoiser, LatentGaussian):
            mean, factor = _gaussian_conditional(denoiser, c, slot)
            return torch.linalg.solve_triangular(factor, (z0.double() - mean).T, upper=False).T.float()
        return self._path(DDIMInverseScheduler(**TRAIN_SCHEDULE, clip_sample=False), z0, c, m, slot)

    @torch.inference_mode()
    def generate(self, z_t: torch.Tensor, condition: dict) -> torch.Tensor:
        """z_0 (n, D): the deterministic DDIM path from z_T under `condition`."""
        c, m, slot = self._encoded(condition, len(z_t))
        denoiser = self.diffusion.denoiser
        if isinstance(denoiser, LatentGaussian):
            mean, factor = _gaussian_conditional(denoiser, c, slot)
            return (mean + z_t.double() @ factor.T).float()
        return self._path(DDIMScheduler(**TRAIN_SCHEDULE, clip_sample=False), z_t, c, m, slot)

    def _path(self, scheduler, z: torch.Tensor, c, m, slot) -> torch.Tensor:
        """The deterministic (eta = 0) DDIM path of `self.steps` steps from z: up for the inverse scheduler
        (t = 0 to T), down for the forward one."""
        scheduler.set_timesteps(self.steps)
        for t in scheduler.timesteps:
            z = scheduler.step(self.diffusion.denoiser(z, t, c, m, slot), t, z).prev_sample
        return z


def _gaussian_conditional(model: LatentGaussian, c: torch.Tensor, slot: torch.Tensor):
    """Mean (n, D) and the shared Cholesky factor (D, D) of z | c for rows asking the same features."""
    patterns = torch.unique(slot > 0, dim=0)
    if len(patterns) != 1:
        raise ValueError("a counterfactual batch asks the same features of every row")
    asked = torch.nonzero(patterns[0]).flatten()
    gain, factor = model.conditional(asked)
    mu_c, mu_z = model.mean[: model.cond_dim], model.mean[model.cond_dim :]
    return mu_z + (c[:, asked].double() - mu_c[asked]) @ gain.T, factor


def subject_counterfactual(
    model,
    card: ModelCard,
    diffusion: ConditionalDiffusion,
    dataset: Dataset,
    subject: str,
    feature: str,
    value: float,
    *,
    output: int | str = 0,
    steps: int = INVERSION_STEPS,
) -> Counterfactual:
    """The subject's slice with `feature` set to `value` and its other recorded features held.

    Args:
        model, card: the classifier (eval mode) and its card; it must see the generator's slice.
        diffusion: the conditional generator of the dataset (`load_diffusion`).
        dataset: the subject's dataset; its features table gives the values held.
        subject: the subject ID.
        feature, value: the numeric feature changed and its new value (clamped to the generator's
            training range, with `Counterfactual.clamped` saying so).
        output: the classifier's output reported (name or index).
        steps: DDIM steps of the inversion and of the regeneration.
    """
    start = time.perf_counter()
    check_compatible(card, diffusion)
    target = card.output_index(output)
    row = dataset.index_of(subject)
    if feature not in dataset.table.columns:
        raise EveInputError(
            f"{dataset.name} has no recorded {feature!r}: choose a feature it records and the generator knows, "
            f"{', '.join(f for f in diffusion.numeric_features if f in dataset.table.columns) or 'none'}."
        )
    value, clamped = asked_value(diffusion, feature, float(value))
    held = _subject_condition(diffusion, dataset, row)
    before = float(dataset.table[feature].iloc[row])
    changed = {**held, feature: value}

    # 1. the slice and its latent; r = x - D(z_0) keeps what the codec does not hold
    x = dataset.model_inputs(diffusion.spec, rows=[row]).float()  # (1, 1, S, S)
    codec = diffusion.codec
    with torch.inference_mode():
        z0 = codec.encode(x)
        detail = x - codec.decode_mean(z0)
    # 2. one inversion under the recorded features, two regenerations: unchanged and changed
    editor = LatentEditor(diffusion, steps)
    z_t = editor.invert(z0, held)
    z_same = editor.generate(z_t, held)
    z_edit = editor.generate(z_t, changed)
    with torch.inference_mode():
        same = (codec.decode_mean(z_same) + detail).clamp(0.0, 1.0)
        edited = (x + codec.decode_mean(z_edit) - codec.decode_mean(z_same)).clamp(0.0, 1.0)
        outputs = forward(model, torch.cat([x, same, edited]))[:, target].cpu().numpy()
    # 3. the probe's reading of the feature before and after
    probe_before = probe_after = None
    if diffusion.probe is not None and feature in diffusion.card.probe_features:
        read = diffusion.measure_features(torch.cat([x, edited]))[feature]
        probe_before, probe_after = float(read[0]), float(read[1])
    info = diffusion.feature(feature)
    locality = edit_locality(codec, z_same, z_edit, diffusion.spec, feature)
    return Counterfactual(
        subject=subject,
        feature=feature,
        value_before=before,
        value_asked=value,
        clamped=clamped,
        original=x[0, 0].numpy(),
        reconstruction=same[0, 0].numpy(),
        counterfactual=edited[0, 0].numpy(),
        output_name=card.describe_output(target),
        output_before=float(outputs[0]),
        output_reconstruction=float(outputs[1]),
        output_after=float(outputs[2]),
        probe_before=probe_before,
        probe_after=probe_after,
        feature_sd=float(info.data_sd or info.sd),
        reconstruction_rms=float((same - x).pow(2).mean().sqrt()),
        seconds=time.perf_counter() - start,
        held={k: v for k, v in held.items() if k != feature},
        locality=locality,
    )


RANDOM_EDITS = 16  # random-direction edits the locality check averages over
NEAR_PIXELS = 2


@torch.inference_mode()
def edit_locality(codec, z0: torch.Tensor, z_edit: torch.Tensor, spec, feature: str, seed: int = 0) -> dict:
    """How much of the edit's energy |D(z_0') - D(z_0)|^2 falls inside the feature's template structure
    (`FEATURE_STRUCTURES`; SynthBrain's anatomy cut into the slice), against edits of the same latent
    length |z_0' - z_0| in `RANDOM_EDITS` random directions of the image latent (the noise level held).
    {} when the feature has no structure or the slice is not a named MNI slice."""
    structure = FEATURE_STRUCTURES.get(feature)
    if structure is None or spec.is_volume or not isinstance(spec.index, str):
        return {}
    from engine.pixelmaps.regions import anatomy_regions

    regions = anatomy_regions(spec)
    inside = torch.from_numpy(regions.labels == regions.names.index(structure))
    # the structure and a NEAR_PIXELS rim: its template outline differs from the subject's by a pixel or two
    near = torch.nn.functional.max_pool2d(inside[None, None].float(), 2 * NEAR_PIXELS + 1, 1, NEAR_PIXELS)[0, 0] > 0

    def shares(z):
        energy = (codec.decode_mean(z) - codec.decode_mean(z0))[0, 0].pow(2)
        total = energy.sum().clamp_min(1e-12)
        return float(energy[inside].sum() / total), float(energy[near].sum() / total)

    step = z_edit - z0
    step[:, -1] = 0  # the image part of the latent only (its last entry is the noise level)
    g = torch.Generator().manual_seed(seed)
    directions = torch.randn(RANDOM_EDITS, z0.shape[1], generator=g)
    directions[:, -1] = 0
    directions = directions / directions.norm(dim=1, keepdim=True) * step.norm()
    random = np.array([shares(z0 + d[None]) for d in directions])
    share, share_near = shares(z0 + step)
    return {
        "structure": structure,
        "share": share,
        "random_share": float(random[:, 0].mean()),
        "structure_area": float(inside.float().mean()),
        "share_near": share_near,
        "random_share_near": float(random[:, 1].mean()),
        "near_area": float(near.float().mean()),
    }


PNG_SCALE = 4  # the model's 64 px shown at 256 px, each pixel a 4 x 4 block (nearest: no invented detail)


def _diverging(values: np.ndarray) -> np.ndarray:
    """Values in [-1, 1] as RGB (..., 3) uint8: blue below 0, white at 0, red above (RdBu reversed)."""
    t = np.clip(values, -1.0, 1.0)[..., None]
    blue, white, red = np.array([33, 102, 172.0]), np.array([255, 255, 255.0]), np.array([178, 24, 43.0])
    rgb = np.where(t < 0, white + (blue - white) * -t, white + (red - white) * t)
    return rgb.round().astype(np.uint8)


def _png(image: np.ndarray, path, signed: bool = False, title: str = "") -> None:
    """An (S, S) image as a PNG a report can show, S x PNG_SCALE px (nearest-neighbour upscaling): [0, 1] in
    greys, or a difference in a diverging map with 0 white, beside a colour bar titled `title` that names its
    ends in the image's units."""
    from PIL import Image, ImageDraw, ImageFont

    big = np.kron(np.asarray(image, float), np.ones((PNG_SCALE, PNG_SCALE)))
    if not signed:
        Image.fromarray((np.clip(big, 0.0, 1.0) * 255).round().astype(np.uint8)).save(path)
        return
    bound = float(np.abs(image).max()) or 1.0
    side, font = big.shape[0], ImageFont.load_default(size=13)
    canvas = Image.new("RGB", (side + 150, side + 40), "white")
    canvas.paste(Image.fromarray(_diverging(big / bound)), (0, 28))
    bar = np.linspace(1.0, -1.0, side)[:, None].repeat(18, 1)  # top: the largest increase
    canvas.paste(Image.fromarray(_diverging(bar)), (side + 14, 28))
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 6), title, fill="black", font=font)
    for y, label in ((28, f"+{bound:.3g}"), (28 + side // 2 - 7, "0"), (side + 28 - 10, f"-{bound:.3g}")):
        draw.text((side + 38, y), label, fill="black", font=font)
    draw.text((side + 38, 28 + side // 4), "brighter", fill="#b2182b", font=font)
    draw.text((side + 38, 28 + 3 * side // 4 - 14), "darker", fill="#2166ac", font=font)
    canvas.save(path)


def write_counterfactual(result: Counterfactual, out) -> list:
    """The JSON of numbers at `out` and its PNGs beside it: <out>-original/-counterfactual/-difference.png
    (the difference's grey is 0, white and black its largest change either way)."""
    import json
    from pathlib import Path

    out = output_path(out, (".json",))
    stem = out.with_suffix("")
    paths = []
    for kind, image in (("original", result.original), ("counterfactual", result.counterfactual)):
        paths.append(Path(f"{stem}-{kind}.png"))
        _png(image, paths[-1])
    paths.append(Path(f"{stem}-difference.png"))
    _png(result.difference, paths[-1], signed=True, title="counterfactual - original (intensity, 0-1 scale)")
    out.write_text(json.dumps(result.to_json() | {"images": [p.name for p in paths]}, indent=2) + "\n")
    return [out, *paths]


def summary(result: Counterfactual) -> str:
    """Three lines a reader can check: the edit, the classifier before and after, and the round trip's error."""
    probe = (
        ""
        if result.probe_after is None
        else f"; the probe reads {result.probe_before:.4g} -> {result.probe_after:.4g} "
        f"({result.probe_error_sd:.2f} SD from the asked value)"
    )
    where = ""
    if result.locality:
        where = (
            f"\n{result.locality['share_near']:.0%} of the change lies in or within {NEAR_PIXELS} pixels of the "
            f"{result.locality['structure']}, {result.locality['near_area']:.0%} of the slice (an edit in a random "
            f"direction: {result.locality['random_share_near']:.0%})."
        )
    return (
        f"{result.subject}: {result.feature} {result.value_before:.4g} -> {result.value_asked:.4g}{probe}.\n"
        f"{result.output_name[0].upper()}{result.output_name[1:]}: {result.output_before:.3f} -> "
        f"{result.output_after:.3f} ({result.output_change:+.3f}); with no change the round trip gives "
        f"{result.output_reconstruction:.3f} (image RMS {result.reconstruction_rms:.4f}).{where}"
    )
