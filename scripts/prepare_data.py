#!/usr/bin/env python
"""Prepare a data config's token shards: same as `python -m data.prepare data=<name> [overrides]`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.prepare import main  # noqa: E402

if __name__ == "__main__":
    main()
