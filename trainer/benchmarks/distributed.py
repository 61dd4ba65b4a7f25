"""Distributed optimizer-step benchmark (issue 4): sharded vs replicated Newton-Schulz under FSDP2.

    python scripts/bench_distributed.py                  # W=1 and W=2, GPT-2 124M widths, 4 layers
    python scripts/bench_distributed.py --layers 12      # all 48 hidden matrices of GPT-2 124M
    python scripts/bench_distributed.py --predict-only   # only the H100 scaling model

Launches torchrun itself (gloo on CPU, one thread per rank: each rank stands for one accelerator,
so W=2 has twice the compute of W=1, as on a real cluster). Each rank builds a GPT-2 of ``--layers``
blocks at width 768 (the 124M matrices: c_attn 2304x768, c_proj 768x768, c_fc 3072x768,
mlp c_proj 768x3072; vocabulary 1024 so the AdamW part stays small), shards it with the trainer's
FSDP2 code, sets random gradients and times ``optimizer.step()`` of Muon (min over repeats, barrier
to barrier, slowest rank). Per rank it reports the NS FLOPs it ran and the matrix elements it sent
to other ranks, against the theory 2 (W-1)/W * M/W for M matrix elements.

The H100 model (``predict``) states its inputs: bf16 NS at a fraction of peak, all-to-all at NVLink
bandwidth inside a node and InfiniBand bandwidth across nodes, plus a per-peer latency.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]  # the checkout (configs/, train.py)

from optim.orthogonalize.newton_schulz import newton_schulz_flops
from optim.orthogonalize.exchange import assign_owners, flops_per_rank

TARGETS = {"w2_vs_w1": 0.6, "flops_imbalance": 1.1, "bytes_vs_theory": 0.10}


def gpt2_shapes(width: int, layers: int) -> list[tuple[int, int]]:
    return [(3 * width, width), (width, width), (4 * width, width), (width, 4 * width)] * layers


# ------------------------------------------------------------------------------------ worker side
def worker(args) -> None:
    import torch.distributed as dist
    from torch.distributed.tensor import DTensor

    from models.gpt2 import GPT, GPTConfig
    from optim import build_optimizer
    from optim.config import load_optim_config
    from trainer.config import DistributedConfig
    from trainer.distributed import init_distributed
    from trainer.parallelize import apply_fsdp

    torch.set_num_threads(1)
    ctx = init_distributed("cpu", "gloo")
    torch.manual_seed(0)
    model = GPT(GPTConfig(name="bench", vocab_size=1024, block_size=64, n_layer=args.layers, n_head=12,
                          n_embd=args.width, dropout=0.0, bias=False, vocab_pad_to=1,
                          loss_impl="plain", loss_chunk_rows="auto"))
    if ctx.distributed:
        dist_cfg = DistributedConfig(backend="gloo", dp_replicate=1, dp_shard=-1, param_dtype="float32",
                                     reduce_dtype="float32", reshard_after_forward=True, grad_sync="last_microbatch")
        apply_fsdp(model, ctx.mesh, dist_cfg, ctx.device)
    cfg = load_optim_config("muon", [f"optim.orthogonalize.distributed={args.mode}"])
    optimizer = build_optimizer(model, cfg, ctx.mesh)
    gen = torch.Generator().manual_seed(1 + ctx.rank)
    for p in model.parameters():
        if isinstance(p, DTensor):
            local = torch.randn(p.to_local().shape, generator=gen)
            p.grad = DTensor.from_local(local, p.device_mesh, p.placements, run_check=False, shape=p.shape, stride=p.stride())
        else:
            p.grad = torch.randn(p.shape, generator=gen)
    times = []
    for _ in range(args.repeats + 1):  # the first is a warm-up
        ctx.barrier()
        start = time.perf_counter()
        optimizer.step()
        ctx.barrier()
        times.append(time.perf_counter() - start)
    slowest = torch.tensor(min(times[1:]))
    if ctx.distributed:
        dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
    ortho = optimizer.orthogonalizer
    row = {
        "rank": ctx.rank, "world_size": ctx.world_size, "mode": args.mode if ctx.distributed else "local",
        "step_s": slowest.item(), "ns_flops": getattr(ortho, "ns_flops", None),
        "sent_elements": getattr(ortho, "sent_elements", 0),
    }
    with open(args.out, "a") as f:
        f.write(json.dumps(row) + "\n")
    if dist.is_initialized():
        dist.destroy_process_group()


# ------------------------------------------------------------------------------------ driver side
def launch(world_size: int, mode: str, args, out: Path) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world_size}",
           "-m", "trainer.benchmarks.distributed", "--worker", "--mode", mode, "--layers", str(args.layers), "--width", str(args.width),
           "--repeats", str(args.repeats), "--out", str(out)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run(cmd, check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)


def measure(args) -> None:
    out = Path(args.out or "/tmp/bench_distributed.jsonl")
    out.unlink(missing_ok=True)
    launch(1, "sharded", args, out)  # one rank: the local orthogonalizer
    for mode in ("sharded", "replicated"):
        launch(2, mode, args, out)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    shapes = gpt2_shapes(args.width, args.layers)
    total_flops = sum(newton_schulz_flops(r, c) for r, c in shapes)
    matrix_elements = sum(r * c for r, c in shapes)
    w1 = next(r["step_s"] for r in rows if r["world_size"] == 1)
    print(f"# {args.layers} layers x width {args.width}: {len(shapes)} matrices, M = {matrix_elements:,} elements, "
          f"NS {total_flops / 1e9:.1f} GFLOP/step; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, torch {torch.__version__}, one thread per rank")
    print("| W | mode | rank | step (s) | vs W=1 | NS GFLOP (rank) | vs total/W | elements sent | vs theory |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: (r["world_size"], r["mode"], r["rank"])):
        W = r["world_size"]
        theory = 2 * (W - 1) / W * matrix_elements / W if r["mode"] == "sharded" else (W - 1) / W * matrix_elements
        flops = r["ns_flops"] if r["ns_flops"] is not None else total_flops
        sent = f"{r['sent_elements']:,}" if W > 1 else "0"
        ratio = f"{r['sent_elements'] / theory:.3f}" if W > 1 else "-"
        print(f"| {W} | {r['mode']} | {r['rank']} | {r['step_s']:.3f} | {r['step_s'] / w1:.2f}x | "
              f"{flops / 1e9:.1f} | {flops / (total_flops / W):.3f} | {sent} | {ratio} |")
    print(f"targets: sharded W=2 step <= {TARGETS['w2_vs_w1']}x W=1; NS FLOPs per rank <= "
          f"{TARGETS['flops_imbalance']} x total/W; sharded bytes within {TARGETS['bytes_vs_theory']:.0%} of theory")


def predict(args) -> None:
    """Seconds per optimizer step for NS + exchange on H100s: a stated model, not a measurement."""
    peak, efficiency = 989e12, args.ns_efficiency  # H100 SXM dense bf16
    nvlink, ib, latency = 450e9, 50e9, 10e-6  # B/s per GPU one direction; 400 Gb/s NIC per GPU; s per peer
    print(f"# H100 model: NS in bf16 at {efficiency:.0%} of {peak / 1e12:.0f} TFLOP/s; exchange in bf16 over "
          f"NVLink {nvlink / 1e9:.0f} GB/s (W<=8) or InfiniBand {ib / 1e9:.0f} GB/s per GPU (W>8), "
          f"{latency * 1e6:.0f} us per peer per all-to-all")
    print("| model | W | matrices | NS/rank sharded (ms) | exchange sharded (ms) | NS replicated (ms) | gather replicated (ms) |")
    print("|---|---|---|---|---|---|---|")
    for name, width, layers in (("GPT-2 124M", 768, 12), ("GPT-2 1.5B", 1600, 48)):
        shapes = gpt2_shapes(width, layers)
        elements = sum(r * c for r, c in shapes)
        total = sum(newton_schulz_flops(r, c) for r, c in shapes)
        for W in (8, 64, 512):
            busiest = max(flops_per_rank(shapes, assign_owners(shapes, W), W))
            bandwidth = nvlink if W <= 8 else ib
            sharded_bytes = 2 * (W - 1) / W * elements / W * 2
            replicated_bytes = (W - 1) / W * elements * 2
            ns = busiest / (peak * efficiency)
            comm = sharded_bytes / bandwidth + 2 * latency * (W - 1)
            print(f"| {name} | {W} | {len(shapes)} | {ns * 1e3:.2f} | {comm * 1e3:.2f} | "
                  f"{total / (peak * efficiency) * 1e3:.2f} | {(replicated_bytes / bandwidth + latency * (W - 1)) * 1e3:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--mode", default="sharded", choices=["sharded", "replicated"])
    parser.add_argument("--ns-efficiency", type=float, default=0.5)
    parser.add_argument("--predict-only", action="store_true")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    if not args.predict_only:
        measure(args)
    predict(args)


if __name__ == "__main__":
    main()
