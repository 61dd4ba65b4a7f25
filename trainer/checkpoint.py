"""Checkpoints with torch.distributed.checkpoint (DCP): complete or absent, never half-written.

Layout of ``<run_dir>/checkpoints/``::

    step_00000100/            a complete checkpoint
      .metadata, __0_0.distcp ...   DCP: model and optimizer state (sharded DTensors reshard on load)
      rng_rank{r}.pt          per-rank RNG state (loaded with weights_only=True)
      trainer_state.json      step, tokens, data position, schedule, model config, world size
      MANIFEST.json           written last: every file with its size; its presence means "complete"
    .tmp_step_00000200/       a write in progress (ignored by resume, removed by the next save)

A save writes into the temporary directory, fsyncs every file, writes the manifest, and renames the
directory into place; only then are checkpoints beyond the newest ``keep`` deleted, so a failed write
never touches the last good checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from trainer.distributed import DistContext

MANIFEST = "MANIFEST.json"
TRAINER_STATE = "trainer_state.json"
FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    pass


def step_dir_name(step: int) -> str:
    return f"step_{step:08d}"


def _fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
    _fsync_dir(root)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def save_checkpoint(
    root: Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    trainer_state: dict[str, Any],
    ctx: DistContext,
    keep: int = 2,
) -> Path:
    """Collective: every rank calls it. Returns the final checkpoint directory."""
    root = Path(root)
    final = root / step_dir_name(step)
    tmp = root / f".tmp_{step_dir_name(step)}"
    if ctx.is_main:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    ctx.barrier()
    model_sd, optim_sd = get_state_dict(model, optimizer)
    dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(tmp))
    torch.save(_rng_state(), tmp / f"rng_rank{ctx.rank}.pt")
    ctx.barrier()
    if ctx.is_main:
        state = dict(trainer_state, step=step, world_size=ctx.world_size, format_version=FORMAT_VERSION)
        (tmp / TRAINER_STATE).write_text(json.dumps(state, indent=2, sort_keys=True))
        files = {p.relative_to(tmp).as_posix(): p.stat().st_size for p in sorted(tmp.rglob("*")) if p.is_file()}
        _fsync_tree(tmp)
        manifest = {"step": step, "format_version": FORMAT_VERSION, "files": files}
        with open(tmp / MANIFEST, "w") as f:
            json.dump(manifest, f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        if final.exists():  # a re-save of the same step (e.g. after a restart) replaces it whole
            shutil.rmtree(final)
        os.rename(tmp, final)
        _fsync_dir(root)
        prune_checkpoints(root, keep)
    ctx.barrier()
    return final


def prune_checkpoints(root: Path, keep: int) -> None:
    complete = list_complete(root)
    for path in complete[:-keep] if keep > 0 else []:
        shutil.rmtree(path, ignore_errors=True)


def verify_checkpoint(path: Path) -> dict[str, Any]:
    """Check the manifest and every file it lists; return the trainer state. Raises CheckpointError."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise CheckpointError(f"checkpoint {path} is incomplete: it has no {MANIFEST}")
    try:
        manifest = json.loads(manifest_path.read_text())
        for name, size in manifest["files"].items():
            file = path / name
            if not file.is_file():
                raise CheckpointError(f"checkpoint {path} is missing file '{name}'")
            if file.stat().st_size != size:
                raise CheckpointError(
                    f"checkpoint {path}: file '{name}' has {file.stat().st_size} bytes, manifest says {size}"
                )
        return json.loads((path / TRAINER_STATE).read_text())
    except (KeyError, ValueError, OSError) as err:
        if isinstance(err, CheckpointError):
            raise
        raise CheckpointError(f"checkpoint {path} is unreadable: {err}") from err


def list_complete(root: Path) -> list[Path]:
    """Checkpoint directories that have a manifest, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("step_*") if (p / MANIFEST).is_file())


def find_resumable(root: Path, log=print) -> Path | None:
    """The newest checkpoint that verifies; broken ones are reported and skipped."""
    for path in reversed(list_complete(root)):
        try:
            verify_checkpoint(path)
            return path
        except CheckpointError as err:
            log(f"skipping checkpoint: {err}")
    return None


def check_compatible(state: dict[str, Any], model_cfg: dict[str, Any], path: Path) -> None:
    """Refuse a checkpoint from another model shape before touching any tensor."""
    saved = state.get("model", {})
    keys = ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "bias")
    diffs = [f"{k}: checkpoint {saved.get(k)} vs config {model_cfg.get(k)}" for k in keys if saved.get(k) != model_cfg.get(k)]
    if diffs:
        raise CheckpointError(
            f"checkpoint {path} was written for another model shape ({'; '.join(diffs)}); "
            f"choose the matching model=... or another checkpoint"
        )


def load_checkpoint(
    path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, ctx: DistContext
) -> dict[str, Any]:
    """Collective: load model + optimizer (resharding to this world size) and this rank's RNG."""
    path = Path(path)
    state = verify_checkpoint(path)
    model_sd, optim_sd = get_state_dict(model, optimizer)
    to_load = {"model": model_sd, "optim": optim_sd}
    try:
        dcp.load(to_load, checkpoint_id=str(path))
    except Exception as err:  # DCP raises assorted errors for missing keys or corrupt files
        raise CheckpointError(f"checkpoint {path} could not be loaded: {err}") from err
    set_state_dict(model, optimizer, model_state_dict=to_load["model"], optim_state_dict=to_load["optim"])
    rng_file = path / f"rng_rank{ctx.rank}.pt"
    if rng_file.is_file() and state.get("world_size") == ctx.world_size:
        rng = torch.load(rng_file, weights_only=True)
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"])
    return state
