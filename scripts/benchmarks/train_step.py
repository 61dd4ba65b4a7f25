#!/usr/bin/env python
"""The training step with the chunked loss against the plain one (materialized logits + F.cross_entropy,
nanoGPT's formulation), measured in one run, interleaved.

A step: zero grads, forward with loss (reduction sum / tokens, as the trainer), backward, grad-norm
clip, fused AdamW. For each batch size, both variants (same init) take turns: ``--rounds`` rounds of
``--steps`` timed steps each; the median step time of each variant gives tokens/s and the ratio.
MFU: achieved FLOP/s (models.gpt2.flops_per_token) over the fp32 matmul rate measured in the same run
(best of samples before and after the timing).

Peak memory (``--memory``): each variant in a fresh process (glibc told to mmap every allocation of
64 KiB or more, so freed tensors leave the resident set at once): the kernel's resident high-water mark
(VmHWM, reset through /proc/self/clear_refs just before the step) minus the resident size before the
step, i.e. the RSS growth over one step after warm-up. Interleaved, best of ``--memory-repeats``.

    orthogpt-bench-train-step --batch-sizes 8,16,32 --memory
    orthogpt-bench-train-step --batch-sizes 8 --chunk-rows 128,256,512,1024      # pick the CPU default
    orthogpt-bench-train-step --batch-sizes 8 --compile
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time

import torch

from models.gpt2 import GPT, flops_per_token
from scripts.benchmarks.throughput import build_optimizer, load_model_config
from trainer.mfu import measure_matmul_tflops, sync


def variant_config(args, impl: str, rows: int | str):
    return dataclasses.replace(load_model_config(args.model), loss_impl=impl, loss_chunk_rows=rows)


def make_step(cfg, batch: int, seq_len: int, compile_model: bool):
    torch.manual_seed(0)
    model = GPT(cfg).train()
    opt = build_optimizer(model, "fused")
    forward = torch.compile(model) if compile_model else model
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, cfg.vocab_size, (batch, seq_len + 1), generator=g)
    x, y = idx[:, :-1].contiguous(), idx[:, 1:].contiguous()

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        _, loss = forward(x, y, reduction="sum")
        (loss / y.numel()).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
        opt.step()
        return loss.item()

    return step


def timed(step, n: int) -> list[float]:
    times = []
    for _ in range(n):
        sync(torch.device("cpu"))
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return times


def _status_kb(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def memory_probe(args) -> None:
    """Child process: print the RSS growth (MiB) of one step after two warm-up steps."""
    impl, rows = args.probe.split(":")
    cfg = variant_config(args, impl, rows if rows == "auto" else int(rows))
    step = make_step(cfg, args.probe_batch, args.seq_len, False)
    step(), step()
    before = _status_kb("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the resident high-water mark to the current resident size
    step()
    print(json.dumps({"peak_growth_mib": (_status_kb("VmHWM") - before) / 1024}))


def measure_memory(args, impl: str, rows, batch: int) -> float:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    cmd = [sys.executable, "-m", "scripts.benchmarks.train_step", "--model", args.model, "--seq-len",
           str(args.seq_len), "--probe", f"{impl}:{rows}", "--probe-batch", str(batch)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_growth_mib"]


def bench_batch(args, batch: int, rows_list: list, matmul: float) -> list[dict]:
    variants = [("plain", "auto")] + [("chunked", r) for r in rows_list]
    steps = {v: make_step(variant_config(args, *v), batch, args.seq_len, args.compile) for v in variants}
    warm = {}
    for v, step in steps.items():
        t0 = time.perf_counter()
        for _ in range(args.warmup):
            step()
        warm[v] = time.perf_counter() - t0
    times = {v: [] for v in variants}
    for _ in range(args.rounds):  # interleaved: each round times every variant once
        for v, step in steps.items():
            times[v] += timed(step, args.steps)
    memory = {v: [] for v in variants}
    if args.memory:
        for _ in range(args.memory_repeats):
            for v in variants:
                memory[v].append(measure_memory(args, *v, batch))
    cfg = variant_config(args, "plain", "auto")
    fpt, tokens = flops_per_token(cfg, args.seq_len), batch * args.seq_len
    plain_s = statistics.median(times[variants[0]])
    rows = []
    for v in variants:
        step_s = statistics.median(times[v])
        rows.append({
            "batch_size": batch, "seq_len": args.seq_len, "loss_impl": v[0], "chunk_rows": v[1],
            "compile": args.compile, "step_s_median": step_s, "step_s_min": min(times[v]),
            "tokens_per_s": tokens / step_s, "speedup_vs_plain": plain_s / step_s,
            "mfu": fpt * tokens / step_s / 1e12 / matmul, "warmup_s": warm[v],
            "peak_growth_mib": min(memory[v]) if memory[v] else None,
        })
    if args.memory:
        for row in rows:
            row["memory_vs_plain"] = row["peak_growth_mib"] / rows[0]["peak_growth_mib"]
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="gpt2-mini", help="YAML path or a name in configs/model/")
    p.add_argument("--batch-sizes", default="8,16,32")
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--chunk-rows", default="auto", help="comma list of chunked variants' loss_chunk_rows")
    p.add_argument("--steps", type=int, default=3, help="timed steps per variant per round")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--compile", action="store_true", help="torch.compile both variants (Inductor)")
    p.add_argument("--memory", action="store_true", help="also the peak RSS growth of a step (subprocesses)")
    p.add_argument("--memory-repeats", type=int, default=2)
    p.add_argument("--json-out", default=None, help="write the rows as JSON here")
    p.add_argument("--probe", default=None, help=argparse.SUPPRESS)
    p.add_argument("--probe-batch", type=int, default=8, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.probe:
        memory_probe(args)
        return 0
    rows_list = [r if r == "auto" else int(r) for r in args.chunk_rows.split(",")]
    load = os.getloadavg()
    def matmul_rate() -> float:
        return measure_matmul_tflops(torch.device("cpu"), 2048, 3, samples=5, spacing_s=0.2)

    before = matmul_rate()
    results = []
    for batch in map(int, args.batch_sizes.split(",")):
        results += bench_batch(args, batch, rows_list, before)
    matmul = max(before, matmul_rate())  # other load only ever slows a measurement: the best is the machine's
    for row in results:
        row["mfu"] *= before / matmul
    print(f"{args.model}, context {args.seq_len}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"fp32 matmul {matmul:.3f} TFLOP/s, load average {load[0]:.2f} -> {os.getloadavg()[0]:.2f}")
    print("| batch | loss | chunk rows | compile | tokens/s | vs plain | MFU | peak RSS growth (MiB) | vs plain |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        mem = f"{r['peak_growth_mib']:.0f} | {r['memory_vs_plain']:.2f}x" if r["peak_growth_mib"] is not None else "– | –"
        print(f"| {r['batch_size']} | {r['loss_impl']} | {r['chunk_rows']} | {r['compile']} | {r['tokens_per_s']:,.0f} "
              f"| {r['speedup_vs_plain']:.2f}x | {r['mfu']:.1%} | {mem} |")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"load_average": load, "matmul_tflops_fp32": matmul, "rows": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
