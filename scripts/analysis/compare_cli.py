#!/usr/bin/env python
"""Compare optimizers across runs from their JSONL logs: loss-curve and lr-sensitivity PNGs + a table.

    orthogpt-compare multirun/<stamp> --out compare/          # a whole sweep
    orthogpt-compare runs/a runs/b runs/c --out compare/      # chosen runs

Writes into --out:
  loss_curves.png     val loss against tokens, one curve per optimizer at its best lr (by final val loss)
  lr_sensitivity.png  final val loss against lr (log x), one line per optimizer
  table.md            per run: optimizer, lr, final and best val loss, tokens, wall time, tokens/s;
                      the best run of each optimizer marked
  summary.json        the table at full precision
Definitions are in trainer/compare.py. Needs no network and no wandb.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path


from scripts.analysis.compare import expand_run_dirs, mark_best, markdown_table, summarize_run, summary_json
from scripts.analysis.figures import LrPoint, plot_best_val_curves, plot_lr_sensitivity


def lr_points(runs) -> list[LrPoint]:
    """The runs grouped by (optimizer, lr): the finite final val losses as one point, and the runs
    with a non-finite one (diverged) as another, drawn as an x."""
    groups: dict[tuple[str, float], list[float]] = {}
    for run in runs:
        groups.setdefault((run.optimizer, run.lr), []).append(run.final_val_loss)
    points = []
    for (optimizer, lr), finals in groups.items():
        finite = tuple(v for v in finals if math.isfinite(v))
        if finite:
            points.append(LrPoint(optimizer, lr, finite, diverged=False))
        if len(finite) < len(finals):
            points.append(LrPoint(optimizer, lr, tuple(v for v in finals if not math.isfinite(v)), diverged=True))
    return points


def compare(paths: list[Path], out_dir: Path) -> dict[str, Path]:
    runs = [summarize_run(d) for d in expand_run_dirs(paths)]
    best = mark_best(runs)
    out_dir.mkdir(parents=True, exist_ok=True)
    outputs = {
        "loss_curves": plot_best_val_curves(list(best.values()), out_dir / "loss_curves.png"),
        "lr_sensitivity": plot_lr_sensitivity(lr_points(runs), out_dir / "lr_sensitivity.png"),
        "table": out_dir / "table.md",
        "summary": out_dir / "summary.json",
    }
    outputs["table"].write_text(markdown_table(runs))
    outputs["summary"].write_text(json.dumps(summary_json(runs), indent=2) + "\n")
    return outputs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path, help="run directories and/or sweep directories")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    args = parser.parse_args(argv)
    try:
        outputs = compare(args.paths, args.out)
    except (FileNotFoundError, ValueError) as err:
        print(f"compare_runs: error: {err}", file=sys.stderr)
        return 2
    print((args.out / "table.md").read_text(), end="")
    for path in outputs.values():
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
