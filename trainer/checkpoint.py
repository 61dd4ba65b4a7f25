"""Checkpoints with torch.distributed.checkpoint (DCP): complete or absent, never half-written.

Layout of ``<run_dir>/checkpoints/``::

    step_00000100/            a complete checkpoint
      .metadata, __0_0.distcp ...   DCP: model and optimizer state (sharded DTensors reshard on load)
      rng_rank{r}.pt          per-rank RNG state (loaded with weights_only=True)
      trainer_state.json      step, tokens, data position, schedule, model config, world size
      MANIFEST.json           written last: every file with its size and CRC32; its presence means "complete"
    .tmp_step_00000200/       a write in progress (ignored by resume, removed by the next save)

A save writes into the temporary directory, fsyncs every file, writes the manifest, and renames the
directory into place; only then are checkpoints beyond the newest ``keep`` deleted, so a failed write
never touches the last good checkpoint. Complete checkpoints of later steps than the one written
(a timeline the run left by resuming from an earlier checkpoint, or by starting afresh in an old run's
directory) are renamed ``abandoned_step_*``: kept, but never resumed or pruned.

Verification (``verify_checkpoint``) checks every listed file's size, and the CRC32 of every file
except the large tensor-data files (``*.distcp``: their CRC is recorded, each rank hashing the files
it wrote, and checked with ``deep=True``), so a truncated or missing shard, or a trainer state or DCP
index swapped in from another checkpoint, is caught before any tensor is read. Resuming also checks
the tensor files' CRCs (``verify_tensor_files``, split over the ranks, ``trainer.verify_tensors_on_resume``).

Loading never runs code from the checkpoint: DCP's own reader unpickles ``.metadata`` with plain
``pickle`` and loads non-tensor values with ``weights_only=False``; ``load_checkpoint`` uses a reader
whose unpickler admits only DCP's metadata classes and a planner that loads values with
``weights_only=True``.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import zlib
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import DefaultLoadPlanner, FileSystemReader
from torch.distributed.checkpoint._traverse import set_element
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from trainer.distributed import DistContext

MANIFEST = "MANIFEST.json"
TRAINER_STATE = "trainer_state.json"
DCP_METADATA = ".metadata"
FORMAT_VERSION = 1
TMP_PREFIX = ".tmp_"
OLD_PREFIX = ".old_"
ABANDONED_PREFIX = "abandoned_"


class CheckpointError(RuntimeError):
    pass


def step_dir_name(step: int) -> str:
    return f"step_{step:08d}"


# ------------------------------------------------------------------------------------ files
def file_crc32(path: Path, chunk: int = 1 << 22) -> str:
    crc = 0
    with open(path, "rb") as f:
        while block := f.read(chunk):
            crc = zlib.crc32(block, crc)
    return f"{crc:08x}"


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
    tmp = root / f"{TMP_PREFIX}{step_dir_name(step)}"
    if ctx.is_main:
        root.mkdir(parents=True, exist_ok=True)
        remove_stale_writes(root)
        tmp.mkdir()
    ctx.barrier()
    model_sd, optim_sd = get_state_dict(model, optimizer)
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


# ----------------------------------------------------------------------------------- verify
def verify_checkpoint(path: Path, deep: bool = False) -> dict[str, Any]:
    """Check the manifest and every file it lists (size; CRC32 of all but ``*.distcp``, and of those
    too with ``deep=True``); return the trainer state. Raises CheckpointError naming the checkpoint."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise CheckpointError(f"checkpoint {path} is incomplete: it has no {MANIFEST}")
    try:
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(
                f"checkpoint {path} has format_version {manifest.get('format_version')}, this code reads "
                f"{FORMAT_VERSION}"
            )
        for name, entry in manifest["files"].items():
            if isinstance(entry, int):  # written before CRCs were recorded: size only
                entry = {"bytes": entry, "crc32": None}
            file = path / name
            if not file.is_file():
                raise CheckpointError(f"checkpoint {path} is missing file '{name}'")
            size = file.stat().st_size
            if size != entry["bytes"]:
                raise CheckpointError(
                    f"checkpoint {path}: file '{name}' has {size} bytes, its manifest says {entry['bytes']} "
                    f"(truncated or replaced)"
                )
            checked = entry["crc32"] is not None and (deep or not name.endswith(".distcp"))
            if checked and file_crc32(file) != entry["crc32"]:
                raise CheckpointError(
                    f"checkpoint {path}: file '{name}' does not match the CRC32 in its manifest "
                    f"(corrupted, or copied from another checkpoint)"
                )
        state = json.loads((path / TRAINER_STATE).read_text())
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, OSError) as err:
        raise CheckpointError(f"checkpoint {path} is unreadable: {err!r}") from err
    if state.get("step") != manifest.get("step"):
        raise CheckpointError(
            f"checkpoint {path}: trainer state is for step {state.get('step')}, manifest for {manifest.get('step')}"
        )
    return state


