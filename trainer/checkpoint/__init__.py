"""Checkpoints, one job per file:

    store        the directory store: atomic save, keep-k, abandoned timelines, load
    manifest     MANIFEST.json, sizes and CRC32s: ``verify_checkpoint`` -> ``VerifiedCheckpoint``
    safe_reader  DCP reading that runs no code from the checkpoint
    model_io     model weights alone, in one process (HF export, sampling, import)
"""

from trainer.checkpoint.manifest import (
    DCP_METADATA,
    MANIFEST,
    TRAINER_STATE,
    CheckpointError,
    VerifiedCheckpoint,
    file_crc32,
    find_resumable,
    list_complete,
    verify_checkpoint,
)
from trainer.checkpoint.safe_reader import SafeFileSystemReader, SafeLoadPlanner
from trainer.checkpoint.store import TMP_PREFIX, load_checkpoint, save_checkpoint, step_dir_name

__all__ = [
    "DCP_METADATA", "MANIFEST", "TMP_PREFIX", "TRAINER_STATE", "CheckpointError", "SafeFileSystemReader",
    "SafeLoadPlanner", "VerifiedCheckpoint", "file_crc32", "find_resumable", "list_complete",
    "load_checkpoint", "save_checkpoint", "step_dir_name", "verify_checkpoint",
]
