"""Compose and validate every run of a study before any starts, and find what is already done.

Hydra composes each ARM once (the study's overrides, the optimizer, the arm's own overrides); each
run's values (its swept keys, seed, name, budget) are then set on a copy of that config, and the
copy is checked as every list of runs is (scripts/run_list_check.py: build_config at the launcher's
world size; two runs that compose to the same config are refused). Composing per run took 46 s to
plan the old paper study; per arm it is a second or two.

A run's state comes from its directory, ``<study dir>/runs/<run id>/``:
- done: ``summary.json`` written (train.py writes it after the last step) and its ``config.yaml``
  equals the config the study now asks for: skipped;
- partial: a ``config.yaml`` but no summary: launched again with ``trainer.resume=auto``, so it
  continues from its newest verified checkpoint (or from step 0 if it had none);
- pending: nothing there yet.
A run directory whose config differs from the study's (the study file was edited) is refused with
the keys that differ: rerunning over it would mix two experiments in one report.

``--report-only`` composes nothing (``plan_study(..., compose_configs=False)``): the report reads each
run's saved config.yaml and logs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict, read_write

from models.gpt2 import GPTConfig, flops_per_token
from optim.hparams import from_mapping
from scripts.run_list_check import DuplicateRuns, comparable, validate_run
from scripts.study.outcomes import RunOutcome, read_outcome
from scripts.study.spec import STUDY_DIR, Study, StudyError
from scripts.study.stages import RunSpec, StudyPlan, arm_overrides, expand

CONFIG_DIR = STUDY_DIR.parent
DONE, PARTIAL, PENDING = "done", "partial", "pending"


@dataclass
class PlannedRun:
    spec: RunSpec
    run_dir: Path
    overrides: list[str]          # with hydra.run.dir
    resolved: dict[str, Any]      # the resolved config train.py will write to config.yaml ({} unchecked)
    max_steps: int
    train_flops: float            # forward + backward FLOPs of the whole run (no eval)
    state: str = PENDING


def run_dir_of(study_dir: Path, spec: RunSpec) -> Path:
    return study_dir / "runs" / spec.run_id


def outcome_reader(study_dir: Path):
    """``outcome(spec)`` for ``stages.expand``: the finished run's outcome (cached), or None."""
    cache: dict[str, RunOutcome] = {}

    def outcome(spec: RunSpec) -> RunOutcome | None:
        if spec.run_id not in cache:
            found = read_outcome(run_dir_of(study_dir, spec))
            if found is None:
                return None
            cache[spec.run_id] = found
        return cache[spec.run_id]

    return outcome


class ArmComposer:
    """One Hydra compose per arm; each run's values set on that config in place (``config(spec, run_dir)``).

    In place, not on a copy (a deep copy of a composed config costs ~0.15 s): a key one run sets and
    the next does not (the token curve's trainer.max_steps) is put back to its composed value first.
    """

    def __init__(self, study: Study) -> None:
        self.study, self.composed, self.originals, self.hydra_set = study, {}, {}, set()

    def config(self, spec: RunSpec, run_dir: Path):
        if spec.arm not in self.composed:
            base = arm_overrides(self.study, self.study.arms[spec.arm])
            cfg = compose("train", overrides=base, return_hydra_config=True)
            self.composed[spec.arm] = cfg
            self.originals[spec.arm] = (OmegaConf.to_container(cfg, resolve=False), set())
        cfg = self.composed[spec.arm]
        raw, touched = self.originals[spec.arm]
        updates = {**spec.updates(self.study), "hydra.run.dir": str(run_dir)}
        with read_write(cfg), read_write(cfg.hydra), open_dict(cfg):  # set_config left hydra read-only
            for key in touched - set(updates):
                OmegaConf.update(cfg, key, _raw_value(raw, key), merge=False)
            for key, value in updates.items():
                if not _has_key(cfg, key):
                    raise KeyError(f"'{key}' is not a key of the composed config (a typo in the study's grid?)")
                touched.add(key)
                OmegaConf.update(cfg, key, value, merge=False)
        if spec.arm not in self.hydra_set:  # ${hydra:...} interpolations (none in configs/ today, and
            HydraConfig.instance().set_config(cfg)  # a deep copy each: once per arm is enough)
            self.hydra_set.add(spec.arm)
        return cfg


def _raw_value(container: dict, key: str) -> Any:
    """The composed (unresolved: an interpolation stays a '${...}' string) value of a dotted key."""
    node: Any = container
    for part in key.split("."):
        node = node[part]
    return node


def _has_key(cfg, key: str) -> bool:
    """Whether ``key`` exists in ``cfg``, without resolving its value (it may interpolate)."""
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent, throw_on_resolution_failure=False) if parent else cfg
    return OmegaConf.is_config(node) and leaf in node


