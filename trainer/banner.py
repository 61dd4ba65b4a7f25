"""The start banner: what a run is about to do, printed once by rank 0 before the first step, and the
plan a dry run (``python train.py --validate``) prints instead of training.

Everything comes from the validated config (trainer/config.py), so the banner of a run and the plan
of its dry run are the same text. The parameter counts come from the model built on the meta device
(no memory, no init cost) and routed by the optimizer's own table (optim/build.py ``param_groups``),
so each role is shown with the optimizer and lr that will update it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from models.gpt2 import GPT
from optim.build import param_groups
from optim.registry import registry_entry
from trainer.config import TrainConfig, device_type_of
from trainer.distributed import mesh_shape


def human(n: float) -> str:
    """``124M``, ``1.65M``, ``26.2k``, ``812``: three significant digits."""
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{suffix}"
    return f"{n:.3g}"


def dtype_name(dtype) -> str:
    return str(dtype).removeprefix("torch.")


@dataclass(frozen=True)
class RoleCount:
    role: str  # matrix | embedding | vector (optim/routing.py)
    parameters: int
    optimizer: str  # the update rule of the role's group
    lr: float
    weight_decay: float


@dataclass(frozen=True)
class ParameterCounts:
    total: int  # unique parameters, the tied head once, padded vocabulary rows not at all
    non_embedding: int
    roles: tuple[RoleCount, ...]  # as the optimizer groups them (padded rows included: they are stored)


def count_parameters(config: TrainConfig) -> ParameterCounts:
    with torch.device("meta"):
        model = GPT(config.model)
    rule = registry_entry(config.optim.name).rule
    roles = []
    for group in param_groups(model, config.optim):
        takes_rule = rule is not None and group["role"] == "matrix"
        roles.append(RoleCount(group["role"], sum(p.numel() for p in group["params"]),
                               config.optim.name if takes_rule else "adamw", group["lr"], group["weight_decay"]))
    return ParameterCounts(model.num_parameters(), model.num_parameters(non_embedding=True), tuple(roles))


def describe_schedule(config: TrainConfig) -> str:
    s = config.schedule
    warmup = f"warmup {s.warmup_steps} steps"
    if s.name == "constant":
        return f"constant lr after {warmup}"
    if s.name == "wsd":
        decay_steps = round(s.decay_fraction * s.max_steps)
        return (f"wsd: {warmup}, stable, then {s.decay_shape} decay over the last {decay_steps} steps "
                f"to {s.min_lr_ratio:g} x lr")
    return f"{s.name}: {warmup}, then decay to {s.min_lr_ratio:g} x lr at step {s.max_steps}"


def describe_dtypes(config: TrainConfig) -> str:
    """Parameters are stored in fp32; the step computes in the autocast dtype; the optimizer's
    orthogonalization in its own (build_config resolved every ``auto``)."""
    parts = ["params float32", f"autocast {dtype_name(config.trainer.compute_dtype)}"]
    o = config.optim.orthogonalize
    if o is not None:
        parts.append(f"Newton-Schulz {dtype_name(o.compute_dtype)} ({o.method}, {o.steps} steps)")
    if config.batch.world_size > 1:
        d = config.distributed
        parts.append(f"FSDP compute {dtype_name(d.param_dtype)} / reduce {dtype_name(d.reduce_dtype)}")
        if o is not None:
            parts.append(f"exchange {dtype_name(o.comm_dtype)}")
    return ", ".join(parts)


def describe_run(config: TrainConfig, run_dir: Path | str | None = None, start: str | None = None,
                 mfu: str | None = None) -> list[str]:
    """The banner's lines. ``start``: the resume / init decision; ``mfu``: the MFU denominator used."""
    m, t, b = config.model, config.trainer, config.batch
    counts = count_parameters(config)
    padded = f" (padded to {m.padded_vocab_size})" if m.padded_vocab_size != m.vocab_size else ""
    total_tokens = t.max_steps * b.tokens_per_step
    replicate, shard = mesh_shape(b.world_size, config.distributed.dp_replicate, config.distributed.dp_shard)
    ranks = "rank" if b.world_size == 1 else "ranks"
    lines = [
        f"run         {config.run_name}" + (f" -> {run_dir}" if run_dir is not None else ""),
        f"model       {m.name}: {m.n_layer} layers, {m.n_head} heads, width {m.n_embd}, context {m.block_size}, "
        f"vocab {m.vocab_size}{padded}",
        f"parameters  {human(counts.total)} total ({counts.total:,}), {human(counts.non_embedding)} non-embedding",
    ]
    for r in counts.roles:
        lines.append(f"  {r.role:<10}{human(r.parameters):>7}  {r.optimizer} (lr {r.lr:g}, weight decay {r.weight_decay:g})")
    lines += [
        f"batch       {b.tokens_per_step:,} tokens/step = {b.global_sequences} sequences x {b.seq_len} tokens; "
        f"{b.micro_batch_size} micro-batch x {b.grad_accum_steps} accumulation x {b.world_size} {ranks}",
        f"steps       {t.max_steps:,} steps, {human(total_tokens)} tokens ({total_tokens:,}; "
        f"{total_tokens / max(counts.total, 1):.3g} per parameter); {describe_schedule(config)}",
        f"eval        every {t.eval_every} steps on {t.eval_batches} batches; checkpoint every "
        f"{t.checkpoint_every} steps (keep {t.keep_checkpoints})",
        f"dtypes      {describe_dtypes(config)}",
        f"devices     {device_type_of(config.device)}, world size {b.world_size} "
        f"(mesh dp_replicate {replicate} x dp_shard {shard})",
    ]
    if mfu is not None:
        lines.append(f"mfu         {mfu}")
    if start is not None:
        lines.append(f"start       {start}")
    return lines


def plan_line(config: TrainConfig) -> str:
    """One line per job of a sweep's dry run."""
    t, b = config.trainer, config.batch
    counts = count_parameters(config)
    lrs = ", ".join(f"{r.role} {r.lr:g}" for r in counts.roles)
    return (f"{config.run_name}: {human(counts.total)} params, {config.optim.name} (lr {lrs}), "
            f"{t.max_steps:,} steps x {b.tokens_per_step:,} tokens = {human(t.max_steps * b.tokens_per_step)} tokens, "
            f"{b.world_size} rank(s)")
