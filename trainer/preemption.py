"""Graceful stop requests: a signal to any rank, or a stop file, makes every rank stop at the same step.

Two ways to ask a run to stop (the loop then saves a checkpoint and exits with PREEMPTED_EXIT_CODE):

* a signal (DEFAULT_SIGNALS: SIGUSR1, SIGUSR2, SIGTERM) delivered to a training process, e.g. by a
  scheduler that signals the tasks directly (submitit), or by hand: ``kill -USR1 <pid>``;
* the stop file ``<run_dir>/STOP`` appearing, e.g. ``touch runs/<name>/<stamp>/STOP``.

The stop file exists because signals do not reach the workers cleanly under ``srun`` -> ``torchrun``:
the torchrun agent is killed by SIGUSR1 (no handler) and turns SIGTERM into killing its workers. So
slurm/train.sbatch asks Slurm for the pre-timeout signal on the batch shell only
(``--signal=B:USR1@<secs>``), and its trap touches the stop file; the workers see it at their next step.

A signal reaches one process; the stop file may be seen a step earlier by one rank than another. The
training loop must stop all ranks at the same step, or the checkpoint's collectives hang. ``poll`` is
therefore collective: each rank contributes what it saw to one all-reduce(MAX), and every rank gets the
same answer.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Sequence

import torch
import torch.distributed as dist

# The loop exits with this code after the stop checkpoint. 0, because a non-zero worker exit is a
# *failure* to everything above the worker: torchrun tears the other workers down and, under
# --max-restarts, starts them again (which would resume and train on past the stop request), and srun
# marks the step failed. The batch script knows it asked for the stop (its trap ran), so it needs no
# exit code to decide to requeue. A run that stopped early is told apart from a finished one by the
# log line "stopping at step N: <reason>" and by the missing summary.json.
PREEMPTED_EXIT_CODE = 0

# SIGUSR1: what slurm/*.sbatch and most schedulers send before a time limit; SIGUSR2: submitit's
# pre-timeout signal (hydra-submitit-launcher); SIGTERM: scancel, the time limit itself, docker stop.
DEFAULT_SIGNALS = ("SIGUSR1", "SIGUSR2", "SIGTERM")

STOP_FILE_NAME = "STOP"  # slurm/train.sbatch touches <run_dir>/STOP; keep the two in step


def stop_file_for(run_dir: Path) -> Path:
    return Path(run_dir) / STOP_FILE_NAME


def _signal_number(name: str) -> int:
    try:
        return int(signal.Signals[name])
    except KeyError:
        valid = ", ".join(s.name for s in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM, signal.SIGINT))
        raise ValueError(f"unknown signal name '{name}' for StopRequest; use names such as {valid}") from None


class StopRequest:
    """Signal handlers that only set a flag, and a collective check of that flag and the stop file.

    Usage, on every rank::

        stop = StopRequest(stop_file_for(run_dir)).install()
        try:
            while step < max_steps:
                ...train one step...
                if (reason := stop.poll(ctx)) is not None:
                    save checkpoint; log(f"stopping at step {step}: {reason}"); break
        finally:
            stop.uninstall()
    """

    def __init__(self, stop_file: Path | None, signals: Sequence[str] = DEFAULT_SIGNALS) -> None:
        self.stop_file = Path(stop_file) if stop_file is not None else None
        self.signals = [_signal_number(name) for name in signals]
        self.received: int | None = None  # number of the last signal received, set by the handler
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame) -> None:
        # Only record: the handler runs between two bytecodes of whatever the loop is doing (maybe a
        # collective or a checkpoint write), so anything more here could deadlock or corrupt state.
        self.received = signum

    def install(self) -> "StopRequest":
        """Install the handlers (main thread only, as Python requires); returns self."""
        for signum in self.signals:
            if signum not in self._previous:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def uninstall(self) -> None:
        """Restore the handlers that were in place before install(); call it after the stop checkpoint.

        If a signal arrived and the handler it displaced is a Python function, that function now gets
        the signal: e.g. submitit's pre-timeout handler, which requeues the job and exits, runs after
        the checkpoint instead of in the middle of a step. Default actions (SIG_DFL, SIG_IGN) are not
        replayed, so a plain process stopped by SIGTERM still exits with PREEMPTED_EXIT_CODE.
        """
        previous_handlers, self._previous = self._previous, {}
        for signum, previous in previous_handlers.items():
            signal.signal(signum, previous)
        received = self.received
        if received is not None and callable(previous_handlers.get(received)):
            self.received = None
            previous_handlers[received](received, None)

    def poll(self, ctx) -> str | None:
        """The reason to stop if any rank got a signal or the stop file exists, else None.

        A stop file that was seen is removed (by rank 0, after every rank has the answer).
        Collective when ctx.world_size > 1: every rank must call it at the same step. Costs one
        all-reduce of two int64 values (and one stat() of the stop file, on rank 0 only: the run dir
        is shared, so one look is enough and keeps a shared filesystem out of every rank's step).
        """
        rank, world = int(ctx.rank), int(ctx.world_size)
        # Signal and rank in one number, so MAX picks a consistent pair: the highest signal number,
        # and among the ranks that got it the highest rank. 0 means "no signal".
        signalled = self.received * world + rank + 1 if self.received is not None else 0
        file_seen = int(rank == 0 and self.stop_file is not None and self.stop_file.exists())
        if world > 1:
            flags = torch.tensor([signalled, file_seen], dtype=torch.int64, device=ctx.device)
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
            signalled, file_seen = (int(v) for v in flags.tolist())
        if file_seen and rank == 0:  # consumed, so that resuming this run does not stop it again at once
            self.stop_file.unlink(missing_ok=True)
        if signalled:
            signum, from_rank = divmod(signalled - 1, world)
            return f"signal {signal.Signals(signum).name} on rank {from_rank}"
        if file_seen:
            return f"stop file {self.stop_file}"
        return None
