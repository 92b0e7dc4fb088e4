"""Anchors: the shortest rule on a dataset's human features that keeps the model's decision.

Ribeiro, Singh & Guestrin, "Anchors: High-Precision Model-Agnostic Explanations" (AAAI 2018), with the
KL-LUCB bandit of Kaufmann & Kalyanakrishnan, "Information Complexity in Bandit Subset Selection"
(COLT 2013). For one subject x the answer reads (SynthBrain's sub-0007, the zoo's synthbrain-diagnosis)

    IF ventricle_volume > 15.0 mL AND gm_volume <= 974 mL THEN the model says logit P(label=1) > 0
    (precision 1.00 [0.97, 1.00], coverage 13%)

The decision is the model's predicted class (`DecisionRule`): a logit above 0, a probability above 0.5 (the
same decisions, so explaining a logit's probability changes nothing here), the largest of K outputs, or a
single output above a threshold given (a regression has no decision of its own).

Code name -> symbol:
    decisions, f(z)        the model's decision on each cohort row z (`DecisionRule`: the predicted class)
    target, f(x)           the decision on the subject explained
    predicates, a_i        one-sided conditions the subject satisfies: `feature <= c` or `feature > c` for each
                           quartile c of a numeric feature, `feature = v` for a categorical one
    rule, A                a conjunction of predicates, A(z) = 1 when all hold
    precision, prec(A)     E[1{f(z) = f(x)} | A(z) = 1], estimated from rows drawn with replacement from the
                           cohort rows that satisfy A (the paper's D(z | A), eq. 1)
    coverage, cov(A)       the share of cohort rows with A(z) = 1 (exact: the cohort is finite)
    tau                    the precision threshold: A is an anchor when P(prec(A) >= tau) >= 1 - delta (eq. 2)
    delta, epsilon         KL-LUCB's confidence and tolerance
    beam_width, B          rules kept per length
    lower, upper           Bernoulli KL confidence bounds: the q on either side of p_hat with KL(p_hat, q) = beta / n
    beta                   KL-LUCB's exploration rate beta(t, delta) (`lucb_beta`)

The search (the paper's Algorithm 2, beam search over rule length):

1. discretise: each numeric feature at its cohort quartiles q1 < q2 < q3 (anchor's tabular explainer), the
   subject's predicates being the side of each cut it lies on; a rule takes at most one lower and one upper
   bound per feature (so `q1 < x <= q2` reads as one interval) and one equality per categorical feature;
2. start from the empty rule; at each length extend every rule in the beam by one predicate, dropping
   extensions that hold for fewer than `min_rows` cohort rows or for the same rows as their parent;
3. KL-LUCB picks the B extensions of highest precision (within epsilon, with probability 1 - delta): pull the
   arms whose bounds overlap most, `batch_size` draws at a time, until upper(best left out) - lower(worst
   kept) <= epsilon;
4. draw more for each picked rule until its bounds (at beta = log((1 + (B - 1) P) / delta) for P predicates,
   the authors' union over candidates) leave tau: lower >= tau (an anchor) or upper < tau (not one), doubling
   the draws each time up to `max_samples`;
5. stop at the first length with an anchor and return the one of highest coverage; if no length has one,
   return the rule KL-LUCB finds most precise among all picked, saying it does not reach tau.

Unlike the paper, the search stops at the shortest anchor rather than going on for a longer one of higher
coverage. The bounds are about the cohort's rows (the finite population the draws come from), not about
unseen subjects; `min_rows` keeps a rule from anchoring on a handful of rows.

`global_anchors` explains the cohort as a whole by the paper's submodular pick (SP-Anchor): the anchors of a
random sample of subjects, then greedily the rule that adds the most cohort rows whose decision it explains
(rows it holds for with the decision it states), until `n_rules` rules or no gain.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.special import xlogy

from engine.cards import ModelCard
from engine.data import Dataset
from engine.errors import EveInputError
from engine.options import RULES, SCORE

OPS = ("<=", ">", "=")  # a predicate's comparison: at most a cut, above a cut, equal to a level
MIN_COHORT = 20  # fewer cohort rows than this cannot be cut into quartiles holding min_rows rows each
BISECTION_STEPS = 48  # for the KL bounds: the bracket shrinks 2^48-fold, far below any precision shown
LUCB_ALPHA, LUCB_K1 = 1.1, 405.5  # KL-LUCB's beta(t, delta) (`lucb_beta`)
# the units Eve's embedded datasets record their features in (engine.data.synthbrain: volumes measured in mL,
# age in years; engine.data.shapes: lengths in pixels); a folder's features.csv carries none, so its rules read
# bare numbers
EMBEDDED_UNITS = {
    "synthbrain": {
        "ventricle_volume": "mL",
        "hippocampal_volume": "mL",
        "gm_volume": "mL",
        "icv": "mL",
        "age": "years",
    },
    "shapes": {"size": "pixels", "pos_x": "pixels", "pos_y": "pixels"},
}


@dataclass(frozen=True)
class AnchorConfig:
    """How the search runs; the defaults are the authors' (marcotcr/anchor's tabular explainer) where they exist."""

    tau: float = 0.95  # precision threshold: a rule is an anchor when its lower bound reaches it
    delta: float = 0.1  # confidence: the bounds hold with probability >= 1 - delta
    epsilon: float = 0.15  # KL-LUCB's tolerance: the rules kept are within epsilon of the most precise
    beam_width: int = 2  # B, rules kept at each length
    max_length: int | None = None  # longest rule (None: until no extension is left)
    batch_size: int = 100  # draws each time a rule's arm is pulled
    max_samples: int = 20_000  # draws one rule may take; still undecided then, it reads as not reaching tau
    min_rows: int = 10  # cohort rows a rule must hold for: fewer say little about the model
    n_bins: int = 4  # quantile bins of a numeric feature (4: quartiles)

    def __post_init__(self):
        if not 0 < self.tau < 1:
            raise EveInputError(
                f"The precision threshold tau = {self.tau} is not between 0 and 1: give one such as 0.95."
            )
        if not 0 < self.delta < 1:
            raise EveInputError(
                f"The confidence parameter delta = {self.delta} is not between 0 and 1: give one such as 0.1."
            )
        if not self.epsilon > 0:
            raise EveInputError(f"The tolerance epsilon = {self.epsilon} is not positive: give one such as 0.15.")
        for name in ("beam_width", "batch_size", "max_samples", "min_rows"):
            if getattr(self, name) < 1:
                raise EveInputError(f"The setting {name} = {getattr(self, name)} is below 1: give 1 or more.")
        if self.n_bins < 2:
            raise EveInputError(f"The bin count n_bins = {self.n_bins} is below 2: give 2 or more (4 for quartiles).")
        if self.max_length is not None and self.max_length < 1:
            raise EveInputError(
                f"The rule length max_length = {self.max_length} is below 1: give 1 or more, or None for no limit."
            )


# 1. Bernoulli KL confidence bounds ------------------------------------------------------------------------


def kl_bernoulli(p, q) -> np.ndarray:
    """KL(Ber(p) || Ber(q)) = p log(p / q) + (1 - p) log((1 - p) / (1 - q)), elementwise; q clipped off 0 and 1."""
    p = np.clip(np.asarray(p, dtype=float), 0.0, 1.0)
    q = np.clip(np.asarray(q, dtype=float), 1e-15, 1 - 1e-15)
    return xlogy(p, p) - xlogy(p, q) + xlogy(1 - p, 1 - p) - xlogy(1 - p, 1 - q)


def kl_bounds(p_hat, level) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper): the q <= p_hat and q >= p_hat furthest from p_hat with KL(p_hat, q) <= level, elementwise.

    With level = beta / n these are KL-LUCB's confidence bounds on a Bernoulli mean from n draws (Kaufmann &
    Kalyanakrishnan 2013). Found by bisection inside Pinsker's bracket |q - p_hat| <= sqrt(level / 2); each bound
    is the outer end of its final bracket, so it never lies inside the exact one. p_hat = 1 gives lower =
    exp(-level).
    """
    p = np.clip(np.asarray(p_hat, dtype=float), 0.0, 1.0)
    level = np.broadcast_to(np.asarray(level, dtype=float), p.shape)
    reach = np.sqrt(level / 2)
    # 1. lower: KL(p, q) falls as q rises to p; keep `out` with KL > level (or 0) and `inside` with KL <= level
    out, inside = np.maximum(p - reach, 0.0), p.copy()
    for _ in range(BISECTION_STEPS):
        mid = (out + inside) / 2
        ok = kl_bernoulli(p, mid) <= level
        inside, out = np.where(ok, mid, inside), np.where(ok, out, mid)
    lower = out
    # 2. upper: the mirror image above p
    inside, out = p.copy(), np.minimum(p + reach, 1.0)
    for _ in range(BISECTION_STEPS):
        mid = (out + inside) / 2
        ok = kl_bernoulli(p, mid) <= level
        inside, out = np.where(ok, mid, inside), np.where(ok, out, mid)
    return lower, out


