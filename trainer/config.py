"""Up-front config validation: every check runs before any process group, data or model exists."""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

MODEL_KEYS = ("name", "vocab_size", "block_size", "n_layer", "n_head", "n_embd", "dropout", "bias")


def model_config_dict(cfg: DictConfig) -> dict[str, Any]:
    return {k: cfg.model[k] for k in MODEL_KEYS}


def resolve_batch(cfg: DictConfig, world_size: int) -> tuple[int, int]:
    """(micro_batch_size, grad_accum_steps). With trainer.global_batch_size set (sequences per
    optimizer step), grad_accum_steps follows from it and must divide exactly."""
    t = cfg.trainer
    micro = int(t.micro_batch_size)
    if micro < 1:
        raise ValueError(f"trainer.micro_batch_size must be >= 1, got {micro}")
    if t.global_batch_size is None:
        accum = int(t.grad_accum_steps)
        if accum < 1:
            raise ValueError(f"trainer.grad_accum_steps must be >= 1, got {accum}")
        return micro, accum
    global_batch = int(t.global_batch_size)
    per_pass = micro * world_size
    if global_batch < per_pass or global_batch % per_pass:
        raise ValueError(
            f"trainer.global_batch_size={global_batch} cannot be split into micro-batches of "
            f"{micro} on {world_size} rank(s): it must be a multiple of micro_batch_size x world_size "
            f"= {per_pass}"
        )
    return micro, global_batch // per_pass


def validate_config(cfg: DictConfig, world_size: int = 1) -> None:
    import optim
    from models.gpt2 import GPTConfig
    from trainer.schedule import Schedule

    from trainer.distributed import mesh_shape
    from optim.newton_schulz import resolve_compute_dtype

    if cfg.optim.name not in optim.known_optimizers():
        raise ValueError(
            f"unknown optimizer '{cfg.optim.name}'; known: {', '.join(optim.known_optimizers())}"
        )
    GPTConfig(**model_config_dict(cfg))
    t = cfg.trainer
    for key in ("max_steps", "log_every", "seq_len", "eval_batches"):
        if int(t[key]) < 1:
            raise ValueError(f"trainer.{key} must be >= 1, got {t[key]}")
    if int(t.seq_len) > int(cfg.model.block_size):
        raise ValueError(
            f"trainer.seq_len ({t.seq_len}) is longer than the model's context "
            f"(model.block_size={cfg.model.block_size})"
        )
    if t.on_nonfinite not in ("skip", "stop"):
        raise ValueError(f"trainer.on_nonfinite must be 'skip' or 'stop', got '{t.on_nonfinite}'")
    if t.compute_dtype not in ("auto", "float32", "bfloat16"):
        raise ValueError(f"trainer.compute_dtype must be auto, float32 or bfloat16, got '{t.compute_dtype}'")
    resolve_batch(cfg, world_size)
    d = cfg.distributed
    mesh_shape(world_size, d.dp_replicate, d.dp_shard)
    if d.backend not in ("auto", "gloo", "nccl"):
        raise ValueError(f"distributed.backend must be auto, gloo or nccl, got '{d.backend}'")
    if d.grad_sync not in ("last_microbatch", "every_microbatch"):
        raise ValueError(f"distributed.grad_sync must be last_microbatch or every_microbatch, got '{d.grad_sync}'")
    for key in ("param_dtype", "reduce_dtype"):
        resolve_compute_dtype(str(d[key]), torch.device("cpu"), f"distributed.{key}")
    Schedule.from_config(cfg)
    # Builds the optimizer's hyper-parameters on a throwaway model to check their ranges now.
    from models.gpt2 import GPT

    tiny = GPT(GPTConfig(n_layer=1, n_head=1, n_embd=8, block_size=8, vocab_size=16, bias=cfg.model.bias))
    optim.build_optimizer(tiny, cfg.optim)


def resolved_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)
