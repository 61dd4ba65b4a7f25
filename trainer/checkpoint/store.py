"""The checkpoint directory store: complete or absent, never half-written (torch.distributed.checkpoint).

Layout of ``<run_dir>/checkpoints/``::

    step_00000100/            a complete checkpoint
      .metadata, __0_0.distcp ...   DCP: model and optimizer state (sharded DTensors reshard on load)
      rng_rank{r}.pt          per-rank RNG state (loaded with weights_only=True)
      trainer_state.json      step, tokens, data position, schedule, model config, world size
      MANIFEST.json           written last: every file with its size and CRC32; its presence means "complete"
    .tmp_step_00000200/       a write in progress (ignored by resume, removed by the next save)

A save writes into the temporary directory, fsyncs every file, writes the manifest, and renames the
directory into place; only then are checkpoints beyond the newest ``keep`` deleted, so a failed write
never touches the last good checkpoint. A disk that fills up during the write is reported as such
(torch's own error says only "unexpected pos ..."): a CheckpointError "no space left on <folder>",
the partial write removed, every complete checkpoint kept. Complete checkpoints of later steps than the one written
(a timeline the run left by resuming from an earlier checkpoint, or by starting afresh in an old run's
directory) are renamed ``abandoned_step_*``: kept, but never resumed or pruned.

Loading takes a ``VerifiedCheckpoint`` (trainer.checkpoint.manifest) and reads through the safe reader
(trainer.checkpoint.safe_reader): no code from the checkpoint runs.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from trainer.checkpoint.manifest import (
    FORMAT_VERSION,
    MANIFEST,
    TRAINER_STATE,
    CheckpointError,
    VerifiedCheckpoint,
    file_crc32,
    list_complete,
)
from trainer.checkpoint.safe_reader import SafeFileSystemReader, SafeLoadPlanner, load_error_reason
from trainer.distributed import DistContext

TMP_PREFIX = ".tmp_"
OLD_PREFIX = ".old_"
ABANDONED_PREFIX = "abandoned_"


def step_dir_name(step: int) -> str:
    return f"step_{step:08d}"


# DCP warns at every save and load without a process group that it "assumes the intent" to work in a
# single process: that is the intent of a one-process run. Only this warning is silenced.
SINGLE_PROCESS_NOTICE = (r"torch\.distributed is disabled, unavailable or uninitialized, assuming the intent is to "
                         r"(save|load) in a single process")


@contextmanager
def single_process_notice_ignored() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=SINGLE_PROCESS_NOTICE, category=UserWarning)
        yield


# ------------------------------------------------------------------------------------ files
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


def _own_tensor_file_crcs(tmp: Path, ctx: DistContext) -> dict[str, str]:
    """CRC32 of the DCP data files this rank wrote (DCP names them ``__{rank}_{i}.distcp``), gathered
    to every rank, so hashing a large checkpoint is split across the ranks that wrote it."""
    own = {p.name: file_crc32(p) for p in sorted(tmp.glob(f"__{ctx.rank}_*.distcp"))}
    if not ctx.distributed:
        return own
    gathered: list[dict[str, str]] = [{} for _ in range(ctx.world_size)]
    dist.all_gather_object(gathered, own)
    return {name: crc for part in gathered for name, crc in part.items()}


# ------------------------------------------------------------------------------------- save
FULL_BELOW_BYTES = 1 << 20  # a write failed with less free space than this: the disk filled up


def save_checkpoint(
    root: Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    trainer_state: dict[str, Any],
    ctx: DistContext,
    keep: int = 2,
) -> Path:
    """Collective: every rank calls it. Returns the final checkpoint directory. Raises CheckpointError
    when the disk fills up (see the module docstring); any other failure propagates as it is."""
    try:
        return _write_checkpoint(root, step, model, optimizer, trainer_state, ctx, keep)
    except (OSError, RuntimeError, CheckpointException) as err:
        if not _disk_full(err, Path(root)):
            raise
        if ctx.is_main:  # give the space back; the complete checkpoints are untouched
            shutil.rmtree(Path(root) / f"{TMP_PREFIX}{step_dir_name(step)}", ignore_errors=True)
        kept = list_complete(root)
        raise CheckpointError(
            f"no space left on {root}: the checkpoint of step {step} was not written (its partial write is "
            f"removed); " + (f"the previous checkpoint {kept[-1]} is kept. " if kept else "")
            + "Free space there (or lower trainer.keep_checkpoints) and run again with trainer.resume=auto"
        ) from err


def _disk_full(err: BaseException, root: Path) -> bool:
    """ENOSPC / EDQUOT anywhere in the error (DCP wraps each rank's), or, for torch's writer, which
    reports a short write without the errno, a disk with next to no space left."""
    todo, seen = [err], set()
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        todo += [e.__cause__, e.__context__]
        todo += [f[0] if isinstance(f, tuple) else f for f in (getattr(e, "failures", None) or {}).values()]
    try:
        return shutil.disk_usage(root).free < FULL_BELOW_BYTES
    except OSError:
        return False


def _write_checkpoint(
    root: Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    trainer_state: dict[str, Any],
    ctx: DistContext,
    keep: int = 2,
) -> Path:
    root = Path(root)
    final = root / step_dir_name(step)
    tmp = root / f"{TMP_PREFIX}{step_dir_name(step)}"
    if ctx.is_main:
        root.mkdir(parents=True, exist_ok=True)
        remove_stale_writes(root)
        tmp.mkdir()
    ctx.barrier()
    model_sd, optim_sd = get_state_dict(model, optimizer)
    with single_process_notice_ignored():
        dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(tmp))
    torch.save(_rng_state(), tmp / f"rng_rank{ctx.rank}.pt")
    tensor_crcs = _own_tensor_file_crcs(tmp, ctx)
    ctx.barrier()
    if ctx.is_main:
        state = dict(trainer_state, step=step, world_size=ctx.world_size, format_version=FORMAT_VERSION)
        (tmp / TRAINER_STATE).write_text(json.dumps(state, indent=2, sort_keys=True))
        files = {}
        for path in sorted(tmp.rglob("*")):
            if path.is_file():
                name = path.relative_to(tmp).as_posix()
                crc = tensor_crcs.get(name) or file_crc32(path)
                files[name] = {"bytes": path.stat().st_size, "crc32": crc}
        _fsync_tree(tmp)
        manifest = {"step": step, "format_version": FORMAT_VERSION, "files": files}
        with open(tmp / MANIFEST, "w") as f:
            json.dump(manifest, f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        _publish(tmp, final)
        set_aside_later_checkpoints(root, step)
        prune_checkpoints(root, keep)
    ctx.barrier()
    return final


def _publish(tmp: Path, final: Path) -> None:
    """Rename the finished write into place. A checkpoint of the same step (a re-save after resuming
    from an earlier one) is moved aside first, put back if the rename fails, and deleted only once the
    new one is in place."""
    old = final.with_name(f"{OLD_PREFIX}{final.name}")
    replacing = final.exists()
    if replacing:
        shutil.rmtree(old, ignore_errors=True)
        os.rename(final, old)
    try:
        os.rename(tmp, final)
    except BaseException:
        if replacing:
            os.rename(old, final)
        raise
    _fsync_dir(final.parent)
    shutil.rmtree(old, ignore_errors=True)


def remove_stale_writes(root: Path) -> None:
    """Delete leftovers of writes that a crash interrupted (never a complete checkpoint)."""
    for path in Path(root).iterdir():
        if path.is_dir() and path.name.startswith((TMP_PREFIX, OLD_PREFIX)):
            shutil.rmtree(path, ignore_errors=True)


def set_aside_later_checkpoints(root: Path, step: int) -> list[Path]:
    """Rename checkpoints of steps after ``step`` to ``abandoned_step_*``: they belong to a timeline
    this run has left (it resumed from an earlier checkpoint, or started afresh in an old run's
    directory). Left in place, resume=auto would pick them up, and pruning would delete this run's
    newer saves before them; renamed, they are kept for inspection but never resumed or pruned."""
    moved = []
    for path in list_complete(root):
        if int(path.name.split("_")[1]) > step:
            target = path.with_name(f"{ABANDONED_PREFIX}{path.name}")
            shutil.rmtree(target, ignore_errors=True)
            os.rename(path, target)
            moved.append(target)
    return moved


def prune_checkpoints(root: Path, keep: int) -> None:
    complete = list_complete(root)
    for path in complete[:-keep] if keep > 0 else []:
        shutil.rmtree(path, ignore_errors=True)


# ------------------------------------------------------------------------------------- load
def load_checkpoint(
    checkpoint: VerifiedCheckpoint, model: torch.nn.Module, optimizer: torch.optim.Optimizer, ctx: DistContext
) -> dict[str, Any]:
    """Collective: load model + optimizer (resharding to this world size) and this rank's RNG from a
    checkpoint verified before (no second verification). Returns its trainer state."""
    if not isinstance(checkpoint, VerifiedCheckpoint):
        raise TypeError("load_checkpoint takes a VerifiedCheckpoint (trainer.checkpoint.verify_checkpoint)")
    path = checkpoint.path
    model_sd, optim_sd = get_state_dict(model, optimizer)
    to_load = {"model": model_sd, "optim": optim_sd}
    try:
        with single_process_notice_ignored():
            dcp.load(to_load, storage_reader=SafeFileSystemReader(path), planner=SafeLoadPlanner())
    # DCP raises assorted errors for missing keys or corrupt files, and wraps them per rank in a
    # CheckpointException, which derives from BaseException (not Exception)
    except (Exception, CheckpointException) as err:
        raise CheckpointError(f"checkpoint {path} could not be loaded: {load_error_reason(err)}") from err
    set_state_dict(model, optimizer, model_state_dict=to_load["model"], optim_state_dict=to_load["optim"])
    rng_file = path / f"rng_rank{ctx.rank}.pt"
    if rng_file.is_file() and checkpoint.state.get("world_size") == ctx.world_size:
        rng = torch.load(rng_file, weights_only=True)
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"])
    return checkpoint.state
