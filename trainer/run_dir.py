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
an existing run directory. Hydra does create the directory before the trainer runs: ``RunDirCheck``
(a Hydra callback, configs/train.yaml) tries that first and turns a directory that cannot be created
or written (read-only, blocked by a file, no permission) into one line and exit status 2.

Resume in this layout: a run directory that ends in the launch's stamp (the default
``runs/<name>/${run_stamp:}``) is one launch of the run ``<name>``; ``earlier_runs`` names the folder
of its other launches, where ``trainer.resume=auto`` looks for the newest resumable one
(trainer/resume.py), and ``agree_on_run_dir`` makes every rank continue in the one rank 0 chose.
Rank 0 holds a lock on the run directory while it trains (``hold_run``, flock on the directory
itself: no file written, released when the process ends), so that search passes over a run that
another launch is training (``in_use``).
"""

from __future__ import annotations

import datetime
import fcntl
import os
import subprocess
import tempfile
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from data.user_errors import exit_on_user_error

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


STAMP_SUFFIX = "${run_stamp:}"


def earlier_runs(run_dir: Path) -> Path | None:
    """The folder of this run's other launches when ``run_dir`` is one launch of it (``hydra.run.dir``
    ends in ``${run_stamp:}``, as the default does); None for a directory set explicitly or a multirun
    job (their launches share one directory, so their own checkpoints are the ones to resume)."""
    hydra_cfg = HydraConfig.get()
    template = str(OmegaConf.to_container(hydra_cfg.run, resolve=False).get("dir", ""))
    if hydra_cfg.mode != RunMode.RUN or not template.rstrip("/").endswith(STAMP_SUFFIX):
        return None
    return Path(run_dir).parent


def agree_on_run_dir(run_dir: Path, launch_dir: Path, ctx) -> Path:
    """Rank 0's run directory on every rank (a collective; each rank decided alone before the process
    group, and an earlier run's checkpoint may have appeared in between). When the launch continues an
    earlier run, rank 0 removes the directory Hydra created for this launch if it is still empty."""
    if ctx.distributed:
        import torch.distributed as dist

        chosen = [str(run_dir)]
        dist.broadcast_object_list(chosen, src=0)
        run_dir = Path(chosen[0])
    if ctx.is_main and Path(run_dir) != Path(launch_dir):
        drop_empty_launch_dir(launch_dir)
    return Path(run_dir)


def hold_run(run_dir: Path) -> int | None:
    """Lock ``run_dir`` for the rest of this process (the descriptor, kept open); None where it is
    locked already or the file system cannot lock (then ``in_use`` says False, as before the lock)."""
    try:
        fd = os.open(run_dir, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def in_use(run_dir: Path) -> bool:
    """Whether another process holds ``hold_run``'s lock on ``run_dir`` (it is training it)."""
    try:
        fd = os.open(run_dir, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # releases the probe's own lock
    return False


def remove_empty_dirs(path: Path, stop: Path | None = None) -> None:
    """Remove ``path`` if it is empty, then its parents below ``stop`` (default: the working
    directory) while they are empty: runs/<name>/<stamp> leaves nothing behind. A directory holding
    anything is left alone."""
    path, stop = Path(path).resolve(), Path(stop or os.getcwd()).resolve()
    while path != stop:
        try:
            path.rmdir()
        except OSError:  # not empty (or not ours to remove): stop here
            return
        path = path.parent
        if stop not in path.parents:
            return


def drop_empty_launch_dir(launch_dir: Path) -> None:
    """``remove_empty_dirs`` for the directory Hydra created for this launch in the default layout (a
    refused start, a finished run, a launch that continues an earlier run), so runs/<name>/ holds runs
    only. A directory set explicitly (hydra.run.dir=..., which a Slurm script creates first) is left alone."""
    if earlier_runs(launch_dir) is not None:
        remove_empty_dirs(launch_dir)


def run_dir_problem(path: Path, key: str = "hydra.run.dir") -> str | None:
    """Why ``path`` (set by ``key``) cannot be a run directory (None: it can). Creates it, as Hydra
    would next, and writes and removes a temporary file in it."""
    path = Path(path).absolute()
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        blocking = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
        why = f"{blocking} is a file" if blocking is not None else (err.strerror or str(err)).lower()
        return (f"the run directory {path} cannot be created or written ({why}); choose another with "
                f"{key}=<writable folder>, or launch from a writable folder (the default "
                f"runs/<name>/<stamp> is relative to the current directory)")
    return None


class RunDirCheck(Callback):
    """Refuses a run (or sweep) directory that cannot be created or written, in one line, before Hydra
    tries to create it (Hydra's own failure is a traceback)."""

    def _check(self, config: DictConfig, key: str) -> None:
        try:
            path = OmegaConf.select(config, key)
        except Exception:  # an interpolation only Hydra's job runtime resolves: leave the check to it
            return
        problem = run_dir_problem(Path(str(path)), key) if path else None
        if problem is not None:
            from trainer.distributed import launcher_world

            exit_on_user_error(problem, launcher_world()[0])

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        self._check(config, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self._check(config, "hydra.sweep.dir")
