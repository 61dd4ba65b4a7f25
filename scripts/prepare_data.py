#!/usr/bin/env python
"""Thin wrapper, kept so ``python scripts/prepare_data.py ...`` works: the code is ``data.prepare``
(console command ``orthogpt-prepare``, declared in pyproject.toml)."""

import sys

from data.prepare import main

if __name__ == "__main__":
    sys.exit(main())
