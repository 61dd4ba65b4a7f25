"""A study file (configs/study/<name>.yaml): which runs a reproduction study is made of.

A study is a set of training runs of train.py that differ only in the optimizer, its swept keys and
the seed. The file says:

    name: cpu                        # the file's stem; the output directory is studies/<name>/
    description: "..."
    overrides: [model=gpt2-mini, trainer.max_steps=80, ...]   # Hydra overrides shared by every run
    seeds: 2                         # seeds 0..seeds-1 for every setting (model init and data order)
    optimizers:                      # optimizer (registry name) -> its grid
      adamw: {optim.matrix.lr: [1.0e-3, 2.0e-3, 4.0e-3]}
      namo_d: {optim.matrix.lr: [...], optim.rule.c: [0.1, 0.2]}   # keys other than the lr: swept too
    launcher: {kind: local, parallel: 2, threads_per_run: 1, nproc_per_node: 1, slurm_launcher: slurm_cpu}
    report: {robust_window: 0.02}    # nats: the lr range within this of an optimizer's best counts as robust
    compute: null                    # or {peak_tflops: 989, assumed_mfu: 0.4, gpu: H100}: predicted GPU-hours

Every optimizer's grid must name ``optim.matrix.lr`` (the lr the report's sensitivity figure is drawn
against); the runs of an optimizer are the cartesian product of its grid's lists, times the seeds.
Everything here is checked before any run is composed, with the key named (``StudyError``).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from optim.registry import OPTIMIZERS

STUDY_DIR = Path(__file__).resolve().parents[2] / "configs" / "study"
LR_KEY = "optim.matrix.lr"
LAUNCHERS = ("local", "torchrun", "slurm")
TOP_KEYS = ("name", "description", "overrides", "seeds", "optimizers", "launcher", "report", "compute")
LAUNCHER_KEYS = ("kind", "parallel", "threads_per_run", "nproc_per_node", "slurm_launcher")
COMPUTE_KEYS = ("peak_tflops", "assumed_mfu", "gpu")


class StudyError(ValueError):
    """A study file is invalid; raised before any run is composed or started."""


@dataclass(frozen=True)
class Launcher:
    kind: str                    # local: one train.py process per run; torchrun; slurm (Hydra submitit)
    parallel: int                # runs in flight at once
    threads_per_run: int | None  # OMP_NUM_THREADS of each run (None: torch's default)
    nproc_per_node: int          # torchrun / the world size the runs are validated for
    slurm_launcher: str          # configs/hydra/launcher/<name>.yaml for kind=slurm


@dataclass(frozen=True)
class Compute:
    peak_tflops: float
    assumed_mfu: float
    gpu: str


def setting_label(setting: tuple[tuple[str, Any], ...], joiner: str, equals: str) -> str:
    """'lr0.02_clamp_c0.1' (a directory name) or 'lr=0.02, clamp_c=0.1' (a table cell): last key parts."""
    def shown(value: Any) -> str:
        return f"{value:g}" if isinstance(value, float) else str(value)

    return joiner.join(f"{key.rsplit('.', 1)[-1]}{equals}{shown(value)}" for key, value in setting)


@dataclass(frozen=True)
class RunSpec:
    """One run of the study: an optimizer setting (its swept values) and a seed."""

    optimizer: str
    setting: tuple[tuple[str, Any], ...]   # ((key, value), ...) in the grid's order; lr first
    seed: int

    @property
    def lr(self) -> float:
        return float(dict(self.setting)[LR_KEY])

    @property
    def setting_id(self) -> str:
        return setting_label(self.setting, "_", "")

    @property
    def run_id(self) -> str:
        """The run's directory under <study>/runs/, stable across invocations."""
        return f"{self.optimizer}/{self.setting_id}_s{self.seed}"

    def overrides(self, study: "Study") -> list[str]:
        """The Hydra overrides of this run (without its directory)."""
        return [
            *study.overrides,
            f"optim={self.optimizer}",
            *(f"{key}={value}" for key, value in self.setting),
            f"seed={self.seed}",
            f"run_name={study.name}-{self.optimizer}-{self.setting_id}-s{self.seed}",
            "trainer.resume=auto",   # an interrupted run continues from its newest checkpoint
            f"logging.wandb.group=study-{study.name}",
        ]


@dataclass(frozen=True)
class Study:
    name: str
    description: str
    overrides: tuple[str, ...]
    seeds: int
    grids: dict[str, dict[str, tuple[Any, ...]]]   # optimizer -> key -> values
    launcher: Launcher
    robust_window: float
    compute: Compute | None
    path: Path

    def runs(self) -> list[RunSpec]:
        """Every run, optimizer by optimizer (in the file's order), setting by setting, seed by seed."""
        runs = []
        for optimizer, grid in self.grids.items():
            keys = list(grid)
            for values in itertools.product(*(grid[key] for key in keys)):
                setting = tuple(zip(keys, values))
                runs += [RunSpec(optimizer, setting, seed) for seed in range(self.seeds)]
        return runs


