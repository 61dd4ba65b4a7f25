"""FSDP2 for the GPT-2 model: one ``fully_shard`` unit per transformer block, plus the root.

The root unit holds wte, wpe, ln_f and the head. The head's weight IS wte's (tied), so the root
gathers that one parameter once per forward and reduces its gradient once per backward. Every
parameter becomes a DTensor sharded on dim 0 over the mesh's ``dp_shard`` dimension (HSDP: replicated
over ``dp_replicate``), which is the layout ``optim.distributed`` expects.

Config (``distributed``): param_dtype / reduce_dtype (MixedPrecisionPolicy; ``auto`` = bf16 params on
CUDA, fp32 on CPU; reduce fp32), reshard_after_forward (True frees the gathered block after its
forward: less memory, one more all-gather in backward). ``trainer.activation_checkpointing`` and
``trainer.compile`` (per block under FSDP2, as torchtitan does) are applied here too.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

from models.gpt2 import GPT
from optim.dtypes import resolve_dtype


def mixed_precision(dist_cfg: Any, device: torch.device) -> MixedPrecisionPolicy:
    """FSDP2's policy from ``distributed.param_dtype`` / ``reduce_dtype`` (torch.dtypes after
    build_config; names are resolved on ``device`` for a hand-built DistributedConfig)."""
    param_dtype = resolve_dtype(dist_cfg.param_dtype, device, "distributed.param_dtype")
    reduce_dtype = resolve_dtype(dist_cfg.reduce_dtype, device, "distributed.reduce_dtype")
    # fp32 everywhere -> no casts at all (the exact path the CPU tests compare against one process)
    if param_dtype == torch.float32 and reduce_dtype == torch.float32:
        return MixedPrecisionPolicy()
    return MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=reduce_dtype)


def shard_units(units: list[torch.nn.Module], root: torch.nn.Module, mesh: Any,
                policy: MixedPrecisionPolicy | None = None, reshard_after_forward: bool = True) -> None:
    """``fully_shard`` each unit, then the root (which keeps what no unit holds)."""
    policy = policy or MixedPrecisionPolicy()
    for unit in units:
        fully_shard(unit, mesh=mesh, mp_policy=policy, reshard_after_forward=reshard_after_forward)
    # The root's parameters are needed again right at the start of backward (the head): keep them.
    fully_shard(root, mesh=mesh, mp_policy=policy, reshard_after_forward=False)
    # The trainer divides the summed loss by the global token count itself: reduce by SUM, not mean
    # (per unit: these setters do not recurse). Plain SUM also suits gloo, which has no PREMUL_SUM.
    for unit in (*units, root):
        unit.set_gradient_divide_factor(1.0)
        unit.set_force_sum_reduction_for_comms(True)


def apply_fsdp(model: GPT, mesh: Any, dist_cfg: Any, device: torch.device) -> GPT:
    """Shard ``model`` in place over ``mesh`` (1-D dp_shard, or 2-D (dp_replicate, dp_shard))."""
    shard_units(list(model.transformer.h), model, mesh, mixed_precision(dist_cfg, device),
                bool(dist_cfg.reshard_after_forward))
    return model


def prepare_model(model: GPT, cfg: Any, mesh: Any, device: torch.device) -> tuple[GPT, Any]:
    """(model, forward callable): FSDP2 when a mesh spans ranks, activation checkpointing, compile.
    ``cfg``: the TrainConfig (its ``trainer`` and ``distributed`` sections)."""
    model.activation_checkpointing = bool(cfg.trainer.activation_checkpointing)
    if mesh is not None and mesh.size() > 1:
        apply_fsdp(model, mesh, cfg.distributed, device)
        if cfg.trainer.compile:
            for block in model.transformer.h:
                block.compile()
        return model, model
    model.to(device)
    return model, (torch.compile(model) if cfg.trainer.compile else model)
