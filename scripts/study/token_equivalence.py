"""'By how much' in tokens: each arm's result as reference-equivalent tokens (rough).

The reference arm (Muon by default) is run at its chosen setting for the study's budget T0 (its
confirmation runs) and for a few longer budgets T1 < T2 ... (each a full run with its own schedule).
On the seeds the curve has, its mean final loss L_ref(T) is interpolated linearly in log(T). An arm
whose mean confirmation loss is L reaches in T0 tokens what the reference reaches in

    T_eq = L_ref^-1(L)     (modded-nanogpt's measure: Muon needed 1.35x fewer tokens than AdamW)

reported as T_eq / T0 with a 95% percentile interval from a bootstrap over seeds (each resample
draws seeds with replacement and recomputes both the reference curve and the arm's mean). Outside
the measured range the figure is extrapolated from the nearest segment and marked so: below T0 (the
arm is worse than the reference) or beyond the longest budget. Rough: the curve has few points, and
log-linear interpolation is a model, not a measurement.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

BOOTSTRAP = 2000


@dataclass(frozen=True)
class TokenCurve:
    tokens: tuple[float, ...]                    # T0 < T1 < ...
    losses: dict[int, tuple[float, ...]]         # seed -> the reference's final loss at each budget


@dataclass(frozen=True)
class Equivalent:
    ratio: float                 # T_eq / T0
    interval: tuple[float, float]
    extrapolated: str | None     # "below" / "beyond" the measured range, or None


def equivalent_tokens(curve_tokens: tuple[float, ...], curve_losses: list[float], loss: float) -> tuple[float, str | None]:
    """T with L_ref(T) = ``loss`` on the mean curve (log-linear between budgets, extrapolated outside)."""
    logs = [math.log(t) for t in curve_tokens]
    segments = list(zip(range(len(logs) - 1), range(1, len(logs))))
    where = None
    if loss > curve_losses[0]:
        i, j = segments[0]
        where = "below"
    elif loss < curve_losses[-1]:
        i, j = segments[-1]
        where = "beyond"
    else:
        i, j = next((a, b) for a, b in segments if curve_losses[b] <= loss <= curve_losses[a])
    slope = (curve_losses[j] - curve_losses[i]) / (logs[j] - logs[i])
    if slope >= 0:  # a longer budget did not lower the loss: no equivalence to read
        return math.nan, where
    return math.exp(logs[i] + (loss - curve_losses[i]) / slope), where


def _mean_curve(curve: TokenCurve, seeds: list[int]) -> list[float]:
    return [sum(curve.losses[s][b] for s in seeds) / len(seeds) for b in range(len(curve.tokens))]


def arm_equivalent(curve: TokenCurve, arm_losses: dict[int, float], seed: int = 0) -> Equivalent:
    """The arm's reference-equivalent tokens, as a multiple of the base budget T0, with its interval."""
    curve_seeds = sorted(curve.losses)
    arm_seeds = sorted(arm_losses)
    mean = sum(arm_losses.values()) / len(arm_losses)
    point, where = equivalent_tokens(curve.tokens, _mean_curve(curve, curve_seeds), mean)
    rng = random.Random(seed)
    draws = []
    for _ in range(BOOTSTRAP):
        ref = [rng.choice(curve_seeds) for _ in curve_seeds]
        arm = [arm_losses[rng.choice(arm_seeds)] for _ in arm_seeds]
        t, _ = equivalent_tokens(curve.tokens, _mean_curve(curve, ref), sum(arm) / len(arm))
        if math.isfinite(t):
            draws.append(t / curve.tokens[0])
    draws.sort()
    if len(draws) < BOOTSTRAP // 2:
        return Equivalent(point / curve.tokens[0], (math.nan, math.nan), where)
    low, high = draws[int(0.025 * len(draws))], draws[int(0.975 * len(draws)) - 1]
    return Equivalent(point / curve.tokens[0], (low, high), where)
