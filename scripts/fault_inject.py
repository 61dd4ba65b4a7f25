#!/usr/bin/env python
"""Thin wrapper, kept so ``python scripts/fault_inject.py ...`` works: the code is ``trainer.fault_injection.campaign``
(console command ``orthogpt-fault-inject``, declared in pyproject.toml)."""

import sys

from trainer.fault_injection.campaign import main

if __name__ == "__main__":
    sys.exit(main())