def lucb_beta(n_arms: int, t: int, delta: float) -> float:
    """KL-LUCB's exploration rate beta(t, delta) = log(k1 K t^alpha / delta) + log log(k1 K t^alpha / delta) for
    K arms at round t (Kaufmann & Kalyanakrishnan 2013), with alpha = 1.1 and k1 = 405.5, just above their
    condition k1 > 2e + 1 + e / (alpha - 1) + (e + 1) / (alpha - 1)^2 = 405.4 (the authors' code's values)."""
    x = np.log(LUCB_K1 * n_arms * t**LUCB_ALPHA / delta)
    return float(x + np.log(x))


# 2. predicates and the decision ---------------------------------------------------------------------------


def _number(value: float) -> str:
    """A cut as a rule shows it: three significant digits (15.0, 0.999), whole numbers from 100 (1,898)."""
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:#.3g}"


@dataclass(frozen=True)
class Predicate:
    """One condition on one feature: `feature op value`, e.g. ventricle_volume > 20.6 (mL)."""

    feature: str
    op: str  # one of OPS
    value: float | str  # a cut (numeric) or a level (categorical)
    unit: str | None = None  # the feature's unit where the dataset is known to record one

    @property
    def text(self) -> str:
        if self.op == "=":
            return f"{self.feature} = {self.value}"
        return f"{self.feature} {self.op} {_number(float(self.value))}{f' {self.unit}' if self.unit else ''}"

    @property
    def slot(self) -> tuple[str, str]:
        """What the predicate bounds: (feature, "upper" | "lower" | "level"); a rule holds one per slot."""
        return self.feature, {"<=": "upper", ">": "lower", "=": "level"}[self.op]

    def holds(self, values: np.ndarray) -> np.ndarray:
        """(N,) bool: whether the condition holds for each of the feature's values."""
        if self.op == "=":
            return np.asarray(values).astype(str) == str(self.value)
        values = np.asarray(values, dtype=float)
        return values <= self.value if self.op == "<=" else values > self.value

    def to_json(self) -> dict:
        value = self.value if isinstance(self.value, str) else float(self.value)
        return {"feature": self.feature, "op": self.op, "value": value, "unit": self.unit, "text": self.text}


