"""A study file (configs/study/<name>.yaml): which optimizers a study compares, and how.

A study answers "which optimizer trains better, by how much, and how surely" in two stages:

    stage 1, tune:     each arm's grid (a factor-2 lr ladder, other swept keys allowed) on the tuning
                       seed(s); the lr is chosen by a parabola in log2(lr) (scripts/study/tuning.py), and
                       a best point at a grid edge extends the grid by one point until it is bracketed
    stage 2, confirm:  fresh seeds at each arm's chosen setting, shared by every arm: seed s is the same
                       init and data order everywhere, so arms are compared seed by seed (paired)
    token curve:       optional, the reference arm at longer budgets, for "reference-equivalent tokens"

The file:

    name: cpu                              # the file's stem; runs go to studies/<name>/
    description: "..."
    overrides: [model=gpt2-mini, ...]      # Hydra overrides shared by every run
    arms:                                  # the report's rows; the arm's name is its optimizer unless
      adamw: {grid: {optim.matrix.lr: [1.0e-3, 2.0e-3, 4.0e-3, 8.0e-3, 1.6e-2]}}   # ``optimizer`` says
      muon_keller: {optimizer: muon, overrides: [optim.matrix.weight_decay=0.0], grid: {...}}
      namo: {chosen: {optim.matrix.lr: 0.012}}          # stage 2 only (e.g. the paper's lr)
    tune: {seeds: [0], max_extensions: 2, round_log2: 0.5}
    confirm: {seeds: [1, 2, 3, 4, 5, 6], per_arm: {muon_keller: 3}}   # per_arm: the first n seeds
    tokens: {reference: muon, max_steps: [256, 512], seeds: 3}        # or null
    claims: [namo_beats_adamw, ...]        # ids in configs/study/claims.yaml ("all": every claim)
    report: {alpha: 0.05, margin: 0.01, robust_window: 0.02}   # margin: the practical difference, nats
    launcher: {kind: local, parallel: 2, threads_per_run: 1, nproc_per_node: 1, slurm_launcher: slurm_cpu}
    compute: null                          # or {peak_tflops: 989, assumed_mfu: 0.4, gpu: H200}

Everything is checked here, before any run is composed, with the key named (``StudyError``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from optim.registry import OPTIMIZERS
from scripts.study.study_file import (COMPUTE_KEYS, Compute, Launcher, StudyError, parse_compute, parse_launcher,
                                     require, strict)

STUDY_DIR = Path(__file__).resolve().parents[2] / "configs" / "study"
LR_KEY = "optim.matrix.lr"
TOP_KEYS = ("name", "description", "overrides", "arms", "tune", "confirm", "tokens", "claims", "report",
            "launcher", "compute")
RESERVED_OVERRIDES = ("optim", "seed", "run_name", "hydra.run.dir", "trainer.resume")


def setting_label(setting: tuple[tuple[str, Any], ...], joiner: str, equals: str) -> str:
    """'lr0.02_clamp_c0.1' (a directory name) or 'lr=0.02, clamp_c=0.1' (a table cell): last key parts."""
    def shown(value: Any) -> str:
        return f"{value:g}" if isinstance(value, float) else str(value)

    return joiner.join(f"{key.rsplit('.', 1)[-1]}{equals}{shown(value)}" for key, value in setting)


@dataclass(frozen=True)
class Arm:
    """One row of the report: a registered optimizer, fixed overrides, and a grid or a chosen setting."""

    name: str
    optimizer: str
    overrides: tuple[str, ...]
    grid: dict[str, tuple[Any, ...]] | None      # stage 1's grid (lr first); None with ``chosen``
    chosen: tuple[tuple[str, Any], ...] | None   # stage 2 only: the setting to confirm

    @property
    def tuned(self) -> bool:
        return self.grid is not None


@dataclass(frozen=True)
class Tune:
    seeds: tuple[int, ...]
    max_extensions: int   # grid points added beyond an edge, per arm, before the lr counts as unbracketed
    round_log2: float     # the parabola's vertex is rounded to this step in log2(lr) (0.5: a factor √2)


@dataclass(frozen=True)
class Confirm:
    seeds: tuple[int, ...]
    per_arm: dict[str, int]

    def seeds_of(self, arm: str) -> tuple[int, ...]:
        return self.seeds[: self.per_arm.get(arm, len(self.seeds))]


@dataclass(frozen=True)
class TokenCurve:
    reference: str                # an arm
    max_steps: tuple[int, ...]    # the longer budgets (each a full run with its own schedule)
    seeds: int                    # the first n confirmation seeds


@dataclass(frozen=True)
class Study:
    name: str
    description: str
    overrides: tuple[str, ...]
    arms: dict[str, Arm]
    tune: Tune
    confirm: Confirm
    tokens: TokenCurve | None
    claims: tuple[str, ...] | str   # claim ids, or "all"
    alpha: float          # each verdict's one-sided level, before Holm (scripts/study/paired_stats.py)
    margin: float         # nats: "no practical difference" inside (-margin, margin); "by a useful amount" above
    robust_window: float
    launcher: Launcher
    compute: Compute | None
    path: Path


def study_path(name_or_path: str) -> Path:
    """configs/study/<name>.yaml for a bare name, else the path itself."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise StudyError(f"study file {path} does not exist")
        return path
    path = STUDY_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in STUDY_DIR.glob("*.yaml") if p.stem != "claims")
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


