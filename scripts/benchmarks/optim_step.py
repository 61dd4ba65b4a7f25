"""Optimizer step benchmark (issue 3): step time, state bytes and Newton-Schulz FLOP rate, one run.

    orthogpt-bench-optim                 # small GPT-2-shaped set, seconds
    orthogpt-bench-optim --shapes gpt2   # GPT-2 124M hidden matrices (12 layers x 4)
    orthogpt-bench-optim --embedding     # GPT-2's tied wte (50304 x 768): AdamW against RowNormM

Matrices use the nn.Linear (out, in) layout: c_attn (3d, d), attn c_proj (d, d), c_fc (4d, d),
mlp c_proj (d, 4d). Reports, per optimizer: min step time over the repeats (gradients are set
outside the timed region), the ratio to AdamW, own Muon vs torch.optim.Muon, the others vs own Muon,
optimizer-state bytes per parameter against the spec; then Newton-Schulz achieved GFLOP/s (our
``orthogonalize`` on the same-shape stacks the optimizer uses) against the fp32 matmul rate of
this machine measured in the same run. Times are minima because other processes share the CPU.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import time

import torch


from optim.config import load_optim_config
from optim.orthogonalize.from_mesh import MatrixDistribution
from optim.build import matrix_transform
from optim.orthogonalize.orthogonalizer import LocalOrthogonalizer
from optim.orthogonalize.newton_schulz import newton_schulz_flops, orthogonalize
from optim.orthogonalized_optimizer import OrthogonalizedOptimizer
from optim.registry import OPTIMIZERS

SHAPE_SETS = {"small": (256, 2), "mini": (384, 6), "gpt2": (768, 12)}  # (width d, layers); mini: gpt2-mini
TARGETS = {"muon_vs_torch": 0.25, "family_vs_muon": 1.10, "ns_vs_matmul": 0.70}


def gpt2_matrix_shapes(width: int, layers: int) -> list[tuple[int, int]]:
    return [(3 * width, width), (width, width), (4 * width, width), (width, 4 * width)] * layers


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up (allocations, lazy init)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


# the wider family: (registry name, optim.matrix overrides)
FAMILY = {"spectral_msgd": ("spectral_msgd", {}), "spectral_adam": ("spectral_adam", {}),
          "spectral_adam_p0.25": ("spectral_adam", {"power": 0.25}), "auon": ("auon", {}),
          "auon_hybrid": ("auon", {"variant": "hybrid"}), "root": ("root", {}), "rownorm": ("rownorm", {}),
          "schatten": ("schatten", {}), "aro": ("aro", {}), "fismo": ("fismo", {}),
          "fismo_k10": ("fismo", {"precondition_every": 10})}  # no activations here: p stays p_init (scripts/benchmarks/schatten_estimation.py measures them)
TARGETS["spectral_vs_flops"] = 1.10  # step time / (its transform FLOPs at the fp32 matmul rate)
TARGETS["auon_vs_muon"] = 0.25


def make_optimizer(name: str, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    if name == "adamw":
        return torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1, foreach=True)
    if name == "torch_muon":
        return torch.optim.Muon(params, lr=0.02, weight_decay=0.1, momentum=0.95, nesterov=True)
    group = {"params": params, "param_names": [f"m{i}" for i in range(len(params))], "role": "matrix",
             "lr": 0.02, "weight_decay": 0.1}
    if name in FAMILY:
        rule_name, overrides = FAMILY[name]
        config = load_optim_config(rule_name, [f"optim.matrix.{k}={v}" for k, v in overrides.items()])
        rule = OPTIMIZERS[rule_name].rule(config.rule)
        local = LocalOrthogonalizer(transform=matrix_transform(rule, config.orthogonalize, torch.device("cpu")))
        return OrthogonalizedOptimizer([group], rule, distribution=MatrixDistribution(local))
    compute_dtype = torch.bfloat16 if name.endswith("_bf16") else torch.float32
    rule_name = name.removesuffix("_bf16")
    rule = OPTIMIZERS[rule_name].rule(load_optim_config(rule_name).rule)  # the YAML's (authors') values
    orthogonalizer = LocalOrthogonalizer(compute_dtype=compute_dtype)
    return OrthogonalizedOptimizer([group], rule, distribution=MatrixDistribution(orthogonalizer))


def transform_flops(name: str, shapes) -> int:
    opt = make_optimizer(name, [torch.nn.Parameter(torch.zeros(1, 1))])
    return sum(opt.orthogonalizer.flops(r, c) for r, c in shapes)


def state_bytes(opt: torch.optim.Optimizer) -> int:
    """Per-parameter state plus owner-resident whole-matrix state (ARO's rotations)."""
    held = getattr(getattr(opt, "owner_state", None), "held", {})
    return sum(v.numel() * v.element_size() for s in [*opt.state.values(), *held.values()] for v in s.values()
               if torch.is_tensor(v))


def expected_state_bytes(name: str, shapes: list[tuple[int, int]]) -> int:
    """What OPTIMIZERS.md implies (fp32): M per matrix + the rule's extra state + the step scalar."""
    extra = {"muon": lambda r, c: 0, "namo": lambda r, c: 1, "adago": lambda r, c: 1,
             "namo_d": lambda r, c: c, "normuon": lambda r, c: r, "adamw": lambda r, c: r * c,
             "spectral_msgd": lambda r, c: 0, "spectral_adam": lambda r, c: r * c,  # M; or m and v
             "spectral_adam_p0.25": lambda r, c: r * c, "auon": lambda r, c: 0, "auon_hybrid": lambda r, c: 0,
             "root": lambda r, c: 0, "rownorm": lambda r, c: 0,  # ROOT, RowNormM: M only
             "schatten": lambda r, c: 2 * c + 3,  # M + two spectra (cols) + p, count, hook slot
             "aro": lambda r, c: min(r, c) ** 2,  # M + the fp32 rotation of the residual (short) side
             # whitened M + P and Q as eigenpairs (r^2 + r, c^2 + c) + an fp64 step counter (2 x 4 B)
             "fismo": lambda r, c: r * r + r + c * c + c + 2, "fismo_k10": lambda r, c: r * r + r + c * c + c + 2}
    return sum(4 * (r * c + extra[name](r, c) + 1) for r, c in shapes)


def interleaved_step_times(opts: dict, repeats: int) -> dict[str, list[float]]:
    """Seconds of each optimizer's step over ``repeats`` rounds after a warm-up round; each round steps
    every optimizer once, so CPU contention from other processes hits all of them alike."""
    times: dict[str, list[float]] = {name: [] for name in opts}
    for round_ in range(repeats + 1):  # round 0 is the warm-up
        for name, opt in opts.items():
            t0 = time.perf_counter()
            opt.step()
            if round_:
                times[name].append(time.perf_counter() - t0)
    return times


def bench_steps(shapes, names, repeats):
    """Min step time per optimizer; rounds interleave the optimizers so CPU contention from other
    processes hits all of them alike. Parameters and gradients are shared (values do not matter)."""
    g = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(*s, generator=g) * 0.02) for s in shapes]
    grads = [torch.randn(*s, generator=g) for s in shapes]
    for p, gr in zip(params, grads):
        p.grad = gr
    opts = {name: make_optimizer(name, params) for name in names}
    times = interleaved_step_times(opts, repeats)
    results = {name: {"seconds": min(times[name]), "state_bytes": state_bytes(opts[name])} for name in names}
    for name in names:
        print(f"  {name:10s} step min {results[name]['seconds'] * 1e3:9.1f} ms  "
              f"median {sorted(times[name])[len(times[name]) // 2] * 1e3:9.1f} ms", flush=True)
    return results


