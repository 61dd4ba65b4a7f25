#!/usr/bin/env python
"""Thin wrapper, kept so ``python scripts/bench_matmul.py ...`` works: the code is ``trainer.benchmarks.matmul``
(console command ``orthogpt-bench-matmul``, declared in pyproject.toml)."""

import sys

from trainer.benchmarks.matmul import main

if __name__ == "__main__":
    sys.exit(main())
