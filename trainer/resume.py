"""Which checkpoint a launch resumes from, and whether it can: one resolver, every check once.

``resolve_resume(config, run_dir, deep=..., ctx=..., log=...)`` reads ``trainer.resume`` (false | true |
auto | <path>) and returns a ``ResumeDecision``: the verified checkpoint (or None), its step, and why.
Checks, in order: the path ``trainer.resume`` names exists; the checkpoint verifies
(``trainer.checkpoint.manifest``: manifest, sizes, CRC32s; with ``deep`` the tensor files' too); for
true / auto, the newest complete checkpoint of the run directory that verifies, a broken one reported
and the previous one taken (none verifying is an error, not a fresh start); then its model shape and
global batch match this config.

A launch asks twice, with the differences as parameters: ``train.py`` before any process group, on
every rank, ``deep=False`` and silent (a mistake exits with one message, nothing touched); the Trainer
in ``fit``, with ``deep=trainer.verify_tensors_on_resume`` split over the ranks (``ctx``: a collective)
and ``log`` naming skipped checkpoints. The Trainer's decision is the one loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.gpt2 import SHAPE_KEYS
from trainer.checkpoint.manifest import (
    LEGACY_MODEL_KEYS,
    CheckpointError,
    VerifiedCheckpoint,
    find_resumable,
    verify_checkpoint,
)
from trainer.config import ConfigError, TrainConfig


@dataclass(frozen=True)
class ResumeDecision:
    """The checkpoint this launch resumes from (None: start fresh) and why."""

    checkpoint: VerifiedCheckpoint | None
    reason: str

    @property
    def path(self) -> Path | None:
        return None if self.checkpoint is None else self.checkpoint.path

    @property
    def step(self) -> int:
        return 0 if self.checkpoint is None else self.checkpoint.step


def resolve_resume(config: TrainConfig, run_dir: Path, *, deep: bool, ctx=None, log=None) -> ResumeDecision:
    """The resume decision for ``config.trainer.resume`` in ``run_dir``; raises ConfigError (a path that
    does not exist) or CheckpointError (broken, or written for another model or global batch).

    ``deep``: CRC-check the tensor files too (with ``ctx``, split over its ranks: a collective, every
    rank raises alike). ``log``: where a skipped broken checkpoint is reported (None: silently)."""
    t = config.trainer
    mode = t.resume_mode
    if mode == "off":
        return ResumeDecision(None, f"trainer.resume={t.resume}: starting fresh")
    if mode == "path":
        if not t.resume_path.exists():
            raise ConfigError(
                f"trainer.resume={t.resume}: {t.resume_path} does not exist; pass a checkpoint directory "
                f"(<run>/checkpoints/step_XXXXXXXX), or trainer.resume=auto to resume the run directory's newest"
            )
        found = verify_checkpoint(t.resume_path, deep=deep, ctx=ctx)
    else:
        root = Path(run_dir) / "checkpoints"
        found = find_resumable(root, log=log or (lambda _: None), deep=deep, ctx=ctx)
        if found is None and mode == "newest":
            raise CheckpointError(
                f"trainer.resume=true but {root} holds no complete checkpoint; "
                f"point hydra.run.dir at the run to resume, or use trainer.resume=auto"
            )
        if found is None:
            return ResumeDecision(None, "no checkpoint found: starting fresh")
    _check_model_shape(found.state, config.model_dict, found.path)
    saved = found.state.get("global_batch_sequences")
    if saved is not None and saved != config.batch.global_sequences:
        raise CheckpointError(
            f"checkpoint {found.path} used a global batch of {saved} sequences, this run uses "
            f"{config.batch.global_sequences}; the data position cannot be carried over. "
            f"Set trainer.global_batch_size={saved}"
        )
    return ResumeDecision(found, f"resuming from {found.path} at step {found.step}")


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
