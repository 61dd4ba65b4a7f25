"""Process group, device and device mesh from the launcher's environment.

torchrun (and srun + torchrun) set RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; tasks
started by Slurm alone (srun, submitit) are recognised from SLURM_PROCID / SLURM_STEP_NUM_TASKS. A plain
``python train.py`` has none of them and runs as one process with no process group at all. ``DistributedConfig`` (the
``distributed`` keys of the config) lives here, beside the code that uses it.
"""

from __future__ import annotations

import datetime
import gc
import os
import subprocess
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from optim.dtypes import DtypeSetting, check_dtype_name
from optim.hparams import check_in


@dataclass(frozen=True)
class DistributedConfig:
    backend: str
    dp_replicate: int
    dp_shard: int
    param_dtype: DtypeSetting  # a name in YAML; a torch.dtype once build_config has resolved it
    reduce_dtype: DtypeSetting
    reshard_after_forward: bool
    grad_sync: str

    def __post_init__(self) -> None:
        check_in("distributed.backend", self.backend, ("auto", "gloo", "nccl"))
        check_in("distributed.grad_sync", self.grad_sync, ("last_microbatch", "every_microbatch"))
        check_dtype_name("distributed.param_dtype", self.param_dtype)
        check_dtype_name("distributed.reduce_dtype", self.reduce_dtype)


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    mesh: Any = None  # DeviceMesh: ("dp_shard",) or, for HSDP, ("dp_replicate", "dp_shard"); None alone

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def all_reduce_sum(self, value: torch.Tensor) -> torch.Tensor:
        if self.distributed:
            dist.all_reduce(value, op=dist.ReduceOp.SUM)
        return value


def launcher_world() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) as the launcher set them; (0, 1, 0) for a plain process.

    torchrun sets RANK / WORLD_SIZE / LOCAL_RANK. Tasks of a Slurm job step (``srun`` with several
    tasks, or submitit's ``tasks_per_node`` > 1) have only SLURM_PROCID / SLURM_STEP_NUM_TASKS /
    SLURM_LOCALID: those count too (see ``slurm_rendezvous`` for the address). The batch script
    itself is not a step (no SLURM_STEP_NUM_TASKS), so ``python train.py`` there stays one process.
    """
    if "RANK" in os.environ or "SLURM_STEP_NUM_TASKS" not in os.environ or "SLURM_PROCID" not in os.environ:
        return (
            int(os.environ.get("RANK", 0)),
            int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)),
        )
    return (
        int(os.environ["SLURM_PROCID"]),
        int(os.environ["SLURM_STEP_NUM_TASKS"]),
        int(os.environ.get("SLURM_LOCALID", 0)),
    )


def slurm_rendezvous() -> None:
    """MASTER_ADDR / MASTER_PORT for processes started by Slurm without torchrun: the first host of
    the allocation, and a port derived from the job id (the same on every task of the job)."""
    if "MASTER_ADDR" not in os.environ:
        nodes = os.environ.get("SLURM_JOB_NODELIST") or os.environ.get("SLURM_NODELIST")
        if not nodes:
            raise RuntimeError("Slurm tasks without torchrun need SLURM_JOB_NODELIST or MASTER_ADDR to meet")
        hosts = subprocess.run(["scontrol", "show", "hostnames", nodes], capture_output=True, text=True, check=True)
        os.environ["MASTER_ADDR"] = hosts.stdout.split()[0]
    os.environ.setdefault("MASTER_PORT", str(20000 + int(os.environ.get("SLURM_JOB_ID", "0")) % 20000))
    rank, world_size, local_rank = launcher_world()
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(local_rank))


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device=cuda was requested but CUDA is not available; use device=cpu")
        return torch.device("cuda", local_rank)
    if name == "cpu":
        return torch.device("cpu")
    raise ValueError(f"device must be one of auto, cpu, cuda; got '{name}'")


def mesh_shape(world_size: int, dp_replicate: int = 1, dp_shard: int = -1) -> tuple[int, int]:
    """(dp_replicate, dp_shard) with dp_shard=-1 meaning "the rest"; their product must be the world."""
    dp_replicate, dp_shard = int(dp_replicate), int(dp_shard)
    if dp_replicate < 1:
        raise ValueError(f"distributed.dp_replicate must be >= 1, got {dp_replicate}")
    if dp_shard == -1:
        if world_size % dp_replicate:
            raise ValueError(
                f"distributed.dp_replicate={dp_replicate} does not divide the world size {world_size}; "
                f"launch a multiple of {dp_replicate} processes or change dp_replicate"
            )
        dp_shard = world_size // dp_replicate
    if dp_shard < 1 or dp_replicate * dp_shard != world_size:
        raise ValueError(
            f"the device mesh dp_replicate={dp_replicate} x dp_shard={dp_shard} does not match the "
            f"{world_size} launched process(es); set distributed.dp_shard=-1 (use all ranks) or launch "
            f"{dp_replicate * max(dp_shard, 1)} processes"
        )
    return dp_replicate, dp_shard


def _store_for_this_attempt(rank: int, world_size: int, timeout: datetime.timedelta):
    """The rendezvous store, with a key prefix per torchrun attempt (None: env:// as usual).

    After a worker dies, ``torchrun --max-restarts`` restarts every worker against the SAME agent
    store, which still holds the dead attempt's gloo addresses under the same keys: the new workers
    then connect to ports nobody listens on ("connectFullMesh failed ... Connection refused").
    Prefixing the keys with TORCHELASTIC_RESTART_COUNT gives every attempt a clean namespace.
    """
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT")
    if attempt is None:
        return None
    hosted_by_agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(
        os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world_size,
        is_master=not hosted_by_agent and rank == 0, timeout=timeout,
    )
    return dist.PrefixStore(f"orthogpt/attempt{attempt}", store)


def init_distributed(
    device_name: str = "auto", backend: str = "auto", timeout_minutes: float = 30,
    dp_replicate: int = 1, dp_shard: int = -1,
) -> DistContext:
    rank, world_size, local_rank = launcher_world()
    replicas, shards = mesh_shape(world_size, dp_replicate, dp_shard)
    device = resolve_device(device_name, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world_size == 1:
        return DistContext(device=device)
    if "RANK" not in os.environ:  # started by Slurm, not torchrun
        slurm_rendezvous()
    if backend == "auto":
        backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        timeout = datetime.timedelta(minutes=timeout_minutes)
        dist.init_process_group(
            backend=backend,
            timeout=timeout,
            device_id=device if device.type == "cuda" else None,
            store=_store_for_this_attempt(rank, world_size, timeout),
            rank=rank,
            world_size=world_size,
        )
    from torch.distributed.device_mesh import init_device_mesh

    if replicas == 1:
        mesh = init_device_mesh(device.type, (shards,), mesh_dim_names=("dp_shard",))
    else:  # HSDP: shard within dp_shard groups, replicate across them
        mesh = init_device_mesh(device.type, (replicas, shards), mesh_dim_names=("dp_replicate", "dp_shard"))
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=device, mesh=mesh)


def shutdown(ctx: DistContext | None = None) -> None:
    """Destroy the process group once nothing holds the device mesh: a DeviceMesh still alive at
    interpreter exit makes gloo abort the process (SIGABRT) in a sizeable fraction of clean exits on
    torch 2.13, and torchrun then reports a finished job as failed. The model and optimizer that
    reference the mesh are garbage by now; collect them before destroying the group."""
    if ctx is not None:
        ctx.mesh = None
    gc.collect()
    if dist.is_initialized():
        dist.destroy_process_group()