def _rule_text(predicates: tuple[Predicate, ...]) -> str:
    """The conditions joined by AND; a lower and an upper bound on one feature read as one interval."""
    parts, by_feature = [], {}
    for p in predicates:
        by_feature.setdefault(p.feature, []).append(p)
    for feature, group in by_feature.items():
        ops = {p.op: p for p in group}
        if "<=" in ops and ">" in ops:
            low, high, unit = ops[">"], ops["<="], ops["<="].unit
            suffix = f" {unit}" if unit else ""
            parts.append(f"{_number(float(low.value))}{suffix} < {feature} <= {_number(float(high.value))}{suffix}")
        else:
            parts.extend(p.text for p in group)
    return " AND ".join(parts)


def subject_predicates(
    values: dict[str, np.ndarray], subject: dict, categorical=(), units=None, n_bins: int = 4
) -> list[Predicate]:
    """The predicates a subject satisfies: for each numeric feature the side of each of its cohort quantile cuts
    (`n_bins` = 4: q1, q2, q3) the subject's value lies on, for each categorical one its level; a predicate that
    holds for every cohort row says nothing and is left out.

    Args:
        values: feature -> (N,) cohort values.
        subject: feature -> the subject's value.
        categorical: the features compared by equality.
        units: feature -> unit, for the rule's text.
    """
    units = units or {}
    found = []
    for feature, column in values.items():
        unit = units.get(feature)
        if feature in categorical:
            candidates = [Predicate(feature, "=", str(subject[feature]), unit)]
        else:
            cuts = np.unique(np.quantile(np.asarray(column, float), np.arange(1, n_bins) / n_bins))
            x = float(subject[feature])
            candidates = [Predicate(feature, "<=" if x <= c else ">", float(c), unit) for c in cuts]
        found.extend(p for p in candidates if not p.holds(column).all())
    return found