def matmul_rate(width: int, repeats: int, dtype: torch.dtype = torch.float32) -> float:
    """GFLOP/s of one (d x d) @ (d x 4d) product: the dominant GEMM size of NS here."""
    a, b = torch.randn(width, width, dtype=dtype), torch.randn(width, 4 * width, dtype=dtype)
    seconds = best_time(lambda: torch.mm(a, b), repeats * 3)
    return 2 * width * width * 4 * width / seconds / 1e9


def ns_rate(shapes, repeats) -> tuple[float, float]:
    """(GFLOP/s, total GFLOP) of orthogonalize over the optimizer's same-shape stacks."""
    stacks = {}
    for s in shapes:
        stacks[s] = stacks.get(s, 0) + 1
    inputs = [torch.randn(n, *s) for s, n in stacks.items()]
    flops = sum(n * newton_schulz_flops(*s) for s, n in stacks.items())
    seconds = best_time(lambda: [orthogonalize(x) for x in inputs], repeats)
    return flops / seconds / 1e9, flops / 1e9


def bench_embedding(repeats: int) -> None:
    """The embedding group's step on GPT-2's padded tied wte: AdamW (torch, foreach) against RowNormM as
    the embedding rule (uncentered; centered head), rounds interleaved; state bytes per parameter."""
    from optim.rules.rownorm import RowNormHParams, RowNormRule

    g = torch.Generator().manual_seed(0)
    wte = torch.nn.Parameter(torch.randn(50304, 768, generator=g) * 0.02)
    wte.grad = torch.randn(50304, 768, generator=g)
    opts = {"adamw": torch.optim.AdamW([wte], lr=6e-4, betas=(0.9, 0.95), weight_decay=0.0, foreach=True)}
    for name, center in (("rownorm", False), ("rownorm_centered", True)):
        rule = RowNormRule(RowNormHParams(momentum=0.95, orientation="row", center=center))
        group = {"params": [wte], "param_names": ["wte"], "role": "matrix", "lr": 5e-3, "weight_decay": 0.0}
        opts[name] = OrthogonalizedOptimizer([group], rule)
    times = interleaved_step_times(opts, repeats)
    print("\n| embedding rule (50304 x 768) | step min (ms) | median (ms) | vs AdamW | state B/param |")
    print("|---|---|---|---|---|")
    for name, opt in opts.items():
        best, median = min(times[name]), sorted(times[name])[len(times[name]) // 2]
        print(f"| {name} | {best * 1e3:.1f} | {median * 1e3:.1f} | {best / min(times['adamw']):.2f}x | "
              f"{state_bytes(opt) / wte.numel():.5f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", choices=sorted(SHAPE_SETS), default="small")
    parser.add_argument("--repeats", type=int, default=None, help="timed steps per optimizer (min is kept)")
    parser.add_argument("--embedding", action="store_true", help="only the embedding rules on GPT-2's wte")
    parser.add_argument("--only", default=None, help="comma-separated rows (adamw and muon always): their table only")
    args = parser.parse_args()
    if args.embedding:
        bench_embedding(args.repeats or 10)
        return
    width, layers = SHAPE_SETS[args.shapes]
    repeats = args.repeats or (3 if args.shapes == "gpt2" else 10)
    shapes = gpt2_matrix_shapes(width, layers)
    numel = sum(r * c for r, c in shapes)
    print(f"# bench_optim --shapes {args.shapes}: {len(shapes)} matrices, {numel / 1e6:.2f}M params, "
          f"{datetime.date.today()}, {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}")

    # muon_bf16: own Muon with the NS in bf16 (as torch.optim.Muon), for the like-for-like comparison
    # every registered optimizer (a new registry row is benchmarked without an edit here) + named variants
    names = ["adamw", "torch_muon", "muon", "muon_bf16", *(n for n in OPTIMIZERS if n not in ("adamw", "muon")),
             *(v for v in FAMILY if v not in OPTIMIZERS)]
    if args.only:  # a few rows, more rounds: a steadier ratio on a shared machine
        names = ["adamw", "muon", *(n for n in args.only.split(",") if n not in ("adamw", "muon"))]
    res = bench_steps(shapes, names, repeats)
    muon = res["muon"]["seconds"]
    print("\n| optimizer | step (ms) | vs AdamW | vs own Muon | state B/param | spec B/param |")
    print("|---|---|---|---|---|---|")
    verdicts = []
    for name in names:
        r = res[name]
        spec = "-" if name in ("torch_muon", "muon_bf16") else f"{expected_state_bytes(name, shapes) / numel:.5f}"
        print(f"| {name} | {r['seconds'] * 1e3:.1f} | {r['seconds'] / res['adamw']['seconds']:.2f}x | "
              f"{r['seconds'] / muon:.3f}x | {r['state_bytes'] / numel:.5f} | {spec} |")
        if name not in ("torch_muon", "muon_bf16"):
            verdicts.append((f"state bytes {name} == spec", r["state_bytes"] == expected_state_bytes(name, shapes)))
        if name in ("namo", "namo_d", "adago", "normuon", "root"):
            verdicts.append((f"{name} <= {TARGETS['family_vs_muon']}x own Muon ({r['seconds'] / muon:.3f}x)",
                             r["seconds"] / muon <= TARGETS["family_vs_muon"]))
    if args.only:
        for text, ok in verdicts:
            print(f"- {'met' if ok else 'NOT met'}: {text}")
        return
    for variant in ("muon", "muon_bf16"):
        ratio = res[variant]["seconds"] / res["torch_muon"]["seconds"]
        verdicts.insert(0, (f"own {variant} <= {TARGETS['muon_vs_torch']}x torch.optim.Muon ({ratio:.3f}x)",
                            ratio <= TARGETS["muon_vs_torch"]))

    mm = matmul_rate(width, repeats)
    for name in ("spectral_msgd", "spectral_adam", "spectral_adam_p0.25"):
        flops = transform_flops(name, shapes)
        ideal = flops / (mm * 1e9)
        ratio = res[name]["seconds"] / ideal
        print(f"{name}: transform {flops / 1e9:.2f} GFLOP per step = {flops / transform_flops('muon', shapes):.2f}x "
              f"Muon's NS; {ideal * 1e3:.1f} ms at the fp32 matmul rate; step {ratio:.2f}x that")
        verdicts.append((f"{name} <= {TARGETS['spectral_vs_flops']}x its FLOPs' time ({ratio:.2f}x)",
                         ratio <= TARGETS["spectral_vs_flops"]))
    auon = res["auon"]["seconds"] / muon
    verdicts.append((f"auon <= {TARGETS['auon_vs_muon']}x own Muon ({auon:.3f}x)", auon <= TARGETS["auon_vs_muon"]))
    mm_bf16 = matmul_rate(width, repeats, torch.bfloat16)
    ns, gflop = ns_rate(shapes, repeats)
    print(f"\nfp32 matmul ({width}x{width} @ {width}x{4 * width}): {mm:.1f} GFLOP/s; bf16: {mm_bf16:.1f} GFLOP/s")
    print(f"Newton-Schulz ({gflop:.2f} GFLOP per step): {ns:.1f} GFLOP/s = {ns / mm:.0%} of matmul")
    print(f"Muon step spends {gflop / ns / muon:.0%} of its time in NS at that rate")
    verdicts.append((f"NS >= {TARGETS['ns_vs_matmul']:.0%} of fp32 matmul ({ns / mm:.0%})",
                     ns / mm >= TARGETS["ns_vs_matmul"]))
    print()
    for text, ok in verdicts:
        print(f"- {'met' if ok else 'NOT met'}: {text}")


if __name__ == "__main__":
    main()
