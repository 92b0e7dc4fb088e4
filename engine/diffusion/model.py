"""The conditional latent diffusion model: p(x | A_S = a_S) for any subset S of features.

Code name -> symbol (Ho et al. 2020, DDPM; Ho & Salimans 2022, classifier-free guidance):
    z_0 (B, D)         clean latent of an image (`PCACodec`: whitened PCA coefficients + noise level)
    z_t                noisy latent sqrt(abar_t) z_0 + sqrt(1 - abar_t) eps
    eps_theta(z_t, t, c, m)   the denoiser's noise prediction
    c (B, C)           standardised feature values (one slot per numeric feature, one-hot
                       slots per categorical feature); slots of dropped features are 0
    m (B, F)           per-feature mask: 1 = this feature is conditioned on, 0 = left free
    w                  guidance weight: eps = eps(., m=0) + w (eps(., c, m) - eps(., m=0))

Training drops each feature independently (per-feature condition dropout), so one network
learns p(z | A_S = a_S) for every subset S: conditioning on one feature leaves the others
to follow p(A_j | A_i = a), learned from data, not their mean.

Free features can also be drawn explicitly (`free_features="table"`, what the score uses):
p(x | A_i = a) = E_{A_-i ~ p(A_-i | A_i = a)} p(x | A_i = a, A_-i), with A_-i taken from the
training rows nearest a (`complete_condition`) and the image from the joint condition. The
feature links are then those of the training table, not the denoiser's looser learned ones.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from torch import nn

from engine.data.slicing import SliceSpec
from engine.diffusion.codec import PCACodec
from engine.errors import EveInputError


class FeatureClampWarning(UserWarning):
    """A requested feature value lay outside the training range and was clamped to it."""


@dataclass
class DenoiserConfig:
    latent_dim: int = 33  # D = PCA components + 1 (noise level)
    cond_dim: int = 9  # C, condition slots
    n_features: int = 9  # F, maskable features
    numeric_slots: tuple[int, ...] = ()  # slots holding a numeric (Fourier-embedded) feature
    width: int = 384  # hidden width of the residual MLP
    depth: int = 4  # residual blocks
    n_fourier: int = 6  # Fourier frequencies per numeric feature (1/2 .. 2^(n-2))
    emb_dim: int = 256  # time + condition embedding width
    cond_input: bool = False  # also feed the condition embedding to the input layer, beside z_t


class _Block(nn.Module):
    """h + MLP(adaLN(h, emb)): LayerNorm modulated by the time + condition embedding."""

    def __init__(self, width: int, emb_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False)
        self.modulation = nn.Linear(emb_dim, 3 * width)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.SiLU(), nn.Linear(2 * width, width))
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        scale, shift, gate = self.modulation(emb).chunk(3, dim=1)
        return h + (1 + gate) * self.mlp(self.norm(h) * (1 + scale) + shift)


class Denoiser(nn.Module):
    """eps_theta(z_t, t, c, m): a residual MLP with adaLN conditioning (latent diffusion)."""

    def __init__(self, config: DenoiserConfig):
        super().__init__()
        self.config = config
        numeric = list(config.numeric_slots)
        self.register_buffer("numeric_slots", torch.tensor(numeric, dtype=torch.long), persistent=False)
        freqs = 2.0 ** torch.arange(config.n_fourier, dtype=torch.float32) / 2.0
        self.register_buffer("freqs", freqs, persistent=False)
        cond_in = config.cond_dim + config.n_features + 2 * len(numeric) * config.n_fourier
        self.time_proj = Timesteps(128, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embed = TimestepEmbedding(128, config.emb_dim)
        self.cond_embed = nn.Sequential(
            nn.Linear(cond_in, config.emb_dim), nn.SiLU(), nn.Linear(config.emb_dim, config.emb_dim)
        )
        self.inp = nn.Linear(config.latent_dim + (config.emb_dim if config.cond_input else 0), config.width)
        self.blocks = nn.ModuleList(_Block(config.width, config.emb_dim) for _ in range(config.depth))
        self.out_norm = nn.LayerNorm(config.width)
        self.out = nn.Linear(config.width, config.latent_dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def embed_condition(self, c: torch.Tensor, m: torch.Tensor, slot_mask: torch.Tensor) -> torch.Tensor:
        """(B, C) values, (B, F) mask, (B, C) mask per slot -> (B, emb_dim)."""
        c = c * slot_mask
        parts = [c, m]
        if self.numeric_slots.numel():
            v = c[:, self.numeric_slots]  # (B, Fn)
            angle = v[:, :, None] * self.freqs * math.pi  # (B, Fn, n_fourier)
            keep = slot_mask[:, self.numeric_slots, None]
            parts += [(angle.sin() * keep).flatten(1), (angle.cos() * keep).flatten(1)]
        return self.cond_embed(torch.cat(parts, 1))

    def forward(self, z_t, t, c, m, slot_mask) -> torch.Tensor:
        t = torch.as_tensor(t, device=z_t.device).expand(len(z_t))
        cond = self.embed_condition(c, m, slot_mask)
        emb = nn.functional.silu(self.time_embed(self.time_proj(t).to(z_t.dtype)) + cond)
        h = self.inp(torch.cat([z_t, cond], 1) if self.config.cond_input else z_t)
        for block in self.blocks:
            h = block(h, emb)
        return self.out(self.out_norm(h))  # (B, D)


# the noise schedule used in training (diffusers' DDPMScheduler); samplers are built from it
TRAIN_SCHEDULE = dict(num_train_timesteps=1000, beta_schedule="linear", prediction_type="epsilon")
SAMPLERS = ("dpm++", "ddim", "ddpm")


def make_scheduler(kind: str = "dpm++"):
    """A fresh (stateful) scheduler on the training schedule: DPM-Solver++(2M), DDIM or DDPM."""
    if kind == "dpm++":
        return DPMSolverMultistepScheduler(**TRAIN_SCHEDULE, algorithm_type="dpmsolver++", solver_order=2)
    if kind == "ddim":
        return DDIMScheduler(**TRAIN_SCHEDULE, clip_sample=False)
    if kind == "ddpm":
        return DDPMScheduler(**TRAIN_SCHEDULE, clip_sample=False)
    raise EveInputError(f"Unknown sampler {kind!r}: use one of {', '.join(SAMPLERS)}.")


def warmup_cosine(optimizer: torch.optim.Optimizer, steps: int, warmup: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Learning rate: linear warm-up over `warmup` steps, then cosine decay to 0 at `steps`
    (the denoiser's, the autoencoder's and the CNN probe's training)."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + np.cos(np.pi * min(1.0, s / steps))))


class LatentReadout(nn.Module):
    """The standardised numeric features (B, Fn) read from clean latents (B, D): the least-squares
    linear map (`hidden` = ()) or an MLP (SiLU) fit by `train.fit_readout`. `readout_guidance`
    steers by its Jacobian. On the shapes autoencoder's latent the linear map reads aspect to
    0.34 MAE / SD, an MLP of 3 x 512 to 0.04 (held-out rows)."""

    def __init__(self, latent_dim: int, n_features: int, hidden: tuple[int, ...] = ()):
        super().__init__()
        self.hidden = tuple(hidden)
        widths = (latent_dim, *self.hidden)
        layers = [m for a, b in zip(widths, widths[1:], strict=False) for m in (nn.Linear(a, b), nn.SiLU())]
        self.net = nn.Sequential(*layers, nn.Linear(widths[-1], n_features))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


READOUT_GUIDANCE = 100.0  # default strength: read-out noise sd 0.1 in standardised units (30 weaker, 300 no better)
READOUT_GUIDABLE_MAE = 0.2  # read-out guidance acts only on features read to this MAE / SD
FREE_FEATURES = ("model", "table")
# complete_condition draws free features from the max(32, 1% of rows) training rows nearest the
# asked values: on SynthBrain's 14,280 rows (143) the scores match 256 neighbours within noise
NEIGHBOURS_MIN, NEIGHBOURS_FRACTION = 32, 0.01


def sample_seed(seed: int, index: int) -> int:
    """Seed of sample `index` in a batch drawn with `seed` (independent of the batch size)."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


