"""The study report's figures (small PNGs, matplotlib's Agg canvas, no pyplot).

- ``val_loss_curves.png``: val loss against tokens at each optimizer's best setting: the mean over
  seeds as a line, the min-max over seeds as a band, one colour per optimizer;
- ``lr_sensitivity.png``: final val loss (mean over seeds, min-max as error bars) against lr on a log
  axis, other swept keys at the best setting's values; diverged settings drawn as an x at the top;
- ``robustness.png``: per optimizer, the ratio of the largest to the smallest lr within the robust
  window of its best (1 = only the best lr was that good).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from trainer.study.aggregate import OptimizerResult, Setting
from trainer.study.spec import LR_KEY

DPI = 80


def _colours(results: list[OptimizerResult]) -> dict[str, tuple]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {r.optimizer: cmap(i % 10) for i, r in enumerate(sorted(results, key=lambda r: r.optimizer))}


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    return path


def curve_band(setting: Setting) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Tokens and the mean / min / max val loss over the setting's seeds at the evals all seeds have."""
    per_seed = [dict(zip(r.summary.val_tokens, r.summary.val_losses)) for r in setting.results]
    tokens = sorted(set.intersection(*(set(d) for d in per_seed)))
    losses = np.array([[d[t] for t in tokens] for d in per_seed])
    return np.array(tokens), losses.mean(0), losses.min(0), losses.max(0)


def plot_curves(results: list[OptimizerResult], path: Path, title: str) -> Path:
    fig, colours = Figure(figsize=(7, 4.2)), _colours(results)
    ax = fig.add_subplot(1, 1, 1)
    finals = []
    for r in results:
        if r.best is None:
            continue
        tokens, mean, low, high = curve_band(r.best)
        ax.plot(tokens, mean, color=colours[r.optimizer], lw=1.5, label=f"{r.optimizer} ({r.best.label})")
        ax.fill_between(tokens, low, high, color=colours[r.optimizer], alpha=0.2, lw=0)
        finals.append(mean[-1])
    if finals:  # the interesting part is the end: start the y axis a little above the worst final loss
        top = max(finals) + 3 * (max(finals) - min(finals) + 0.05)
        ax.set_ylim(min(finals) - 0.5 * (max(finals) - min(finals) + 0.05), top)
    ax.set_xlabel("tokens")
    ax.set_ylabel("val loss (nats)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def _best_line(r: OptimizerResult) -> list[Setting]:
    others = {k: v for k, v in r.best.values if k != LR_KEY} if r.best else {}
    return sorted((s for s in r.settings if all(dict(s.values).get(k) == v for k, v in others.items())),
                  key=lambda s: s.lr)


def plot_lr_sensitivity(results: list[OptimizerResult], path: Path, title: str) -> Path:
    fig, colours = Figure(figsize=(7, 4.2)), _colours(results)
    ax = fig.add_subplot(1, 1, 1)
    stable = [s.mean() for r in results for s in r.settings if not s.diverged and math.isfinite(s.mean())]
    ceiling = max(stable) + 0.1 if stable else 1.0
    for r in results:
        line = _best_line(r)
        ok = [s for s in line if not s.diverged]
        if ok:
            lrs = [s.lr for s in ok]
            means = np.array([s.mean() for s in ok])
            low = means - np.array([s.spread()[0] for s in ok])
            high = np.array([s.spread()[1] for s in ok]) - means
            ax.errorbar(lrs, means, yerr=[low, high], color=colours[r.optimizer], marker="o", ms=3,
                        lw=1.2, capsize=2, label=r.optimizer)
        bad = [s.lr for s in line if s.diverged]
        if bad:
            ax.scatter(bad, [ceiling] * len(bad), marker="x", color=colours[r.optimizer], s=30)
    ax.set_xscale("log")
    ax.set_xlabel("lr (optim.matrix.lr)")
    ax.set_ylabel("final val loss (mean, min-max over seeds)")
    ax.set_title(f"{title}; x = diverged", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def plot_robustness(results: list[OptimizerResult], path: Path, window: float) -> Path:
    fig, colours = Figure(figsize=(7, 3.2)), _colours(results)
    ax = fig.add_subplot(1, 1, 1)
    names = [r.optimizer for r in results]
    ratios = [r.robust_ratio if r.best else 0.0 for r in results]
    ax.bar(names, ratios, color=[colours[n] for n in names])
    ax.set_ylabel("max lr / min lr")
    ax.set_title(f"lr range within {window:g} nats of each optimizer's best", fontsize=10)
    ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)
