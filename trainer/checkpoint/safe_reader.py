"""Reading DCP checkpoints without running code from them.

DCP's own reader unpickles ``.metadata`` with plain ``pickle`` and loads non-tensor values with
``weights_only=False``. ``SafeFileSystemReader`` unpickles only DCP's metadata classes, and
``SafeLoadPlanner`` loads values with ``weights_only=True``.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
from torch.distributed.checkpoint import DefaultLoadPlanner, FileSystemReader
from torch.distributed.checkpoint._traverse import set_element
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta

from trainer.checkpoint.manifest import DCP_METADATA


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


def load_error_reason(err: BaseException) -> str:
    """The underlying error of each failed rank, without DCP's formatted tracebacks."""
    if isinstance(err, CheckpointException):
        return "; ".join(f"rank {rank}: {exc!r}" for rank, (exc, _) in sorted(err.failures.items()))
    return repr(err)