class ConditionalDiffusion(nn.Module):
    """Codec + denoiser + the card describing features, their standardisation and ranges.

    Build with `load_diffusion`. `sample` is the one entry point for images.
    """

    def __init__(self, codec: PCACodec | nn.Module, denoiser: Denoiser, card: dict):
        super().__init__()
        self.codec, self.denoiser, self.card = codec, denoiser, card
        self.eval()

    # --- description --------------------------------------------------------------------
    @property
    def dataset(self) -> str:
        return self.card["dataset"]

    @property
    def spec(self) -> SliceSpec:
        return SliceSpec(**self.card["spec"])

    @property
    def features(self) -> list[str]:
        return [f["name"] for f in self.card["features"]]

    @property
    def numeric_features(self) -> list[str]:
        return [f["name"] for f in self.card["features"] if f["kind"] == "numeric"]

    def feature_info(self, name: str) -> dict:
        for f in self.card["features"]:
            if f["name"] == name:
                return f
        raise EveInputError(
            f"Unknown feature {name!r} for the {self.dataset} diffusion model: choose one of "
            f"{', '.join(self.features)}."
        )

    def feature_range(self, name: str) -> tuple:
        """(min, max) of a numeric feature's training values, or the levels of a categorical one."""
        info = self.feature_info(name)
        return tuple(info["levels"]) if info["kind"] == "categorical" else (info["min"], info["max"])

    # --- conditions ---------------------------------------------------------------------
    def encode_condition(self, condition: dict, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """{name: value or (n,) values} -> c (n, C), m (n, F), slot mask (n, C).

        Numeric values outside the training range are clamped with a `FeatureClampWarning`;
        unknown names, unknown levels and non-finite values raise `EveInputError`.
        """
        features = self.card["features"]
        cond_dim = sum(len(f["levels"]) if f["kind"] == "categorical" else 1 for f in features)
        c, m, slot = torch.zeros(n, cond_dim), torch.zeros(n, len(features)), torch.zeros(n, cond_dim)
        for name in condition:
            self.feature_info(name)  # raises for unknown names
        offset = 0
        for j, info in enumerate(features):
            width = len(info["levels"]) if info["kind"] == "categorical" else 1
            if info["name"] in condition:
                values = self._checked_values(info, condition[info["name"]], n)
                m[:, j] = 1.0
                slot[:, offset : offset + width] = 1.0
                if info["kind"] == "categorical":
                    for i, v in enumerate(values):
                        c[i, offset + info["levels"].index(v)] = 1.0
                else:
                    c[:, offset] = torch.from_numpy((values - info["mean"]) / info["sd"])
            offset += width
        return c, m, slot

    def _checked_values(self, info: dict, value, n: int, warn: bool = True) -> list | np.ndarray:
        """n values of one feature from a value or a sequence: levels checked, numeric values
        finite and clamped to the training range (with a `FeatureClampWarning` if `warn`)."""
        if info["kind"] == "categorical":
            values = [value] * n if isinstance(value, str) or np.ndim(value) == 0 else list(value)
            for v in values:
                if v not in info["levels"]:
                    raise EveInputError(f"{v!r} is not a level of {info['name']!r}: use one of "
                                        f"{', '.join(info['levels'])}.")  # fmt: skip
        else:
            values = np.broadcast_to(np.asarray(value, dtype=float), (n,)) if np.ndim(value) == 0 else (
                np.asarray(value, dtype=float))  # fmt: skip
        self._check_length(info["name"], len(values), n)
        return values if info["kind"] == "categorical" else self._clamp(info, values, warn)

    @staticmethod
    def _check_length(name: str, got: int, n: int) -> None:
        if got != n:
            raise EveInputError(f"{got} values given for {name!r} but n={n} samples: give one value or n values.")

    @staticmethod
    def _clamp(info: dict, values: np.ndarray, warn: bool = True) -> np.ndarray:
        if not np.isfinite(values).all():
            raise EveInputError(f"The value of {info['name']!r} is NaN or infinite: give a finite number.")
        low, high = info["min"], info["max"]
        if warn and ((values < low).any() or (values > high).any()):
            warnings.warn(
                f"{info['name']} = {values.min():.4g}..{values.max():.4g} lies outside the training range "
                f"[{low:.4g}, {high:.4g}]; clamped to it (the model does not extrapolate).",
                FeatureClampWarning,
                stacklevel=4,
            )
        return np.clip(values, low, high)

    @property
    def feature_table(self) -> pd.DataFrame | None:
        """The denoiser's training rows (one column per feature, levels as strings), or None for
        models saved without them. Built once per `table_tensors` (every table-way batch reads it)."""
        values = getattr(self, "table_tensors", {}).get("values")
        if values is None:
            return None
        cached = getattr(self, "_feature_table", None)
        if cached is not None and cached[0] is values:
            return cached[1]
        columns = {}
        for j, info in enumerate(self.card["features"]):
            column = values[:, j].double().numpy()
            if info["kind"] == "categorical":
                columns[info["name"]] = np.asarray(info["levels"])[column.astype(int)]
            else:  # float32 storage can round the extreme rows just outside the training range
                columns[info["name"]] = np.clip(column, info["min"], info["max"])
        self._feature_table = (values, pd.DataFrame(columns))
        return self._feature_table[1]

    def complete_condition(self, condition: dict, n: int, seed: int = 0, first_index: int = 0,
                           shared_noise: bool = False) -> dict:  # fmt: skip
        """{every feature: value or (n,) values}: the asked values, and for each sample the free
        features of a training row among the m nearest the asked values (standardised distance
        over the asked numeric features; asked levels must match; m = max(NEIGHBOURS_MIN,
        NEIGHBOURS_FRACTION x rows), plus rows tied with the m-th).

        Sample j = first_index + i (0 for all with `shared_noise`) takes the j-th of those rows
        in a random order seeded by `seed` (a new order every m samples): up to m samples get
        distinct rows, so their mean varies like that of independent subjects (what the score's
        small-N correction assumes; draws with replacement add the neighbourhood's own sampling
        noise), and a batch split does not change the draws."""
        table = self.feature_table
        if table is None:
            raise EveInputError(
                f"The {self.dataset} diffusion model has no training feature table to draw free features "
                "from: retrain it, or use free_features='model'."
            )
        asked = self._asked_columns(condition, n)
        free = [name for name in self.features if name not in condition]
        if not free:
            return dict(condition)
        m = max(NEIGHBOURS_MIN, math.ceil(NEIGHBOURS_FRACTION * len(table)))
        keys = list(zip(*asked.values(), strict=True)) if asked else [()] * n
        neighbours = {key: self._nearest_rows(table, dict(zip(asked, key, strict=True)), m) for key in set(keys)}
        orders: dict[tuple[int, int], np.ndarray] = {}
        rows = np.empty(n, dtype=int)
        for i, key in enumerate(keys):
            candidates = neighbours[key]
            cycle, position = divmod(first_index + (0 if shared_noise else i), len(candidates))
            if (cycle, len(candidates)) not in orders:
                orders[cycle, len(candidates)] = np.random.default_rng([seed, cycle]).permutation(len(candidates))
            rows[i] = candidates[orders[cycle, len(candidates)][position]]
        drawn = {name: table[name].to_numpy()[rows] for name in free}
        return {**condition, **{name: (list(v) if v.dtype == object else v) for name, v in drawn.items()}}

    def _asked_columns(self, condition: dict, n: int) -> dict[str, list]:
        """{asked feature: n values}, checked; numeric ones clamped silently (`encode_condition`
        warns when the images are sampled)."""
        return {name: list(self._checked_values(self.feature_info(name), value, n, warn=False))
                for name, value in condition.items()}  # fmt: skip

    def _nearest_rows(self, table: pd.DataFrame, asked: dict, m: int) -> np.ndarray:
        """Indices of the m training rows nearest `asked` ({feature: one value}) and any tied with
        the m-th, nearest first."""
        distance = np.zeros(len(table))
        for name, value in asked.items():
            info = self.feature_info(name)
            if info["kind"] == "categorical":
                distance[table[name].to_numpy() != value] = np.inf
            else:
                distance += ((table[name].to_numpy(float) - value) / info["sd"]) ** 2
        order = np.lexsort((np.arange(len(table)), distance))
        if not np.isfinite(distance[order[0]]):
            raise EveInputError(f"No training row has {asked}: the model cannot draw the free features there.")
        # rows tied with the m-th nearest are in too: asked only a level, every row of that level is
        return order[distance[order] <= distance[order[min(m, len(order)) - 1]]]

    # --- sampling -----------------------------------------------------------------------
    def initial_noise(self, n: int, seed: int, shared_noise: bool = False,
                      first_index: int = 0) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """Latent noise (n, D) and pixel noise (n, S, S); sample i from its own generator seeded
        `sample_seed(seed, first_index + i)` (every sample from `first_index` with `shared_noise`)."""
        d, s = self.codec.latent_dim, self.codec.size
        latents, pixels = [], []
        for i in range(n):
            g = torch.Generator().manual_seed(sample_seed(seed, first_index + (0 if shared_noise else i)))
            latents.append(torch.randn(d, generator=g))
            pixels.append(torch.randn(s, s, generator=g))
        return torch.stack(latents), torch.stack(pixels)

    @torch.inference_mode()
    def sample_latents(self, condition: dict, n: int, seed: int = 0, steps: int = 20, guidance: float = 1.0,
                       shared_noise: bool = False, sampler: str = "dpm++", first_index: int = 0,
                       readout_guidance: float = 0.0, free_features: str = "model",
                       ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """Clean latents z_0 (n, D) and the pixel noise (n, S, S) for `decode`."""
        if n < 1:
            raise EveInputError(f"n = {n} samples: ask for at least 1.")
        if not 1 <= int(steps) <= 1000:
            raise EveInputError(f"steps = {steps}: use 1 to 1000 denoising steps.")
        if not np.isfinite(guidance) or guidance < 0:
            raise EveInputError(f"guidance = {guidance}: use a finite weight >= 0 (1 = plain conditional).")
        if not np.isfinite(readout_guidance) or readout_guidance < 0:
            raise EveInputError(f"readout_guidance = {readout_guidance}: use a finite strength >= 0 (0 = none).")
        if readout_guidance and self.readout is None:
            raise EveInputError(f"The {self.dataset} diffusion model has no feature read-out to guide by: retrain it.")
        if free_features not in FREE_FEATURES:
            raise EveInputError(f"free_features = {free_features!r}: use one of {', '.join(FREE_FEATURES)}.")
        if free_features == "table":
            condition = self.complete_condition(condition, n, seed, first_index, shared_noise)
        c, m, slot = self.encode_condition(condition, n)
        z, pixel_noise = self.initial_noise(n, seed, shared_noise, first_index)
        scheduler = make_scheduler(sampler)
        scheduler.set_timesteps(int(steps))
        z = z * scheduler.init_noise_sigma
        guided = guidance != 1.0 and bool(m.any())
        if guided:  # one batch: conditional rows, then the unconditional (all features dropped)
            c, m, slot = torch.cat([c, 0 * c]), torch.cat([m, 0 * m]), torch.cat([slot, 0 * slot])
        for t in scheduler.timesteps:
            # 1. predict the noise eps_theta(z_t, t, c, m) (eq. 11 of Ho et al.)
            z_in = torch.cat([z, z]) if guided else z
            eps = self.denoiser(scheduler.scale_model_input(z_in, t), t, c, m, slot)
            # 2. classifier-free guidance: eps_uncond + w (eps_cond - eps_uncond)
            if guided:
                eps_c, eps_u = eps.chunk(2)
                eps = eps_u + guidance * (eps_c - eps_u)
            # 3. optional: pull the read-out of the predicted clean latent towards the asked values
            if readout_guidance:
                n_rows = len(z)
                eps = eps + self._readout_correction(eps, z, t, scheduler, c[:n_rows], slot[:n_rows], readout_guidance)
            # 4. one solver step z_t -> z_{t-1}
            z = scheduler.step(eps, t, z).prev_sample
        return z, pixel_noise

    def _readout_correction(self, eps, z, t, scheduler, c, slot, strength: float) -> torch.Tensor:
        """The eps change that moves Tweedie's z0_hat = (z - sqrt(1 - abar) eps) / sqrt(abar) by the
        Gaussian (Kalman) update towards the asked values c under the read-out r(z0), linearised
        at z0_hat (Jacobian J, (Fn, D) per sample) and observed with noise variance 1 / strength:
            dz0 = -s0 J^T (s0 J J^T + I / strength)^-1 (r(z0_hat) - c),  s0 = 1 - abar
        (s0: the posterior variance of a whitened latent given z_t; rows of J and r - c of free or
        poorly read features are zeroed). Gradient guidance by a differentiable read-out with a
        step that is weak at high noise, vanishes at t = 0 and never overshoots."""
        abar = scheduler.alphas_cumprod[int(t)].to(z.dtype)
        numeric = self.denoiser.numeric_slots
        guided = slot[:, numeric] * self.readout_guidable  # 0 where free or poorly read
        def read_twice(z0):  # the read-out's value comes out of the Jacobian's own forward pass
            read = self.readout(z0)
            return read, read

        with torch.inference_mode(False):  # the sampler runs in inference mode; the Jacobian needs autograd
            z0_hat = ((z - (1 - abar).sqrt() * eps) / abar.sqrt()).clone()
            jacobian, read = torch.func.vmap(torch.func.jacrev(read_twice, has_aux=True))(z0_hat)  # (n, Fn, D), (n, Fn)
        residual = (read.detach() - c[:, numeric]) * guided  # (n, Fn)
        jacobian = jacobian.detach()
        jacobian = jacobian * guided[..., None]
        s0 = 1 - abar
        gram = s0 * jacobian @ jacobian.transpose(1, 2) + torch.eye(len(numeric)) / strength
        dz0 = -s0 * (jacobian.transpose(1, 2) @ torch.linalg.solve(gram, residual)[..., None])[..., 0]
        return -(abar.sqrt() / (1 - abar).sqrt()) * dz0

    @property
    def readout_guidable(self) -> torch.Tensor:
        """(Fn,) 1 for numeric features the read-out reads to within READOUT_GUIDABLE_MAE (its
        validation MAE / SD in the card), else 0: guiding by a poor read-out (age, 0.33 SD)
        narrows p(x | a) like classifier-free guidance (the age score went 0.48 -> 0.71)."""
        errors = self.card.get("readout_validation_mae_over_sd", {})
        names = self.numeric_features
        return torch.tensor([float(errors.get(name, np.inf) <= READOUT_GUIDABLE_MAE) for name in names])

    @property
    def readout(self) -> LatentReadout | None:
        """The read-out of the standardised numeric features from a clean latent (see
        `LatentReadout`), or None for older models."""
        if getattr(self, "_readout", None) is None and getattr(self, "readout_tensors", None):
            self._readout = build_readout(self.card, self.readout_tensors)
        return getattr(self, "_readout", None)

    @torch.inference_mode()
    def sample(self, condition: dict, n: int, seed: int = 0, steps: int = 20, guidance: float = 1.0,
               shared_noise: bool = False, sampler: str = "dpm++", first_index: int = 0,
               readout_guidance: float = 0.0, free_features: str = "model") -> torch.Tensor:  # fmt: skip
        """n images (n, 1, S, S) in [0, 1] from p(x | condition).

        Args:
            condition: {feature: value}; a value may also be a sequence of n values (one per
                sample, e.g. a sweep). Features left out are free (drawn from their
                conditional distribution given the others). {} samples p(x).
            n: number of images.
            seed: sample i uses its own generator seeded from (seed, i): the same seed gives
                identical images on CPU, and the same "subject" at another feature value.
            steps: solver steps (DPM-Solver++(2M) by default; 20 is plenty).
            guidance: classifier-free guidance weight w; 1 = the plain conditional (use 1
                for scores: w > 1 narrows p(x | a) and inflates them).
            shared_noise: every sample uses the noise of index 0 (with a swept condition:
                one subject morphing across values).
            sampler: "dpm++", "ddim" or "ddpm" (ancestral; for comparisons).
            first_index: index of the first sample (to draw one seed's samples in batches).
            readout_guidance: guidance by the model's feature read-out (`LatentReadout`) towards the asked
                numeric values: 1 / the read-out's assumed noise variance in standardised units
                (0 = none; see `_readout_correction`).
            free_features: how features left out of `condition` are drawn: "model" (the
                denoiser's condition dropout: smooth under a fixed-noise sweep) or "table" (from
                the training rows nearest the asked values, then the joint condition; see
                `complete_condition`: the feature links of the data, what the score uses).
        """
        z, pixel_noise = self.sample_latents(condition, n, seed, steps, guidance, shared_noise, sampler, first_index,
                                             readout_guidance, free_features)  # fmt: skip
        return self.codec.decode(z, pixel_noise)

    # --- feature probes -------------------------------------------------------------------
    @property
    def probe(self):
        """The feature probe trained with this model (see `probes.py`), or None."""
        if getattr(self, "_probe", None) is None and getattr(self, "probe_tensors", None):
            from engine.diffusion.probes import build_probe

            self._probe = build_probe(self.card, self.probe_tensors)
        return getattr(self, "_probe", None)

    @torch.inference_mode()
    def measure_features(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        """Each probed numeric feature read from (B, 1, S, S) images, in the feature's units."""
        if self.probe is None:
            raise EveInputError(f"The {self.dataset} diffusion model has no feature probe: retrain it.")
        if images.ndim != 4 or tuple(images.shape[1:]) != (1, self.codec.size, self.codec.size):
            raise EveInputError(
                f"Images of shape {tuple(images.shape)}: the probe reads (B, 1, {self.codec.size}, {self.codec.size})."
            )
        pred = self.probe(images.float().cpu()).numpy()
        out = {}
        for j, name in enumerate(self.card["probe_features"]):
            info = self.feature_info(name)
            out[name] = pred[:, j] * info["sd"] + info["mean"]
        return out


# --- saving and loading -------------------------------------------------------------------

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "diffusion"


def save(model: ConditionalDiffusion, probe_state: dict | None, directory: Path = ASSETS) -> Path:
    """Weights to `<dataset>.safetensors`, the card to `<dataset>.json`."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    tensors = {f"codec.{k}": v for k, v in model.codec.state_dict().items()}
    tensors |= {f"denoiser.{k}": v for k, v in model.denoiser.state_dict().items()}
    tensors |= {f"probe.{k}": v for k, v in (probe_state or {}).items()}
    tensors |= {f"readout.{k}": v for k, v in (model.readout.state_dict() if model.readout else {}).items()}
    tensors |= {f"table.{k}": v for k, v in getattr(model, "table_tensors", {}).items()}
    save_file({k: v.contiguous() for k, v in tensors.items()}, directory / f"{model.dataset}.safetensors")
    (directory / f"{model.dataset}.json").write_text(json.dumps(model.card, indent=2))
    return directory / f"{model.dataset}.json"


def build_readout(card: dict, tensors: dict) -> LatentReadout:
    """The card's read-out (`readout.hidden` widths; none: linear) with its weights."""
    if "weight" in tensors:  # a linear read-out saved before `LatentReadout` (bare weight, bias)
        tensors = {"net.0.weight": tensors["weight"], "net.0.bias": tensors["bias"]}
    hidden = card.get("readout", {}).get("hidden", [])
    n_features = tensors[f"net.{2 * len(hidden)}.bias"].shape[0]
    readout = LatentReadout(card["denoiser"]["latent_dim"], n_features, hidden)
    readout.load_state_dict(tensors)
    return readout.eval().requires_grad_(False)


def build_codec(card: dict):
    """The card's latent space, untrained: a PCA (`kind` "pca", the default) or a conv autoencoder."""
    info, size = card["codec"], card["spec"]["size"]
    if info.get("kind", "pca") == "pca":
        return PCACodec(size, info["d"], info.get("whiten", 1.0))
    if info["kind"] == "autoencoder":
        from engine.diffusion.autoencoder import AutoencoderCodec

        return AutoencoderCodec(size, info["latent_dim"], tuple(info["channels"]), info["stripe_period"],
                                info.get("centred_stripes", False), info.get("noise_estimate", "residual"))
    raise EveInputError(f"Unknown codec kind {info['kind']!r} in the card of {card.get('name')}: retrain the model.")


def build(card: dict, tensors: dict | None = None) -> ConditionalDiffusion:
    """A model from its card (and weights, else untrained)."""
    codec = build_codec(card)
    config = DenoiserConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in card["denoiser"].items()})
    denoiser = Denoiser(config)
    if tensors is not None:
        codec.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("codec.")})
        denoiser.load_state_dict({k[9:]: v for k, v in tensors.items() if k.startswith("denoiser.")})
    return ConditionalDiffusion(codec, denoiser, card)


