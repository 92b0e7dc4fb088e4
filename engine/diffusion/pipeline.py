"""The conditional latent diffusion pipeline: images from p(x | A_S = a_S) for any subset S of features.

Code name -> symbol (Ho et al. 2020, DDPM; Ho & Salimans 2022, classifier-free guidance):
    z_0 (B, D)         clean latent of an image (`PCACodec`: whitened PCA coefficients + noise level)
    z_t                noisy latent sqrt(abar_t) z_0 + sqrt(1 - abar_t) eps
    eps_theta(z_t, t, c, m)   the denoiser's noise prediction (`networks.Denoiser`)
    c (B, C), m (B, F) the condition and its per-feature mask (`conditions.FeatureSchema.encode`)
    w                  guidance weight: eps = eps(., m=0) + w (eps(., c, m) - eps(., m=0))
    r(z_0)             the read-out of the numeric features (`networks.LatentReadout`)

Training drops each feature independently (per-feature condition dropout), so one network
learns p(z | A_S = a_S) for every subset S: conditioning on one feature leaves the others
to follow p(A_j | A_i = a), learned from data, not their mean. How the free features are drawn,
the guidance and the solver are a `SamplerConfig`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn

from engine.cards import DiffusionCard, DiffusionFeature
from engine.data.slicing import SliceSpec
from engine.diffusion.conditions import FeatureSchema, FeatureTable
from engine.diffusion.gaussian import LatentGaussian
from engine.diffusion.networks import Denoiser, LatentReadout
from engine.diffusion.sampler import SamplerConfig, make_scheduler, sample_seed
from engine.errors import EveInputError

# read-out guidance acts only on features the read-out reads to this MAE / SD (its validation error
# in the card): guiding by a poor read-out narrows p(x | a) like classifier-free guidance and
# inflates the scores
READOUT_GUIDABLE_MAE = 0.2


class ConditionalDiffusion(nn.Module):
    """Codec + denoiser + the card describing features, their standardisation and ranges, and
    optionally the feature read-out (for read-out guidance), the feature probe (`measure_features`)
    and the training feature table (free features the "table" way).

    Build with `load_diffusion` (the committed models) or `storage.build`. `sample` is the one
    entry point for images.
    """

    def __init__(
        self,
        codec: nn.Module,
        denoiser: Denoiser | LatentGaussian,
        card: DiffusionCard,
        *,
        readout: LatentReadout | None = None,
        probe: nn.Module | None = None,
        table: FeatureTable | None = None,
    ):
        super().__init__()
        self.codec, self.denoiser, self.card = codec, denoiser, card
        self.conditions = FeatureSchema(card.dataset, card.features)
        if table is not None and table.schema != self.conditions:
            raise ValueError("the feature table's schema is not the card's")
        self.readout, self.probe, self.table = readout, probe, table
        # (Fn,) 1 for the numeric features the read-out reads to within READOUT_GUIDABLE_MAE, else 0
        errors = card.readout_validation_mae_over_sd or {}
        self.readout_guidable = torch.tensor(
            [float(errors.get(name, np.inf) <= READOUT_GUIDABLE_MAE) for name in self.conditions.numeric_names]
        )
        self.eval()

    # --- description --------------------------------------------------------------------
    @property
    def dataset(self) -> str:
        return self.card.dataset

    @property
    def spec(self) -> SliceSpec:
        return self.card.spec

    @property
    def features(self) -> list[str]:
        return self.conditions.names

    @property
    def numeric_features(self) -> list[str]:
        return self.conditions.numeric_names

    def feature(self, name: str) -> DiffusionFeature:
        """A feature's card entry (raises `EveInputError` naming the features for an unknown name)."""
        return self.conditions.feature(name)

    def feature_info(self, name: str) -> dict:
        """`feature(name)` as its JSON dict (for callers that read it by key)."""
        return self.feature(name).to_json()

    def feature_range(self, name: str) -> tuple:
        """(min, max) of a numeric feature's training values, or the levels of a categorical one."""
        return self.feature(name).range

    @property
    def feature_table(self) -> pd.DataFrame | None:
        """The denoiser's training rows (one column per feature, levels as strings), or None for
        models saved without them."""
        return None if self.table is None else self.table.rows

    # --- sampling -----------------------------------------------------------------------
    def initial_noise(
        self, n: int, seed: int, shared_noise: bool = False, first_index: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
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
    def sample_latents(
        self,
        condition: dict,
        n: int,
        seed: int = 0,
        config: SamplerConfig | None = None,
        *,
        shared_noise: bool = False,
        first_index: int = 0,
        **overrides,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Clean latents z_0 (n, D) and the pixel noise (n, S, S) for `decode` (arguments as `sample`)."""
        config = _configured(config, overrides)
        if n < 1:
            raise EveInputError(f"n = {n} samples: ask for at least 1.")
        if config.readout_guidance and self.readout is None:
            raise EveInputError(f"The {self.dataset} diffusion model has no feature read-out to guide by: retrain it.")
        if config.free_features == "table":
            if self.table is None:
                raise EveInputError(
                    f"The {self.dataset} diffusion model has no training feature table to draw free features "
                    "from: retrain it, or use free_features='model'."
                )
            condition = self.table.complete(condition, n, seed, first_index, shared_noise)
        c, m, slot = self.conditions.encode(condition, n)
        z, pixel_noise = self.initial_noise(n, seed, shared_noise, first_index)
        if isinstance(self.denoiser, LatentGaussian):  # an exact conditional: no solver, guidance does not apply
            return self.denoiser.sample(c, slot, z), pixel_noise
        scheduler = make_scheduler(config.sampler)
        scheduler.set_timesteps(config.steps)
        z = z * scheduler.init_noise_sigma
        guidance = config.guidance
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
            if config.readout_guidance:
                n_rows = len(z)
                eps = eps + self._readout_correction(
                    eps, z, t, scheduler, c[:n_rows], slot[:n_rows], config.readout_guidance
                )
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

    @torch.inference_mode()
    def sample(
        self,
        condition: dict,
        n: int,
        seed: int = 0,
        config: SamplerConfig | None = None,
        *,
        shared_noise: bool = False,
        first_index: int = 0,
        **overrides,
    ) -> torch.Tensor:
        """n images (n, 1, S, S) in [0, 1] from p(x | condition).

        Args:
            condition: {feature: value}; a value may also be a sequence of n values (one per
                sample, e.g. a sweep). Features left out are free (drawn from their
                conditional distribution given the others; how: `config.free_features`).
                {} samples p(x).
            n: number of images.
            seed: sample i uses its own generator seeded from (seed, i): the same seed gives
                identical images on CPU, and the same "subject" at another feature value.
            config: steps, guidance, free features, read-out guidance, solver (default
                `SamplerConfig()`; a score's: `SamplerConfig.for_scores(model)`).
            shared_noise: every sample uses the noise of index 0 (with a swept condition:
                one subject morphing across values).
            first_index: index of the first sample (to draw one seed's samples in batches).
            **overrides: `SamplerConfig` fields, shorthand for `config.override(...)`
                (e.g. `steps=10`; None keeps the config's value).
        """
        z, pixel_noise = self.sample_latents(
            condition, n, seed, config, shared_noise=shared_noise, first_index=first_index, **overrides
        )
        return self.codec.decode(z, pixel_noise)

    # --- feature probes -------------------------------------------------------------------
    @torch.inference_mode()
    def measure_features(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        """Each probed numeric feature read from (B, 1, S, S) images, in the feature's units."""
        if self.probe is None:
            raise EveInputError(f"The {self.dataset} diffusion model has no feature probe: retrain it.")
        if images.ndim != 4 or tuple(images.shape[1:]) != (1, self.codec.size, self.codec.size):
            raise EveInputError(
                f"Images of shape {tuple(images.shape)}: the probe reads (B, 1, {self.codec.size}, {self.codec.size}); "
                "give images of that shape."
            )
        pred = self.probe(images.float().cpu()).numpy()
        out = {}
        for j, name in enumerate(self.card.probe_features):
            info = self.feature(name)
            out[name] = pred[:, j] * info.sd + info.mean
        return out


def _configured(config: SamplerConfig | None, overrides: dict) -> SamplerConfig:
    if config is None:
        config = SamplerConfig()
    elif not isinstance(config, SamplerConfig):
        raise TypeError(
            f"config is a SamplerConfig, not {type(config).__name__}: give steps and the other "
            "options as keywords or in a SamplerConfig"
        )
    return config.override(**overrides) if overrides else config
