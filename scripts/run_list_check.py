"""One check for a list of runs, before any of them starts: every Hydra multirun
(scripts/sweep_check.py), every SLURM sweep file (slurm/check_sweep.py) and every study
(scripts/study/plan.py) validate their runs here.

A run is valid when its config composes, its lr-sweep index has a grid entry (configs/sweep/*.yaml),
and ``trainer.config.build_config`` accepts it at the launch's world size, which is everything
train.py checks before it trains. Two runs whose configs are equal (apart from the run's name and
the lr-sweep selector) would only repeat each other, and are refused too.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from omegaconf import DictConfig, OmegaConf

from trainer.config import TrainConfig, build_config

IGNORED_FOR_IDENTITY = ("run_name", "lr_sweep")


class RunListError(ValueError):
    """A run of the list would fail (or repeat another); raised before any run starts."""


def check_lr_sweep(cfg: DictConfig) -> None:
    """The lr-index scheme of configs/sweep/*.yaml: the grid must have an entry for this run."""
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


def validate_run(cfg: DictConfig, world_size: int) -> TrainConfig:
    """Everything a run checks before training, without training."""
    check_lr_sweep(cfg)
    return build_config(cfg, world_size)


def comparable(resolved: dict[str, Any]) -> dict[str, Any]:
    """The config as config.yaml stores it (a YAML round trip: tuples become lists)."""
    return OmegaConf.to_container(OmegaConf.create(resolved), resolve=True)


def run_identity(resolved: dict[str, Any]) -> str:
    return repr({k: v for k, v in comparable(resolved).items() if k not in IGNORED_FOR_IDENTITY})


class DuplicateRuns:
    """Remembers each run's identity; ``previous(label, resolved)`` names an earlier equal run, or None."""

    def __init__(self) -> None:
        self.seen: dict[str, str] = {}

    def previous(self, label: str, resolved: dict[str, Any]) -> str | None:
        key = run_identity(resolved)
        if key in self.seen:
            return self.seen[key]
        self.seen[key] = label
        return None


def check_runs(jobs: Sequence[list[str]], compose: Callable[[list[str]], DictConfig], world_size: int, *,
               noun: str, labels: Sequence[str] | None = None, details: Sequence[str] | None = None,
               duplicate_hint: str = "") -> list[TrainConfig]:
    """Compose and validate every run; the typed configs, in order. The first invalid or repeated run
    raises RunListError naming it (``labels[i]``, default its index; ``details[i]`` after it), its
    overrides and the problem."""
    labels = list(labels) if labels is not None else [str(i) for i in range(len(jobs))]
    details = [f" ({d})" for d in details] if details is not None else [""] * len(jobs)
    none_started = f"no {noun.split()[-1]} was started"
    configs, duplicates = [], DuplicateRuns()
    for label, detail, overrides in zip(labels, details, jobs):
        shown = " ".join(overrides) or "(no overrides)"
        try:
            config = validate_run(compose(overrides), world_size)
        except Exception as err:  # composition, interpolation and validation errors alike
            raise RunListError(f"{noun} {label} of {len(jobs)}{detail} is invalid; {none_started}.\n"
                               f"  overrides: {shown}\n  problem: {err}") from err
        earlier = duplicates.previous(label, config.resolved)
        if earlier is not None:
            raise RunListError(f"{noun}s {earlier} and {label} compose to the same config, so they would repeat "
                               f"each other; {none_started}.\n  overrides of {noun} {label}: {shown}" + duplicate_hint)
        configs.append(config)
    return configs
