"""Model weights in and out of this project's DCP checkpoints, in ONE process with no process group.

Readers: the HF export, the sampler, anything that wants the weights of a run without the trainer.
A training checkpoint (trainer/checkpoint/store.py) holds ``{"model": ..., "optim": ...}``; this module
loads only the ``model.*`` entries. DCP stores every tensor by its global shape, so a checkpoint
written by several FSDP2 ranks (DTensor shards) loads here into plain full tensors: DCP reshards on
load.

``write_model_checkpoint`` writes a *model-only* checkpoint (no optimizer state) through the
trainer's own writer, so it has the same layout, manifest and atomic rename as a training
checkpoint::

    <out_dir>/checkpoints/step_00000000/   .metadata, *.distcp, trainer_state.json, MANIFEST.json

``trainer_state.json`` holds the model config under ``"model"`` and ``"model_only": true``. It is
what ``orthogpt-import-hf`` produces and what ``read_model_checkpoint`` / ``orthogpt-export-hf``
/ ``orthogpt-sample`` read back. It cannot be resumed for training (there is no optimizer state).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.metadata import TensorStorageMetadata

from models.gpt2 import GPT, GPT_CONFIG_KEYS, GPTConfig, canonical_param_name
from trainer.checkpoint.manifest import (
    LEGACY_MODEL_KEYS,
    MANIFEST,
    CheckpointError,
    VerifiedCheckpoint,
    find_resumable,
    list_complete,
    verify_checkpoint,
)
from trainer.checkpoint.safe_reader import SafeFileSystemReader, SafeLoadPlanner
from trainer.checkpoint.store import save_checkpoint
from trainer.distributed import DistContext

MODEL_PREFIX = "model."


def resolve_checkpoint(path: str | Path, log=print, deep: bool = True) -> VerifiedCheckpoint:
    """The checkpoint named by ``path``, verified (``deep``: with its tensor files' CRCs, a one-off
    read): a checkpoint itself (has MANIFEST.json), a run directory (newest complete checkpoint under
    ``<path>/checkpoints``), or a checkpoints folder."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path} does not exist (expected a checkpoint or run directory)")
    if (path / MANIFEST).is_file():
        return verify_checkpoint(path, deep=deep)
    for root in (path / "checkpoints", path):
        found = find_resumable(root, log=log, deep=deep)
        if found is not None:
            return found
    raise CheckpointError(
        f"{path} holds no complete checkpoint: pass a checkpoint directory "
        f"(<run>/checkpoints/step_XXXXXXXX with MANIFEST.json) or a run directory that has one"
    )


def gpt_config_from_state(state: Mapping[str, Any], path: Path) -> GPTConfig:
    model = state.get("model")
    if not isinstance(model, Mapping) or any(k not in model for k in GPT_CONFIG_KEYS[1:] if k not in LEGACY_MODEL_KEYS):
        raise CheckpointError(
            f"checkpoint {path}: trainer_state.json has no model config under 'model' "
            f"(needs {', '.join(GPT_CONFIG_KEYS[1:])}); was it written by trainer/checkpoint/store.py?"
        )
    return GPTConfig(**{**LEGACY_MODEL_KEYS, **{k: model[k] for k in GPT_CONFIG_KEYS if k in model}})


def read_model_checkpoint(path: str | Path | VerifiedCheckpoint, log=print) -> tuple[GPTConfig, dict[str, torch.Tensor], dict]:
    """(model config, full CPU state dict in models.gpt2 names, trainer state) of a checkpoint.

    ``path`` may be a checkpoint or a run directory (see ``resolve_checkpoint``). The checkpoint is
    verified against its manifest first. The tied ``lm_head.weight`` is returned only if stored.
    """
    checkpoint = path if isinstance(path, VerifiedCheckpoint) else resolve_checkpoint(path, log=log)
    path, state = checkpoint.path, checkpoint.state
    config = gpt_config_from_state(state, path)
    reader = SafeFileSystemReader(path)  # unpickles only DCP metadata classes
    metadata = reader.read_metadata()
    # Allocate exactly what the checkpoint stores under "model." (global shapes), nothing of "optim".
    to_load = {}
    for key, meta in metadata.state_dict_metadata.items():
        if key.startswith(MODEL_PREFIX) and isinstance(meta, TensorStorageMetadata):
            to_load[key[len(MODEL_PREFIX):]] = torch.empty(meta.size, dtype=meta.properties.dtype)
    if not to_load:
        raise CheckpointError(f"checkpoint {path} holds no model weights (no 'model.*' entries)")
    with warnings.catch_warnings():  # "torch.distributed is disabled ... single process": intended
        warnings.filterwarnings("ignore", message=".*torch.distributed is disabled.*")
        try:
            dcp.load({"model": to_load}, storage_reader=reader, planner=SafeLoadPlanner(), no_dist=True)
        # DCP raises assorted errors for corrupt files, some wrapped in a CheckpointException, which
        # derives from BaseException
        except (Exception, CheckpointException) as err:
            raise CheckpointError(f"checkpoint {path} could not be loaded: {err}") from err
    return config, {canonical_param_name(k): v for k, v in to_load.items()}, state


def load_gpt(path: str | Path, log=print) -> GPT:
    """Our GPT (CPU, eval mode) with the weights of a checkpoint or run directory."""
    config, sd, _ = read_model_checkpoint(path, log=log)
    return gpt_from_state_dict(config, sd, path)


def gpt_from_state_dict(config: GPTConfig, sd: dict[str, torch.Tensor], path: Path | str = "") -> GPT:
    """Our GPT (CPU, eval mode) holding ``sd``; CheckpointError if the weights do not fit ``config``."""
    sd = dict(sd)
    if "transformer.wte.weight" in sd:
        sd.setdefault("lm_head.weight", sd["transformer.wte.weight"])  # tied: stored once or twice
    model = GPT(config)
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as err:
        raise CheckpointError(
            f"checkpoint {path}: its weights do not fit its model config {config}: {err}"
        ) from err
    return model.eval()


def write_model_checkpoint(out_dir: str | Path, model: GPT, extra_state: Mapping[str, Any] | None = None) -> Path:
    """Write ``model`` as a model-only checkpoint ``<out_dir>/checkpoints/step_00000000``.

    Refuses an ``out_dir`` that already holds checkpoints (the writer keeps only the newest ones,
    so writing there could delete a training checkpoint).
    """
    root = Path(out_dir) / "checkpoints"
    if list_complete(root):
        raise FileExistsError(f"{root} already holds checkpoints; choose an empty output directory")
    config = {k: getattr(model.config, k) for k in GPT_CONFIG_KEYS}
    state = {"model": config, "model_only": True, "tokens": 0, **(extra_state or {})}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.distributed is disabled.*")
        return save_checkpoint(root, 0, model, (), state, DistContext(), keep=1)
