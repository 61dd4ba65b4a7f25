#!/usr/bin/env python
"""Thin wrapper, kept so ``python scripts/bench_train_step.py ...`` works: the code is
``trainer.benchmarks.train_step`` (console command ``orthogpt-bench-train-step``, declared in pyproject.toml)."""

import sys

from trainer.benchmarks.train_step import main

if __name__ == "__main__":
    sys.exit(main())
