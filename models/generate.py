"""Autoregressive sampling from models.gpt2.GPT (nanoGPT's ``generate``, with an explicit RNG).

No KV cache: every new token re-runs the (cropped) context, which is simple and fast enough for the
CPU-sized models and short samples this is used for. A private ``torch.Generator`` makes a sample a
function of (weights, prompt, settings, seed) alone, independent of the global RNG.
"""

from __future__ import annotations

import torch

from models.gpt2 import GPT


def next_token_distribution(logits: torch.Tensor, temperature: float, top_k: int | None) -> torch.Tensor:
    """Probabilities (B, V) from last-position logits (B, V): divide by temperature, keep the top k."""
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.softmax(logits, dim=-1)


@torch.no_grad()
def generate(
    model: GPT,
    idx: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Extend ``idx`` (B, T) by ``max_new_tokens`` tokens; returns (B, T + max_new_tokens).

    temperature 0 is greedy decoding (argmax, no randomness); otherwise tokens are drawn from
    softmax(logits / temperature), restricted to the ``top_k`` most likely if given.
    """
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1 or None, got {top_k}")
    if idx.dim() != 2 or idx.size(1) == 0:
        raise ValueError(f"idx must be (batch, tokens) with at least one token, got shape {tuple(idx.shape)}")
    was_training = model.training
    model.eval()
    block = model.config.block_size
    for _ in range(max_new_tokens):
        logits, _ = model(idx[:, -block:])  # the model sees at most its context
        last = logits[:, -1, :]
        if temperature == 0:
            nxt = last.argmax(dim=-1, keepdim=True)
        else:
            probs = next_token_distribution(last, temperature, top_k)
            nxt = torch.multinomial(probs, num_samples=1, generator=generator)
        idx = torch.cat([idx, nxt], dim=1)
    model.train(was_training)
    return idx
