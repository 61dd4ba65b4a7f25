"""Small helpers so the optimizer works on plain tensors and FSDP2 DTensors alike."""

from __future__ import annotations

import torch

try:
    from torch.distributed.tensor import DTensor
except ImportError:  # torch built without distributed
    DTensor = None


def is_dtensor(t: torch.Tensor) -> bool:
    return DTensor is not None and isinstance(t, DTensor)


def local(t: torch.Tensor) -> torch.Tensor:
    """The local shard of a DTensor (a view sharing storage), or the tensor itself."""
    return t.to_local() if is_dtensor(t) else t


def rows_like(param: torch.Tensor) -> torch.Tensor:
    """Zeros of shape (rows, 1) in param's dtype, placed like param's rows (DTensor stays sharded)."""
    if not is_dtensor(param):
        return torch.zeros(param.shape[0], 1, dtype=param.dtype, device=param.device)
    shard = param.to_local()
    block = torch.zeros(shard.shape[0], 1, dtype=shard.dtype, device=shard.device)
    return DTensor.from_local(
        block, param.device_mesh, param.placements, run_check=False, shape=(param.shape[0], 1), stride=(1, 1)
    )


def full(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor of a DTensor (a collective: every rank calls it), or the tensor itself."""
    return t.full_tensor() if is_dtensor(t) else t
