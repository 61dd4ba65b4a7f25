#!/usr/bin/env python
"""Loss curves (train and val against tokens) of one or more runs into a PNG.

    orthogpt-plot RUN_DIR [RUN_DIR ...] -o out.png [--labels a b ...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from trainer.loss_curve import plot_loss_curves


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", type=Path, help="run directories holding *.jsonl metrics")
    parser.add_argument("-o", "--out", type=Path, required=True, help="output PNG path")
    parser.add_argument("--labels", nargs="+", help="one legend label per run (default: each run's run_name)")
    args = parser.parse_args(argv)
    try:
        out = plot_loss_curves(args.run_dirs, args.out, labels=args.labels)
    except (FileNotFoundError, ValueError) as e:
        parser.error(str(e))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
