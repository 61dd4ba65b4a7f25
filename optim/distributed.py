"""The optimizer's distribution seams, built from the FSDP2 device mesh.

One process (mesh None or of size 1): ``LocalOrthogonalizer`` and identity reductions.
Under FSDP2 the parameters are DTensors sharded on dim 0 over the mesh's ``dp_shard`` dimension
(the whole mesh when it is 1-D; with HSDP, ``(dp_replicate, dp_shard)``, replicas hold identical
shards, so reductions and the NS exchange run within the shard group only):

    orthogonalizer  ShardedOrthogonalizer (default, ``optim.orthogonalize.distributed: sharded``)
                    or ReplicatedOrthogonalizer (``replicated``, the baseline)
    reduce_sum      all-reduce SUM over the shard group: a statistic summed over row blocks equals
                    the one of the whole matrix (exact, not a per-shard approximation)
    reduce_max      all-reduce MAX over the same group (diagnostics only)
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from optim.hparams import check_in
from optim.newton_schulz import NS_COEFFICIENTS, resolve_compute_dtype
from optim.orthogonalizer import LocalOrthogonalizer
from optim.sharded_orthogonalizer import ReplicatedOrthogonalizer, ShardedOrthogonalizer

DISTRIBUTED_MODES = ("sharded", "replicated")
SHARD_DIM = "dp_shard"


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


def _all_reduce(op: dist.ReduceOp, group: dist.ProcessGroup):
    def reduce(t: torch.Tensor) -> torch.Tensor:
        dist.all_reduce(t, op=op, group=group)
        return t

    return reduce


def build_seams(orth_cfg: Any, device: torch.device, mesh: Any = None) -> dict[str, Any]:
    """``orthogonalizer``, ``reduce_sum``, ``reduce_max`` for OrthogonalizedOptimizer from
    ``optim.orthogonalize`` (method, steps, coefficients, compute_dtype, distributed, comm_dtype)."""
    local = LocalOrthogonalizer(
        steps=orth_cfg.get("steps", 5),
        coefficients=tuple(orth_cfg.get("coefficients", NS_COEFFICIENTS)),
        compute_dtype=resolve_compute_dtype(str(orth_cfg.get("compute_dtype", "auto")), device),
        method=str(orth_cfg.get("method", "newton_schulz")),
    )
    mode = check_in("optim.orthogonalize.distributed", str(orth_cfg.get("distributed", "sharded")), DISTRIBUTED_MODES)
    comm_dtype = resolve_compute_dtype(str(orth_cfg.get("comm_dtype", "auto")), device, "optim.orthogonalize.comm_dtype")
    group = shard_group(mesh)
    if group is None:
        return {"orthogonalizer": local}
    exchange = ShardedOrthogonalizer if mode == "sharded" else ReplicatedOrthogonalizer
    return {
        "orthogonalizer": exchange(local, group, comm_dtype),
        "reduce_sum": _all_reduce(dist.ReduceOp.SUM, group),
        "reduce_max": _all_reduce(dist.ReduceOp.MAX, group),
    }
