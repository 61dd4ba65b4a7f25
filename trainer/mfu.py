"""The MFU denominator (peak TFLOP/s per rank), the same for every run on one machine so MFU compares
across runs:

- ``trainer.peak_tflops`` when set;
- CUDA: the dense bf16/fp16 peak of the GPU from ``GPU_PEAK_TFLOPS`` (vendors' datasheets), by the
  name torch reports; an unknown GPU, or fp32 compute, gets no MFU unless trainer.peak_tflops is set;
- CPU: this machine's matmul rate in the step's matmul dtype, measured ONCE and cached in
  ``mfu_peaks.json`` (``$ORTHOGPT_MFU_CACHE``, else ``~/.cache/orthogpt/``) under the machine's
  description: CPU model, a hash of its flags, torch version, dtype and thread count. Measured under
  load each run, it varied 4.4x between runs; delete the cache entry to measure again.

A single timing taken while other processes share the CPU is low, which would inflate the MFU of the
whole run. ``measure_matmul_tflops`` therefore takes the best of several samples spaced out in time
(each itself a best of a few matmuls), so a passing burst of load does not set the denominator.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import time
from pathlib import Path

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


# Dense (no sparsity) bf16/fp16 tensor-core peaks per GPU, TFLOP/s, from NVIDIA's datasheets; the
# first pattern that matches torch.cuda.get_device_name() wins (specific variants before families).
GPU_PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    (r"H100.*PCIe", 756.0), (r"H100.*NVL", 835.0), (r"H200.*NVL", 835.0), (r"H800.*PCIe", 756.0),
    (r"GH200|H100|H200|H800", 989.0),
    (r"B200", 2250.0), (r"A100|A800", 312.0),
    (r"L40S", 362.0), (r"\bL40\b", 181.0), (r"\bL4\b", 121.0), (r"\bA10\b", 125.0),
)
CACHE_ENV = "ORTHOGPT_MFU_CACHE"
CACHE_FILE = "mfu_peaks.json"


def dtype_label(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.").replace("float32", "fp32").replace("bfloat16", "bf16").replace("float16", "fp16")


def known_gpu_peak(name: str, dtype: torch.dtype) -> float | None:
    """The table's peak for a GPU named ``name`` computing in ``dtype`` (bf16 / fp16 only)."""
    if dtype not in (torch.bfloat16, torch.float16):
        return None
    return next((peak for pattern, peak in GPU_PEAK_TFLOPS if re.search(pattern, name)), None)


def cpu_description(dtype: torch.dtype) -> dict[str, str | int]:
    """What the CPU matmul rate depends on: the key of the cache."""
    model, flags = "", ""
    try:  # Linux; elsewhere the processor name alone
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = (part.strip() for part in line.partition(":"))
            if key == "model name" and not model:
                model = value
            elif key in ("flags", "Features") and not flags:
                flags = " ".join(sorted(value.split()))
    except OSError:
        pass
    model = model or platform.processor() or platform.machine()
    return {"cpu": model, "flags": hashlib.sha256(flags.encode()).hexdigest()[:16], "torch": torch.__version__,
            "dtype": dtype_label(dtype), "threads": torch.get_num_threads()}


def cache_path() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "orthogpt" / CACHE_FILE


def read_cache(path: Path) -> dict:
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):  # absent, unreadable or cut short: measure again
        return {}
    return cache if isinstance(cache, dict) else {}


def cached_cpu_rate(dtype: torch.dtype, path: Path | None = None) -> tuple[float, str]:
    """The cached rate of this machine in ``dtype``, measured (best of 8 samples 0.2 s apart, about
    2.5 s) and stored the first time. An unwritable cache costs only the reuse."""
    path = Path(path or cache_path())
    description = cpu_description(dtype)
    key = json.dumps(description, sort_keys=True)
    entry = read_cache(path).get(key)
    if isinstance(entry, dict) and isinstance(entry.get("tflops"), (int, float)) and entry["tflops"] > 0:
        return float(entry["tflops"]), f"{description['dtype']} matmul measured {entry.get('measured', '')} on this machine, cached in {path}"
    rate = measure_matmul_tflops(torch.device("cpu"), samples=8, spacing_s=0.2, dtype=dtype)
    when = time.strftime("%Y-%m-%d")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        cache = read_cache(path)  # again: another process may have added its entry meanwhile
        cache[key] = {"tflops": rate, "measured": when, "description": description}
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)
    except OSError:
        return rate, f"{description['dtype']} matmul measured now (cache {path} not writable)"
    return rate, f"{description['dtype']} matmul measured now, best of 8 samples, cached in {path}"


def mfu_denominator(peak_tflops: float | None, device: torch.device,
                    dtype: torch.dtype = torch.float32) -> tuple[float | None, str]:
    """(TFLOP/s per rank, where it came from): trainer.peak_tflops, else the GPU table (CUDA), else
    this machine's cached matmul rate in ``dtype`` (CPU: the step's matmul dtype, bf16 under bf16
    autocast); (None, why) when there is none."""
    if peak_tflops is not None:
        return float(peak_tflops), "trainer.peak_tflops"
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return None, "none (no CUDA device to look up)"
        name = torch.cuda.get_device_name(device)
        peak = known_gpu_peak(name, dtype)
        if peak is None:
            return None, (f"none ({name} in {dtype_label(dtype)} is not in trainer/mfu.py's table of dense "
                          f"bf16 peaks; set trainer.peak_tflops)")
        return peak, f"{name}, dense {dtype_label(dtype)} peak (trainer/mfu.py table)"
    if device.type == "cpu":
        return cached_cpu_rate(dtype)
    return None, f"none (no peak known for device {device.type}; set trainer.peak_tflops)"
