"""Run a study's pending and partial runs: at most ``launcher.parallel`` at a time, with progress.

Each run is one train.py invocation (a child process), so a crash, a kill or a preemption of one run
never touches another, and every run writes the same files a hand-launched run writes:
- local:    ``python train.py <overrides>``        (OMP_NUM_THREADS=threads_per_run when set)
- torchrun: ``python -m torch.distributed.run --standalone --nproc_per_node N train.py <overrides>``
- slurm:    ``python train.py -m hydra/launcher=<slurm_launcher> <overrides>`` with the sweep directory
            pointed at the run directory: Hydra's submitit launcher submits the job and waits for it.
A child's stdout and stderr go to ``<study dir>/logs/<run>.log``. Every ``progress_every`` seconds
one line shows the study (runs done / total, elapsed, ETA from the runs finished so far) and each
running run's last logged step (read from its metrics.jsonl, so it works for every launcher).

SIGINT / SIGTERM to the study: each child gets SIGTERM (train.py checkpoints and exits at the next
step), the study waits for them and exits 130; the same command later resumes where it stopped.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from scripts.study.plan import DONE, PlannedRun
from trainer.metrics import METRICS_FILE
from scripts.study.study_file import Launcher

TRAIN_PY = str(Path(__file__).resolve().parents[2] / "train.py")
STOP_GRACE_S = 120.0


def run_command(launcher: Launcher, run: PlannedRun) -> list[str]:
    overrides = run.overrides
    if launcher.kind == "local":
        return [sys.executable, TRAIN_PY, *overrides]
    if launcher.kind == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", "--standalone",
                f"--nproc_per_node={launcher.nproc_per_node}", TRAIN_PY, *overrides]
    # slurm: one-job multirun whose job directory is the run directory
    sweep = [o for o in overrides if not o.startswith("hydra.run.dir=")]
    return [sys.executable, TRAIN_PY, "-m", f"hydra/launcher={launcher.slurm_launcher}", *sweep,
            f"hydra.sweep.dir={run.run_dir.parent}", f"hydra.sweep.subdir={run.run_dir.name}",
            f"hydra.launcher.tasks_per_node={launcher.nproc_per_node}"]


def last_step(run_dir: Path) -> tuple[int, float | None]:
    """The last train row's step and loss in the run's metrics.jsonl (0, None before the first)."""
    path = run_dir / METRICS_FILE  # only its tail is read: this runs every few seconds per run
    if not path.is_file():
        return 0, None
    step, loss = 0, None
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - 8192))
        for line in f.read().decode("utf-8", "replace").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "loss" in row:
                step, loss = int(row["step"]), float(row["loss"])
    return step, loss


def _clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class StudyRunner:
    def __init__(self, launcher: Launcher, runs: list[PlannedRun], log_dir: Path, progress_every: float = 15.0,
                 out=print):
        self.launcher, self.runs, self.log_dir = launcher, runs, log_dir
        self.progress_every, self.out = progress_every, out
        self.running: dict[str, tuple[PlannedRun, subprocess.Popen, float]] = {}
        self.failed: list[tuple[PlannedRun, int]] = []
        self.durations: list[float] = []
        self.stop_signal: int | None = None
        self.stop_time = 0.0

    def _start(self, run: PlannedRun) -> None:
        log = self.log_dir / f"{run.spec.run_id.replace('/', '__')}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        if self.launcher.threads_per_run is not None:
            env["OMP_NUM_THREADS"] = str(self.launcher.threads_per_run)
        with open(log, "ab") as handle:
            proc = subprocess.Popen(run_command(self.launcher, run), stdout=handle, stderr=subprocess.STDOUT,
                                    env=env, start_new_session=True)  # our signals reach it only via us
        self.running[run.spec.run_id] = (run, proc, time.monotonic())
        self.out(f"  start  {run.spec.run_id} ({run.state}; log {log})")

    def _reap(self) -> None:
        for run_id, (run, proc, started) in list(self.running.items()):
            code = proc.poll()
            if code is None:
                continue
            del self.running[run_id]
            if code == 0 and (run.run_dir / "summary.json").is_file():
                run.state = DONE
                self.durations.append(time.monotonic() - started)
                self.out(f"  done   {run_id} in {_clock(self.durations[-1])}")
            elif self.stop_signal is None:
                self.failed.append((run, code))
                self.out(f"  FAILED {run_id}: exit status {code} (see its log in {self.log_dir})")

    def _handle_stop(self, signum, frame) -> None:
        if self.stop_signal is None:
            self.stop_signal, self.stop_time = signum, time.monotonic()
            self.out(f"study: {signal.Signals(signum).name}; stopping the running runs (they checkpoint first)")
            for _, proc, _ in self.running.values():
                proc.send_signal(signal.SIGTERM)

    def progress_line(self, total: int, elapsed: float) -> str:
        done = sum(run.state == DONE for run in self.runs)
        left = total - done
        if self.durations:
            eta = _clock(sum(self.durations) / len(self.durations) * left / self.launcher.parallel)
        else:
            eta = "after the first run"
        parts = [f"study: {done}/{total} runs done, {len(self.failed)} failed, elapsed {_clock(elapsed)}, ETA {eta}"]
        for run, _, _ in self.running.values():
            step, loss = last_step(run.run_dir)
            shown = f", loss {loss:.3f}" if loss is not None else ""
            parts.append(f"    {run.spec.run_id}: step {step}/{run.max_steps}{shown}")
        return "\n".join(parts)

    def run(self) -> int:
        """Run everything not done; 0 when all runs are done, 1 if one failed, 130 when stopped."""
        queue = [run for run in self.runs if run.state != DONE]
        total, begun = len(self.runs), time.monotonic()
        self.out(f"study: {total - len(queue)}/{total} runs already done; {len(queue)} to run, "
                 f"{self.launcher.parallel} at a time ({self.launcher.kind})")
        previous = {sig: signal.signal(sig, self._handle_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        last_report = time.monotonic()
        try:
            while queue or self.running:
                while queue and self.stop_signal is None and len(self.running) < self.launcher.parallel:
                    self._start(queue.pop(0))
                if self.stop_signal is not None and not self.running:
                    break
                time.sleep(0.5)
                self._reap()
                if time.monotonic() - last_report >= self.progress_every:
                    self.out(self.progress_line(total, time.monotonic() - begun))
                    last_report = time.monotonic()
                if self.stop_signal is not None and time.monotonic() - self.stop_time > STOP_GRACE_S:
                    for _, proc, _ in self.running.values():
                        proc.kill()  # a child that ignored SIGTERM: its last checkpoint still stands
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        self.out(self.progress_line(total, time.monotonic() - begun).splitlines()[0])
        if self.stop_signal is not None:
            self.out("study: stopped; run the same command again to resume (done runs are skipped)")
            return 130
        return 1 if self.failed else 0
