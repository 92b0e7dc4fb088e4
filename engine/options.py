"""The defaults of scoring and of the rules search, one home: the engine's keywords, the CLI's flags and
the app's widgets all read them here (a default written in two places drifts)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ScoreOptions:
    """How scores are computed when nobody says otherwise."""

    n_boot: int = 200  # bootstrap draws for an interval (0: none)
    seed: int = 0  # seed of the bootstrap and of sampling
    ci: float = 0.95  # confidence level of every interval
    batch_size: int = 64  # images per forward pass
    k_values: int = 8  # generator path: K feature values
    n_per_value: int = 32  # generator path: N samples per value
    n_generated: int = 256  # debiased generator path: M generated subjects beside the real ones' twins (K x N)
    folds: int = 5  # debiased generator path: cross-fitting folds when the generator saw the real subjects
    constraint_samples: int = 64  # generator path: samples per value of the probe's constraint check


@dataclass(frozen=True)
class RuleOptions:
    """How the cohort's rules (anchors) are picked when nobody says otherwise."""

    n_subjects: int = 20  # subjects sampled, each anchored
    n_rules: int = 5  # rules picked at most (submodular pick)


@dataclass(frozen=True)
class ExplorerOptions:
    """What the feature explorer shows when nobody says otherwise (its banks are drawn at these)."""

    n: int = 8  # samples per slider position
    seed: int = 0  # the samples' seed: same seed, same "subjects" at every value
    guidance: float = 1.0  # classifier-free guidance for display
    steps: int = 41  # slider positions across a numeric feature's training range


SCORE = ScoreOptions()
RULES = RuleOptions()
EXPLORER = ExplorerOptions()