@dataclass(frozen=True)
class DecisionRule:
    """How a model's outputs become a decision: a single output above a threshold (a logit above 0, a
    probability above 0.5, a regression above a threshold given), else the largest of K outputs (argmax)."""

    output_names: tuple[str, ...]
    threshold: float | None  # None: argmax over the outputs

    @classmethod
    def for_card(cls, card: ModelCard, threshold: float | None = None) -> DecisionRule:
        """The decision of `card`'s model; raises `EveInputError` when its outputs are not a decision."""
        names, kind = tuple(card.output_names), card.output_kind
        if (card.outputs or "").startswith("probability"):  # a logit's probability (`ModelRef.explain`)
            kind = "probability"
        said = "a regression" if kind == "regression" else "of a kind not stated"
        if len(names) > 1:
            if threshold is not None:
                raise EveInputError(
                    f"A threshold = {threshold:g} was given, but {card.name} has {len(names)} outputs and decides "
                    "by the largest: leave the threshold out."
                )
            if kind not in ("logit", "probability"):
                raise EveInputError(
                    f"{card.name}'s {len(names)} outputs are {said}, not class scores, so they name no decision: "
                    "explain a classifier, or state outputs kind 'logit' in its card."
                )
            return cls(names, None)
        if threshold is None:
            if kind not in ("logit", "probability"):
                raise EveInputError(
                    f"{card.name}'s output {names[0]} is {said}, not a class score, so it names no decision: give "
                    "a threshold (--threshold) to decide by, or explain a classifier."
                )
            threshold = 0.0 if kind == "logit" else 0.5
        return cls(names, float(threshold))

    @property
    def labels(self) -> tuple[str, ...]:
        """The text of each decision, by its code."""
        if self.threshold is None:
            return tuple(f"{name} (the largest output)" for name in self.output_names)
        name, t = self.output_names[0], self.threshold
        return f"{name} <= {t:g}", f"{name} > {t:g}"

    @property
    def description(self) -> str:
        if self.threshold is None:
            return "the model's predicted class: the largest of its outputs (argmax)"
        return f"whether {self.output_names[0]} > {self.threshold:g} (1) or not (0)"

    def decide(self, outputs: np.ndarray) -> np.ndarray:
        """(N,) int decisions from (N, K) outputs."""
        y = np.asarray(outputs, dtype=float).reshape(len(outputs), -1)
        if self.threshold is None:
            return np.argmax(y, axis=1).astype(np.int64)
        return (y[:, 0] > self.threshold).astype(np.int64)


# 3. the result ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Anchor:
    """A rule on the features, the decision it keeps and how well: precision with its bounds, coverage."""

    predicates: tuple[Predicate, ...]  # empty: the decision holds for the cohort as a whole
    decision: int  # the decision explained, the subject's (`DecisionRule.decide`)
    decision_text: str  # it in words, e.g. "logit P(label=1) > 0"
    precision: float  # share of the draws from the rule's rows with the subject's decision
    precision_low: float  # Bernoulli KL bounds on it, each holding with probability >= 1 - delta
    precision_high: float
    coverage: float  # share of cohort rows the rule holds for
    n_covered: int  # cohort rows the rule holds for
    n_cohort: int  # cohort rows
    n_samples: int  # draws behind the precision
    n_drawn: int  # draws the whole search took (every rule tried)
    tau: float
    delta: float
    subject: str | None = None

    @property
    def reaches_tau(self) -> bool:
        """Whether the rule is an anchor: its precision's lower bound reaches tau."""
        return self.precision_low >= self.tau

    @property
    def rule(self) -> str:
        return _rule_text(self.predicates) or "no condition (every subject)"

    @property
    def text(self) -> str:
        """'IF ... THEN the model says ... (precision 0.97 [0.95, 0.99], coverage 18%)', with a note when the
        rule falls short of tau."""
        head = f"IF {_rule_text(self.predicates)} THEN" if self.predicates else "For every subject"
        text = (
            f"{head} the model says {self.decision_text} (precision {self.precision:.2f} "
            f"[{self.precision_low:.2f}, {self.precision_high:.2f}], coverage {self.coverage:.0%})"
        )
        if not self.reaches_tau:
            text += f"; this does not reach the precision threshold {self.tau:g}"
        return text

    def holds(self, values: dict[str, np.ndarray]) -> np.ndarray:
        """(N,) bool: whether the rule holds for each row, given feature -> (N,) values."""
        n = len(next(iter(values.values())))
        mask = np.ones(n, dtype=bool)
        for p in self.predicates:
            mask &= p.holds(values[p.feature])
        return mask

    def to_json(self) -> dict:
        return {
            "subject": self.subject,
            "rule": self.rule,
            "text": self.text,
            "predicates": [p.to_json() for p in self.predicates],
            "decision": int(self.decision),
            "decision_text": self.decision_text,
            "precision": self.precision,
            "precision_low": self.precision_low,
            "precision_high": self.precision_high,
            "reaches_tau": self.reaches_tau,
            "coverage": self.coverage,
            "n_covered": self.n_covered,
            "n_cohort": self.n_cohort,
            "n_samples": self.n_samples,
            "n_drawn": self.n_drawn,
        }


# 4. the search (array layer) --------------------------------------------------------------------------


