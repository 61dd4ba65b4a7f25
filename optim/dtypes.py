"""Config dtype names -> torch dtypes, one resolver for every ``*_dtype`` key of the config.

``auto`` means the device's fast, safe choice, by what the hardware can do:

    resolve_dtype           (trainer.compute_dtype, FSDP2 mixed precision, optim.orthogonalize.comm_dtype)
                            bf16 on CUDA, fp32 elsewhere: autocast and bf16 parameters change the
                            model's numerics, so CPUs keep fp32 unless asked.
    resolve_matmul_dtype    (optim.orthogonalize.compute_dtype: the Newton-Schulz iteration, whose
                            published code runs in bf16 and casts back) bf16 wherever bf16 matmul is
                            fast: CUDA, and CPUs whose oneDNN GEMM runs bf16 natively (AMX tiles:
                            Sapphire Rapids and later; AVX512-BF16: Cooper Lake, Zen 4 and later).
                            Elsewhere fp32: on an AVX2 CPU (Zen 3) a bf16 matmul is >100x slower
                            than fp32 (BENCHMARKS.md).

The CPU check asks torch's own cpuinfo probe (``torch.cpu._is_amx_tile_supported`` and
``_is_avx512_bf16_supported``), not a list of CPU models. The environment variable
``ORTHOGPT_CPU_BF16`` overrides the probe (read here only): ``0`` forces the fp32 path, ``1`` the bf16
path, on any CPU; anything else is refused with the valid values. Tests mock ``cpu_has_fast_bf16``.

The trainer resolves every ``*_dtype`` key once, in ``trainer.config.build_config``, so its typed tree
carries ``torch.dtype``s; the resolvers pass a ``torch.dtype`` through unchanged, which lets the
optimizer library also be built from a config whose dtypes are still names.
"""

from __future__ import annotations

import os

import torch

CPU_BF16_ENV = "ORTHOGPT_CPU_BF16"

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float64": torch.float64}
DTYPE_NAMES = ("auto", *DTYPES)

DtypeSetting = str | torch.dtype  # a config name (auto | float32 | bfloat16 | float64), or resolved


def cpu_bf16_override() -> bool | None:
    """``ORTHOGPT_CPU_BF16``: True (``1``), False (``0``), or None when unset or empty."""
    value = os.environ.get(CPU_BF16_ENV, "").strip()
    if value == "":
        return None
    if value not in ("0", "1"):
        raise ValueError(f"{CPU_BF16_ENV} must be 0 (force the fp32 path) or 1 (force bf16); got '{value}'. "
                         f"Unset it to let the CPU probe decide")
    return value == "1"


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (AMX tiles or AVX512-BF16).

    ``ORTHOGPT_CPU_BF16=0|1`` overrides the probe: it forces the fp32 or the bf16 path on any CPU.
    """
    override = cpu_bf16_override()
    if override is not None:
        return override
    return cpu_probe_has_fast_bf16()


def cpu_probe_has_fast_bf16() -> bool:
    """torch's cpuinfo probe alone, without the override."""
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def bf16_matmul_is_fast(device: torch.device | str) -> bool:
    device = torch.device(device)
    if device.type == "cuda":
        return True  # every GPU this project targets (Ampere and later) has bf16 tensor cores
    if device.type == "cpu":
        return cpu_has_fast_bf16()
    return False


def auto_dtype(device: torch.device | str) -> torch.dtype:
    """bf16 on CUDA, fp32 elsewhere (CPU): the storage / autocast / exchange default."""
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


def auto_matmul_dtype(device: torch.device | str) -> torch.dtype:
    """bf16 where bf16 matmul is fast (CUDA, AMX / AVX512-BF16 CPUs), fp32 elsewhere."""
    return torch.bfloat16 if bf16_matmul_is_fast(device) else torch.float32


def check_dtype_name(key: str, name: DtypeSetting) -> DtypeSetting:
    """``name`` if it is a dtype this project accepts (a name, or an already resolved dtype);
    ValueError naming ``key`` otherwise."""
    if isinstance(name, torch.dtype) and name in DTYPES.values():
        return name
    if name not in DTYPE_NAMES:
        raise ValueError(f"{key} must be one of {', '.join(DTYPE_NAMES)}; got '{name}'")
    return name


def resolve_dtype(name: DtypeSetting, device: torch.device | str, key: str) -> torch.dtype:
    """Config value ``auto | float32 | bfloat16 | float64`` -> dtype (``auto``: ``auto_dtype``)."""
    check_dtype_name(key, name)
    if isinstance(name, torch.dtype):
        return name
    return auto_dtype(device) if name == "auto" else DTYPES[name]


def resolve_matmul_dtype(name: DtypeSetting, device: torch.device | str, key: str) -> torch.dtype:
    """Like ``resolve_dtype``, with ``auto`` by bf16 matmul capability (``auto_matmul_dtype``)."""
    check_dtype_name(key, name)
    if isinstance(name, torch.dtype):
        return name
    return auto_matmul_dtype(device) if name == "auto" else DTYPES[name]
