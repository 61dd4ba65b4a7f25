#!/usr/bin/env python
"""Thin wrapper, kept so ``python scripts/plot_runs.py ...`` works: the code is ``trainer.analysis.plot_cli``
(console command ``orthogpt-plot``, declared in pyproject.toml)."""

import sys

from trainer.analysis.plot_cli import main

if __name__ == "__main__":
    sys.exit(main())
