#!/usr/bin/env python
"""Thin wrapper, kept so ``python scripts/compare_runs.py ...`` works: the code is ``trainer.analysis.compare_cli``
(console command ``orthogpt-compare``, declared in pyproject.toml)."""

import sys

from trainer.analysis.compare_cli import main

if __name__ == "__main__":
    sys.exit(main())
