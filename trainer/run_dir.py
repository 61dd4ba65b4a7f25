"""One run directory per job, shared by every rank and stable across restarts.

Hydra resolves ``hydra.run.dir`` in every process. With ``${now:...}`` the ranks of one torchrun job
could land in different directories (they start at different instants), and a torchrun restart
(--max-restarts) or a SLURM requeue would start a fresh directory and never find its checkpoints.
``${run_stamp:}`` is instead the same for all ranks of one launch and across its restarts:

    1. $ORTHOGPT_RUN_STAMP when set (the sbatch scripts set it to the SLURM job id, so a requeued job
       resumes in its own directory)
    2. torchrun on several nodes: the rendezvous id (--rdzv-id, shared by all nodes)
    3. torchrun on one node: the start time of the torchrun agent, the parent of every worker
    4. several tasks of one Slurm job step without torchrun (srun -n, submitit): the job id
    5. a plain process: the current time
Formats 3 and 5 are ``%Y-%m-%d_%H-%M-%S``.

Hydra writes nothing into the run directory (``hydra.output_subdir: null``): the trainer writes
``config.yaml`` (resolved), ``overrides.yaml`` (the command line) and ``git_commit.txt`` on rank 0, after
the config and any checkpoint to resume have been checked, so a start that fails changes nothing in
an existing run directory.
"""

from __future__ import annotations

import datetime
import os
import subprocess
from pathlib import Path

from omegaconf import OmegaConf

STAMP_FORMAT = "%Y-%m-%d_%H-%M-%S"


def _process_start_time(pid: int) -> datetime.datetime | None:
    """Start time of a process from /proc (Linux), or None where /proc is unavailable."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()  # the command name may contain spaces
        start_ticks = int(fields[19])  # field 22 of stat(5): starttime, in clock ticks since boot
        with open("/proc/stat") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime"))
        return datetime.datetime.fromtimestamp(boot + start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def run_stamp() -> str:
    if os.environ.get("ORTHOGPT_RUN_STAMP"):
        return os.environ["ORTHOGPT_RUN_STAMP"]
    if "TORCHELASTIC_RUN_ID" in os.environ:  # launched by torchrun
        nodes = int(os.environ.get("GROUP_WORLD_SIZE", "1"))
        run_id = os.environ["TORCHELASTIC_RUN_ID"]
        if nodes > 1:
            if run_id in ("", "none"):
                raise ValueError(
                    "a multi-node torchrun job needs one run directory for all nodes: pass --rdzv-id "
                    "(e.g. $SLURM_JOB_ID), set ORTHOGPT_RUN_STAMP, or set hydra.run.dir explicitly"
                )
            return run_id
        started = _process_start_time(os.getppid())
        if started is not None:
            return started.strftime(STAMP_FORMAT)
    elif int(os.environ.get("SLURM_STEP_NUM_TASKS", "1")) > 1 and "SLURM_JOB_ID" in os.environ:
        return os.environ["SLURM_JOB_ID"]
    return datetime.datetime.now().strftime(STAMP_FORMAT)


def register_resolvers() -> None:
    # use_cache: resolved once per process, however often Hydra reads hydra.run.dir
    if not OmegaConf.has_resolver("run_stamp"):
        OmegaConf.register_new_resolver("run_stamp", run_stamp, use_cache=True)


def git_commit() -> str:
    """The commit of the checkout this code runs from ("unknown" outside git)."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parents[1],
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write_run_files(run_dir: Path, config_yaml: str, overrides: list[str]) -> None:
    """config.yaml, overrides.yaml and git_commit.txt (rank 0, once the start is known to be good)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(config_yaml)
    (run_dir / "overrides.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(list(overrides))))
    (run_dir / "git_commit.txt").write_text(git_commit() + "\n")
