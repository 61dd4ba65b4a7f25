"""Orthogonalization benchmark (issue 14): the default Muon step against torch.optim.Muon, the
coefficient schedules and Gram Newton-Schulz (band, FLOPs, time), NS against the matmul rate.

    orthogpt-bench-orthogonalize                 # one GPT-2 124M block (4 matrices), quick
    orthogpt-bench-orthogonalize --layers 12     # all 48 matrices of GPT-2 124M

Everything is timed in one process, interleaved round by round (min over rounds), so load from other
tenants hits every variant alike. ``auto`` is resolved here (optim.dtypes.resolve_matmul_dtype): bf16
on CPUs with AMX / AVX512-BF16, fp32 elsewhere. The band is the [min, max] singular value of the
output on gradient-like matrices (768 x 3072 and 3072 x 768, singular values log-spaced over 1 .. 1e-3,
so normalized ones reach ~2e-4), the accuracy that matters for the update.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time

import torch

from optim.dtypes import bf16_matmul_is_fast, resolve_matmul_dtype
from optim.orthogonalize.coefficients import iteration_schedule
from optim.orthogonalize.newton_schulz import NewtonSchulz
from optim.orthogonalize.newton_schulz import method_flops

TARGETS = {"default_vs_torch": 0.6, "fastest_vs_torch": 0.5, "ns_vs_matmul": 0.70}
# (label, schedule, steps, method)
VARIANTS = [("fixed x5 (default)", "fixed", 5, "newton_schulz"), ("polar_express x5", "polar_express", 5, "newton_schulz"),
            ("polar_express x4", "polar_express", 4, "newton_schulz"), ("polar_express x6", "polar_express", 6, "newton_schulz"),
            ("gram fixed x5", "fixed", 5, "gram_newton_schulz"), ("gram polar_express x5", "polar_express", 5, "gram_newton_schulz")]


def gpt2_shapes(width: int, layers: int) -> list[tuple[int, int]]:
    return [(3 * width, width), (width, width), (4 * width, width), (width, 4 * width)] * layers


def transform(schedule: str, steps: int, method: str, dtype: torch.dtype) -> NewtonSchulz:
    s = iteration_schedule(schedule, steps)
    return NewtonSchulz(steps=steps, coefficients=s.triplets, compute_dtype=dtype, method=method, norm_scale=s.norm_scale)


def band(ns: NewtonSchulz) -> tuple[float, float]:
    g = torch.Generator().manual_seed(0)
    lo, hi = float("inf"), 0.0
    for shape in ((768, 3072), (3072, 768)):
        k = min(shape)
        U, _ = torch.linalg.qr(torch.randn(shape[0], k, generator=g, dtype=torch.float64))
        V, _ = torch.linalg.qr(torch.randn(shape[1], k, generator=g, dtype=torch.float64))
        X = ((U * torch.logspace(0, -3, k, dtype=torch.float64)) @ V.T).float()
        s = torch.linalg.svdvals(ns(X.unsqueeze(0))[0].double())
        lo, hi = min(lo, s.min().item()), max(hi, s.max().item())
    return lo, hi


def muon_step(params, ns: NewtonSchulz):
    """Own Muon with this transform (the registry rule, the YAML's values)."""
    from optim.config import load_optim_config
    from optim.orthogonalize.from_mesh import MatrixDistribution
    from optim.orthogonalize.orthogonalizer import LocalOrthogonalizer
    from optim.orthogonalized_optimizer import OrthogonalizedOptimizer
    from optim.registry import OPTIMIZERS

    group = {"params": params, "param_names": [f"m{i}" for i in range(len(params))], "role": "matrix",
             "lr": 0.02, "weight_decay": 0.1}
    rule = OPTIMIZERS["muon"].rule(load_optim_config("muon").rule)
    return OrthogonalizedOptimizer([group], rule, distribution=MatrixDistribution(LocalOrthogonalizer(transform=ns)))


def matmul_rate(dtype: torch.dtype, repeats: int = 5) -> float:
    a, b = torch.randn(768, 768, dtype=dtype), torch.randn(768, 3072, dtype=dtype)
    torch.mm(a, b)
    best = min(_timed(lambda: torch.mm(a, b)) for _ in range(repeats))
    return 2 * 768 * 768 * 3072 / best


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=1, help="GPT-2 124M blocks (4 matrices each)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-torch", action="store_true", help="without torch.optim.Muon (slow where bf16 is)")
    args = parser.parse_args()
    dtype = resolve_matmul_dtype("auto", "cpu", "optim.orthogonalize.compute_dtype")
    shapes = gpt2_shapes(768, args.layers)
    print(f"# bench_orthogonalize --layers {args.layers}: {len(shapes)} matrices, {datetime.date.today()}, "
          f"{platform.processor() or platform.machine()}, torch {torch.__version__}, threads "
          f"{torch.get_num_threads()}, load {os.getloadavg()[0]:.2f}; bf16 matmul fast: "
          f"{bf16_matmul_is_fast('cpu')} -> compute_dtype auto = {dtype}")
    g = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(*s, generator=g) * 0.02) for s in shapes]
    for p in params:
        p.grad = torch.randn(p.shape, generator=g)
    optimizers = {label: muon_step(params, transform(sched, steps, method, dtype)) for label, sched, steps, method in VARIANTS}
    if not args.skip_torch:
        optimizers["torch.optim.Muon"] = torch.optim.Muon(params, lr=0.02, weight_decay=0.1, momentum=0.95, nesterov=True)
    for opt in optimizers.values():
        opt.step()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in optimizers}
    for _ in range(args.rounds):
        for name, opt in optimizers.items():
            times[name].append(_timed(opt.step))
        print(f"  round done, load {os.getloadavg()[0]:.2f}", flush=True)
    best = {name: min(t) for name, t in times.items()}
    rate = matmul_rate(dtype)
    default = best["fixed x5 (default)"]
    torch_s = best.get("torch.optim.Muon")
    print(f"\n{dtype} matmul (768x768 @ 768x3072): {rate / 1e9:.1f} GFLOP/s")
    print("| variant | step (ms) | vs default | vs torch.optim.Muon | NS GFLOP/step | NS rate / matmul | band [min, max] |")
    print("|---|---|---|---|---|---|---|")
    for label, sched, steps, method in VARIANTS:
        flops = sum(method_flops(method, r, c, steps) for r, c in shapes)
        lo, hi = band(transform(sched, steps, method, dtype))
        vs_torch = f"{best[label] / torch_s:.3f}x" if torch_s else "-"
        print(f"| {label} | {best[label] * 1e3:.1f} | {best[label] / default:.2f}x | {vs_torch} | {flops / 1e9:.2f} | "
              f"{flops / best[label] / rate:.0%} | [{lo:.3f}, {hi:.3f}] |")
    if torch_s:
        print(f"| torch.optim.Muon (bf16 NS, as shipped) | {torch_s * 1e3:.1f} | {torch_s / default:.2f}x | 1.000x | - | - | - |")
        fastest = min(best[label] for label, *_ in VARIANTS)
        print(f"\n- {'met' if default / torch_s <= TARGETS['default_vs_torch'] else 'NOT met'}: default <= "
              f"{TARGETS['default_vs_torch']}x torch.optim.Muon ({default / torch_s:.3f}x)")
        print(f"- {'met' if fastest / torch_s <= TARGETS['fastest_vs_torch'] else 'NOT met'}: fastest <= "
              f"{TARGETS['fastest_vs_torch']}x torch.optim.Muon ({fastest / torch_s:.3f}x)")


if __name__ == "__main__":
    main()
