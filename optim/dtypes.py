"""Config dtype names -> torch dtypes, one resolver for every ``*_dtype`` key of the config.

``auto`` means the device's fast, safe choice: bf16 on CUDA (tensor cores; the published Muon-family
code runs Newton-Schulz in bf16) and fp32 elsewhere. Used by the Newton-Schulz compute dtype and the
sharded exchange (optim.orthogonalize), and by FSDP2's mixed-precision policy (trainer.parallelize).
"""

from __future__ import annotations

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float64": torch.float64}
DTYPE_NAMES = ("auto", *DTYPES)


def auto_dtype(device: torch.device | str) -> torch.dtype:
    """bf16 on CUDA, fp32 elsewhere (CPU)."""
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


def check_dtype_name(key: str, name: str) -> str:
    """``name`` if it is a dtype this project accepts; ValueError naming ``key`` otherwise."""
    if name not in DTYPE_NAMES:
        raise ValueError(f"{key} must be one of {', '.join(DTYPE_NAMES)}; got '{name}'")
    return name


def resolve_dtype(name: str, device: torch.device | str, key: str) -> torch.dtype:
    """Config value ``auto | float32 | bfloat16 | float64`` -> dtype (``auto`` = per device)."""
    check_dtype_name(key, name)
    return auto_dtype(device) if name == "auto" else DTYPES[name]
