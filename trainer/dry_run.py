"""Dry runs: ``python train.py --validate ...`` (the same as ``trainer.dry_run=true``).

One run: the config is composed and validated as a launch would (``build_config``, the checkpoint to
resume, ``trainer.init_from``), and the plan is printed: the start banner (trainer/banner.py). No
process group is started, no data read, no model built, no file written; the run directory Hydra
created for the job is removed again when it is empty.

A sweep (``-m``): the sweep check (scripts/sweep_check.py, a Hydra callback) composes and validates
every job before any starts, as it always does; in a dry run it then prints one plan line per job and
stops, before the sweep directory exists. Hydra itself refuses ``--cfg`` together with ``-m``;
``validate_flag`` turns that into a message pointing at ``--validate``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from trainer.banner import describe_run
from trainer.config import ConfigError, TrainConfig

DRY_RUN_OVERRIDE = "trainer.dry_run=true"
VALIDATE_FLAG = "--validate"


def validate_flag(args: Sequence[str]) -> bool:
    """Whether the command line asks for a dry run (``--validate``); ConfigError for ``--cfg`` with ``-m``."""
    multirun = any(a in ("-m", "--multirun") for a in args)
    shows_config = any(a in ("-c", "--cfg") or a.startswith("--cfg=") for a in args)
    if multirun and shows_config:
        raise ConfigError(
            "--cfg cannot be combined with -m (Hydra prints one composed config, not a sweep's); use "
            "--validate -m ... to compose and validate every job and print its plan, or --cfg job without -m"
        )
    return VALIDATE_FLAG in args


def print_plan(config: TrainConfig, run_dir: Path, start: str) -> None:
    """The banner of the run ``config`` describes (train.py then removes the job's empty directory)."""
    for line in describe_run(config, run_dir, start=start):
        print(line)
    print("dry run: the config is valid; nothing was trained or written (drop --validate / trainer.dry_run to train)")
