"""Text samples from a model: GPT-2 BPE in and out (data.tokenizer, offline), models.generate inside.

Used by ``orthogpt-sample`` (scripts/sample.py) and by the trainer's ``trainer.sample_every``. A
sample is a function of (weights, prompt, settings, seed) alone: a private ``torch.Generator``, never
the global RNG, so sampling during training changes nothing in the run. Under FSDP2 every rank calls
it with the same arguments (each forward gathers the parameters) and gets the same text.
"""

from __future__ import annotations

import torch

from data.tokenizer import EOT_ID, gpt2_encoding
from models.generate import generate


def sample_texts(
    model: torch.nn.Module, prompt: str, max_new_tokens: int, temperature: float = 0.8, top_k: int | None = 200,
    seed: int = 1337, num_samples: int = 1, device: str | torch.device = "cpu",
) -> list[str]:
    """``num_samples`` continuations of ``prompt`` (prompt included), decoded to text. An empty prompt
    starts from <|endoftext|>, as GPT-2 does for unconditional samples. ``model`` must be on ``device``."""
    enc = gpt2_encoding()
    ids = enc.encode_ordinary(prompt) if prompt else [EOT_ID]
    generator = torch.Generator(device=device).manual_seed(seed)
    idx = torch.tensor([ids] * num_samples, dtype=torch.long, device=device)
    out = generate(model, idx, max_new_tokens, temperature=temperature, top_k=top_k, generator=generator)
    return [enc.decode(row.tolist()) for row in out.cpu()]
