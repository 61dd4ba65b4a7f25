"""Compose and validate every run of a study before any starts, and find what is already done.

Each run's config is composed with Hydra's own loader from configs/train.yaml plus the run's
overrides, then checked as every list of runs is (scripts/run_list_check.py, here at the launcher's
world size). Two runs that compose to the same config are refused (they would only repeat each other).

A run's state comes from its directory, ``<study dir>/runs/<run id>/``:
- done: ``summary.json`` written (train.py writes it after the last step) and its ``config.yaml``
  equals the config the study now asks for: skipped;
- partial: a ``config.yaml`` but no summary: launched again with ``trainer.resume=auto``, so it
  continues from its newest verified checkpoint (or from step 0 if it had none);
- pending: nothing there yet.
A run directory whose config differs from the study's (the study file was edited) is refused with
the keys that differ: rerunning over it would mix two experiments in one report.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from models.gpt2 import flops_per_token
from scripts.run_list_check import RunListError, check_runs, comparable
from scripts.study.spec import STUDY_DIR, RunSpec, Study, StudyError

CONFIG_DIR = STUDY_DIR.parent
DONE, PARTIAL, PENDING = "done", "partial", "pending"


@dataclass
class PlannedRun:
    spec: RunSpec
    run_dir: Path
    overrides: list[str]          # with hydra.run.dir
    resolved: dict[str, Any]      # the resolved config train.py will write to config.yaml
    max_steps: int
    train_flops: float            # forward + backward FLOPs of the whole run (no eval)
    state: str = PENDING


def run_dir_of(study_dir: Path, spec: RunSpec) -> Path:
    return study_dir / "runs" / spec.run_id


def plan_study(study: Study, study_dir: Path, check_configs: bool = True) -> list[PlannedRun]:
    """Every run composed, validated and given its state; raises StudyError naming the first bad run.
    ``check_configs=False`` (a report from the logs): a run is done when its summary.json exists, even
    if it was written by an older version of the code whose config has fewer keys."""
    runs = study.runs()
    run_dirs = [run_dir_of(study_dir, spec).resolve() for spec in runs]
    jobs = [[*spec.overrides(study), f"hydra.run.dir={run_dir}"] for spec, run_dir in zip(runs, run_dirs)]

    def compose_run(overrides: list[str]):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)  # ${hydra:...} interpolations resolve per run
        return cfg

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        try:
            configs = check_runs(jobs, compose_run, study.launcher.nproc_per_node, noun="run",
                                 labels=[str(i + 1) for i in range(len(runs))], details=[s.run_id for s in runs],
                                 duplicate_hint="\n  check the grids (a swept key the optimizer ignores?)")
        except RunListError as err:
            raise StudyError(str(err)) from err
    planned = []
    for spec, run_dir, overrides, config in zip(runs, run_dirs, jobs, configs):
        tokens = config.trainer.max_steps * config.batch.global_sequences * config.trainer.seq_len
        flops = flops_per_token(config.model, config.trainer.seq_len) * tokens
        run = PlannedRun(spec, run_dir, overrides, config.resolved, config.trainer.max_steps, flops)
        run.state = run_state(run) if check_configs else (DONE if (run_dir / "summary.json").is_file() else PENDING)
        planned.append(run)
    return planned


def _differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Keys whose values differ (changed values first, then keys only one side has)."""
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted(set(a) | set(b))
        found = [d for k in keys for d in _differences(a.get(k), b.get(k), f"{prefix}{k}.")]
        return sorted(found, key=lambda d: " None" in d)
    return [] if a == b else [f"{prefix[:-1]}: on disk {a!r}, study {b!r}"]


def run_state(run: PlannedRun) -> str:
    config_file = run.run_dir / "config.yaml"
    if not config_file.is_file():
        return PENDING
    on_disk = OmegaConf.to_container(OmegaConf.load(config_file), resolve=True)
    diffs = _differences(on_disk, comparable(run.resolved))
    if diffs:
        shown = "\n    ".join(diffs[:5])
        raise StudyError(
            f"{run.run_dir} was written by a different version of this study (or of the code, where a key "
            f"is None on disk):\n    {shown}\n"
            f"  Nothing was run. Move or delete that run directory to rerun it with the study's current "
            f"settings, or pass --out to write this study into a new directory."
        )
    return DONE if (run.run_dir / "summary.json").is_file() else PARTIAL


def predicted_gpu_hours(study: Study, runs: list[PlannedRun]) -> float | None:
    """Training FLOPs of all runs at the study's assumed MFU of its GPU's peak (None without compute)."""
    if study.compute is None:
        return None
    flops = sum(run.train_flops for run in runs)
    return flops / (study.compute.peak_tflops * 1e12 * study.compute.assumed_mfu) / 3600.0