def _overrides(raw: Any, where: str) -> tuple[str, ...]:
    if not isinstance(raw, list):
        raise StudyError(f"{where} must be a list of Hydra overrides 'key=value', got {raw!r}")
    for item in raw:
        if not isinstance(item, str) or "=" not in item:
            raise StudyError(f"{where}: every entry must be a Hydra override 'key=value', got {item!r}")
        key = item.split("=", 1)[0].lstrip("+~")
        if key in RESERVED_OVERRIDES:
            raise StudyError(f"{where} must not set {key}: the study sets it per run")
    return tuple(raw)


def _seed_list(raw: Any, where: str) -> tuple[int, ...]:
    if not isinstance(raw, list) or not raw or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                                      for s in raw):
        raise StudyError(f"{where} must be a non-empty list of seeds (integers >= 0), got {raw!r}")
    if len(set(raw)) != len(raw):
        raise StudyError(f"{where} repeats a seed: {raw}")
    return tuple(raw)


def parse_study(raw: dict, path: Path) -> Study:
    where = str(path)
    strict(raw, TOP_KEYS, where)
    name = require(raw, "name", str, where)
    if name != path.stem:
        raise StudyError(f"{where}: 'name' is '{name}' but the file is {path.name}; make them agree")
    overrides = _overrides(require(raw, "overrides", list, where), f"{where}: overrides")
    arms = _parse_arms(require(raw, "arms", dict, where), where)
    tune = _parse_tune(require(raw, "tune", dict, where), f"{where}: tune")
    confirm = _parse_confirm(require(raw, "confirm", dict, where), arms, f"{where}: confirm")
    fresh = set(tune.seeds) & set(confirm.seeds)
    if fresh:
        raise StudyError(f"{where}: confirm.seeds must be fresh, but {sorted(fresh)} also tune; "
                         f"the confirmation would reuse the runs the lr was chosen on")
    tokens = _parse_tokens(raw.get("tokens"), arms, confirm, f"{where}: tokens")
    claims = raw.get("claims", "all")
    if claims != "all" and not (isinstance(claims, list) and all(isinstance(c, str) for c in claims)):
        raise StudyError(f"{where}: 'claims' must be 'all' or a list of claim ids of configs/study/claims.yaml")
    report = require(raw, "report", dict, where)
    strict(report, ("alpha", "margin", "robust_window"), f"{where}: report")
    alpha = require(report, "alpha", (int, float), f"{where}: report")
    margin = require(report, "margin", (int, float), f"{where}: report")
    window = require(report, "robust_window", (int, float), f"{where}: report")
    if not 0 < alpha < 0.5 or not window > 0 or margin < 0:
        raise StudyError(f"{where}: report needs 0 < alpha < 0.5, margin >= 0 and robust_window > 0 (nats), "
                         f"got alpha={alpha}, margin={margin}, robust_window={window}")
    return Study(name=name, description=str(raw.get("description", "")), overrides=overrides, arms=arms,
                 tune=tune, confirm=confirm, tokens=tokens, claims=claims if claims == "all" else tuple(claims),
                 alpha=float(alpha), margin=float(margin), robust_window=float(window),
                 launcher=parse_launcher(require(raw, "launcher", dict, where), f"{where}: launcher"),
                 compute=parse_compute(raw.get("compute"), f"{where}: compute"), path=path)


