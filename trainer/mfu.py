"""The MFU denominator: this machine's measured matmul rate (CPU), or a configured peak (GPU).

A single timing taken while other processes share the CPU is low, which would inflate the MFU of the
whole run. ``measure_matmul_tflops`` therefore takes the best of several samples spaced out in time
(each itself a best of a few matmuls), so a passing burst of load does not set the denominator; the
trainer logs the rate it used and where it came from.
"""

from __future__ import annotations

import time

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_matmul_tflops(
    device: torch.device, n: int = 1024, repeats: int = 3, samples: int = 1, spacing_s: float = 0.0,
    dtype=torch.float32,
) -> float:
    """Best rate of an n x n x n matmul (2 n^3 FLOPs) in TFLOP/s over ``samples`` groups of
    ``repeats`` timings, ``spacing_s`` seconds apart."""
    g = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device, dtype)
    b = torch.randn(n, n, generator=g).to(device, dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    torch.mm(a, b, out=out)  # warm-up (allocation, kernel selection)
    best = float("inf")
    for sample in range(samples):
        if sample:
            time.sleep(spacing_s)
        for _ in range(repeats):
            sync(device)
            start = time.perf_counter()
            torch.mm(a, b, out=out)
            sync(device)
            best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e12


def mfu_denominator(peak_tflops: float | None, device: torch.device,
                    dtype: torch.dtype = torch.float32) -> tuple[float | None, str]:
    """(TFLOP/s per rank, where it came from): the configured peak, else on CPU the best of five
    samples 0.2 s apart of the matmul rate in ``dtype`` (the step's matmul dtype: bf16 under bf16
    autocast; about 1.5 s), else none (no MFU)."""
    if peak_tflops is not None:
        return float(peak_tflops), "trainer.peak_tflops"
    if device.type == "cpu":
        name = str(dtype).removeprefix("torch.").replace("float32", "fp32").replace("bfloat16", "bf16")
        rate = measure_matmul_tflops(device, samples=5, spacing_s=0.2, dtype=dtype)
        return rate, f"measured {name} matmul, best of 5 samples"
    return None, "none (set trainer.peak_tflops for MFU on GPU)"