class _Arms:
    """Every rule tried: the cohort rows it holds for, its draws and how many agreed with the target."""

    def __init__(self, holds: np.ndarray, correct: np.ndarray, rng: np.random.Generator):
        self.holds, self.correct, self.rng = holds, correct, rng  # (P, N) bool, (N,) bool
        self.rows: dict[tuple[int, ...], np.ndarray] = {}
        self.n: dict[tuple[int, ...], int] = {}
        self.positives: dict[tuple[int, ...], int] = {}
        self.drawn = 0

    def add(self, rule: tuple[int, ...]) -> np.ndarray:
        if rule not in self.rows:
            mask = np.logical_and.reduce(self.holds[list(rule)], axis=0) if rule else np.ones_like(self.correct)
            self.rows[rule], self.n[rule], self.positives[rule] = np.flatnonzero(mask), 0, 0
        return self.rows[rule]

    def draw(self, rule: tuple[int, ...], m: int) -> None:
        """m rows drawn with replacement from the rule's rows: the paper's samples from D(z | A)."""
        rows = self.rows[rule]
        picks = rows[self.rng.integers(0, len(rows), size=m)]
        self.n[rule] += m
        self.positives[rule] += int(self.correct[picks].sum())
        self.drawn += m

    def stats(self, rules: list[tuple[int, ...]]) -> tuple[np.ndarray, np.ndarray]:
        n = np.array([self.n[r] for r in rules], dtype=float)
        return n, np.array([self.positives[r] for r in rules], dtype=float) / n


def _kl_lucb(arms: _Arms, rules: list[tuple[int, ...]], top_n: int, config: AnchorConfig) -> list[tuple[int, ...]]:
    """The `top_n` rules of highest precision, within epsilon with probability >= 1 - delta (KL-LUCB, K&K 2013,
    Algorithm 1 with KL bounds): each round pulls the kept rule of lowest lower bound and the left-out rule of
    highest upper bound, until upper - lower <= epsilon (or both have `max_samples` draws)."""
    for rule in rules:
        if arms.n[rule] == 0:
            arms.draw(rule, config.batch_size)
    if len(rules) <= top_n:
        return list(rules)
    t = 1
    while True:
        n, means = arms.stats(rules)
        order = np.argsort(-means, kind="stable")  # most precise first; ties keep the candidates' order
        kept, left = order[:top_n], order[top_n:]
        beta = lucb_beta(len(rules), t, config.delta)
        low = kl_bounds(means[kept], beta / n[kept])[0]
        high = kl_bounds(means[left], beta / n[left])[1]
        worst, best_left = kept[np.argmin(low)], left[np.argmax(high)]
        if high.max() - low.min() <= config.epsilon:
            break
        pulled = [i for i in (worst, best_left) if n[i] < config.max_samples]
        if not pulled:
            break
        for i in pulled:
            arms.draw(rules[i], config.batch_size)
        t += 1
    return [rules[i] for i in kept]


def _settle(arms: _Arms, rule: tuple[int, ...], beta: float, config: AnchorConfig) -> tuple[float, float, float]:
    """Draw for `rule` until its bounds leave tau (lower >= tau, or upper < tau) or it has `max_samples` draws,
    doubling the draws each time; returns (precision, lower, upper) at `beta`."""
    while True:
        n, positives = arms.n[rule], arms.positives[rule]
        mean = positives / n
        low, high = (float(b) for b in kl_bounds(mean, beta / n))
        if low >= config.tau or high < config.tau or n >= config.max_samples:
            return mean, low, high
        arms.draw(rule, min(n, config.max_samples - n))