def _parse_arms(raw: dict, where: str) -> dict[str, Arm]:
    if not raw:
        raise StudyError(f"{where}: 'arms' is empty; list at least one optimizer with its lr grid")
    arms = {}
    for name, entry in raw.items():
        key = f"{where}: arms.{name}"
        if not isinstance(entry, dict):
            raise StudyError(f"{key} must be a mapping with 'grid' (or 'chosen'), e.g. {{grid: {{{LR_KEY}: [...]}}}}")
        strict(entry, ("optimizer", "overrides", "grid", "chosen"), key)
        optimizer = entry.get("optimizer", name)
        if optimizer not in OPTIMIZERS:
            raise StudyError(f"{key}: unknown optimizer '{optimizer}' (registered: {', '.join(OPTIMIZERS)}); "
                             f"name a registered one with 'optimizer:'")
        if ("grid" in entry) == ("chosen" in entry):
            raise StudyError(f"{key} needs exactly one of 'grid' (tune it) and 'chosen' (confirm a given setting)")
        grid = _parse_grid(entry["grid"], f"{key}.grid") if "grid" in entry else None
        chosen = None
        if "chosen" in entry:
            if not isinstance(entry["chosen"], dict) or LR_KEY not in entry["chosen"]:
                raise StudyError(f"{key}.chosen must map keys to values and name {LR_KEY}")
            chosen = tuple((k, float(v) if k == LR_KEY else v) for k, v in
                           [(LR_KEY, entry["chosen"][LR_KEY]), *((k, v) for k, v in entry["chosen"].items()
                                                                 if k != LR_KEY)])
        arms[name] = Arm(name, optimizer, _overrides(entry.get("overrides", []), f"{key}.overrides"), grid, chosen)
    return arms


def _parse_grid(grid: Any, key: str) -> dict[str, tuple[Any, ...]]:
    if not isinstance(grid, dict) or LR_KEY not in grid:
        raise StudyError(f"{key} must map swept keys to lists and have a '{LR_KEY}' list")
    parsed = {}
    for name in [LR_KEY, *(k for k in grid if k != LR_KEY)]:
        values = grid[name]
        if not isinstance(values, list) or not values:
            raise StudyError(f"{key}.{name} must be a non-empty list, got {values!r}")
        if len(set(map(repr, values))) != len(values):
            raise StudyError(f"{key}.{name} repeats a value: {values}")
        parsed[name] = tuple(values)
    lrs = parsed[LR_KEY]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in lrs):
        raise StudyError(f"{key}.{LR_KEY} must hold learning rates > 0, got {list(lrs)}")
    ladder = sorted(float(v) for v in lrs)
    if len(ladder) < 3 or any(abs(b / a - 2.0) > 1e-6 for a, b in zip(ladder, ladder[1:])):
        raise StudyError(f"{key}.{LR_KEY} must be a factor-2 ladder of at least 3 points (the parabola needs the "
                         f"best point's neighbours), got {list(lrs)}")
    parsed[LR_KEY] = tuple(ladder)
    return parsed


def _parse_tune(raw: dict, where: str) -> Tune:
    strict(raw, ("seeds", "max_extensions", "round_log2"), where)
    extensions = require(raw, "max_extensions", int, where)
    step = require(raw, "round_log2", (int, float), where)
    if extensions < 0 or step not in (0.25, 0.5, 1, 1.0):
        raise StudyError(f"{where}: max_extensions must be >= 0 and round_log2 one of 0.25, 0.5, 1")
    return Tune(_seed_list(raw.get("seeds"), f"{where}.seeds"), extensions, float(step))


def _parse_confirm(raw: dict, arms: dict[str, Arm], where: str) -> Confirm:
    strict(raw, ("seeds", "per_arm"), where)
    seeds = _seed_list(raw.get("seeds"), f"{where}.seeds")
    per_arm = raw.get("per_arm") or {}
    for arm, count in per_arm.items():
        if arm not in arms:
            raise StudyError(f"{where}.per_arm.{arm}: no such arm (arms: {', '.join(arms)})")
        if not isinstance(count, int) or not 1 <= count <= len(seeds):
            raise StudyError(f"{where}.per_arm.{arm} must be a seed count in 1..{len(seeds)}, got {count!r}")
    return Confirm(seeds, dict(per_arm))


def _parse_tokens(raw: Any, arms: dict[str, Arm], confirm: Confirm, where: str) -> TokenCurve | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise StudyError(f"{where} must be null or a mapping with reference, max_steps, seeds")
    strict(raw, ("reference", "max_steps", "seeds"), where)
    reference = require(raw, "reference", str, where)
    if reference not in arms:
        raise StudyError(f"{where}.reference '{reference}' is not an arm (arms: {', '.join(arms)})")
    steps = raw.get("max_steps")
    if not isinstance(steps, list) or not 1 <= len(steps) <= 4 or not all(isinstance(s, int) and s > 0 for s in steps):
        raise StudyError(f"{where}.max_steps must list 1 to 4 longer budgets in steps, got {steps!r}")
    seeds = require(raw, "seeds", int, where)
    if not 2 <= seeds <= len(confirm.seeds_of(reference)):
        raise StudyError(f"{where}.seeds must be in 2..{len(confirm.seeds_of(reference))} (the reference's "
                         f"confirmation seeds), got {seeds}")
    return TokenCurve(reference, tuple(sorted(steps)), seeds)
