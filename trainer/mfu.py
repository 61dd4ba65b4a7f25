"""The MFU denominator: this machine's measured matmul rate (CPU), or a configured peak (GPU)."""

from __future__ import annotations

import time

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_matmul_tflops(device: torch.device, n: int = 1024, repeats: int = 3, dtype=torch.float32) -> float:
    """Best-of-``repeats`` rate of an n x n x n matmul (2 n^3 FLOPs) in TFLOP/s."""
    g = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device, dtype)
    b = torch.randn(n, n, generator=g).to(device, dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    torch.mm(a, b, out=out)  # warm-up (allocation, kernel selection)
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e12