def anchor_array(
    values: dict[str, np.ndarray],
    decisions: np.ndarray,
    subject: dict,
    target: int,
    *,
    categorical=(),
    units: dict[str, str] | None = None,
    labels: tuple[str, ...] | None = None,
    subject_id: str | None = None,
    config: AnchorConfig = AnchorConfig(),
    seed: int | np.random.Generator = 0,
) -> Anchor:
    """The anchor of one subject over a cohort, from arrays (module docstring, steps 1-5).

    Args:
        values: feature -> (N,) the cohort's values (numeric, or levels for the `categorical` features).
        decisions: (N,) int, the model's decision on each cohort row.
        subject: feature -> the subject's value (the subject need not be a cohort row).
        target: the model's decision on the subject, f(x).
        categorical: features compared by equality.
        units: feature -> unit, for the rule's text.
        labels: decision code -> text (default the code).
        subject_id: what to call the subject in the result.
        config: tau, delta, epsilon, beam width and the sampling budget (`AnchorConfig`).
        seed: seed (or generator) of the draws; the same seed gives the same anchor.

    The rule always holds for the subject: it is built from the subject's own predicates.
    """
    decisions = np.asarray(decisions)
    if not values or any(len(v) != len(decisions) for v in values.values()):
        raise ValueError("values must hold at least one feature, each with one value per decision")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    # 1. the subject's predicates on the cohort's quantile cuts
    predicates = subject_predicates(values, subject, categorical, units, config.n_bins)
    holds = np.stack([p.holds(values[p.feature]) for p in predicates]) if predicates else np.zeros((0, len(decisions)))
    arms = _Arms(holds.astype(bool), decisions == target, rng)
    final_beta = float(np.log((1 + (config.beam_width - 1) * max(len(predicates), 1)) / config.delta))
    settled: dict[tuple[int, ...], tuple[float, float, float]] = {}

    def settle(rule):
        settled[rule] = _settle(arms, rule, final_beta, config)
        return settled[rule]

    # 2. the empty rule first: the cohort's decisions alone may already keep the subject's
    arms.add(())
    arms.draw((), config.batch_size)
    best = () if settle(())[1] >= config.tau else None
    beam, tried = [()], []
    max_length = config.max_length or len(predicates)
    length = 0
    while best is None and length < max_length:
        length += 1
        # 2. every rule in the beam extended by one predicate on a free slot, holding for fewer but enough rows
        candidates = []
        for parent in beam:
            used = {predicates[i].slot for i in parent}
            for i, p in enumerate(predicates):
                rule = tuple(sorted((*parent, i)))
                if p.slot in used or rule in candidates:
                    continue
                rows = arms.add(rule)
                if len(rows) >= config.min_rows and len(rows) < len(arms.rows[parent]):
                    candidates.append(rule)
        if not candidates:
            break
        # 3. KL-LUCB keeps the B most precise; 4. each is settled against tau
        beam = _kl_lucb(arms, candidates, min(config.beam_width, len(candidates)), config)
        tried.extend(beam)
        anchors = [rule for rule in beam if settle(rule)[1] >= config.tau]
        if anchors:  # 5. the shortest length with an anchor: the one of highest coverage
            best = max(anchors, key=lambda r: (len(arms.rows[r]), settled[r][0]))
    if best is None:  # none reaches tau: the most precise rule picked at any length
        best = _kl_lucb(arms, tried, 1, config)[0] if tried else ()
        settle(best)
    precision, low, high = settled[best]
    n_covered = len(arms.rows[best])
    return Anchor(
        predicates=tuple(sorted((predicates[i] for i in best), key=lambda p: (list(values).index(p.feature), p.op))),
        decision=int(target),
        decision_text=labels[target] if labels is not None else str(target),
        precision=float(precision),
        precision_low=low,
        precision_high=high,
        coverage=n_covered / len(decisions),
        n_covered=n_covered,
        n_cohort=len(decisions),
        n_samples=int(arms.n[best]),
        n_drawn=int(arms.drawn),
        tau=config.tau,
        delta=config.delta,
        subject=subject_id,
    )


# 5. the dataset layer ---------------------------------------------------------------------------------


def feature_units(dataset: Dataset) -> dict[str, str]:
    """Feature -> unit for Eve's embedded datasets (`EMBEDDED_UNITS`); none for a folder, whose table has none."""
    if dataset.truth is None or dataset.truth.get("dataset") != dataset.name:
        return {}
    return dict(EMBEDDED_UNITS.get(dataset.name, {}))


@dataclass(frozen=True)
class Cohort:
    """What the search needs from a dataset and a model: the cohort's feature values and every row's decision."""

    dataset: str  # the dataset's name
    rows: np.ndarray  # (N,) the cohort's dataset rows (a split's)
    split: str
    features: tuple[str, ...]
    categorical: tuple[str, ...]
    values: dict = field(repr=False)  # feature -> (len(dataset),) values of every row
    decisions: np.ndarray = field(repr=False)  # (len(dataset),) the model's decision on every row
    rule: DecisionRule
    units: dict = field(default_factory=dict)
    subjects: tuple[str, ...] = field(default=(), repr=False)  # every row's subject ID

    def cohort_values(self) -> dict[str, np.ndarray]:
        return {f: self.values[f][self.rows] for f in self.features}


