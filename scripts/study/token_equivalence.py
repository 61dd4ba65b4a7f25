"""'By how much' in tokens: each arm's result as reference-equivalent tokens (rough).

The reference arm (Muon by default) is run at its chosen setting for the study's budget T0 (its
confirmation runs) and for a few longer budgets T1 < T2 ... (each a full run with its own schedule),
on a few of the confirmation seeds. The curve gives the SHAPE of the reference's loss against tokens:
its mean final loss L_ref(T) over the curve's seeds, interpolated linearly in log(T). The arm's
distance from the reference comes from the paired confirmation runs (every seed both have):
d = mean_s (L_arm,s - L_ref,s) at T0. The arm reaches in T0 tokens what the reference reaches in

    T_eq = L_ref^-1(L_ref(T0) + d)      (modded-nanogpt's measure: Muon needed 1.35x fewer tokens than AdamW)

so the reference itself reads exactly 1, and the few seeds of the curve (whose mean at T0 need not
equal the reference's mean over all confirmation seeds) do not shift every arm's figure. Reported as
T_eq / T0 with a 95% percentile interval from a bootstrap that resamples the curve's seeds (the
shape) and the paired seeds (d) independently. Outside the measured range the figure is extrapolated
from the nearest segment and marked so: below T0 (the arm is worse than the reference) or beyond the
longest budget. Rough: the curve has few points, and log-linear interpolation is a model, not a
measurement.
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


def arm_equivalent(curve: TokenCurve, arm_losses: dict[int, float], reference_losses: dict[int, float],
                   seed: int = 0) -> Equivalent:
    """The arm's reference-equivalent tokens, as a multiple of the base budget T0, with its interval.
    ``arm_losses`` / ``reference_losses``: final loss by confirmation seed (paired on the seeds both have)."""
    curve_seeds = sorted(curve.losses)
    paired = sorted(set(arm_losses) & set(reference_losses))
    if not paired:
        return Equivalent(math.nan, (math.nan, math.nan), None)
    gaps = [arm_losses[s] - reference_losses[s] for s in paired]

    def read(curve_draw: list[int], gap_draw: list[float]) -> tuple[float, str | None]:
        mean_curve = _mean_curve(curve, curve_draw)
        return equivalent_tokens(curve.tokens, mean_curve, mean_curve[0] + sum(gap_draw) / len(gap_draw))

    point, where = read(curve_seeds, gaps)
    rng = random.Random(seed)
    draws = []
    for _ in range(BOOTSTRAP):
        t, _ = read([rng.choice(curve_seeds) for _ in curve_seeds], [rng.choice(gaps) for _ in gaps])
        if math.isfinite(t):
            draws.append(t / curve.tokens[0])
    draws.sort()
    if len(draws) < BOOTSTRAP // 2:
        return Equivalent(point / curve.tokens[0], (math.nan, math.nan), where)
    low, high = draws[int(0.025 * len(draws))], draws[int(0.975 * len(draws)) - 1]
    return Equivalent(point / curve.tokens[0], (low, high), where)
