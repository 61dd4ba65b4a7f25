"""Stage 1's choice of learning rate: a parabola in log2(lr), and the edge rule.

Given an arm's tuning points on one lr line (other swept keys fixed), each a final val loss or a
divergence:

- the best point is the stable point of lowest loss;
- if it is the smallest or the largest lr run so far, it is not bracketed: the study runs the next
  point of the factor-2 ladder beyond it (``extend_to``), at most ``max_extensions`` times. It never
  confirms an unbracketed lr: an arm still at an edge after the last extension gets no choice
  (``lr`` None, ``bracketed`` False), and its comparisons are "inconclusive (lr not bracketed)";
- a diverged point beyond the best brackets it (a larger lr that diverges bounds the optimum);
- with both neighbours stable, the parabola through (x-1, L-), (x, L0), (x+1, L+) in x = log2(lr)
  has its vertex at  x + (L- - L+) / (2 (L- - 2 L0 + L+)),  within half a step of x because L0 is the
  smallest; it is rounded to ``round_log2`` (0.5: the ladder refined by √2; 1: the grid itself);
- with every point diverged, the ladder is extended downwards, and with no extension left the arm
  has no choice (its claims "do not hold": see scripts/study/claims.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class TunePoint:
    lr: float
    loss: float        # final val loss (may be non-finite when diverged)
    diverged: bool


@dataclass(frozen=True)
class LrChoice:
    lr: float | None             # the lr to confirm; None while extending or when everything diverged
    best_lr: float | None        # the best stable point run
    vertex_log2: float | None    # the parabola's vertex (None without two stable neighbours)
    bracketed: bool
    extend_to: float | None      # the next point to run (stage 1 is not finished for this arm)
    extensions: int              # points run beyond the original grid

    @property
    def diverged_everywhere(self) -> bool:
        return self.best_lr is None and self.extend_to is None


def parabola_vertex(losses: tuple[float, float, float]) -> float:
    """Offset of the vertex from the middle point, in grid steps, for equally spaced x."""
    low, mid, high = losses
    curvature = low - 2.0 * mid + high
    if not curvature > 0:
        return 0.0
    return 0.5 * (low - high) / curvature


def round_to(value: float, step: float) -> float:
    return math.floor(value / step + 0.5) * step


def choose_lr(points: list[TunePoint], grid: tuple[float, ...], max_extensions: int, round_log2: float) -> LrChoice:
    """The choice on one lr line: ``points`` run so far (grid and extensions), ``grid`` the study's ladder."""
    by_lr = {p.lr: p for p in points}
    lrs = sorted(by_lr)
    extensions = sum(1 for lr in lrs if not any(math.isclose(lr, g, rel_tol=1e-9) for g in grid))
    room = extensions < max_extensions
    stable = [p for p in points if not p.diverged and math.isfinite(p.loss)]
    if not stable:
        down = lrs[0] / 2.0
        return LrChoice(None, None, None, False, down if room else None, extensions)
    best = min(stable, key=lambda p: p.loss)
    i = lrs.index(best.lr)
    if i == 0 or i == len(lrs) - 1:
        beyond = lrs[0] / 2.0 if i == 0 else lrs[-1] * 2.0
        return LrChoice(None, best.lr, None, False, beyond if room else None, extensions)
    below, above = by_lr[lrs[i - 1]], by_lr[lrs[i + 1]]
    x = math.log2(best.lr)
    if below.diverged or above.diverged or not (math.isfinite(below.loss) and math.isfinite(above.loss)):
        return LrChoice(best.lr, best.lr, None, True, None, extensions)
    vertex = x + parabola_vertex((below.loss, best.loss, above.loss))
    offset = round_to(vertex - x, round_log2)
    return LrChoice(best.lr * 2.0 ** offset if offset else best.lr, best.lr, vertex, True, None, extensions)