def cohort(
    model,
    card: ModelCard,
    dataset: Dataset,
    *,
    split: str = "all",
    features=None,
    threshold: float | None = None,
    outputs: np.ndarray | None = None,
    batch_size: int = SCORE.batch_size,
) -> Cohort:
    """The cohort of a split with the model's decision on every dataset row.

    Args:
        model: the model (`engine.models.load`); not run when `outputs` are given (it may then be None).
        card: its card: the input it is fed and what its outputs are (`DecisionRule.for_card`).
        dataset: a loaded dataset.
        split: the cohort's rows (`engine.scores.service.split_rows`): "all" (default), "test" or "train".
        features: the features rules may use (list or "a,b,c"; default every feature).
        threshold: a single output's decision threshold (default 0 for a logit, 0.5 for a probability).
        outputs: (len(dataset), K) outputs of every row already computed (e.g. the app's cached
            `loaders.model_outputs`); default: `engine.scores.service.model_outputs` on every row.
    """
    from engine.data.dataset import resolve_features
    from engine.scores.service import check_output_count, model_outputs, split_rows

    names = resolve_features(dataset, features)
    rule = DecisionRule.for_card(card, threshold)  # fails before the forward pass
    rows = split_rows(dataset, split)
    if len(rows) < MIN_COHORT:
        raise EveInputError(
            f"The {split} split of {dataset.name} has {len(rows)} rows, fewer than the {MIN_COHORT} anchors need "
            "(quartile cuts and enough rows per rule): use the split 'all' or a dataset with more subjects."
        )
    if outputs is None:
        outputs = model_outputs(model, dataset, card.spec, batch_size=batch_size)
    outputs = np.asarray(outputs, dtype=float).reshape(len(outputs), -1)
    if len(outputs) != len(dataset):
        raise ValueError(f"{len(outputs)} outputs for the {len(dataset)} rows of {dataset.name}")
    check_output_count(card, outputs)
    if not np.isfinite(outputs).all():
        raise EveInputError(
            f"{card.name} gave NaN or Inf on {int((~np.isfinite(outputs)).any(axis=1).sum())} image(s) of "
            f"{dataset.name}, so they have no decision: fix the model or remove those images."
        )
    return Cohort(
        dataset.name,
        rows,
        split,
        tuple(names),
        tuple(f for f in names if f in dataset.categorical_features),
        {f: dataset.feature_values(f) for f in names},
        rule.decide(outputs),
        rule,
        feature_units(dataset),
        tuple(dataset.subjects),
    )


def cohort_anchor(found: Cohort, row: int, *, config: AnchorConfig = AnchorConfig(), seed: int = 0) -> Anchor:
    """The anchor of dataset row `row` over the cohort; its draws are seeded by (seed, row), so a subject's
    anchor is the same alone (`subject_anchor`) and in the cohort's table (`global_anchors`)."""
    cohort_rows = found.rows
    return anchor_array(
        found.cohort_values(),
        found.decisions[cohort_rows],
        {f: found.values[f][row] for f in found.features},
        int(found.decisions[row]),
        categorical=found.categorical,
        units=found.units,
        labels=found.rule.labels,
        subject_id=found.subjects[row] if found.subjects else None,
        config=config,
        seed=np.random.default_rng([int(seed), int(row)]),
    )


def subject_anchor(
    model,
    card: ModelCard,
    dataset: Dataset,
    subject: str,
    *,
    split: str = "all",
    features=None,
    threshold: float | None = None,
    outputs: np.ndarray | None = None,
    config: AnchorConfig = AnchorConfig(),
    seed: int = 0,
) -> Anchor:
    """The anchor of one subject: the shortest rule on the features that keeps the model's decision on it with
    precision >= tau over the cohort (module docstring). Arguments as in `cohort`; `subject` is its ID."""
    row = dataset.index_of(subject)  # an unknown subject fails before the forward pass
    found = cohort(model, card, dataset, split=split, features=features, threshold=threshold, outputs=outputs)
    return cohort_anchor(found, row, config=config, seed=seed)


@dataclass(frozen=True)
class AnchorTable:
    """Rules that together explain the cohort's decisions (submodular pick over sampled subjects' anchors)."""

    anchors: tuple[Anchor, ...]  # the rules picked, in pick order
    explained: tuple[float, ...]  # after each pick: share of cohort rows some picked rule explains
    sampled: tuple[str, ...]  # the subjects whose anchors were found
    n_reaching: int  # how many of them reach tau (the pick chooses among these)
    counts: tuple[int, ...] = ()  # per picked rule: sampled subjects whose anchor it is

    @property
    def table(self) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "rule": [a.rule for a in self.anchors],
                "decision": [a.decision_text for a in self.anchors],
                "precision": [a.precision for a in self.anchors],
                "precision_low": [a.precision_low for a in self.anchors],
                "precision_high": [a.precision_high for a in self.anchors],
                "coverage": [a.coverage for a in self.anchors],
                "explained_so_far": list(self.explained),
                "subjects": list(self.counts),
            },
            columns=[
                *("rule", "decision", "precision", "precision_low", "precision_high"),
                *("coverage", "explained_so_far", "subjects"),
            ],
        )

    def to_json(self) -> dict:
        return {
            "rules": [
                {**a.to_json(), "explained_so_far": share}
                for a, share in zip(self.anchors, self.explained, strict=True)
            ],
            "subjects_per_rule": list(self.counts),
            "sampled_subjects": list(self.sampled),
            "n_reaching_tau": self.n_reaching,
        }


