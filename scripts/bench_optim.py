#!/usr/bin/env python
"""Thin wrapper, kept so ``python scripts/bench_optim.py ...`` works: the code is ``trainer.benchmarks.optim_step``
(console command ``orthogpt-bench-optim``, declared in pyproject.toml)."""

import sys

from trainer.benchmarks.optim_step import main

if __name__ == "__main__":
    sys.exit(main())
