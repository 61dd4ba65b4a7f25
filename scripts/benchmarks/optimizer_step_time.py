"""Training step per optimizer on the current device: tokens/s, MFU, Newton-Schulz time, peak memory.

The GPU acceptance run (scripts.gpu_check) calls this once per machine; it also runs on CPU (tiny
sizes, the dry run). The model is built and compiled once; each optimizer starts from the same
initial weights, takes ``--warmup`` untimed steps (compilation, lazy state) and ``--steps`` timed
ones: zero grads, forward + loss under autocast, backward, clip, optimizer step, as the trainer does.

NS time: the orthogonalizer's ``orthogonalize_all`` is wrapped to time itself (device-synchronized
before and after), so the table shows the milliseconds of the whole-matrix transform per step and
its share of the step. Peak memory: ``torch.cuda.max_memory_allocated`` per optimizer on CUDA; on
CPU the process's peak RSS (it never resets, so rows after the first show the running peak).

    python -m scripts.benchmarks.optimizer_step_time --model gpt2 --optimizers adamw,muon --steps 30 --compile
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time

import torch

from models.gpt2 import GPT, flops_per_token
from optim import build_optimizer
from optim.config import load_optim_config
from optim.registry import OPTIMIZERS
from scripts.benchmarks.throughput import load_model_config
from trainer.mfu import sync

ALL_OPTIMIZERS = tuple(OPTIMIZERS)  # the registry's, in its order


class TimedOrthogonalizer:
    """Wraps an orthogonalizer; adds the seconds of each ``orthogonalize_all`` call to ``seconds``."""

    def __init__(self, inner, device: torch.device):
        self.inner, self.device, self.seconds = inner, device, 0.0

    def orthogonalize_all(self, blocks, full_shapes, **states):  # states: owner-resident state (ARO)
        sync(self.device)
        start = time.perf_counter()
        out = self.inner.orthogonalize_all(blocks, full_shapes, **states)
        sync(self.device)
        self.seconds += time.perf_counter() - start
        return out


def peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def bench(args: argparse.Namespace) -> list[dict]:
    device = torch.device(args.device)
    cfg = load_model_config(args.model)
    seq_len = args.seq_len or cfg.block_size
    torch.manual_seed(0)
    model = GPT(cfg).to(device).train()
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
    step_model = torch.compile(model) if args.compile else model
    dtype = torch.bfloat16 if args.dtype == "bfloat16" else torch.float32
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, cfg.vocab_size, (args.batch_size, seq_len + 1), generator=g).to(device)
    x, y = idx[:, :-1].contiguous(), idx[:, 1:].contiguous()
    tokens = args.batch_size * seq_len
    fpt = flops_per_token(cfg, seq_len)
    rows = []
    for name in args.optimizers.split(","):
        model.load_state_dict(initial)
        overrides = [] if name == "adamw" else [f"optim.orthogonalize.compute_dtype={args.ns_dtype}"]
        opt = build_optimizer(model, load_optim_config(name, overrides))
        timer = None
        if hasattr(opt, "orthogonalizer"):
            timer = opt.orthogonalizer = TimedOrthogonalizer(opt.orthogonalizer, device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

        def step() -> float:
            opt.zero_grad(set_to_none=True)
            with autocast:
                _, loss = step_model(x, y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
            opt.step()
            return loss.item()

        start = time.perf_counter()
        for _ in range(args.warmup):
            first_loss = step()
        warmup_s = time.perf_counter() - start
        if timer:
            timer.seconds = 0.0
        times = []
        for _ in range(args.steps):
            sync(device)
            start = time.perf_counter()
            last_loss = step()
            sync(device)
            times.append(time.perf_counter() - start)
        step_s = statistics.median(times)
        ns_ms = timer.seconds / args.steps * 1e3 if timer else 0.0
        rows.append({
            "optimizer": name, "step_ms": step_s * 1e3, "tokens_per_s": tokens / step_s,
            "achieved_tflops": fpt * tokens / step_s / 1e12, "ns_ms": ns_ms, "ns_share": ns_ms / (step_s * 1e3),
            "peak_memory_gib": peak_memory_bytes(device) / 2**30, "warmup_s": warmup_s,
            "loss_first": first_loss, "loss_last": last_loss, "finite": bool(torch.isfinite(torch.tensor(last_loss))),
        })
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        del opt
    for row in rows:
        row["mfu"] = row["achieved_tflops"] / args.peak_tflops if args.peak_tflops else None
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="gpt2", help="YAML path or a name in configs/model/")
    p.add_argument("--optimizers", default=",".join(ALL_OPTIMIZERS))
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=None)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16", help="autocast dtype")
    p.add_argument("--ns-dtype", default="auto", help="optim.orthogonalize.compute_dtype")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--peak-tflops", type=float, default=None, help="MFU denominator (H100/H200 bf16 dense: 989)")
    p.add_argument("--json-out", default=None, help="write the rows as JSON here")
    args = p.parse_args(argv)
    rows = bench(args)
    text = json.dumps({"device": args.device, "model": args.model, "batch_size": args.batch_size,
                       "compile": args.compile, "dtype": args.dtype, "torch": torch.__version__, "rows": rows})
    if args.json_out:
        with open(args.json_out, "w") as f:
            f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
