"""Compare runs from their logs alone: per-run summaries, best learning rate per optimizer, a table.

Inputs are run directories written by train.py (``metrics.jsonl`` + the resolved ``config.yaml``) or
directories holding them (a Hydra multirun directory ``multirun/<stamp>/`` expands to its
``<n>_<name>/`` jobs). No network, no wandb.

Definitions (what the table and plots show):
- optimizer: ``optim.name``; lr: ``optim.matrix.lr`` (every optimizer config has it; for AdamW it is the
  lr of the hidden matrices, for the others the orthogonalized optimizer's lr).
- final val loss: ``val_loss`` of the eval row with the largest step (NaN if that eval was not finite:
  a diverged run); best val loss: the smallest finite ``val_loss``.
- tokens: ``tokens`` of the last logged row.
- wall time: training time reconstructed from the log, sum over train rows of
  (tokens since the previous train row) / ``tokens_per_s``; eval and checkpoint time are not in it.
  tokens/s = tokens / wall time (the run's average throughput).
- A resumed run may have logged a step twice: the row written last wins (per step and row kind).
- best run per optimizer: the smallest finite final val loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from omegaconf import OmegaConf

from trainer.metrics import METRICS_FILE, last_row_per_step, read_metrics

CONFIG_FILE = "config.yaml"
SKIP_DIRS = {".hydra", "checkpoints", "wandb", ".submitit"}


@dataclass
class RunSummary:
    run_dir: Path
    name: str
    optimizer: str
    lr: float
    final_val_loss: float
    best_val_loss: float
    tokens: int
    wall_time_s: float
    tokens_per_s: float
    val_tokens: list[float] = field(default_factory=list)
    val_losses: list[float] = field(default_factory=list)
    best: bool = False  # the best run of its optimizer (set by mark_best)


def expand_run_dirs(paths: Iterable[str | Path]) -> list[Path]:
    """Run directories named by ``paths``: each path is a run (has metrics.jsonl) or is searched
    recursively for runs (a sweep directory). A job directory with a config but no metrics is an error."""
    runs: list[Path] = []
    for path in map(Path, paths):
        if not path.is_dir():
            raise FileNotFoundError(f"{path} is not a directory (expected a run or sweep directory)")
        found = _find_runs(path)
        if not found:
            raise FileNotFoundError(
                f"no {METRICS_FILE} in {path} or its subdirectories; pass run directories written by "
                f"train.py or a multirun sweep directory (multirun/<stamp>/)"
            )
        runs += found
    return list(dict.fromkeys(r.resolve() for r in runs))


def _find_runs(path: Path) -> list[Path]:
    if (path / METRICS_FILE).is_file():
        return [path]
    if (path / CONFIG_FILE).is_file():
        raise FileNotFoundError(
            f"{path} has a {CONFIG_FILE} but no {METRICS_FILE}: the job did not get to its first log "
            f"step (see {path / 'train.log'}); remove it or pass the other runs explicitly"
        )
    runs = []
    for sub in sorted(p for p in path.iterdir() if p.is_dir() and p.name not in SKIP_DIRS):
        runs += _find_runs(sub)
    return runs


def _number(value) -> float:
    return float("nan") if value is None else float(value)


def run_identity(run_dir: Path) -> tuple[str, float]:
    """(optimizer name, matrix lr) from the run's resolved config.yaml."""
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} has no {CONFIG_FILE} (train.py writes the resolved config there)")
    cfg = OmegaConf.load(path)
    name, lr = OmegaConf.select(cfg, "optim.name"), OmegaConf.select(cfg, "optim.matrix.lr")
    if name is None or lr is None:
        raise ValueError(f"{path} has no optim.name / optim.matrix.lr; is it a config written by train.py?")
    return str(name), float(lr)


def summarize_run(run_dir: str | Path) -> RunSummary:
    run_dir = Path(run_dir)
    optimizer, lr = run_identity(run_dir)
    rows = read_metrics(run_dir)
    train_rows = last_row_per_step(rows, "loss")
    val_rows = last_row_per_step(rows, "val_loss")
    if not val_rows:
        raise ValueError(f"{run_dir / METRICS_FILE} has no val_loss rows (the run never evaluated)")
    val_losses = [_number(r["val_loss"]) for r in val_rows]
    finite = [v for v in val_losses if math.isfinite(v)]
    wall, prev_tokens = 0.0, 0
    for row in train_rows:
        speed = _number(row.get("tokens_per_s"))
        if math.isfinite(speed) and speed > 0:
            wall += (int(row["tokens"]) - prev_tokens) / speed
        prev_tokens = int(row["tokens"])
    tokens = max(int(r["tokens"]) for r in train_rows + val_rows)
    return RunSummary(
        run_dir=run_dir, name=run_dir.name, optimizer=optimizer, lr=lr,
        final_val_loss=val_losses[-1], best_val_loss=min(finite) if finite else float("nan"),
        tokens=tokens, wall_time_s=wall, tokens_per_s=tokens / wall if wall > 0 else float("nan"),
        val_tokens=[float(r["tokens"]) for r in val_rows], val_losses=val_losses,
    )


def mark_best(runs: list[RunSummary]) -> dict[str, RunSummary]:
    """Set ``best`` on each optimizer's run with the smallest finite final val loss; return them."""
    best: dict[str, RunSummary] = {}
    for run in runs:
        run.best = False
        if math.isfinite(run.final_val_loss) and (
            run.optimizer not in best or run.final_val_loss < best[run.optimizer].final_val_loss
        ):
            best[run.optimizer] = run
    for run in best.values():
        run.best = True
    return best


def _fmt(value: float, spec: str) -> str:
    return format(value, spec) if math.isfinite(value) else "nan"


TABLE_HEADER = ("run", "optimizer", "lr", "final val loss", "best val loss", "tokens", "wall time (s)",
                "tokens/s", "best")


def markdown_table(runs: list[RunSummary]) -> str:
    """One row per run, sorted by optimizer then lr; the best run of each optimizer is marked."""
    lines = ["| " + " | ".join(TABLE_HEADER) + " |", "|" + "---|" * len(TABLE_HEADER)]
    for r in sorted(runs, key=lambda r: (r.optimizer, r.lr, r.name)):
        cells = (
            r.name, r.optimizer, f"{r.lr:g}", _fmt(r.final_val_loss, ".4f"), _fmt(r.best_val_loss, ".4f"),
            str(r.tokens), _fmt(r.wall_time_s, ".1f"), _fmt(r.tokens_per_s, ".0f"), "**best**" if r.best else "",
        )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def summary_json(runs: list[RunSummary]) -> list[dict]:
    """The table at full precision (NaN as null), for scripts."""
    def clean(v):
        return None if isinstance(v, float) and not math.isfinite(v) else v

    keys = ("name", "optimizer", "lr", "final_val_loss", "best_val_loss", "tokens", "wall_time_s",
            "tokens_per_s", "best")
    return [dict({k: clean(getattr(r, k)) for k in keys}, run_dir=str(r.run_dir))
            for r in sorted(runs, key=lambda r: (r.optimizer, r.lr, r.name))]
