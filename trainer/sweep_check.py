"""Validate every job of a Hydra multirun BEFORE any of them starts.

Hydra's basic sweeper composes each job's config just before launching it, so a typo in the third
value of a sweep (``optim=adamw,muon,nosuch``) or a bad hyper-parameter surfaces only after the first
jobs have trained for hours, and a config that composes but is invalid (an lr <= 0, a sequence longer
than the model's context, an lr grid with no entry for one optimizer) is caught only by that job.

``SweepCheck`` is a Hydra callback (registered under ``hydra.callbacks`` in configs/train.yaml) whose
``on_multirun_start`` runs before the sweeper creates the sweep directory. It expands the sweep the
way the basic sweeper does (``hydra.sweeper.params`` plus the command-line overrides, comma lists
expanded, cartesian product), composes every job with Hydra's own config loader, and checks each with
``trainer.config.build_config(cfg, 1)``. Any failure stops the multirun with one message naming the
job, its overrides and the problem; nothing has been written at that point. (Hydra turns exceptions
raised in callbacks into warnings and carries on, so the callback raises ``SystemExit`` carrying the
``SweepConfigError`` message: exit status 1, no traceback, no job.) It also refuses a sweep whose
jobs compose to identical configs (e.g. ``+sweep=...`` before ``+experiment=...``, so the experiment's
fixed lr overrode the sweep's grid): those runs would only repeat each other.

Other sweepers (Optuna, Ax, ...) choose their points while running; for them the check is skipped.
"""

from __future__ import annotations

import logging
from typing import Any

from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


class SweepConfigError(ValueError):
    """A job of a multirun would fail (or repeat another job); raised before any job starts."""


def sweep_job_overrides(config: DictConfig) -> list[list[str]]:
    """The override list of every job, in launch order, as Hydra's basic sweeper builds them."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    params = OmegaConf.select(config, "hydra.sweeper.params") or {}
    arguments = [f"{key}={value}" for key, value in params.items()]
    arguments += list(OmegaConf.to_container(config.hydra.overrides.task, resolve=False))
    overrides = OverridesParser.create().parse_overrides(arguments)
    batches = BasicSweeper.split_arguments(overrides, max_batch_size=None)
    return [list(job) for batch in batches for job in batch]


def check_lr_sweep(cfg: DictConfig) -> None:
    """The lr-index scheme of configs/sweep/*.yaml: the grid must have an entry for this job."""
    grid = OmegaConf.select(cfg, "lr_sweep.grid")
    if grid is None:
        return
    name, index = cfg.optim.name, cfg.lr_sweep.index
    if name not in grid:
        raise ValueError(
            f"lr_sweep.grid has no learning rates for optimizer '{name}' (it has: {', '.join(grid)}); "
            f"add one, e.g. 'lr_sweep.grid.{name}=[1e-3,2e-3]', or drop {name} from the sweep"
        )
    if not (isinstance(index, int) and 0 <= index < len(grid[name])):
        raise ValueError(
            f"lr_sweep.index={index} is outside lr_sweep.grid.{name} (positions 0..{len(grid[name]) - 1})"
        )


def validate_job(cfg: DictConfig) -> dict[str, Any]:
    """Everything a job checks before training, without training; returns the resolved job config
    for the duplicate check, without the hydra node and the lr_sweep selector (two jobs that differ
    only in lr_sweep.index but end up with the same lr are the same run)."""
    from trainer.config import build_config

    check_lr_sweep(cfg)
    resolved = build_config(cfg, 1).resolved
    return {key: value for key, value in resolved.items() if key != "lr_sweep"}


def check_sweep(config: DictConfig) -> int:
    """Compose and validate every job of the multirun ``config``; returns the number of jobs."""
    jobs = sweep_job_overrides(config)
    loader = GlobalHydra.instance().config_loader()
    seen: dict[str, int] = {}
    previous = HydraConfig.instance().cfg  # restored below; the launcher sets it per job anyway
    try:
        for num, overrides in enumerate(jobs):
            _check_job(loader, config, jobs, num, overrides, seen)
    finally:
        HydraConfig.instance().cfg = previous
    return len(jobs)


def _check_job(loader, config: DictConfig, jobs: list[list[str]], num: int, overrides: list[str],
               seen: dict[str, int]) -> None:
    shown = " ".join(overrides) or "(no overrides)"
    try:
        cfg = loader.load_sweep_config(master_config=config, sweep_overrides=overrides)
        HydraConfig.instance().set_config(cfg)  # so ${hydra:...} in the job config resolves
        resolved = validate_job(cfg)
    except Exception as err:  # composition, interpolation and validation errors alike
        raise SweepConfigError(
            f"sweep job {num} of {len(jobs)} is invalid; no job was started.\n"
            f"  overrides: {shown}\n  problem: {err}"
        ) from err
    key = repr(resolved)
    if key in seen:
        raise SweepConfigError(
            f"sweep jobs {seen[key]} and {num} compose to the same config, so they would repeat each "
            f"other; no job was started.\n  overrides of job {num}: {shown}\n  (with +experiment and "
            f"+sweep together, put +sweep last: a later file's optim.matrix.lr wins)"
        )
    seen[key] = num


class SweepCheck(Callback):
    """Hydra callback: ``check_sweep`` at the start of every multirun (basic sweeper only)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        target = OmegaConf.select(config, "hydra.sweeper._target_")
        if target != BASIC_SWEEPER:
            log.info(f"sweep check skipped: sweeper {target} picks its points while it runs")
            return
        try:
            n = check_sweep(config)
        except SweepConfigError as err:
            raise SystemExit(f"sweep check failed: {err}") from err
        log.info(f"sweep check: all {n} jobs compose and validate")
