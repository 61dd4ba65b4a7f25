"""Loss curves from run directories' JSONL metrics (no network, no wandb needed).

A run directory holds its metrics as ``*.jsonl``: one JSON object per log step with at least ``step``,
``tokens``, ``loss`` and ``lr``; eval rows carry ``val_loss``. A run killed mid-write may leave a
truncated last line, which is skipped; a corrupt line anywhere else is an error.

Plots use matplotlib's Agg canvas directly (no pyplot), so they work headless and leave the global
backend alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def read_metrics(run_dir: str | Path) -> list[dict]:
    """All metric rows of a run, file by file (sorted by name), in the order they were written."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist")
    files = sorted(run_dir.glob("*.jsonl"))
    if not files:
        raise FileNotFoundError(
            f"no *.jsonl metrics in {run_dir}; pass a run directory written by train.py "
            f"(the one holding the resolved config and checkpoints/)"
        )
    rows: list[dict] = []
    for path in files:
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

    fig = Figure(figsize=(8, 5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
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
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()

    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, format="png")
    return out_png
