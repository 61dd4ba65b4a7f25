"""Validate every job of a Hydra multirun BEFORE any of them starts.

Hydra's basic sweeper composes each job's config just before launching it, so a typo in the third
value of a sweep (``optim=adamw,muon,nosuch``) or a bad hyper-parameter surfaces only after the first
jobs have trained for hours, and a config that composes but is invalid (an lr <= 0, a sequence longer
than the model's context, an lr grid with no entry for one optimizer) is caught only by that job.

``SweepCheck`` is a Hydra callback (registered under ``hydra.callbacks`` in configs/train.yaml) whose
``on_multirun_start`` runs before the sweeper creates the sweep directory. It expands the sweep the
way the basic sweeper does (``hydra.sweeper.params`` plus the command-line overrides, comma lists
expanded, cartesian product), composes every job with Hydra's own config loader, and checks each as
every list of runs is checked (scripts/run_list_check.py: what train.py checks before it trains).
Any failure stops the multirun with one message naming the job, its overrides and the problem;
nothing has been written at that point. In a dry run (``--validate -m``, trainer/dry_run.py) it prints
one plan line per job and stops there, exit status 0. (Hydra turns exceptions raised in callbacks into warnings and
carries on, so the callback raises ``SystemExit`` carrying the ``SweepConfigError`` message: exit
status 1, no traceback, no job.) It also refuses a sweep whose
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

from scripts.run_list_check import RunListError, check_runs
from trainer.banner import plan_line
from trainer.config import TrainConfig

log = logging.getLogger(__name__)

BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


class SweepConfigError(RunListError):
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


def check_sweep(config: DictConfig) -> int:
    """Compose and validate every job of the multirun ``config``; returns the number of jobs."""
    return len(validated_jobs(config)[0])


def validated_jobs(config: DictConfig) -> tuple[list[list[str]], list[TrainConfig]]:
    """(every job's overrides, its validated config), in launch order; SweepConfigError for the first bad job."""
    jobs = sweep_job_overrides(config)
    loader = GlobalHydra.instance().config_loader()

    def compose(overrides: list[str]) -> DictConfig:
        cfg = loader.load_sweep_config(master_config=config, sweep_overrides=overrides)
        HydraConfig.instance().set_config(cfg)  # so ${hydra:...} in the job config resolves
        return cfg

    previous = HydraConfig.instance().cfg  # restored below; the launcher sets it per job anyway
    try:
        configs = check_runs(jobs, compose, 1, noun="sweep job", duplicate_hint=(
            "\n  (with +experiment and +sweep together, put +sweep last: a later file's optim.matrix.lr wins)"))
    except RunListError as err:
        raise SweepConfigError(str(err)) from err
    finally:
        HydraConfig.instance().cfg = previous
    return jobs, configs


def print_sweep_plan(jobs: list[list[str]], configs: list[TrainConfig]) -> None:
    """A dry run's plan of a sweep (trainer/dry_run.py): one line per job, in launch order."""
    for i, (overrides, config) in enumerate(zip(jobs, configs)):
        shown = [o for o in overrides if not o.startswith("trainer.dry_run=")]
        print(f"job {i}: {' '.join(shown) or '(no overrides)'}\n  {plan_line(config)}")
    print(f"dry run: all {len(jobs)} jobs compose and validate; nothing was trained or written "
          f"(drop --validate / trainer.dry_run to launch the sweep)")


class SweepCheck(Callback):
    """Hydra callback: ``check_sweep`` at the start of every multirun (basic sweeper only)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        target = OmegaConf.select(config, "hydra.sweeper._target_")
        if target != BASIC_SWEEPER:
            log.info(f"sweep check skipped: sweeper {target} picks its points while it runs")
            return
        try:
            jobs, configs = validated_jobs(config)
        except SweepConfigError as err:
            raise SystemExit(f"sweep check failed: {err}") from err
        if OmegaConf.select(config, "trainer.dry_run"):  # --validate -m: the plan, then stop (exit 0)
            print_sweep_plan(jobs, configs)
            raise SystemExit(0)
        log.info(f"sweep check: all {len(jobs)} jobs compose and validate")
