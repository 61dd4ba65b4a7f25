"""Paired comparisons over shared seeds: the statistics behind every verdict of a study report.

Seed s means the same model init and the same data order for every optimizer, so two optimizers'
final losses on seed s are a pair. For a claim "A is better than B" (lower loss) the per-seed
differences are

    d_s = L_B,s - L_A,s            (> 0 where A is better on seed s),   s = 1..k

and the report gives, for each comparison:
- d̄ and the two-sided t-interval d̄ ± t_{1-a/2, k-1} · s_d / √k at the comparison's adjusted level
  (Holm, below);
- the exact sign-flip p-value (one-sided, in the claim's direction): the share of the 2^k sign
  patterns ε whose mean of ε_s·d_s is at least d̄. It assumes only that d_s is symmetric about 0 under
  the null, so it checks the t-interval's normality; with k = 6 its smallest value is 1/64;
- ρ, the Pearson correlation of L_A,s and L_B,s across seeds (how much the pairing removes);
- the minimum detectable effect: (t_{1-a,k-1} + t_{0.8,k-1}) · s_d / √k, the true advantage this
  design finds with 80% power at the comparison's level.

Verdict levels. Each claim is directional, so each verdict is a one-sided test at level alpha
(0.05 by default): "holds" when the lower end of the two-sided (1 - 2·alpha) interval is above the
claim's margin, "does not hold" when its upper end is below 0. This is Schuirmann's convention, the
same interval TOST uses, and it makes "no practical difference" the 90% interval inside (-m, m).
Under a null of no difference each wrong verdict has probability alpha. (A two-sided 5% test would
halve that, but at k = 8 seeds it finds a true 1 σ_d advantage only 68% of the time, against 82% here;
no level-5% test does better for normal differences, the paired t being uniformly most powerful
among unbiased tests.)

Holm over all comparisons of a report: the one-sided p-values p_(1) <= ... <= p_(m) of the claimed
directions are taken in order; comparison j is judged at alpha / (m - j + 1) until the first that
fails, and every later one at that failing level. The interval at each comparison's level therefore
excludes 0 exactly when Holm's step-down rejects it, and the family-wise rate of wrong "holds"
stays <= alpha whatever the number of comparisons.

Everything here is pure: numbers in, numbers out (tests/test_study_stats.py simulates known truths).
"""

from __future__ import annotations

import itertools
import math
import statistics
from dataclasses import dataclass

from scripts.study import student_t

HOLDS, FAILS, NO_DIFFERENCE, INCONCLUSIVE, UNTESTED = (
    "holds", "does not hold", "no practical difference", "inconclusive", "not tested")
MIN_SEEDS = 3  # below this a t-interval has < 2 degrees of freedom: "not tested"
POWER = 0.8


@dataclass(frozen=True)
class PairedDiff:
    """One comparison's data: L_better_claimed and L_worse_claimed on the same seeds, in seed order."""

    claimed_better: str
    claimed_worse: str
    seeds: tuple[int, ...]
    loss_better: tuple[float, ...]
    loss_worse: tuple[float, ...]

    @property
    def diffs(self) -> tuple[float, ...]:
        return tuple(w - b for b, w in zip(self.loss_better, self.loss_worse))

    @property
    def k(self) -> int:
        return len(self.seeds)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.diffs)

    @property
    def sd(self) -> float:
        return statistics.stdev(self.diffs) if self.k > 1 else float("nan")

    @property
    def standard_error(self) -> float:
        return self.sd / math.sqrt(self.k)

    @property
    def correlation(self) -> float:
        """ρ of the two optimizers' losses across seeds (nan when either is constant or k < 3)."""
        if self.k < 3:
            return float("nan")
        try:
            return statistics.correlation(self.loss_better, self.loss_worse)
        except statistics.StatisticsError:
            return float("nan")

    def p_value(self, threshold: float = 0.0, greater: bool = True) -> float:
        """One-sided paired t p-value against H0: mean d <= threshold (``greater``), or H0: mean d >=
        threshold (not ``greater``)."""
        if self.k < 2:
            return float("nan")
        shift = (self.mean - threshold) if greater else (threshold - self.mean)
        if self.sd == 0:
            return 0.0 if shift > 0 else 1.0
        return student_t.sf(shift / self.standard_error, self.k - 1)

    def interval(self, alpha: float) -> tuple[float, float]:
        """The two-sided (1 - 2·alpha) t-interval of the mean difference (one-sided alpha each end)."""
        if self.k < 2:
            return float("nan"), float("nan")
        half = student_t.ppf(1 - alpha, self.k - 1) * self.standard_error
        return self.mean - half, self.mean + half

    def min_detectable_effect(self, alpha: float, power: float = POWER) -> float:
        """The true mean advantage found with probability ``power`` by the one-sided level-alpha test."""
        if self.k < 2:
            return float("nan")
        df = self.k - 1
        return (student_t.ppf(1 - alpha, df) + student_t.ppf(power, df)) * self.standard_error


