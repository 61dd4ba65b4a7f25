#!/usr/bin/env python
"""Training-step throughput and MFU of a GPT-2 config on the current device.

A step is what the trainer does per optimizer step: zero grads, forward with loss, backward, grad-norm
clipping, AdamW step. Tokens/s times ``models.gpt2.flops_per_token`` gives the achieved FLOP/s.

MFU's denominator: on CPU, this machine's fp32 matmul rate measured in the same run (best of several
large square matmuls), since a CPU has no trustworthy datasheet peak and shares cores with other work;
on CUDA, ``--peak-tflops`` (e.g. 989 for H100 bf16 dense) if given, else the same measured matmul rate.

    orthogpt-bench-throughput                                   # gpt2-mini, defaults
    orthogpt-bench-throughput --model configs/model/gpt2-tiny.yaml --batch-size 8 --compile
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch


from models.gpt2 import GPT, GPTConfig, flops_per_token
from models.model_config import load_model_config as model_config_file
from trainer.mfu import measure_matmul_tflops as matmul_tflops, sync

def load_model_config(path: str) -> GPTConfig:
    """A YAML path or a name in configs/model/ (models.model_config); a missing one exits with the list."""
    try:
        return model_config_file(path)
    except FileNotFoundError as err:
        raise SystemExit(str(err)) from None


def build_optimizer(model: GPT, impl: str) -> torch.optim.Optimizer:
    # GPT-2 AdamW as in optim/adamw.py: decay on matrices only. The split does not change the cost.
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}]
    kwargs = {"fused": True} if impl == "fused" else {"foreach": impl == "foreach"}
    return torch.optim.AdamW(groups, lr=3e-4, betas=(0.9, 0.95), eps=1e-8, **kwargs)


def bench_training(args: argparse.Namespace, device: torch.device) -> dict:
    cfg = load_model_config(args.model)
    seq_len = args.seq_len or cfg.block_size
    torch.manual_seed(0)
    model = GPT(cfg).to(device).train()
    opt = build_optimizer(model, args.adamw)
    step_model = torch.compile(model) if args.compile else model

    g = torch.Generator(device="cpu").manual_seed(0)
    idx = torch.randint(0, cfg.vocab_size, (args.batch_size, seq_len + 1), generator=g).to(device)
    x, y = idx[:, :-1].contiguous(), idx[:, 1:].contiguous()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        _, loss = step_model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
        opt.step()

    t0 = time.perf_counter()
    for _ in range(args.warmup):  # includes torch.compile's compilation with --compile
        step()
    warmup_s = time.perf_counter() - t0
    times = []
    for _ in range(args.steps):
        sync(device)
        t0 = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - t0)

    tokens = args.batch_size * seq_len
    fpt = flops_per_token(cfg, seq_len)
    step_s = statistics.median(times)
    return {
        "model": cfg.name,
        "non_embedding_params": model.num_parameters(non_embedding=True),
        "flops_per_token": fpt,
        "batch_size": args.batch_size,
        "seq_len": seq_len,
        "step_s_median": step_s,
        "step_s_min": min(times),
        "warmup_s": warmup_s,
        "tokens_per_s": tokens / step_s,
        "achieved_tflops": fpt * tokens / step_s / 1e12,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Training-step tokens/s and MFU for a GPT-2 model config")
    p.add_argument("--model", default="configs/model/gpt2-mini.yaml", help="YAML path or config name")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=None, help="default: the config's block_size")
    p.add_argument("--steps", type=int, default=10, help="timed steps (median reported)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--adamw", choices=["fused", "foreach", "for-loop"], default="fused")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (forward+backward)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--matmul-size", type=int, default=4096)
    p.add_argument("--matmul-repeats", type=int, default=5)
    p.add_argument("--peak-tflops", type=float, default=None, help="datasheet peak for MFU (GPU)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a summary")
    args = p.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    # Measure the matmul rate before and after the training run; the better of the two is the
    # machine's rate (other processes sharing the cores only ever make a measurement slower).
    mm_before = matmul_tflops(device, args.matmul_size, args.matmul_repeats)
    result = bench_training(args, device)
    mm_after = matmul_tflops(device, args.matmul_size, args.matmul_repeats)
    matmul = max(mm_before, mm_after)
    peak = args.peak_tflops or matmul
    result.update(
        device=str(device),
        threads=torch.get_num_threads(),
        omp_num_threads=os.environ.get("OMP_NUM_THREADS"),
        adamw=args.adamw,
        compile=args.compile,
        torch=torch.__version__,
        matmul_tflops_fp32=matmul,
        matmul_tflops_before_after=[mm_before, mm_after],
        mfu_denominator_tflops=peak,
        mfu=result["achieved_tflops"] / peak,
        # Best step against best matmul: both "least disturbed" figures on a shared machine.
        mfu_best_step=result["achieved_tflops"] * result["step_s_median"] / result["step_s_min"] / peak,
    )
    if args.json:
        print(json.dumps(result))
    else:
        r = result
        print(
            f"{r['model']} ({r['non_embedding_params'] / 1e6:.2f}M non-embedding), batch {r['batch_size']} "
            f"x {r['seq_len']}, {r['device']} {r['threads']} threads, AdamW {r['adamw']}, "
            f"compile={r['compile']} (warm-up {r['warmup_s']:.1f} s)\n"
            f"step {r['step_s_median'] * 1e3:.1f} ms (median, min {r['step_s_min'] * 1e3:.1f}), "
            f"{r['tokens_per_s']:,.0f} tokens/s, {r['achieved_tflops']:.3f} TFLOP/s achieved\n"
            f"fp32 matmul {args.matmul_size}^3: {matmul:.3f} TFLOP/s (before {mm_before:.3f}, "
            f"after {mm_after:.3f}); MFU {r['mfu']:.1%} (best step: {r['mfu_best_step']:.1%})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
