"""How samples are drawn: the noise schedule, the solvers, per-sample seeds and `SamplerConfig`.

`SamplerConfig` is the one place the sampling options and their defaults live; every caller
(the explorer, a score, the CLI, the validation) passes one, built from its defaults, a preset
(`for_scores`, `for_explorer`) or `override`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

from engine.errors import EveInputError

# the noise schedule used in training (diffusers' DDPMScheduler); samplers are built from it
TRAIN_SCHEDULE = dict(num_train_timesteps=1000, beta_schedule="linear", prediction_type="epsilon")
SAMPLERS = ("dpm++", "ddim", "ddpm")
SAMPLER_NAMES = {"dpm++": "DPM-Solver++(2M)", "ddim": "DDIM", "ddpm": "DDPM (ancestral)"}
FREE_FEATURES = ("model", "table")
READOUT_GUIDANCE = 100.0  # the scores' strength: read-out noise sd 0.1 in standardised units


def make_scheduler(kind: str = "dpm++"):
    """A fresh (stateful) scheduler on the training schedule: DPM-Solver++(2M), DDIM or DDPM."""
    if kind == "dpm++":
        return DPMSolverMultistepScheduler(**TRAIN_SCHEDULE, algorithm_type="dpmsolver++", solver_order=2)
    if kind == "ddim":
        return DDIMScheduler(**TRAIN_SCHEDULE, clip_sample=False)
    if kind == "ddpm":
        return DDPMScheduler(**TRAIN_SCHEDULE, clip_sample=False)
    raise EveInputError(f"Unknown sampler {kind!r}: use one of {', '.join(SAMPLERS)}.")


def sample_seed(seed: int, index: int) -> int:
    """Seed of sample `index` in a batch drawn with `seed` (independent of the batch size)."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


# the explorer's steps: against 20, its images carry the asked value as well (the probe's error unchanged)
# and differ by under two grey levels RMS, in 60-72% of the time (benchmarks/bench_explorer_steps.py)
EXPLORER_STEPS = 12


@dataclass(frozen=True)
class SamplerConfig:
    """The options of `ConditionalDiffusion.sample`, with the one set of defaults Eve uses.

    The defaults are the plain conditional model the explorer shows; `for_scores` is what a
    score samples with. Invalid values raise `EveInputError` on construction.
    """

    steps: int = 20  # solver steps: DPM-Solver++(2M) has converged by 20
    guidance: float = 1.0  # classifier-free guidance weight w; 1 = the plain conditional (scores need 1)
    # features left out of the condition: "model" (the denoiser's condition dropout: smooth under a
    # fixed-noise sweep) or "table" (from the training rows nearest the asked values, then the joint
    # condition: the feature links of the data; `conditions.FeatureTable.complete`)
    free_features: str = "model"
    # guidance by the model's feature read-out towards the asked numeric values: 1 / the read-out's
    # assumed noise variance in standardised units (0 = none; `ConditionalDiffusion._readout_correction`)
    readout_guidance: float = 0.0
    sampler: str = "dpm++"  # "dpm++", "ddim" or "ddpm" (ancestral; for comparisons)

    def __post_init__(self):
        if not 1 <= int(self.steps) <= 1000:
            raise EveInputError(f"steps = {self.steps}: use 1 to 1000 denoising steps.")
        if not np.isfinite(self.guidance) or self.guidance < 0:
            raise EveInputError(f"guidance = {self.guidance}: use a finite weight >= 0 (1 = plain conditional).")
        if not np.isfinite(self.readout_guidance) or self.readout_guidance < 0:
            raise EveInputError(f"readout_guidance = {self.readout_guidance}: use a finite strength >= 0 (0 = none).")
        if self.free_features not in FREE_FEATURES:
            raise EveInputError(f"free_features = {self.free_features!r}: use one of {', '.join(FREE_FEATURES)}.")
        if self.sampler not in SAMPLERS:
            raise EveInputError(f"Unknown sampler {self.sampler!r}: use one of {', '.join(SAMPLERS)}.")
        object.__setattr__(self, "steps", int(self.steps))
        object.__setattr__(self, "guidance", float(self.guidance))
        object.__setattr__(self, "readout_guidance", float(self.readout_guidance))

    @classmethod
    def for_scores(cls, model) -> SamplerConfig:
        """What a score samples with: the plain conditional (guidance 1), the other features from
        the training table and read-out guidance `READOUT_GUIDANCE`, each where `model` (a
        `ConditionalDiffusion`) has the table / the read-out (else the denoiser's way / none)."""
        return cls(
            free_features="model" if model.table is None else "table",
            readout_guidance=READOUT_GUIDANCE if model.readout is not None else 0.0,
        )

    @classmethod
    def for_explorer(cls, guidance: float = 1.0) -> SamplerConfig:
        """What the explorer's slider shows: the defaults (free features by the denoiser, which morph
        one subject smoothly under a fixed seed; no read-out guidance) at the slider's guidance, in
        `EXPLORER_STEPS` steps: images for the eye, drawn on every value move of every session."""
        return cls(guidance=guidance, steps=EXPLORER_STEPS)

    def for_model(self, model) -> SamplerConfig:
        """This sampler as `model` (a `ConditionalDiffusion`) can run it: no read-out guidance where it has no
        read-out, the other features left to the denoiser where it has no training table. For generators Eve
        trains on the way (cross-fitting's folds), which a user's sampler was not chosen for."""
        return self.override(
            readout_guidance=0.0 if model.readout is None else None,
            free_features="model" if model.table is None else None,
        )

    def override(self, **fields) -> SamplerConfig:
        """A copy with `fields` replaced; a field given as None keeps its value (unset CLI options)."""
        return replace(self, **{k: v for k, v in fields.items() if v is not None})

    @property
    def description(self) -> str:
        """One sentence for a page or a report, e.g. "Other features drawn from the training rows
        nearest the value, read-out guidance 100; DPM-Solver++(2M), 20 steps."."""
        others = (
            "Other features drawn from the training rows nearest the value"
            if self.free_features == "table"
            else "Other features left to the denoiser (its condition dropout)"
        )
        readout = f"read-out guidance {self.readout_guidance:g}" if self.readout_guidance else "no read-out guidance"
        cfg = f", classifier-free guidance {self.guidance:g}" if self.guidance != 1.0 else ""
        return f"{others}, {readout}{cfg}; {SAMPLER_NAMES[self.sampler]}, {self.steps} steps."

    def to_json(self) -> dict:
        return asdict(self)