def list_complete(root: Path) -> list[Path]:
    """Checkpoint directories that have a manifest, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("step_*") if (p / MANIFEST).is_file())


def verify_tensor_files(path: Path, ctx: DistContext) -> None:
    """CRC32 of every ``*.distcp`` against the manifest, the files split over the ranks (rank r reads
    files r, r+W, ...), so a same-size corruption of tensor data is caught before resuming from it.
    Collective: every rank calls it; all ranks raise the same CheckpointError."""
    path = Path(path)
    files = json.loads((path / MANIFEST).read_text())["files"]
    names = sorted(n for n, e in files.items() if n.endswith(".distcp") and isinstance(e, dict) and e.get("crc32"))
    bad = [n for n in names[ctx.rank::ctx.world_size] if file_crc32(path / n) != files[n]["crc32"]]
    if ctx.distributed:
        gathered: list[list[str]] = [[] for _ in range(ctx.world_size)]
        dist.all_gather_object(gathered, bad)
        bad = sorted(n for part in gathered for n in part)
    if bad:
        raise CheckpointError(
            f"checkpoint {path}: tensor file(s) {', '.join(bad)} do not match the CRC32 in its manifest "
            f"(corrupted on disk)"
        )


def find_resumable(root: Path, log=print, ctx: DistContext | None = None) -> Path | None:
    """The newest checkpoint that verifies; broken ones are reported and skipped. With ``ctx`` (a
    collective then) the tensor files are CRC-checked too, split over the ranks. None when there is no
    complete checkpoint at all; CheckpointError when there are some but none verifies (starting afresh
    would then silently abandon the run, and its saves would be pruned in favour of the broken ones)."""
    complete = list_complete(root)
    errors = []
    for path in reversed(complete):
        try:
            verify_checkpoint(path)
            if ctx is not None:
                verify_tensor_files(path, ctx)
            return path
        except CheckpointError as err:
            errors.append(str(err))
            log(f"skipping checkpoint: {err}; falling back to the previous one")
    if errors:
        raise CheckpointError(
            f"none of the {len(errors)} checkpoints in {root} can be resumed:\n  " + "\n  ".join(errors)
            + f"\nrepair or remove them, or start a new run directory"
        )
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


# ------------------------------------------------------------------------------------- load
class _MetadataUnpickler(pickle.Unpickler):
    """Admits only what DCP's ``Metadata`` is made of; anything else is refused before it is built."""

    ALLOWED = {
        ("torch", "Size"), ("torch.serialization", "_get_layout"), ("collections", "OrderedDict"),
        ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
        ("pathlib", "PosixPath"), ("pathlib", "PurePosixPath"), ("pathlib", "WindowsPath"),
        ("pathlib", "PureWindowsPath"),
    }

    def find_class(self, module: str, name: str) -> Any:
        allowed = (
            (module, name) in self.ALLOWED
            or (module == "torch.distributed.checkpoint.metadata" and not name.startswith("__"))
            or (module == "torch" and isinstance(getattr(torch, name, None), torch.dtype))
        )
        if not allowed:
            raise pickle.UnpicklingError(f"'{module}.{name}' is not allowed in a checkpoint's {DCP_METADATA}")
        return super().find_class(module, name)


class SafeFileSystemReader(FileSystemReader):
    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        with open(Path(self.path) / DCP_METADATA, "rb") as f:
            metadata = _MetadataUnpickler(f).load()
        if not isinstance(metadata, Metadata):
            raise pickle.UnpicklingError(f"{DCP_METADATA} holds a {type(metadata).__name__}, not DCP Metadata")
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


class SafeLoadPlanner(DefaultLoadPlanner):
    """Non-tensor values (optimizer hyper-parameters, step counts) loaded with weights_only=True."""

    def load_bytes(self, read_item, value) -> None:
        loaded = torch.load(value, weights_only=True)
        if self.flatten_state_dict:
            set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], loaded)
        else:
            self.state_dict[read_item.dest_index.fqn] = loaded


def _short_reason(err: BaseException) -> str:
    """The underlying error of each failed rank, without DCP's formatted tracebacks."""
    if isinstance(err, CheckpointException):
        return "; ".join(f"rank {rank}: {exc!r}" for rank, (exc, _) in sorted(err.failures.items()))
    return repr(err)


def load_checkpoint(
    path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, ctx: DistContext
) -> dict[str, Any]:
    """Collective: load model + optimizer (resharding to this world size) and this rank's RNG."""
    path = Path(path)
    state = verify_checkpoint(path)
    model_sd, optim_sd = get_state_dict(model, optimizer)
    to_load = {"model": model_sd, "optim": optim_sd}
    try:
        dcp.load(to_load, storage_reader=SafeFileSystemReader(path), planner=SafeLoadPlanner())
    # DCP raises assorted errors for missing keys or corrupt files, and wraps them per rank in a
    # CheckpointException, which derives from BaseException (not Exception)
    except (Exception, CheckpointException) as err:
        raise CheckpointError(f"checkpoint {path} could not be loaded: {_short_reason(err)}") from err
    set_state_dict(model, optimizer, model_state_dict=to_load["model"], optim_state_dict=to_load["optim"])
    rng_file = path / f"rng_rank{ctx.rank}.pt"
    if rng_file.is_file() and state.get("world_size") == ctx.world_size:
        rng = torch.load(rng_file, weights_only=True)
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"])
    return state