def study_path(name_or_path: str) -> Path:
    """configs/study/<name>.yaml for a bare name, else the path itself."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise StudyError(f"study file {path} does not exist")
        return path
    path = STUDY_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in STUDY_DIR.glob("*.yaml"))
        raise StudyError(f"no study '{name_or_path}' in {STUDY_DIR} (known: {', '.join(known)}); "
                         f"pass a name from there or a path to a study .yaml")
    return path


def load_study(name_or_path: str) -> Study:
    path = study_path(name_or_path)
    try:
        raw = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except Exception as err:
        raise StudyError(f"{path} is not a readable YAML mapping: {err}") from err
    if not isinstance(raw, dict):
        raise StudyError(f"{path} must hold a mapping with the keys {', '.join(TOP_KEYS)}")
    return parse_study(raw, path)


def _require(raw: dict, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in raw:
        raise StudyError(f"{where}: '{key}' is missing")
    value = raw[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise StudyError(f"{where}: '{key}' must be {names}, got {value!r}")
    return value


def _strict(raw: dict, allowed: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(raw) - set(allowed))
    if unknown:
        raise StudyError(f"{where}: unknown key '{unknown[0]}' (allowed: {', '.join(allowed)})")


def parse_study(raw: dict, path: Path) -> Study:
    where = str(path)
    _strict(raw, TOP_KEYS, where)
    name = _require(raw, "name", str, where)
    if name != path.stem:
        raise StudyError(f"{where}: 'name' is '{name}' but the file is {path.name}; make them agree")
    overrides = _require(raw, "overrides", list, where)
    for item in overrides:
        if not isinstance(item, str) or "=" not in item:
            raise StudyError(f"{where}: every entry of 'overrides' must be a Hydra override 'key=value', got {item!r}")
        if item.split("=", 1)[0].lstrip("+~") in ("optim", "seed", "run_name", "hydra.run.dir"):
            raise StudyError(f"{where}: 'overrides' must not set {item.split('=', 1)[0]}: the study sets it per run")
    seeds = _require(raw, "seeds", int, where)
    if seeds < 1:
        raise StudyError(f"{where}: 'seeds' must be an integer >= 1 (the number of seeds per setting), got {seeds}")
    grids = _parse_grids(_require(raw, "optimizers", dict, where), where)
    launcher = _parse_launcher(_require(raw, "launcher", dict, where), f"{where}: launcher")
    report = _require(raw, "report", dict, where)
    _strict(report, ("robust_window",), f"{where}: report")
    window = _require(report, "robust_window", (int, float), f"{where}: report")
    if not window > 0:
        raise StudyError(f"{where}: report.robust_window must be > 0 (nats), got {window}")
    compute = raw.get("compute")
    if compute is not None:
        if not isinstance(compute, dict):
            raise StudyError(f"{where}: 'compute' must be null or a mapping with {', '.join(COMPUTE_KEYS)}")
        _strict(compute, COMPUTE_KEYS, f"{where}: compute")
        compute = Compute(float(_require(compute, "peak_tflops", (int, float), f"{where}: compute")),
                          float(_require(compute, "assumed_mfu", (int, float), f"{where}: compute")),
                          _require(compute, "gpu", str, f"{where}: compute"))
        if not (compute.peak_tflops > 0 and 0 < compute.assumed_mfu <= 1):
            raise StudyError(f"{where}: compute needs peak_tflops > 0 and assumed_mfu in (0, 1]")
    return Study(name=name, description=str(raw.get("description", "")), overrides=tuple(overrides),
                 seeds=seeds, grids=grids, launcher=launcher, robust_window=float(window), compute=compute,
                 path=path)


def _parse_grids(raw: dict, where: str) -> dict[str, dict[str, tuple[Any, ...]]]:
    if not raw:
        raise StudyError(f"{where}: 'optimizers' is empty; list at least one optimizer with its lr grid")
    grids = {}
    for optimizer, grid in raw.items():
        key = f"optimizers.{optimizer}"
        if optimizer not in OPTIMIZERS:
            raise StudyError(f"{where}: {key}: unknown optimizer '{optimizer}' "
                             f"(registered: {', '.join(OPTIMIZERS)})")
        if grid is None or grid == {}:
            raise StudyError(f"{where}: {key} has no grid; give it at least '{LR_KEY}: [<lr>, ...]'")
        if not isinstance(grid, dict):
            raise StudyError(f"{where}: {key} must map swept keys to lists, e.g. {{{LR_KEY}: [1e-3, 2e-3]}}")
        if LR_KEY not in grid:
            raise StudyError(f"{where}: {key} has no '{LR_KEY}' list (every optimizer needs its lr grid)")
        parsed = {}
        for name in [LR_KEY, *(k for k in grid if k != LR_KEY)]:
            values = grid[name]
            if not isinstance(values, list) or not values:
                raise StudyError(f"{where}: {key}.{name} must be a non-empty list, got {values!r}")
            if len(set(map(repr, values))) != len(values):
                raise StudyError(f"{where}: {key}.{name} repeats a value: {values}")
            if name == LR_KEY and not all(isinstance(v, (int, float)) and v > 0 for v in values):
                raise StudyError(f"{where}: {key}.{LR_KEY} must hold learning rates > 0, got {values}")
            parsed[name] = tuple(float(v) if name == LR_KEY else v for v in values)
        grids[optimizer] = parsed
    return grids


def _parse_launcher(raw: dict, where: str) -> Launcher:
    _strict(raw, LAUNCHER_KEYS, where)
    kind = _require(raw, "kind", str, where)
    if kind not in LAUNCHERS:
        raise StudyError(f"{where}: kind must be one of {', '.join(LAUNCHERS)}, got '{kind}'")
    parallel = _require(raw, "parallel", int, where)
    nproc = _require(raw, "nproc_per_node", int, where)
    threads = raw.get("threads_per_run")
    if parallel < 1 or nproc < 1 or (threads is not None and (not isinstance(threads, int) or threads < 1)):
        raise StudyError(f"{where}: parallel, nproc_per_node (and threads_per_run unless null) must be integers >= 1")
    if kind == "local" and nproc != 1:
        raise StudyError(f"{where}: nproc_per_node={nproc} needs kind: torchrun (local runs one process per run)")
    return Launcher(kind, parallel, threads, nproc, _require(raw, "slurm_launcher", str, where))