def sign_flip_p_value(diffs: tuple[float, ...] | list[float]) -> float:
    """Exact one-sided sign-flip p-value: P(mean of ε·d >= mean of d) over all 2^k sign patterns ε.
    Ties count as at least as extreme (a tolerance absorbs the rounding of equal sums)."""
    k = len(diffs)
    if k == 0:
        return float("nan")
    observed = sum(diffs)
    tolerance = 1e-12 * max(1.0, sum(abs(d) for d in diffs))
    extreme = sum(
        1 for signs in itertools.product((1.0, -1.0), repeat=k)
        if sum(s * d for s, d in zip(signs, diffs)) >= observed - tolerance
    )
    return extreme / 2 ** k


def holm_levels(p_values: list[float], alpha: float) -> list[float]:
    """Each comparison's one-sided level under Holm's step-down (see the module docstring).
    NaN p-values (comparisons not tested) take no part and get level nan."""
    order = sorted((p, i) for i, p in enumerate(p_values) if not math.isnan(p))
    m = len(order)
    levels = [float("nan")] * len(p_values)
    stopped_at: float | None = None
    for j, (p, i) in enumerate(order):
        level = stopped_at if stopped_at is not None else alpha / (m - j)
        levels[i] = level
        if stopped_at is None and not p < level:
            stopped_at = level
    return levels


@dataclass(frozen=True)
class Judgement:
    verdict: str
    level: float                   # the one-sided level the interval was built at (Holm-adjusted)
    interval: tuple[float, float]  # two-sided (1 - 2·level) interval of the mean difference
    mde: float


def judge_difference(diff: PairedDiff, level: float, margin: float, useful_margin: bool,
                     kind: str = "beats") -> Judgement:
    """The verdict of one comparison at its (Holm-adjusted) ``level``.

    ``kind`` beats: "A better than B" (by more than ``margin`` when ``useful_margin``).
    ``kind`` does_not_beat: "A does not consistently beat B": holds when A's advantage is excluded
    beyond ``margin`` (upper end < margin), does not hold when A is better (lower end > 0).
    """
    if diff.k < MIN_SEEDS:
        return Judgement(UNTESTED, level, (float("nan"), float("nan")), float("nan"))
    low, high = diff.interval(level)
    mde = diff.min_detectable_effect(level)
    if kind == "does_not_beat":
        verdict = FAILS if low > 0 else HOLDS if high < margin else INCONCLUSIVE
        return Judgement(verdict, level, (low, high), mde)
    threshold = margin if useful_margin else 0.0
    if low > threshold:
        verdict = HOLDS
    elif high < 0:
        verdict = FAILS
    elif margin > 0 and -margin < low and high < margin:
        verdict = NO_DIFFERENCE  # TOST: both one-sided tests against ±margin reject at this level
    else:
        verdict = INCONCLUSIVE
    return Judgement(verdict, level, (low, high), mde)
