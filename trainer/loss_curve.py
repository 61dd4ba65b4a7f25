"""The run's own figure, ``loss_curve.png``: train and val loss against tokens (matplotlib's Agg
canvas, no pyplot, so it works headless and leaves the global backend alone), at 150 dpi, each run
labelled by its run name, val points marked. ``orthogpt-plot`` draws several runs with the same function; the comparison and study figures are in
scripts/analysis/figures.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from trainer.metrics import last_row_per_step, read_metrics


def loss_series(rows: list[dict], key: str) -> tuple[list[float], list[float]]:
    """(tokens, values) of the rows that have a non-null ``key``, by step, the last row of a step winning."""
    ordered = [r for r in last_row_per_step(rows, key) if r[key] is not None]
    return [float(r["tokens"]) for r in ordered], [float(r[key]) for r in ordered]


FIGURE_DPI = 150  # every figure of the project (the studies' too: scripts/analysis/figures.py)


def run_labels(run_dirs: Sequence[Path]) -> list[str]:
    """Legend labels: each run's ``run_name`` (its config.yaml), not its timestamp directory; runs
    that share a name get their directory's name after it."""
    names = [run_name(d) for d in run_dirs]
    return [f"{n} ({Path(d).resolve().name})" if names.count(n) > 1 else n for n, d in zip(names, run_dirs)]


def run_name(run_dir: Path) -> str:
    """``run_name`` from the run's config.yaml (trainer/run_dir.py), else the directory's name."""
    try:
        name = yaml.safe_load((Path(run_dir) / "config.yaml").read_text()).get("run_name")
    except (OSError, yaml.YAMLError, AttributeError):
        name = None
    return str(name) if name else Path(run_dir).resolve().name


def new_axes(size: tuple[float, float] = (8, 5), dpi: int = FIGURE_DPI) -> tuple[Figure, object]:
    fig = Figure(figsize=size, dpi=dpi)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def save_figure(fig: Figure, ax, out_png: str | Path, legend: bool = True) -> Path:
    ax.grid(True, alpha=0.3)
    if legend:
        ax.legend(fontsize="small")
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, format="png")
    return out_png


def plot_loss_curves(
    run_dirs: Sequence[str | Path], out_png: str | Path, labels: Sequence[str] | None = None
) -> Path:
    """Train loss (solid) and val loss (dashed, markers) against tokens, one colour per run."""
    run_dirs = [Path(d) for d in run_dirs]
    if not run_dirs:
        raise ValueError("plot_loss_curves needs at least one run directory")
    if labels is None:
        labels = run_labels(run_dirs)
    if len(labels) != len(run_dirs):
        raise ValueError(f"got {len(labels)} labels for {len(run_dirs)} run directories")
    fig, ax = new_axes()
    for i, (run_dir, label) in enumerate(zip(run_dirs, labels)):
        colour = f"C{i % 10}"
        rows = read_metrics(run_dir)
        tokens, loss = loss_series(rows, "loss")
        val_tokens, val_loss = loss_series(rows, "val_loss")
        if not tokens and not val_tokens:
            raise ValueError(f"{run_dir}: its metrics have no 'loss' or 'val_loss' rows to plot")
        if tokens:
            ax.plot(tokens, loss, color=colour, alpha=0.6, linewidth=1.0, label=f"{label} train")
        if val_tokens:
            ax.plot(val_tokens, val_loss, color=colour, linestyle="--", marker="o", markersize=3,
                    linewidth=1.5, label=f"{label} val")
    ax.set_xlabel("tokens")
    ax.set_ylabel("loss (nats/token)")
    return save_figure(fig, ax, out_png)
