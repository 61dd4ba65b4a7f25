"""Run a function on W real processes (gloo) and collect what each rank returns.

``run_ranks(fn, world_size, *args, backend="gloo")`` spawns W fresh interpreters (torch.multiprocessing,
"spawn"), sets up a process group (gloo; nccl: one GPU per rank) on a free localhost port, calls ``fn(rank, world_size, *args)`` on
each, and returns the list of return values (anything torch.save can write), rank order. A failure
on any rank is raised in the caller with that rank's traceback.
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
import traceback
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, world_size: int, port: int, out_dir: str, fn, args, backend: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size))
    torch.set_num_threads(1)  # W processes share the machine's cores
    result_path = Path(out_dir) / f"rank{rank}.pt"
    try:
        if backend == "nccl":
            torch.cuda.set_device(rank)
        dist.init_process_group(backend, rank=rank, world_size=world_size)
        torch.save({"ok": fn(rank, world_size, *args)}, result_path)
    except BaseException:
        torch.save({"error": traceback.format_exc()}, result_path)
        raise
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    # The result is on disk; skip the interpreter's teardown. There, gloo's C++ threads can still hold
    # work objects whose destruction needs the GIL of a finalizing interpreter: about 1 run in 10 aborted
    # with "terminate called without an active exception" and no Python frame (torch 2.13; see
    # pytorch/pytorch#179291). What a test proves is in the result, never in that teardown.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def run_ranks(fn, world_size: int, *args, backend: str = "gloo"):
    with tempfile.TemporaryDirectory() as out_dir:
        try:
            mp.start_processes(_entry, args=(world_size, free_port(), out_dir, fn, args, backend), nprocs=world_size,
                               join=True, start_method="spawn")
        except mp.ProcessRaisedException:
            pass  # reported below with the failing rank's own traceback
        results = []
        for rank in range(world_size):
            path = Path(out_dir) / f"rank{rank}.pt"
            if not path.exists():
                raise RuntimeError(f"rank {rank} of {world_size} died without a result")
            outcome = torch.load(path, weights_only=False)
            if "error" in outcome:
                raise RuntimeError(f"rank {rank} of {world_size} failed:\n{outcome['error']}")
            results.append(outcome["ok"])
        return results
