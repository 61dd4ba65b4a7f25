"""Every figure of the comparison tools and the studies, in one place (matplotlib's Agg canvas, no
pyplot). The run's own ``loss_curve.png`` is the runtime's (trainer/loss_curve.py).

Inputs are plain values, so neither the comparison nor the study imports the other:

- ``plot_best_val_curves``: val loss against tokens, one curve per optimizer at its best lr
  (``RunSummary`` of scripts/analysis/compare.py);
- ``plot_seed_bands``: val loss against tokens, the mean over seeds as a line (a marker per eval) and
  the min-max over seeds as a band (``SeedCurves``), the y-limits never clipping the late bands;
- ``plot_lr_sensitivity``: final val loss against lr on a log axis, the mean over seeds with min-max
  bars, diverged settings as an x at the top (``LrPoint``);
- ``plot_robustness``: per optimizer, the ratio of the largest to the smallest lr within the
  robust window of its best.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from trainer.loss_curve import new_axes, save_figure

STUDY_SIZE = (7, 4.2)


def colours(names: Sequence[str]) -> dict[str, str]:
    """One colour per name, by sorted name, so an optimizer keeps its colour across a report's figures."""
    return {name: f"C{i % 10}" for i, name in enumerate(sorted(set(names)))}


def plot_best_val_curves(best_runs: Sequence, out_png: str | Path) -> Path:
    """``best_runs``: RunSummary-like (optimizer, lr, val_tokens, val_losses, final_val_loss)."""
    if not best_runs:
        raise ValueError("no run with a finite final val loss to plot")
    fig, ax = new_axes()
    colour = colours([r.optimizer for r in best_runs])
    for run in sorted(best_runs, key=lambda r: r.optimizer):
        points = [(t, v) for t, v in zip(run.val_tokens, run.val_losses) if math.isfinite(v)]
        ax.plot([t for t, _ in points], [v for _, v in points], color=colour[run.optimizer], marker="o", markersize=3,
                label=f"{run.optimizer} (lr {run.lr:g}): {run.final_val_loss:.4f}")
    ax.set_xlabel("tokens")
    ax.set_ylabel("val loss (nats/token)")
    ax.set_title("val loss, each optimizer at its best lr")
    return save_figure(fig, ax, out_png)


@dataclass(frozen=True)
class SeedCurves:
    """One optimizer's val-loss curves at one setting, one dict tokens -> val loss per seed."""
    optimizer: str
    label: str
    per_seed: tuple[dict[int, float], ...]

    def band(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Tokens and the mean / min / max over seeds at the evals every seed has."""
        tokens = sorted(set.intersection(*(set(d) for d in self.per_seed)))
        losses = np.array([[d[t] for t in tokens] for d in self.per_seed])
        return np.array(tokens), losses.mean(0), losses.min(0), losses.max(0)


def seed_band_limits(curves: Sequence[SeedCurves], late: float = 0.5, margin: float = 0.08) -> tuple[float, float] | None:
    """y-limits holding every seed band (min-max over seeds) over the last ``late`` of the tokens, the
    part a comparison reads, with ``margin`` of the range on each side; the early, higher losses leave
    the top. None when there is nothing to plot."""
    bands = [c.band() for c in curves]
    ends = [t[-1] for t, *_ in bands if len(t)]
    if not ends:
        return None
    start = (1 - late) * max(ends)
    lows = [v for t, _, low, _ in bands for x, v in zip(t, low) if x >= start]
    highs = [v for t, _, _, high in bands for x, v in zip(t, high) if x >= start]
    lo, hi = float(min(lows)), float(max(highs))
    pad = margin * (hi - lo) + 0.01
    return lo - pad, hi + pad


def plot_seed_bands(curves: Sequence[SeedCurves], out_png: str | Path, title: str) -> Path:
    """Mean over seeds (markers at the evals) and the min-max band; y-limits from ``seed_band_limits``."""
    fig, ax = new_axes(STUDY_SIZE)
    colour = colours([c.optimizer for c in curves])
    for c in curves:
        tokens, mean, low, high = c.band()
        ax.plot(tokens, mean, color=colour[c.optimizer], lw=1.5, marker="o", ms=2.5, label=f"{c.optimizer} ({c.label})")
        ax.fill_between(tokens, low, high, color=colour[c.optimizer], alpha=0.2, lw=0)
    limits = seed_band_limits(curves)
    if limits is not None:
        ax.set_ylim(*limits)
    ax.set_xlabel("tokens")
    ax.set_ylabel("val loss (nats)")
    ax.set_title(title, fontsize=10)
    return save_figure(fig, ax, out_png)


@dataclass(frozen=True)
class LrPoint:
    """One optimizer at one lr: the final val loss of each seed; ``diverged`` when any run diverged."""
    optimizer: str
    lr: float
    final_losses: tuple[float, ...]
    diverged: bool


def plot_lr_sensitivity(points: Sequence[LrPoint], out_png: str | Path, title: str = "learning-rate sensitivity") -> Path:
    if not points:
        raise ValueError("no runs to plot")
    fig, ax = new_axes(STUDY_SIZE)
    colour = colours([p.optimizer for p in points])
    stable = [v for p in points if not p.diverged for v in p.final_losses if math.isfinite(v)]
    ceiling = max(stable) + 0.1 if stable else 1.0
    for name in sorted(colour):
        mine = sorted((p for p in points if p.optimizer == name), key=lambda p: p.lr)
        ok = [p for p in mine if not p.diverged]
        if ok:
            means = np.array([np.mean(p.final_losses) for p in ok])
            low = means - np.array([min(p.final_losses) for p in ok])
            high = np.array([max(p.final_losses) for p in ok]) - means
            ax.errorbar([p.lr for p in ok], means, yerr=[low, high], color=colour[name], marker="o", ms=3, lw=1.2,
                        capsize=2, label=name)
        bad = [p.lr for p in mine if p.diverged]
        if bad:
            ax.scatter(bad, [ceiling] * len(bad), marker="x", color=colour[name], s=30, label=f"{name} diverged")
    ax.set_xscale("log")
    ax.set_xlabel("lr (optim.matrix.lr)")
    ax.set_ylabel("final val loss (mean, min-max over seeds)")
    ax.set_title(f"{title}; x = diverged", fontsize=10)
    return save_figure(fig, ax, out_png)


def plot_robustness(ratios: dict[str, float], out_png: str | Path, window: float) -> Path:
    """``ratios``: optimizer -> max lr / min lr within ``window`` nats of its best (0 when none converged)."""
    fig, ax = new_axes((7, 3.2))
    colour = colours(list(ratios))
    names = list(ratios)
    ax.bar(names, [ratios[n] for n in names], color=[colour[n] for n in names])
    ax.set_ylabel("max lr / min lr")
    ax.set_title(f"lr range within {window:g} nats of each optimizer's best", fontsize=10)
    ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    return save_figure(fig, ax, out_png, legend=False)
