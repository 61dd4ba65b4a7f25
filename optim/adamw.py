"""AdamW (Loshchilov & Hutter, arXiv 1711.05101) with GPT-2 practice.

    m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;  m^ = m/(1-b1^t);  v^ = v/(1-b2^t)
    W *= 1 - lr * wd      (decoupled)
    W -= lr * m^ / (sqrt(v^) + eps)

Routed groups: matrices take ``optim.matrix.weight_decay`` (0.1 for GPT-2); embeddings (wte, wpe,
tied head) and vectors (biases, LayerNorm) take their own lr and, by default, no decay. This is
torch.optim.AdamW itself (foreach on CPU, fused on CUDA), so it works unchanged on FSDP2 DTensors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from optim.config import AdamWHParams


def build_adamw(groups: list[dict[str, Any]], hparams: AdamWHParams) -> torch.optim.Optimizer:
    on_cuda = groups[0]["params"][0].is_cuda
    return torch.optim.AdamW(
        groups, betas=hparams.betas, eps=hparams.eps, fused=True if on_cuda else None,
        foreach=None if on_cuda else True,
    )
