"""Checking a checkpoint before anything reads its tensors: the manifest, sizes and CRC32s.

``MANIFEST.json`` (written last by the store) lists every file with its size and CRC32. A checkpoint
is trusted only through a ``VerifiedCheckpoint``, which ``verify_checkpoint`` and ``find_resumable``
return and the loaders require, so each load verifies a checkpoint exactly once (which checkpoint a
launch resumes, and whether it fits the config, is decided once, in ``trainer.resume``).

Levels: the manifest and every listed file's size, the CRC32 of every file except the large tensor
files (``*.distcp``); ``deep`` adds the tensor files' CRC32 (one process: ``verify_checkpoint(...,
deep=True)``; several ranks: ``ctx`` splits the files over the ranks, a collective). So a truncated or
missing shard, or a trainer state or DCP index swapped in from another checkpoint, is caught before
any tensor is read, and with ``deep`` a same-size corruption of tensor data too.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch.distributed as dist

MANIFEST = "MANIFEST.json"
TRAINER_STATE = "trainer_state.json"
DCP_METADATA = ".metadata"
FORMAT_VERSION = 1
TENSOR_SUFFIX = ".distcp"


class CheckpointError(RuntimeError):
    pass


@dataclass(frozen=True)
class VerifiedCheckpoint:
    """A checkpoint whose manifest checked out (``deep``: its tensor files' CRCs too)."""

    path: Path
    state: dict[str, Any]  # trainer_state.json
    deep: bool

    @property
    def step(self) -> int:
        return int(self.state["step"])


def file_crc32(path: Path, chunk: int = 1 << 22) -> str:
    crc = 0
    with open(path, "rb") as f:
        while block := f.read(chunk):
            crc = zlib.crc32(block, crc)
    return f"{crc:08x}"


def _read_manifest(path: Path) -> dict[str, Any]:
    manifest_path = path / MANIFEST
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if not manifest_path.is_file():
        raise CheckpointError(f"checkpoint {path} is incomplete: it has no {MANIFEST}")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format_version {manifest.get('format_version')}, this code reads {FORMAT_VERSION}"
        )
    return manifest


def _check_files(path: Path, manifest: dict[str, Any], deep: bool) -> None:
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
        checked = entry["crc32"] is not None and (deep or not name.endswith(TENSOR_SUFFIX))
        if checked and file_crc32(file) != entry["crc32"]:
            raise CheckpointError(
                f"checkpoint {path}: file '{name}' does not match the CRC32 in its manifest "
                f"(corrupted, or copied from another checkpoint)"
            )


def _check_tensor_files_split(path: Path, manifest: dict[str, Any], ctx) -> None:
    """CRC32 of every tensor file, rank r checking files r, r+W, ...; all ranks raise alike."""
    files = manifest["files"]
    names = sorted(n for n, e in files.items() if n.endswith(TENSOR_SUFFIX) and isinstance(e, dict) and e.get("crc32"))
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


def verify_checkpoint(path: Path, deep: bool = False, ctx=None) -> VerifiedCheckpoint:
    """Verify ``path``; ``deep`` adds the tensor files' CRCs (with ``ctx``: split over the ranks, a
    collective). Raises CheckpointError naming the checkpoint and what is wrong."""
    path = Path(path)
    try:
        manifest = _read_manifest(path)
        _check_files(path, manifest, deep=deep and ctx is None)
        state = json.loads((path / TRAINER_STATE).read_text())
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, OSError) as err:
        raise CheckpointError(f"checkpoint {path} is unreadable: {err!r}") from err
    if state.get("step") != manifest.get("step"):
        raise CheckpointError(
            f"checkpoint {path}: trainer state is for step {state.get('step')}, manifest for {manifest.get('step')}"
        )
    if deep and ctx is not None:
        _check_tensor_files_split(path, manifest, ctx)
    return VerifiedCheckpoint(path=path, state=state, deep=deep)


def list_complete(root: Path) -> list[Path]:
    """Checkpoint directories that have a manifest, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("step_*") if (p / MANIFEST).is_file())


def find_resumable(root: Path, log=print, deep: bool = False, ctx=None) -> VerifiedCheckpoint | None:
    """The newest checkpoint under ``root`` that verifies; broken ones are reported and skipped.

    None when there is no complete checkpoint at all; CheckpointError when there are some but none
    verifies (starting afresh would then silently abandon the run, and its saves would be pruned in
    favour of the broken ones). ``deep`` / ``ctx`` as in ``verify_checkpoint``.
    """
    errors = []
    for path in reversed(list_complete(root)):
        try:
            return verify_checkpoint(path, deep=deep, ctx=ctx)
        except CheckpointError as err:
            errors.append(str(err))
            log(f"skipping checkpoint: {err}; falling back to the previous one")
    if errors:
        raise CheckpointError(
            f"none of the {len(errors)} checkpoints in {root} can be resumed:\n  " + "\n  ".join(errors)
            + "\nrepair or remove them, or start a new run directory"
        )
    return None


# Keys a checkpoint written before the padded vocabulary and the chunked loss lacks, with the values it
# was written with: an embedding of exactly vocab_size rows (the loss keys change no tensor).
LEGACY_MODEL_KEYS = {"vocab_pad_to": 1, "loss_impl": "chunked", "loss_chunk_rows": "auto"}
