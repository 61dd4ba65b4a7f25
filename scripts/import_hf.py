#!/usr/bin/env python
"""Thin wrapper, kept so ``python scripts/import_hf.py ...`` works: the code is ``trainer.tools.import_hf``
(console command ``orthogpt-import-hf``, declared in pyproject.toml)."""

import sys

from trainer.tools.import_hf import main

if __name__ == "__main__":
    sys.exit(main())
