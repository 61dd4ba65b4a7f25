#!/usr/bin/env python
"""Thin wrapper, kept so ``python scripts/bench_orthogonalize.py ...`` works: the code is ``trainer.benchmarks.orthogonalize``
(console command ``orthogpt-bench-orthogonalize``, declared in pyproject.toml)."""

import sys

from trainer.benchmarks.orthogonalize import main

if __name__ == "__main__":
    sys.exit(main())
