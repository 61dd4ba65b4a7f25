"""How every command of the project reports a user's mistake: one line ``error: <what is wrong and
the fix>`` on stderr, exit status 2, no traceback (``ORTHOGPT_DEBUG=1`` or ``HYDRA_FULL_ERROR=1``
shows it). ``train.py``, its Hydra callbacks (trainer/run_dir.py) and ``orthogpt-prepare``
(data/prepare.py) share it; it lives here, in the lowest package with a command line, so that
data/ can use it without importing the trainer.

``DataError`` is a mistake in the data a run reads (an empty source, a cache folder that is a file, a
corrupted shard): the commands report it like a config mistake.
"""

from __future__ import annotations

import os
import sys
import time
from typing import NoReturn

USER_ERROR_EXIT = 2  # like argparse: the command line or config is wrong, retrying cannot help


class DataError(ValueError):
    """The data cannot be prepared or read; the message names the file or key and the fix."""


def debugging() -> bool:
    return os.environ.get("ORTHOGPT_DEBUG") == "1" or os.environ.get("HYDRA_FULL_ERROR") == "1"


def exit_on_user_error(err: BaseException | str, rank: int = 0) -> NoReturn:
    """One message on rank 0, exit status 2; with debugging, the exception itself (its traceback)."""
    if debugging() and isinstance(err, BaseException):
        raise err
    if rank == 0:
        print(f"error: {err}", file=sys.stderr, flush=True)
    else:  # torchrun stops the other workers once one exits: let rank 0 say why first
        time.sleep(2.0)
    raise SystemExit(USER_ERROR_EXIT)
