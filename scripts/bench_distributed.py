#!/usr/bin/env python
"""Thin wrapper, kept so ``python scripts/bench_distributed.py ...`` works: the code is ``trainer.benchmarks.distributed``
(console command ``orthogpt-bench-distributed``, declared in pyproject.toml)."""

import sys

from trainer.benchmarks.distributed import main

if __name__ == "__main__":
    sys.exit(main())