def plan_study(study: Study, study_dir: Path, compose_configs: bool = True) -> tuple[list[PlannedRun], StudyPlan]:
    """Every run known now (stage 2 and the token curve only once stage 1 allows), validated and given
    its state; raises StudyError naming the first bad run."""
    staged = expand(study, outcome_reader(study_dir))
    if not compose_configs:
        planned = [_unchecked(spec, run_dir_of(study_dir, spec)) for spec in staged.specs]
        return planned, staged
    composer, duplicates, planned = ArmComposer(study), DuplicateRuns(), []
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        for spec in staged.specs:
            run_dir = run_dir_of(study_dir, spec).resolve()
            overrides = [*spec.overrides(study), f"hydra.run.dir={run_dir}"]
            try:
                config = validate_run(composer.config(spec, run_dir), study.launcher.nproc_per_node)
            except Exception as err:  # composition, interpolation and validation errors alike
                raise StudyError(f"run {spec.run_id} is invalid; no run was started.\n"
                                 f"  overrides: {' '.join(overrides)}\n  problem: {err}") from err
            earlier = duplicates.previous(spec.run_id, config.resolved)
            if earlier is not None:
                raise StudyError(f"runs {earlier} and {spec.run_id} compose to the same config, so they would "
                                 f"repeat each other; no run was started.\n  check the grids (a swept key the "
                                 f"optimizer ignores?)")
            tokens = config.trainer.max_steps * config.batch.global_sequences * config.trainer.seq_len
            flops = flops_per_token(config.model, config.trainer.seq_len) * tokens
            run = PlannedRun(spec, run_dir, overrides, config.resolved, config.trainer.max_steps, flops)
            run.state = run_state(run)
            planned.append(run)
    return planned, staged


def _unchecked(spec: RunSpec, run_dir: Path) -> PlannedRun:
    """A run as its files on disk describe it (nothing composed): --report-only."""
    saved = run_dir / "config.yaml"
    resolved = OmegaConf.to_container(OmegaConf.load(saved), resolve=True) if saved.is_file() else {}
    max_steps, flops = 0, 0.0
    if resolved:
        trainer = resolved["trainer"]
        max_steps = int(trainer["max_steps"])
        model = from_mapping(GPTConfig, resolved["model"], "model")
        flops = flops_per_token(model, trainer["seq_len"]) * max_steps * trainer["micro_batch_size"] * trainer["seq_len"]
    run = PlannedRun(spec, run_dir, [], resolved, max_steps, flops)
    run.state = DONE if (run_dir / "summary.json").is_file() else PARTIAL if resolved else PENDING
    return run


# Keys added to the config tree after studies had written runs, each with a test of the value that
# does what the code did before the key existed: a run whose config.yaml lacks the key is the same
# experiment when the study asks for that value (the committed CPU study predates all of them).
ADDED_KEYS: dict[str, Callable[[dict], bool]] = {
    "optim.embedding.rule": lambda cfg: cfg["optim"]["embedding"]["rule"] == "adamw",
    "optim.embedding.rownorm": lambda cfg: cfg["optim"]["embedding"]["rule"] == "adamw",  # unread under AdamW
    "trainer.dry_run": lambda cfg: cfg["trainer"]["dry_run"] is False,
    "trainer.eval_only": lambda cfg: cfg["trainer"]["eval_only"] is False,
    "trainer.sample_every": lambda cfg: cfg["trainer"]["sample_every"] == 0,
    "trainer.sample_prompt": lambda cfg: cfg["trainer"]["sample_every"] == 0,  # unread without samples
    "trainer.sample_tokens": lambda cfg: cfg["trainer"]["sample_every"] == 0,
}


def _differences(a: Any, b: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(key, on disk, study) for every key whose values differ (changed values first, then keys only
    one side has)."""
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted(set(a) | set(b))
        found = [d for k in keys for d in _differences(a.get(k), b.get(k), f"{prefix}{k}.")]
        return sorted(found, key=lambda d: d[1] is None or d[2] is None)
    return [] if a == b else [(prefix[:-1], a, b)]


def run_state(run: PlannedRun) -> str:
    config_file = run.run_dir / "config.yaml"
    if not config_file.is_file():
        return PENDING
    on_disk = OmegaConf.to_container(OmegaConf.load(config_file), resolve=True)
    study = comparable(run.resolved)
    diffs = [(key, disk, asked) for key, disk, asked in _differences(on_disk, study)
             if not (disk is None and key in ADDED_KEYS and ADDED_KEYS[key](study))]
    if diffs:
        shown = "\n    ".join(f"{key}: on disk {disk!r}, study {asked!r}" for key, disk, asked in diffs[:5])
        raise StudyError(
            f"{run.run_dir} was written by a different version of this study (or of the code, where a key "
            f"is None on disk):\n    {shown}\n"
            f"  Nothing was run. Move or delete that run directory to rerun it with the study's current "
            f"settings, or pass --out to write this study into a new directory."
        )
    return DONE if (run.run_dir / "summary.json").is_file() else PARTIAL


def predicted_gpu_hours(study: Study, flops: float) -> float | None:
    """``flops`` of training at the study's assumed MFU of its GPU's peak (None without compute)."""
    if study.compute is None:
        return None
    return flops / (study.compute.peak_tflops * 1e12 * study.compute.assumed_mfu) / 3600.0