_LOADED: dict[str, ConditionalDiffusion] = {}


def load_diffusion(name_or_dataset: str | Path) -> ConditionalDiffusion:
    """The committed model for a dataset ("synthbrain", "shapes", "synthbrain-diffusion")
    or a card path (`<dataset>.json` next to its `.safetensors`). Cached per path."""
    from safetensors.torch import load_file

    text = str(name_or_dataset)
    path = Path(text) if text.endswith(".json") else ASSETS / f"{text.removesuffix('-diffusion')}.json"
    if not path.is_file():
        known = sorted(p.stem for p in ASSETS.glob("*.json"))
        raise EveInputError(
            f"No diffusion model {text!r} ({path} is missing): use one of {', '.join(known) or 'none yet'}, "
            "or train one with `python -m engine train-diffusion DATASET`."
        )
    key = str(path.resolve())
    if key not in _LOADED:
        card = json.loads(path.read_text())
        tensors = load_file(path.with_suffix(".safetensors"))
        model = build(card, tensors)
        model.probe_tensors = {k[6:]: v for k, v in tensors.items() if k.startswith("probe.")}
        model.readout_tensors = {k[8:]: v for k, v in tensors.items() if k.startswith("readout.")}
        model.table_tensors = {k[6:]: v for k, v in tensors.items() if k.startswith("table.")}
        _LOADED[key] = model
    return _LOADED[key]


def feature_table_tensors(table: pd.DataFrame, features: list[dict]) -> dict[str, torch.Tensor]:
    """Training rows as saved with a model (`table.values`): (R, F) float32 in the card's
    feature order, a categorical feature as its level's index."""
    columns = []
    for info in features:
        column = table[info["name"]]
        if info["kind"] == "categorical":
            column = column.map({level: i for i, level in enumerate(info["levels"])})
        columns.append(column.to_numpy(float))
    return {"values": torch.from_numpy(np.stack(columns, 1).astype(np.float32))}


def feature_table_card(rows: int) -> dict:
    return {"rows": rows, "stored_as": "table.values in the weights file (the denoiser's training rows)",
            "free_features": f"drawn from the max({NEIGHBOURS_MIN}, {NEIGHBOURS_FRACTION:.0%} of rows) rows nearest "
                             "the asked values (`complete_condition`)"}  # fmt: skip


def card_denoiser(config: DenoiserConfig) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()}
