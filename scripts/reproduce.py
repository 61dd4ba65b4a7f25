#!/usr/bin/env python
"""Thin wrapper, kept so ``python scripts/reproduce.py <study>`` works: the code is ``trainer.study.cli``
(console command ``orthogpt-reproduce``, declared in pyproject.toml)."""

import sys

from trainer.study.cli import main

if __name__ == "__main__":
    sys.exit(main())