def pick_anchors(anchors: list[Anchor], found: Cohort, n_rules: int) -> tuple[list[int], list[float]]:
    """SP-Anchor (the submodular pick of Ribeiro et al. 2018): greedily the anchor adding the most cohort rows whose
    decision it explains, until `n_rules` or no gain. Returns the picked indices and the share explained after each."""
    values, decisions = found.cohort_values(), found.decisions[found.rows]
    explains = [a.holds(values) & (decisions == a.decision) for a in anchors]
    done = np.zeros(len(decisions), dtype=bool)
    picked, shares = [], []
    while len(picked) < n_rules:
        gains = [-1 if i in picked else int((e & ~done).sum()) for i, e in enumerate(explains)]
        if not gains or max(gains) <= 0:
            break
        best = int(np.argmax(gains))  # ties: the first found
        picked.append(best)
        done |= explains[best]
        shares.append(float(done.mean()))
    return picked, shares


def cohort_rules(
    found: Cohort,
    *,
    n_subjects: int = RULES.n_subjects,
    n_rules: int = RULES.n_rules,
    config: AnchorConfig = AnchorConfig(),
    seed: int = 0,
    progress=None,
) -> AnchorTable:
    """Rules that together explain the cohort's decisions: the anchors of `n_subjects` cohort subjects drawn at
    random (seeded), then the paper's submodular pick of at most `n_rules` of those reaching tau (`pick_anchors`);
    `progress(done, total)` after each subject."""
    if n_subjects < 1 or n_rules < 1:
        raise EveInputError(
            f"No rules to pick from n_subjects = {n_subjects} and n_rules = {n_rules}: give 1 or more of each, "
            "e.g. 20 and 5."
        )
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(found.rows, size=min(n_subjects, len(found.rows)), replace=False))
    anchors = []
    for i, row in enumerate(rows):
        anchors.append(cohort_anchor(found, int(row), config=config, seed=seed))
        if progress:
            progress(i + 1, len(rows))
    unique: dict[tuple, list[Anchor]] = {}
    for a in anchors:
        if a.reaches_tau:
            unique.setdefault((a.predicates, a.decision), []).append(a)
    candidates = [group[0] for group in unique.values()]
    picked, shares = pick_anchors(candidates, found, n_rules)
    counts = [len(unique[(candidates[i].predicates, candidates[i].decision)]) for i in picked]
    return AnchorTable(
        tuple(candidates[i] for i in picked),
        tuple(shares),
        tuple(a.subject for a in anchors),
        sum(a.reaches_tau for a in anchors),
        tuple(counts),
    )


def global_anchors(
    model,
    card: ModelCard,
    dataset: Dataset,
    *,
    split: str = "all",
    features=None,
    threshold: float | None = None,
    outputs: np.ndarray | None = None,
    n_subjects: int = RULES.n_subjects,
    n_rules: int = RULES.n_rules,
    config: AnchorConfig = AnchorConfig(),
    seed: int = 0,
    progress=None,
) -> AnchorTable:
    """The cohort's rules (`cohort_rules`) for a model and a dataset; arguments as in `cohort`."""
    found = cohort(model, card, dataset, split=split, features=features, threshold=threshold, outputs=outputs)
    return cohort_rules(found, n_subjects=n_subjects, n_rules=n_rules, config=config, seed=seed, progress=progress)


# 6. the `anchors` command ------------------------------------------------------------------------------


def anchors_metadata(found: Cohort, card: ModelCard, config: AnchorConfig, seed: int, **extra) -> dict:
    """What was explained and how, for the JSON file."""
    from engine import software

    return {
        "eve": "Eve, the Explained-Variance Explorer",
        "method": "Anchors (Ribeiro, Singh & Guestrin, AAAI 2018) with KL-LUCB (Kaufmann & Kalyanakrishnan, COLT "
        "2013); precision from cohort rows drawn with replacement, coverage exact over the cohort",
        "dataset": found.dataset,
        "model": card.name,
        "decision": found.rule.description,
        "split": found.split,
        "n_cohort": int(len(found.rows)),
        "features": list(found.features),
        "units": found.units,
        "config": {k: getattr(config, k) for k in config.__dataclass_fields__},
        "seed": int(seed),
        **extra,
        "software": software(),
    }
