"""Refuse a checkpoint that cannot be resumed before any process group starts.

Reads only ``trainer_state.json`` of the checkpoint ``trainer.resume`` names (or of the run
directory's newest complete one): another model shape or another global batch is an error here,
before the progress bar, the metrics file or torchrun's process group exist. The checkpoint itself
is verified once, later, by the trainer (trainer.checkpoint.manifest), which also catches damage.
"""

from __future__ import annotations

import json
from pathlib import Path

from trainer.checkpoint.manifest import TRAINER_STATE, CheckpointError, check_compatible, list_complete
from trainer.config import TrainConfig


def _peek_state(path: Path) -> dict | None:
    try:
        return json.loads((path / TRAINER_STATE).read_text())
    except (OSError, ValueError):
        return None  # unreadable: the trainer's verification names the problem


def check_resumable(state: dict, config: TrainConfig, path: Path) -> None:
    """Refuse a checkpoint (its trainer state) of another model shape or another global batch."""
    check_compatible(state, config.model_dict, path)
    saved = state.get("global_batch_sequences")
    if saved is not None and saved != config.batch.global_sequences:
        raise CheckpointError(
            f"checkpoint {path} used a global batch of {saved} sequences, this run uses "
            f"{config.batch.global_sequences}; the data position cannot be carried over. "
            f"Set trainer.global_batch_size={saved}"
        )


def check_resume_before_start(config: TrainConfig, run_dir: Path) -> None:
    t = config.trainer
    if t.resume_mode == "off":
        return
    if t.resume_mode == "path":
        candidates = [t.resume_path]
    else:
        candidates = list(reversed(list_complete(Path(run_dir) / "checkpoints")))
    for path in candidates:
        state = _peek_state(path)
        if state is not None:
            check_resumable(state, config, path)
            return
