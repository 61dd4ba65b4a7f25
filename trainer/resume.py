"""Which checkpoint a launch resumes from, and whether it can: one resolver, every check once.

``resolve_resume(config, run_dir, deep=..., ctx=..., log=..., earlier_runs=...)`` reads ``trainer.resume``
(false | true | auto | <path>) and returns a ``ResumeDecision``: the verified checkpoint (or None), its
step, the run directory to continue in, and why (``reason``: "resuming from <ckpt> at step N" or "no
checkpoint found: starting fresh", which the start banner prints). Checks, in order: the path
``trainer.resume`` names exists; the checkpoint verifies (``trainer.checkpoint.manifest``: manifest,
sizes, CRC32s; with ``deep`` the tensor files' too); for true / auto, the newest complete checkpoint of
the run directory that verifies, a broken one reported and the previous one taken (none verifying is
an error, not a fresh start); then its model shape and global batch match this config.

The default layout gives every launch a new ``runs/<name>/<stamp>/``, so a second launch never holds
the first one's checkpoints: with ``earlier_runs`` (``runs/<name>/``; train.py passes it when the run
directory ends in the launch's ``${run_stamp:}``, trainer/run_dir.py) true / auto that find nothing in
``run_dir`` take the newest resumable run of the same name there, and the launch continues in it.

Training from the decision needs more than loading its weights: ``remaining_steps`` refuses a
model-only checkpoint, another optimizer's state and a checkpoint past ``trainer.max_steps``, and
returns 0 for a finished run (train.py then says so and exits 0).

A launch asks twice, with the differences as parameters: ``train.py`` before any process group, on
every rank, ``deep=False`` and silent (a mistake exits with one message, nothing touched); the Trainer
in ``fit``, with ``deep=trainer.verify_tensors_on_resume`` split over the ranks (``ctx``: a collective)
and ``log`` naming skipped checkpoints. The Trainer's decision is the one loaded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.gpt2 import SHAPE_KEYS
from trainer.checkpoint.manifest import (
    LEGACY_MODEL_KEYS,
    MANIFEST,
    CheckpointError,
    VerifiedCheckpoint,
    find_resumable,
    list_complete,
    verify_checkpoint,
)
from trainer.config import ConfigError, TrainConfig
from trainer.run_dir import in_use


@dataclass(frozen=True)
class ResumeDecision:
    """The checkpoint this launch resumes from (None: start fresh) and why."""

    checkpoint: VerifiedCheckpoint | None
    reason: str
    run_dir: Path | None = None  # true / auto: the run the checkpoint belongs to, where the launch continues

    @property
    def path(self) -> Path | None:
        return None if self.checkpoint is None else self.checkpoint.path

    @property
    def step(self) -> int:
        return 0 if self.checkpoint is None else self.checkpoint.step


def resolve_resume(config: TrainConfig, run_dir: Path, *, deep: bool, ctx=None, log=None,
                   earlier_runs: Path | None = None) -> ResumeDecision:
    """The resume decision for ``config.trainer.resume`` in ``run_dir``; raises ConfigError (a path that
    does not exist) or CheckpointError (broken, or written for another model or global batch).

    ``deep``: CRC-check the tensor files too (with ``ctx``, split over its ranks: a collective, every
    rank raises alike). ``log``: where a skipped broken checkpoint is reported (None: silently).
    ``earlier_runs``: the folder of the other launches of this run (see the module docstring)."""
    t = config.trainer
    mode = t.resume_mode
    log = log or (lambda _: None)
    if mode == "off":
        return ResumeDecision(None, f"trainer.resume={t.resume}: starting fresh")
    where = None
    if mode == "path":
        if not t.resume_path.exists():
            raise ConfigError(
                f"trainer.resume={t.resume}: {t.resume_path} does not exist; pass a checkpoint directory "
                f"(<run>/checkpoints/step_XXXXXXXX), or trainer.resume=auto to resume the run directory's newest"
            )
        found = verify_checkpoint(t.resume_path, deep=deep, ctx=ctx)
    else:
        root = Path(run_dir) / "checkpoints"
        found = find_resumable(root, log=log, deep=deep, ctx=ctx)
        where = Path(run_dir)
        busy: list[Path] = []  # earlier runs another launch is training: never continued from here
        if found is None and earlier_runs is not None:
            found, where, busy = _newest_earlier_run(Path(earlier_runs), Path(run_dir), log, deep)
        passed_over = f" ({', '.join(map(str, busy))}: in use by another launch)" if busy else ""
        if found is None and mode == "newest":
            searched = f" nor does any earlier run in {earlier_runs}" if earlier_runs is not None else ""
            raise CheckpointError(
                f"trainer.resume=true but {root} holds no complete checkpoint{searched}{passed_over}; "
                f"pass trainer.resume=<checkpoint dir>, or trainer.resume=auto to start fresh when there is none"
            )
        if found is None:
            return ResumeDecision(None, "no checkpoint found: starting fresh" + passed_over)
    _check_model_shape(found.state, config.model_dict, found.path)
    saved = found.state.get("global_batch_sequences")
    if saved is not None and saved != config.batch.global_sequences:
        raise CheckpointError(
            f"checkpoint {found.path} used a global batch of {saved} sequences, this run uses "
            f"{config.batch.global_sequences}; the data position cannot be carried over. "
            f"Set trainer.global_batch_size={saved}"
        )
    reason = f"resuming from {found.path} at step {found.step}"
    if where is not None and where != Path(run_dir):
        reason += f" (the newest earlier run named {config.run_name}; this launch continues in {where})"
    return ResumeDecision(found, reason, where)


def _newest_earlier_run(folder: Path, run_dir: Path, log, deep: bool):
    """(checkpoint, its run, the runs in use) for the newest checkpoint that verifies among the other
    run directories in ``folder``, newest written first; a run whose checkpoints all fail is reported
    and passed over, and so is one another launch is training (trainer.run_dir.in_use). One process:
    no collective (train.py asks before the process group; the Trainer then asks in the run chosen)."""
    runs, busy = [], []
    for other in folder.iterdir() if folder.is_dir() else ():
        complete = list_complete(other / "checkpoints") if other.is_dir() and other != run_dir else []
        if complete:
            runs.append(((complete[-1] / MANIFEST).stat().st_mtime, other.name, other))
    for _, _, other in sorted(runs, reverse=True):
        if in_use(other):
            busy.append(other)
            continue
        try:
            found = find_resumable(other / "checkpoints", log=log, deep=deep)
        except CheckpointError as err:
            log(f"skipping run {other}: {err}")
            continue
        if found is not None:
            return found, other, busy
    return None, None, busy


def remaining_steps(decision: ResumeDecision, config: TrainConfig) -> int:
    """The steps left to train from ``decision`` (0: the run is finished); raises CheckpointError for
    a checkpoint training cannot continue: model weights only, another optimizer's state, or a step
    past ``trainer.max_steps``. Weights alone (trainer.init_from, eval-only) need none of this."""
    t = config.trainer
    found = decision.checkpoint
    if found is None:
        return t.max_steps
    if found.state.get("model_only"):
        raise CheckpointError(
            f"checkpoint {found.path} holds model weights only (an imported or exported model: no optimizer "
            f"state, no data position), so it cannot be resumed; start from its weights with "
            f"trainer.init_from={found.path} (and trainer.resume=false)"
        )
    saved = found.state.get("optim")
    if saved is not None and saved != config.optim.name:
        raise CheckpointError(
            f"checkpoint {found.path} was written by optimizer {saved}, this run uses {config.optim.name}; "
            f"resume it with optim={saved}, or start {config.optim.name} from its weights only (fresh optimizer "
            f"state, step 0) with trainer.resume=false trainer.init_from={found.path}"
        )
    if found.step > t.max_steps:
        raise CheckpointError(
            f"checkpoint {found.path} is at step {found.step}, past trainer.max_steps={t.max_steps}; "
            f"set trainer.max_steps >= {found.step} to continue it, or resume an earlier checkpoint "
            f"(trainer.resume=<checkpoint dir>)"
        )
    return t.max_steps - found.step


def finished_message(decision: ResumeDecision) -> str:
    return (f"run {decision.path.parent.parent} already finished: checkpoint {decision.path} is at step "
            f"{decision.step} = trainer.max_steps; nothing to train (raise trainer.max_steps to continue it)")


def summary_written(decision: ResumeDecision) -> bool:
    """Whether the run of the decision's checkpoint wrote the summary a run writes when it ends at that
    step (trainer/loop.py); without it (killed after its last checkpoint) the Trainer writes it."""
    if decision.checkpoint is None:
        return False
    try:
        summary = json.loads((decision.path.parent.parent / "summary.json").read_text())
        return summary.get("step") == decision.step
    except (OSError, ValueError, AttributeError):
        return False


def _check_model_shape(state: dict[str, Any], model_cfg: dict[str, Any], path: Path) -> None:
    """Refuse a checkpoint (its trainer state) from another model shape before touching any tensor."""
    written = state.get("model", {})
    saved = {**LEGACY_MODEL_KEYS, **written}
    diffs = [f"{k}: checkpoint {saved.get(k)} vs config {model_cfg.get(k)}" for k in SHAPE_KEYS
             if saved.get(k) != model_cfg.get(k)]
    if written and "vocab_pad_to" not in written and model_cfg.get("vocab_pad_to") != 1:
        raise CheckpointError(
            f"checkpoint {path} was written before padded vocabularies (its embedding has exactly "
            f"vocab_size={saved.get('vocab_size')} rows); resume it with model.vocab_pad_to=1, or export "
            f"it (orthogpt-export-hf) and import it again (orthogpt-import-hf) to get a padded model"
        )
    if diffs:
        raise CheckpointError(
            f"checkpoint {path} was written for another model shape ({'; '.join(diffs)}); "
            f"choose the matching model=... or another checkpoint"
        )
