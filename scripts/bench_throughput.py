#!/usr/bin/env python
"""Thin wrapper, kept so ``python scripts/bench_throughput.py ...`` works: the code is ``trainer.benchmarks.throughput``
(console command ``orthogpt-bench-throughput``, declared in pyproject.toml)."""

import sys

from trainer.benchmarks.throughput import main

if __name__ == "__main__":
    sys.exit(main())
