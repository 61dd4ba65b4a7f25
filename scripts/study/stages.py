"""The runs of a study, stage by stage, as far as the finished runs on disk allow.

    tune/<arm>/<setting>_s<seed>          stage 1: the grid (and its edge extensions) on the tuning seeds
    confirm/<arm>/<setting>_s<seed>       stage 2: the chosen setting on the fresh confirmation seeds
    tokens/<arm>/<setting>_steps<N>_s<seed>   the reference arm's longer budgets (the token curve)

An arm's stage 2 is known only once its stage 1 is finished and bracketed (scripts/study/tuning.py),
so ``expand`` is called again after every batch of runs: a killed study, run again, finds the same
runs on disk and carries on where it stopped, between stages too.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Callable

from scripts.study.outcomes import RunOutcome
from scripts.study.spec import LR_KEY, Arm, Study, setting_label
from scripts.study.tuning import LrChoice, TunePoint, choose_lr

TUNE, CONFIRM, TOKENS = "tune", "confirm", "tokens"
Setting = tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class RunSpec:
    """One run: a stage, an arm, its swept values, a seed (and a budget for the token curve)."""

    stage: str
    arm: str
    optimizer: str
    setting: Setting            # ((key, value), ...): lr first
    seed: int
    max_steps: int | None = None

    @property
    def lr(self) -> float:
        return float(dict(self.setting)[LR_KEY])

    @property
    def setting_id(self) -> str:
        return setting_label(self.setting, "_", "")

    @property
    def run_id(self) -> str:
        """The run's directory under <study>/runs/, stable across invocations."""
        steps = f"_steps{self.max_steps}" if self.max_steps is not None else ""
        return f"{self.stage}/{self.arm}/{self.setting_id}{steps}_s{self.seed}"

    def updates(self, study: Study) -> dict[str, Any]:
        """The per-run values on top of the arm's composed config (typed, as plan.py applies them)."""
        values = dict(self.setting)
        if self.max_steps is not None:
            values["trainer.max_steps"] = self.max_steps
        steps = f"-steps{self.max_steps}" if self.max_steps is not None else ""
        values.update({"seed": self.seed,
                       "run_name": f"{study.name}-{self.stage}-{self.arm}-{self.setting_id}{steps}-s{self.seed}",
                       "trainer.resume": "auto",   # an interrupted run continues from its newest checkpoint
                       "logging.wandb.group": f"study-{study.name}"})
        return values

    def overrides(self, study: Study) -> list[str]:
        """The Hydra overrides train.py is launched with (without its directory)."""
        return [*arm_overrides(study, study.arms[self.arm]), *(f"{k}={v}" for k, v in self.updates(study).items())]


def arm_overrides(study: Study, arm: Arm) -> list[str]:
    """What every run of ``arm`` is composed from: the study's overrides, the optimizer, the arm's own."""
    return [*study.overrides, f"optim={arm.optimizer}", *arm.overrides]


@dataclass
class ArmChoice:
    arm: str
    setting: Setting | None          # the setting stage 2 confirms (None: not known yet / diverged)
    lr: LrChoice | None              # None for an arm given ``chosen`` directly
    tuning: list[tuple[RunSpec, RunOutcome]] = field(default_factory=list)

    @property
    def bracketed(self) -> bool:
        return self.lr is None or self.lr.bracketed


@dataclass
class StudyPlan:
    specs: list[RunSpec]                   # every run known now, finished or not
    choices: dict[str, ArmChoice]          # arms whose stage 1 is finished
    waiting: list[str]                     # what cannot be planned yet, and why


def _grid_specs(study: Study, arm: Arm) -> list[RunSpec]:
    keys = list(arm.grid)
    return [RunSpec(TUNE, arm.name, arm.optimizer, tuple(zip(keys, values)), seed)
            for values in itertools.product(*(arm.grid[k] for k in keys)) for seed in study.tune.seeds]


def _tune_arm(study: Study, arm: Arm, outcome: Callable[[RunSpec], RunOutcome | None],
              specs: list[RunSpec]) -> ArmChoice | str:
    """Stage 1 of one arm: the choice, or why it is still waiting (extension specs appended to ``specs``)."""
    grid_specs = _grid_specs(study, arm)
    specs += grid_specs
    if any(outcome(s) is None for s in grid_specs):
        return f"{arm.name}: tuning runs not finished"
    tuning = [(s, outcome(s)) for s in grid_specs]
    while True:
        best_spec, _ = min(((s, o) for s, o in tuning if not o.diverged),
                           key=lambda so: mean_loss(tuning, so[0].setting), default=(tuning[0][0], None))
        rest = tuple((k, v) for k, v in best_spec.setting if k != LR_KEY)
        line = [(s, o) for s, o in tuning if s.setting[1:] == rest]
        points = [TunePoint(lr, mean_loss(line, s.setting), any(o.diverged for x, o in line if x.lr == lr))
                  for lr, s in {s.lr: s for s, _ in line}.items()]
        choice = choose_lr(points, arm.grid[LR_KEY], study.tune.max_extensions, study.tune.round_log2)
        if choice.extend_to is None:
            setting = ((LR_KEY, choice.lr), *rest) if choice.lr is not None else None
            return ArmChoice(arm.name, setting, choice, tuning)
        extension = [RunSpec(TUNE, arm.name, arm.optimizer, ((LR_KEY, choice.extend_to), *rest), seed)
                     for seed in study.tune.seeds]
        specs += extension
        if any(outcome(s) is None for s in extension):
            return f"{arm.name}: best lr {choice.best_lr:g} at the grid's edge; extending to {choice.extend_to:g}"
        tuning += [(s, outcome(s)) for s in extension]


def mean_loss(runs: list[tuple[RunSpec, RunOutcome]], setting: Setting) -> float:
    losses = [o.final_val_loss for s, o in runs if s.setting == setting]
    return sum(losses) / len(losses)


def expand(study: Study, outcome: Callable[[RunSpec], RunOutcome | None]) -> StudyPlan:
    """Every run the finished ones imply: stage 1 (with extensions), stage 2 for arms whose choice is
    known, and the token curve once the reference arm is chosen. ``outcome(spec)``: the finished
    run's outcome, or None."""
    specs: list[RunSpec] = []
    choices: dict[str, ArmChoice] = {}
    waiting: list[str] = []
    for arm in study.arms.values():
        if arm.chosen is not None:
            choices[arm.name] = ArmChoice(arm.name, arm.chosen, None)
            continue
        result = _tune_arm(study, arm, outcome, specs)
        if isinstance(result, str):
            waiting.append(result)
        else:
            choices[arm.name] = result
    for name, choice in choices.items():
        if choice.setting is None:
            continue
        optimizer = study.arms[name].optimizer
        specs += [RunSpec(CONFIRM, name, optimizer, choice.setting, seed) for seed in study.confirm.seeds_of(name)]
    curve = study.tokens
    if curve is not None:
        reference = choices.get(curve.reference)
        if reference is None or reference.setting is None:
            waiting.append(f"token curve: waiting for {curve.reference}'s chosen lr")
        else:
            optimizer = study.arms[curve.reference].optimizer
            specs += [RunSpec(TOKENS, curve.reference, optimizer, reference.setting, seed, steps)
                      for steps in curve.max_steps for seed in study.confirm.seeds_of(curve.reference)[:curve.seeds]]
    return StudyPlan(specs, choices, waiting)
