"""Distributed optimizer-step benchmark (issue 4): sharded vs replicated Newton-Schulz under FSDP2.

    orthogpt-bench-distributed                  # W=1 and W=2, GPT-2 124M widths, 4 layers
    orthogpt-bench-distributed --layers 12      # all 48 hidden matrices of GPT-2 124M
    orthogpt-bench-distributed --predict-only   # only the H100 scaling model

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

TARGETS = {"w2_vs_w1": 0.53, "flops_imbalance": 1.1, "bytes_vs_theory": 0.10}
# --mode: optim.orthogonalize overrides (sharded = the default: owners, buckets, overlap)
VARIANTS = {"sharded": ["distributed=sharded"], "serial": ["distributed=sharded", "overlap=false"],
            "one_bucket": ["distributed=sharded", "bucket_elements=0", "overlap=false"],
            "big_buckets": ["distributed=sharded", "bucket_elements=16777216"],
            "replicated": ["distributed=replicated"], "row_shards": ["distributed=row_shards"],
            "auto": ["distributed=auto"]}


def gpt2_shapes(width: int, layers: int) -> list[tuple[int, int]]:
    return [(3 * width, width), (width, width), (4 * width, width), (width, 4 * width)] * layers


# ------------------------------------------------------------------------------------ worker side
def worker(args) -> None:
    import torch.distributed as dist
    from torch.distributed.tensor import DTensor

    from models.gpt2 import GPT, GPTConfig
    from optim import build_optimizer
    from optim.config import load_optim_config
    from trainer.distributed import DistributedConfig
    from trainer.distributed import init_distributed
    from trainer.mfu import sync
    from trainer.parallelize import apply_fsdp

    if args.device == "cpu":
        torch.set_num_threads(1)  # each rank stands for one accelerator
    ctx = init_distributed(args.device, "auto")  # gloo on CPU, NCCL on CUDA
    torch.manual_seed(0)
    model = GPT(GPTConfig(name="bench", vocab_size=1024, block_size=64, n_layer=args.layers, n_head=12,
                          n_embd=args.width, dropout=0.0, bias=False, vocab_pad_to=1,
                          loss_impl="plain", loss_chunk_rows="auto"))
    if ctx.distributed:
        dist_cfg = DistributedConfig(backend="auto", dp_replicate=1, dp_shard=-1, param_dtype="float32",
                                     reduce_dtype="float32", reshard_after_forward=True, grad_sync="last_microbatch")
        apply_fsdp(model, ctx.mesh, dist_cfg, ctx.device)
    else:
        model.to(ctx.device)
    cfg = load_optim_config("muon", [f"optim.orthogonalize.{kv}" for kv in VARIANTS[args.mode]])
    optimizer = build_optimizer(model, cfg, ctx.mesh)
    gen = torch.Generator().manual_seed(1 + ctx.rank)
    for p in model.parameters():
        if isinstance(p, DTensor):
            local = torch.randn(p.to_local().shape, generator=gen).to(ctx.device)
            p.grad = DTensor.from_local(local, p.device_mesh, p.placements, run_check=False, shape=p.shape, stride=p.stride())
        else:
            p.grad = torch.randn(p.shape, generator=gen).to(ctx.device)
    times = []
    for _ in range(args.repeats + 1):  # the first is a warm-up
        ctx.barrier()
        start = time.perf_counter()
        optimizer.step()
        sync(ctx.device)
        ctx.barrier()
        times.append(time.perf_counter() - start)
    slowest = torch.tensor(min(times[1:]), device=ctx.device)
    if ctx.distributed:
        dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
    ortho = optimizer.orthogonalizer
    row = {
        "rank": ctx.rank, "world_size": ctx.world_size, "mode": args.mode if ctx.distributed else "local",
        "round": args.round,
        "step_s": slowest.item(), "ns_flops": getattr(ortho, "ns_flops", None),
        "sent_elements": getattr(ortho, "sent_elements", 0),
    }
    with open(args.out, "a") as f:
        f.write(json.dumps(row) + "\n")
    if dist.is_initialized():
        dist.barrier()  # nobody tears down gloo while a peer is still talking to it
        dist.destroy_process_group()


# ------------------------------------------------------------------------------------ driver side
def launch(world_size: int, mode: str, args, out: Path, round_: int = 0) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world_size}",
           "-m", "scripts.benchmarks.distributed", "--worker", "--mode", mode, "--layers", str(args.layers), "--width", str(args.width),
           "--repeats", str(args.repeats), "--out", str(out), "--round", str(round_), "--device", args.device]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run(cmd, check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)


def measure(args) -> None:
    out = Path(args.out or "/tmp/bench_distributed.jsonl")
    out.unlink(missing_ok=True)
    for round_ in range(args.rounds):  # interleaved: every variant once per round; the min over rounds is kept
        launch(1, "sharded", args, out, round_)  # one rank: the local orthogonalizer
        for mode in args.modes.split(","):
            launch(args.world_size, mode, args, out, round_)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    best: dict[tuple, dict] = {}
    for r in rows:
        key = (r["world_size"], r["mode"], r["rank"])
        if key not in best or r["step_s"] < best[key]["step_s"]:
            best[key] = r
    rows = list(best.values())
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
        theory = (W - 1) / W * matrix_elements if r["mode"] == "replicated" else 2 * (W - 1) / W * matrix_elements / W
        flops = r["ns_flops"] if r["ns_flops"] is not None else total_flops
        sent = f"{r['sent_elements']:,}" if W > 1 else "0"
        ratio = f"{r['sent_elements'] / theory:.3f}" if W > 1 else "-"
        print(f"| {W} | {r['mode']} | {r['rank']} | {r['step_s']:.3f} | {r['step_s'] / w1:.2f}x | "
              f"{flops / 1e9:.1f} | {flops / (total_flops / W):.3f} | {sent} | {ratio} |")
    print(f"targets: sharded (overlapped) W=2 step <= {TARGETS['w2_vs_w1']}x W=1; NS FLOPs per rank <= "
          f"{TARGETS['flops_imbalance']} x total/W; sharded bytes within {TARGETS['bytes_vs_theory']:.0%} of theory")


def predict(args) -> None:
    """Seconds per optimizer step for NS + exchange on H100s: a stated model, not a measurement
    (optim.orthogonalize.cost_model: its H100 rates, bf16 NS at 50% of peak)."""
    from optim.orthogonalize.cost_model import H100_CLUSTER, H100_NODE, choose_modes, predict_step

    print(f"# H100 model (optim/orthogonalize/cost_model.py): NS at {H100_NODE.flop_rate / 1e12:.0f} TFLOP/s; "
          f"NVLink {H100_NODE.bandwidth / 1e9:.0f} GB/s per GPU (W<=8), InfiniBand {H100_CLUSTER.bandwidth / 1e9:.0f} "
          f"GB/s (W>8); {H100_NODE.peer_latency * 1e6:.0f} us per peer per all-to-all, "
          f"{H100_CLUSTER.hop_latency * 1e6:.0f} us per all-reduce hop (2 log2 W hops)")
    print("| model | W | matrices | owners: busiest GFLOP | owners (ms) | row shards: busiest GFLOP | row shards (ms) "
          "| auto picks | replicated (ms) |")
    print("|---|---|---|---|---|---|---|---|---|")
    def anything(rows: int, cols: int) -> bool:
        return True
    for name, width, layers in (("GPT-2 124M", 768, 12), ("GPT-2 1.5B", 1600, 48)):
        shapes = gpt2_shapes(width, layers)
        total = sum(newton_schulz_flops(r, c) for r, c in shapes)
        elements = sum(r * c for r, c in shapes)
        for W in (8, 64, 512):
            model = H100_NODE if W <= 8 else H100_CLUSTER
            owner = predict_step(shapes, ["owner"] * len(shapes), W, newton_schulz_flops, 5, model)
            rows = predict_step(shapes, ["row_shards"] * len(shapes), W, newton_schulz_flops, 5, model)
            picked = choose_modes(shapes, W, newton_schulz_flops, 5, anything, model)
            replicated = total / model.flop_rate + (W - 1) / W * elements * 2 / model.bandwidth + (W - 1) * model.peer_latency
            print(f"| {name} | {W} | {len(shapes)} | {owner.flops_busiest_rank / 1e9:.1f} | {owner.seconds * 1e3:.2f} | "
                  f"{rows.flops_busiest_rank / 1e9:.1f} | {rows.seconds * 1e3:.2f} | "
                  f"{picked.count('row_shards')} row shards | {replicated * 1e3:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--mode", default="sharded", choices=sorted(VARIANTS))
    parser.add_argument("--modes", default="sharded,serial,one_bucket,replicated,row_shards",
                        help="W=2 variants to time (comma-separated, see VARIANTS)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (min kept)")
    parser.add_argument("--round", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--ns-efficiency", type=float, default=0.5)
    parser.add_argument("--predict-only", action="store_true")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="cuda: NCCL, one GPU per rank")
    parser.add_argument("--world-size", type=int, default=2, help="ranks of the distributed variants")
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
