#!/usr/bin/env python
"""Thin wrapper, kept so ``python scripts/sample.py ...`` works: the code is ``trainer.tools.sample``
(console command ``orthogpt-sample``, declared in pyproject.toml)."""

import sys

from trainer.tools.sample import main

if __name__ == "__main__":
    sys.exit(main())
