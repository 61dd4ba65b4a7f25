"""The study file's checking helpers and its two plain sections (launcher, compute)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

LAUNCHERS = ("local", "torchrun", "slurm")
LAUNCHER_KEYS = ("kind", "parallel", "threads_per_run", "nproc_per_node", "slurm_launcher")
COMPUTE_KEYS = ("peak_tflops", "assumed_mfu", "gpu")


class StudyError(ValueError):
    """A study file is invalid; raised before any run is composed or started."""


@dataclass(frozen=True)
class Launcher:
    kind: str                    # local: one train.py process per run; torchrun; slurm (Hydra submitit)
    parallel: int                # runs in flight at once
    threads_per_run: int | None  # OMP_NUM_THREADS of each run (None: torch's default)
    nproc_per_node: int          # torchrun / the world size the runs are validated for
    slurm_launcher: str          # configs/hydra/launcher/<name>.yaml for kind=slurm


@dataclass(frozen=True)
class Compute:
    peak_tflops: float
    assumed_mfu: float
    gpu: str


def require(raw: dict, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in raw:
        raise StudyError(f"{where}: '{key}' is missing")
    value = raw[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise StudyError(f"{where}: '{key}' must be {names}, got {value!r}")
    return value


def strict(raw: dict, allowed: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(raw) - set(allowed))
    if unknown:
        raise StudyError(f"{where}: unknown key '{unknown[0]}' (allowed: {', '.join(allowed)})")


def parse_launcher(raw: dict, where: str) -> Launcher:
    strict(raw, LAUNCHER_KEYS, where)
    kind = require(raw, "kind", str, where)
    if kind not in LAUNCHERS:
        raise StudyError(f"{where}: kind must be one of {', '.join(LAUNCHERS)}, got '{kind}'")
    parallel = require(raw, "parallel", int, where)
    nproc = require(raw, "nproc_per_node", int, where)
    threads = raw.get("threads_per_run")
    if parallel < 1 or nproc < 1 or (threads is not None and (not isinstance(threads, int) or threads < 1)):
        raise StudyError(f"{where}: parallel, nproc_per_node (and threads_per_run unless null) must be integers >= 1")
    if kind == "local" and nproc != 1:
        raise StudyError(f"{where}: nproc_per_node={nproc} needs kind: torchrun (local runs one process per run)")
    return Launcher(kind, parallel, threads, nproc, require(raw, "slurm_launcher", str, where))


def parse_compute(raw: Any, where: str) -> Compute | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise StudyError(f"{where} must be null or a mapping with {', '.join(COMPUTE_KEYS)}")
    strict(raw, COMPUTE_KEYS, where)
    compute = Compute(float(require(raw, "peak_tflops", (int, float), where)),
                      float(require(raw, "assumed_mfu", (int, float), where)), require(raw, "gpu", str, where))
    if not (compute.peak_tflops > 0 and 0 < compute.assumed_mfu <= 1):
        raise StudyError(f"{where} needs peak_tflops > 0 and assumed_mfu in (0, 1]")
    return compute
