"""How an orthogonalized optimizer reaches the other row shards, built from the FSDP2 device mesh.

One process (mesh None or of size 1): ``LocalOrthogonalizer`` and identity reductions.
Under FSDP2 the parameters are DTensors sharded on dim 0 over the mesh's ``dp_shard`` dimension
(the whole mesh when it is 1-D; with HSDP, ``(dp_replicate, dp_shard)``, replicas hold identical
shards, so reductions and the NS exchange run within the shard group only):

    orthogonalizer  ShardedOrthogonalizer (default, ``optim.orthogonalize.distributed: sharded``: owners;
                    ``row_shards``: tall matrices on their row shards; ``auto``: per matrix by the cost
                    model) or ReplicatedOrthogonalizer (``replicated``, the baseline)
    reduce_sum      all-reduce SUM over the shard group: a statistic summed over row blocks equals
                    the one of the whole matrix (exact, not a per-shard approximation)
    reduce_max      all-reduce MAX over the same group (diagnostics only)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from optim.dtypes import resolve_dtype
from optim.orthogonalize.config import OrthogonalizeConfig
from optim.orthogonalize.cost_model import default_cost_model
from optim.orthogonalize.exchange import ReplicatedOrthogonalizer, ShardedOrthogonalizer
from optim.orthogonalize.orthogonalizer import LocalOrthogonalizer, Orthogonalizer
from optim.orthogonalize.transform import MatrixTransform

ReduceFn = Callable[[torch.Tensor], torch.Tensor]
SHARD_DIM = "dp_shard"
ROW_SHARDS_OF_MODE = {"sharded": "off", "row_shards": "all", "auto": "auto"}  # optim.orthogonalize.distributed


def identity_reduce(t: torch.Tensor) -> torch.Tensor:
    """The sum over the row blocks of a matrix that is whole (one process)."""
    return t


@dataclass(frozen=True)
class MatrixDistribution:
    """The three seams of ``OrthogonalizedOptimizer``; the defaults are the single-process ones."""

    orthogonalizer: Orthogonalizer = field(default_factory=LocalOrthogonalizer)
    reduce_sum: ReduceFn = identity_reduce
    reduce_max: ReduceFn = identity_reduce


def shard_group(mesh: Any) -> dist.ProcessGroup | None:
    """The process group over which parameters are row-sharded (None: one process)."""
    if mesh is None or mesh.size() == 1:
        return None
    if mesh.ndim == 1:
        return mesh.get_group()
    names = mesh.mesh_dim_names or ()
    if SHARD_DIM not in names:
        raise ValueError(f"a {mesh.ndim}-D device mesh needs a '{SHARD_DIM}' dimension, got {names}")
    return mesh[SHARD_DIM].get_group() if mesh[SHARD_DIM].size() > 1 else None


def _all_reduce(op: dist.ReduceOp, group: dist.ProcessGroup) -> ReduceFn:
    def reduce(t: torch.Tensor) -> torch.Tensor:
        dist.all_reduce(t, op=op, group=group)
        return t

    return reduce


def build_distribution(
    config: OrthogonalizeConfig, device: torch.device, transform: MatrixTransform, mesh: Any = None,
) -> MatrixDistribution:
    """The orthogonalizer of ``transform`` (the rule's, split as configured: optim.build) and the
    reductions, for ``optim.orthogonalize`` on ``mesh``."""
    local = LocalOrthogonalizer(transform=transform)
    group = shard_group(mesh)
    if group is None:
        return MatrixDistribution(orthogonalizer=local)
    comm_dtype = resolve_dtype(config.comm_dtype, device, "optim.orthogonalize.comm_dtype")
    if config.distributed == "replicated":
        exchange = ReplicatedOrthogonalizer(local, group, comm_dtype)
    else:
        world_size = dist.get_world_size(group)
        exchange = ShardedOrthogonalizer(
            local, group, comm_dtype, bucket_elements=config.bucket_elements, overlap=config.overlap,
            row_shards=ROW_SHARDS_OF_MODE[config.distributed],
            cost_model=default_cost_model(torch.device(device).type, world_size),
        )
    return MatrixDistribution(
        orthogonalizer=exchange,
        reduce_sum=_all_reduce(dist.ReduceOp.SUM, group),
        reduce_max=_all_reduce(dist.ReduceOp.MAX, group),
    )
