"""Loss curves from run directories' JSONL metrics (no network, no wandb needed).

A run directory holds its metrics in ``metrics.jsonl``: one JSON object per log step with at least
``step``, ``tokens``, ``loss`` and ``lr``; eval rows carry ``val_loss``. A run killed mid-write may leave
a truncated last line, which is skipped; a corrupt line anywhere else is an error. Other ``*.jsonl``
files (``metrics.rewound.jsonl``: rows a resume superseded, see trainer/metrics.py) are not metrics
of the run and are not read.

Plots use matplotlib's Agg canvas directly (no pyplot), so they work headless and leave the global
backend alone.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


METRICS_FILE = "metrics.jsonl"


def read_metrics(run_dir: str | Path) -> list[dict]:
    """All rows of a run's metrics.jsonl, in the order they were written."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist")
    if not (run_dir / METRICS_FILE).is_file():
        raise FileNotFoundError(
            f"no {METRICS_FILE} in {run_dir}; pass a run directory written by train.py "
            f"(the one holding the resolved config and checkpoints/)"
        )
    rows: list[dict] = []
    for path in [run_dir / METRICS_FILE]:
        lines = path.read_text().splitlines()
        for lineno, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                if lineno == len(lines):
                    break  # a run killed while writing its last row: the rows before it are good
                raise ValueError(f"{path}:{lineno}: not a JSON object ({e}); the metrics file is corrupt") from e
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            rows.append(row)
    return rows


def loss_series(rows: list[dict], key: str) -> tuple[list[float], list[float]]:
    """(tokens, values) of the rows that have ``key``, sorted by step.

    A resumed run re-logs the steps after its checkpoint; the newest row for a step wins.
    """
    by_step: dict[int, dict] = {}
    for row in rows:
        if key in row and row[key] is not None:
            for needed in ("step", "tokens"):
                if needed not in row:
                    raise ValueError(f"metrics row with {key!r} has no {needed!r}: {row}")
            by_step[int(row["step"])] = row
    ordered = [by_step[s] for s in sorted(by_step)]
    return [float(r["tokens"]) for r in ordered], [float(r[key]) for r in ordered]


def plot_loss_curves(
    run_dirs: Sequence[str | Path], out_png: str | Path, labels: Sequence[str] | None = None
) -> Path:
    """Train loss (solid) and val loss (dashed, markers) against tokens, one colour per run."""
    run_dirs = [Path(d) for d in run_dirs]
    if not run_dirs:
        raise ValueError("plot_loss_curves needs at least one run directory")
    if labels is None:
        labels = [d.resolve().name for d in run_dirs]
    if len(labels) != len(run_dirs):
        raise ValueError(f"got {len(labels)} labels for {len(run_dirs)} run directories")

    fig, ax = _new_axes()
    colours = [f"C{i % 10}" for i in range(len(run_dirs))]
    for run_dir, label, colour in zip(run_dirs, labels, colours):
        rows = read_metrics(run_dir)
        tokens, loss = loss_series(rows, "loss")
        val_tokens, val_loss = loss_series(rows, "val_loss")
        if not tokens and not val_tokens:
            raise ValueError(f"{run_dir}: its metrics have no 'loss' or 'val_loss' rows to plot")
        if tokens:
            ax.plot(tokens, loss, color=colour, alpha=0.6, linewidth=1.0, label=f"{label} train")
        if val_tokens:
            ax.plot(val_tokens, val_loss, color=colour, linestyle="--", marker="o", markersize=3,
                    linewidth=1.5, label=f"{label} val")  # fmt: skip
    ax.set_xlabel("tokens")
    ax.set_ylabel("loss (nats/token)")
    return _save(fig, ax, out_png)


def _new_axes() -> tuple[Figure, object]:
    fig = Figure(figsize=(8, 5), dpi=120)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _save(fig: Figure, ax, out_png: str | Path) -> Path:
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, format="png")
    return out_png


def plot_best_val_curves(best_runs: Sequence, out_png: str | Path) -> Path:
    """Val loss against tokens, one curve per optimizer at its best lr (trainer.analysis.compare.RunSummary)."""
    if not best_runs:
        raise ValueError("no run with a finite final val loss to plot")
    fig, ax = _new_axes()
    for i, run in enumerate(sorted(best_runs, key=lambda r: r.optimizer)):
        points = [(t, v) for t, v in zip(run.val_tokens, run.val_losses) if math.isfinite(v)]
        ax.plot([t for t, _ in points], [v for _, v in points], color=f"C{i % 10}", marker="o", markersize=3,
                label=f"{run.optimizer} (lr {run.lr:g}): {run.final_val_loss:.4f}")
    ax.set_xlabel("tokens")
    ax.set_ylabel("val loss (nats/token)")
    ax.set_title("val loss, each optimizer at its best lr")
    return _save(fig, ax, out_png)


def plot_lr_sensitivity(runs: Sequence, out_png: str | Path) -> Path:
    """Final val loss against lr (log scale), one line per optimizer through the mean at each lr;
    diverged runs (non-finite final val loss) are drawn as x at the top of the axes."""
    if not runs:
        raise ValueError("no runs to plot")
    fig, ax = _new_axes()
    optimizers = sorted({r.optimizer for r in runs})
    finite_all = [r.final_val_loss for r in runs if math.isfinite(r.final_val_loss)]
    top = max(finite_all) if finite_all else 1.0
    for i, name in enumerate(optimizers):
        colour = f"C{i % 10}"
        mine = [r for r in runs if r.optimizer == name]
        by_lr: dict[float, list[float]] = {}
        for r in mine:
            if math.isfinite(r.final_val_loss):
                by_lr.setdefault(r.lr, []).append(r.final_val_loss)
        lrs = sorted(by_lr)
        ax.plot(lrs, [sum(by_lr[lr]) / len(by_lr[lr]) for lr in lrs], color=colour, marker="o", label=name)
        diverged = [r.lr for r in mine if not math.isfinite(r.final_val_loss)]
        if diverged:
            ax.plot(diverged, [top] * len(diverged), linestyle="none", marker="x", markersize=9, color=colour,
                    label=f"{name} diverged")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (optim.matrix.lr)")
    ax.set_ylabel("final val loss (nats/token)")
    ax.set_title("learning-rate sensitivity")
    return _save(fig, ax, out_png)
