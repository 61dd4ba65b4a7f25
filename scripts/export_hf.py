#!/usr/bin/env python
"""Thin wrapper, kept so ``python scripts/export_hf.py ...`` works: the code is ``trainer.tools.export_hf``
(console command ``orthogpt-export-hf``, declared in pyproject.toml)."""

import sys

from trainer.tools.export_hf import main

if __name__ == "__main__":
    sys.exit(main())
