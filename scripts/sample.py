#!/usr/bin/env python
"""Generate text from a checkpoint, a run directory (its newest complete checkpoint) or a local HF dir.

    orthogpt-sample runs/gpt2-tiny-adamw/<date> --prompt "The function" --max-new-tokens 50
    orthogpt-sample hf/my-model --prompt "Hello" --temperature 0      # greedy

Tokens are GPT-2's BPE (data.tokenizer.gpt2_encoding, offline). An empty prompt starts from
<|endoftext|>, as GPT-2 does for unconditional samples. The output is a function of the weights, the
prompt, the settings and --seed alone (a private RNG), so the same command prints the same text.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


from models.gpt2 import GPT
from trainer import sampling


def load_model(source: str | Path) -> GPT:
    """Our GPT from a local HF directory (has config.json) or a checkpoint / run directory."""
    source = Path(source)
    if (source / "config.json").is_file():
        from models.hf import load_hf

        return load_hf(source)
    from trainer.checkpoint.model_io import load_gpt

    return load_gpt(source)


def sample_texts(model: GPT, prompt: str, max_new_tokens: int, temperature: float = 0.8, top_k: int | None = 200,
                 seed: int = 1337, num_samples: int = 1, device: str = "cpu") -> list[str]:
    """``num_samples`` continuations of ``prompt`` (prompt included), decoded (trainer/sampling.py)."""
    return sampling.sample_texts(model.to(device), prompt, max_new_tokens, temperature=temperature, top_k=top_k,
                                 seed=seed, num_samples=num_samples, device=device)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="checkpoint dir, run dir, or local HF GPT-2 dir")
    parser.add_argument("--prompt", default="", help="text to continue (default: start of a document)")
    parser.add_argument("--max-new-tokens", type=int, default=100)
    parser.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    parser.add_argument("--top-k", type=int, default=200, help="sample among the k most likely; 0 = all")
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--num-samples", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args(argv)
    try:
        model = load_model(args.source)
        texts = sample_texts(
            model, args.prompt, args.max_new_tokens, temperature=args.temperature,
            top_k=args.top_k or None, seed=args.seed, num_samples=args.num_samples, device=args.device,
        )
    except (ValueError, FileNotFoundError, RuntimeError) as err:  # CheckpointError is a RuntimeError
        print(f"sample: error: {err}", file=sys.stderr)
        return 2
    for i, text in enumerate(texts):
        if len(texts) > 1:
            print(f"--- sample {i}")
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
