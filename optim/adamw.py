"""AdamW (Loshchilov & Hutter, arXiv 1711.05101) with GPT-2 practice.

    m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;  m^ = m/(1-b1^t);  v^ = v/(1-b2^t)
    W *= 1 - lr * wd      (decoupled)
    W -= lr * m^ / (sqrt(v^) + eps)

Routed groups: matrices take ``optim.matrix.weight_decay`` (0.1 for GPT-2); embeddings (wte, wpe,
tied head) and vectors (biases, LayerNorm) take their own lr and, by default, no decay. This is
torch.optim.AdamW itself (foreach on CPU, fused on CUDA), so it works unchanged on FSDP2 DTensors.
"""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig

from optim.hparams import check_betas, check_nonnegative, check_positive
from optim.registry import register


def validate_group_hparams(groups: list[dict[str, Any]], cfg_name: str = "optim") -> None:
    for group in groups:
        check_positive(f"{cfg_name}.{group['role']}.lr", group["lr"])
        check_nonnegative(f"{cfg_name}.{group['role']}.weight_decay", group["weight_decay"])


@register("adamw")
def build_adamw(groups: list[dict[str, Any]], cfg: DictConfig, mesh: Any = None) -> torch.optim.Optimizer:
    validate_group_hparams(groups)
    betas = check_betas("optim.adamw.betas", list(cfg.adamw.betas))
    eps = check_positive("optim.adamw.eps", cfg.adamw.eps)
    on_cuda = groups[0]["params"][0].is_cuda
    return torch.optim.AdamW(
        groups, betas=betas, eps=eps, fused=True if on_cuda else None, foreach=None if on_cuda else True
    )
