"""Fault-injection harness: run the real ``train.py`` (one process or torchrun), kill it with real
signals at chosen moments, and read back what it wrote. Used by tests/test_reliability_*.py and by
orthogpt-fault-inject (many random injections, the table in RELIABILITY.md).

Moments are drawn from a ``random.Random(seed)`` that the caller creates and prints, so any failure
can be replayed with the same seed.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from trainer.metrics import METRICS_FILE, read_metrics

ROOT = Path(__file__).resolve().parents[2]  # the checkout (configs/, train.py)

# Tiny, deterministic on one machine (every launch resolves the same dtypes), one metrics row per
# step; TrainJob adds the step counts.
BASE_OVERRIDES = (
    "model=gpt2-test", "trainer.seq_len=64", "trainer.log_every=1", "trainer.eval_every=0",
    "trainer.eval_batches=1", "trainer.keep_checkpoints=2", "trainer.peak_tflops=1.0", "trainer.plot=false", "trainer.resume=auto",
    "schedule.warmup_steps=2", "logging=disabled", "logging.progress_bar=false", "device=cpu",
)


def compose_config(data_dir: Path, *overrides: str, max_steps: int = 9, checkpoint_every: int = 3,
                   micro_batch_size: int = 2):
    """The same tiny configuration, composed in-process (for tests that need no separate process)."""
    from hydra import compose, initialize_config_dir

    sizes = (f"trainer.max_steps={max_steps}", f"trainer.checkpoint_every={checkpoint_every}",
             f"trainer.micro_batch_size={micro_batch_size}", f"data.cache_dir={data_dir}")
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base=None):
        return compose("train", overrides=[*BASE_OVERRIDES, *sizes, *overrides])


def train_in_process(cfg, run_dir: Path) -> dict:
    """Validate and fit in this process (one rank); returns the run summary."""
    from trainer.config import build_config
    from trainer.distributed import DistContext
    from trainer.loop import Trainer

    return Trainer(build_config(cfg), DistContext(), Path(run_dir)).fit()


def multiprocess_unavailable() -> str | None:
    """Why a 2-rank launch would be refused, or None: asks build_config instead of assuming."""
    from trainer.config import build_config

    cfg = compose_config(Path("unused"), micro_batch_size=1)
    try:
        build_config(cfg, world_size=2)
    except ValueError as err:
        return f"multi-process training is refused by build_config ({err})"
    return None


def needs_multiprocess_training() -> None:
    import pytest

    reason = multiprocess_unavailable()
    if reason:
        pytest.skip(reason)


def seed_from_env(name: str = "FAULT_SEED") -> int:
    """The seed for random kill moments: $FAULT_SEED to replay a failure, else a fresh one."""
    return int(os.environ[name]) if os.environ.get(name) else random.SystemRandom().randrange(2**31)


@dataclass
class TrainJob:
    """One ``train.py`` launch (repeatable: every launch appends to the same run directory)."""

    run_dir: Path
    data_dir: Path
    overrides: tuple[str, ...] = ()
    nproc: int = 1
    max_restarts: int = 0
    max_steps: int = 12
    checkpoint_every: int = 3
    micro_batch_size: int = 2
    launches: int = field(default=0, init=False)

    @property
    def checkpoint_steps(self) -> list[int]:
        return list(range(self.checkpoint_every, self.max_steps + 1, self.checkpoint_every))

    def command(self) -> list[str]:
        sizes = (f"trainer.max_steps={self.max_steps}", f"trainer.checkpoint_every={self.checkpoint_every}",
                 f"trainer.micro_batch_size={self.micro_batch_size}")
        args = ["train.py", *BASE_OVERRIDES, *sizes, *self.overrides, f"hydra.run.dir={self.run_dir}"]
        if self.nproc == 1:
            return [sys.executable, *args]
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={self.nproc}",
                f"--max-restarts={self.max_restarts}", "--monitor-interval=0.1", *args]

    def env(self) -> dict[str, str]:
        env = dict(os.environ, ORTHOGPT_DATA_DIR=str(self.data_dir), WANDB_SILENT="true", PYTHONUNBUFFERED="1")
        env.pop("WANDB_API_KEY", None)
        return env

    def start(self) -> subprocess.Popen:
        """Start in a new session (so the whole job can be killed as a group); output to log files."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.launches += 1
        out = open(self.run_dir / f"launch{self.launches}.out", "w")
        return subprocess.Popen(self.command(), cwd=ROOT, env=self.env(), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)

    def output(self, launch: int | None = None) -> str:
        return (self.run_dir / f"launch{launch or self.launches}.out").read_text()

    def run(self, timeout: float = 300) -> str:
        """Run to the end; return its output, or fail showing the output's tail."""
        proc = self.start()
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(proc)
            raise AssertionError(f"train.py timed out after {timeout}s:\n{self.output()[-3000:]}") from None
        if code != 0:
            raise AssertionError(f"train.py exited with {code}:\n{self.output()[-3000:]}")
        return self.output()


# --------------------------------------------------------------------------------- observers
def checkpoints_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def last_logged_step(run_dir: Path) -> int:
    """Largest step in metrics.jsonl (0 if none); a half-written last line is ignored."""
    path = Path(run_dir) / METRICS_FILE
    try:
        lines = path.read_bytes().split(b"\n")[:-1]  # the part after the last newline is incomplete
    except FileNotFoundError:
        return 0
    return max((json.loads(line)["step"] for line in lines if line.strip()), default=0)


def write_in_progress(run_dir: Path, step: int) -> bool:
    return (checkpoints_dir(run_dir) / f".tmp_step_{step:08d}").is_dir()


def is_complete(run_dir: Path, step: int) -> bool:
    return (checkpoints_dir(run_dir) / f"step_{step:08d}" / "MANIFEST.json").is_file()


def losses(run_dir: Path) -> dict[int, float]:
    """step -> training loss from metrics.jsonl. Rows repeated for one step (written before a kill
    and again after the resume) must agree exactly; that is part of what "exact resume" means."""
    seen: dict[int, float] = {}
    for row in read_metrics(run_dir):
        if "loss" not in row:
            continue
        step = int(row["step"])
        assert seen.get(step, row["loss"]) == row["loss"], (
            f"step {step} logged twice with different losses: {seen[step]} then {row['loss']}"
        )
        seen[step] = row["loss"]
    return seen


def tensor_file_crcs(checkpoint: Path) -> dict[str, str]:
    """CRC32 of the DCP data files from the manifest: equal CRCs = bit-identical model and optimizer."""
    files = json.loads((Path(checkpoint) / "MANIFEST.json").read_text())["files"]
    return {name: entry["crc32"] for name, entry in files.items() if name.endswith(".distcp")}


def summary(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "summary.json").read_text())


# ----------------------------------------------------------------------------------- faults
def wait_until(condition: Callable[[], bool], proc: subprocess.Popen, what: str, timeout: float = 120,
               poll: float = 0.001) -> None:
    """Poll ``condition`` until true; fail if the process ends first (the fault would be missed)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (exit {proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            kill_group(proc)
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(poll)


def kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    """Signal the launched process and every process it started, then reap it. (Process groups are not
    enough: torchrun starts each worker in a session of its own.)"""
    pids = [proc.pid, *descendants(proc.pid)]
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    proc.wait()
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in pids[1:]) and time.monotonic() < deadline:
        time.sleep(0.01)  # orphaned workers are reaped by init; the next launch must not overlap them


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def kill_inside_step(job: TrainJob, proc: subprocess.Popen, after_step: int, delay: float) -> str:
    """SIGKILL the job ``delay`` seconds after step ``after_step`` was logged (mid-way through a later step)."""
    wait_until(lambda: last_logged_step(job.run_dir) >= after_step, proc, f"step {after_step} was logged")
    time.sleep(delay)
    kill_group(proc)
    return f"SIGKILL {delay * 1000:.0f} ms after step {last_logged_step(job.run_dir)} was logged"


def kill_inside_checkpoint_write(job: TrainJob, proc: subprocess.Popen, step: int, delay: float = 0.0) -> bool:
    """SIGKILL the job once the temporary directory of checkpoint ``step`` appears (plus ``delay``).
    Returns True if the kill landed inside the write (the checkpoint is still incomplete)."""
    wait_until(lambda: write_in_progress(job.run_dir, step), proc, f"checkpoint {step} started writing",
               poll=0.0005)
    if delay:
        time.sleep(delay)
    kill_group(proc)
    return not is_complete(job.run_dir, step)


def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid`` (Linux /proc)."""
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return children


def descendants(pid: int) -> list[int]:
    found, todo = [], child_pids(pid)
    while todo:
        child = todo.pop()
        found.append(child)
        todo += child_pids(child)
    return found


def training_workers(torchrun_pid: int) -> list[int]:
    """The train.py worker processes torchrun started (not helpers such as a resource tracker)."""
    workers = []
    for pid in child_pids(torchrun_pid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(arg.endswith(b"train.py") for arg in cmdline):
            workers.append(pid)
    return sorted(workers)


# -------------------------------------------------------------------------------- scenarios
def newest_complete_step(run_dir: Path) -> int:
    steps = [int(p.name.split("_")[1]) for p in checkpoints_dir(run_dir).glob("step_*")
             if (p / "MANIFEST.json").is_file()]
    return max(steps, default=0)


def resume_line(job: TrainJob, launch: int | None = None) -> str:
    """The 'resumed from ...' line of a launch's output ('' if it started from scratch)."""
    return next((line for line in job.output(launch).splitlines() if "resumed from" in line), "")


def fault_kill_inside_step(job: TrainJob, rng: random.Random) -> str:
    """Launch, then SIGKILL the whole job at a random moment after a random step (before the end)."""
    start = newest_complete_step(job.run_dir)
    after = rng.randint(start + 1, job.max_steps - 3)
    proc = job.start()
    event = kill_inside_step(job, proc, after_step=after, delay=rng.uniform(0.0, 0.06))
    assert proc.returncode == -signal.SIGKILL, f"the run ended (exit {proc.returncode}) before the kill: {event}"
    return event


def fault_kill_inside_checkpoint_write(job: TrainJob, rng: random.Random, max_delay: float = 0.0,
                                       not_first: bool = False, require_inside: bool = True) -> str:
    """Launch, then SIGKILL the whole job while it writes a random checkpoint later than the newest
    (``not_first``: never the run's first checkpoint, so that the relaunch has one to resume from).
    With a random delay the write may finish first: an error if ``require_inside``, else reported."""
    start = newest_complete_step(job.run_dir)
    lowest = max(start, job.checkpoint_every if not_first else 0)
    target = rng.choice([s for s in job.checkpoint_steps if s > lowest])
    proc = job.start()
    delay = rng.uniform(0.0, max_delay)
    inside = kill_inside_checkpoint_write(job, proc, target, delay=delay)
    assert inside or not require_inside, f"the kill missed the write of checkpoint {target} (it completed first)"
    where = "while writing" if inside else "just after writing"
    return f"SIGKILL {delay * 1000:.1f} ms after checkpoint {target} began, {where} it"


def fault_kill_one_rank(job: TrainJob, rng: random.Random, timeout: float = 300) -> str:
    """Launch under torchrun --max-restarts, SIGKILL one random worker after a random step, and let the
    job restart and finish. Returns what happened; fails if the job does not succeed."""
    assert job.nproc > 1 and job.max_restarts >= 1
    after = rng.randint(1, job.max_steps - 3)
    proc = job.start()
    wait_until(lambda: last_logged_step(job.run_dir) >= after, proc, f"step {after} was logged")
    workers = training_workers(proc.pid)
    assert len(workers) == job.nproc, f"expected {job.nproc} workers under torchrun, found {workers}"
    victim = rng.randrange(job.nproc)
    time.sleep(rng.uniform(0.0, 0.2))
    os.kill(workers[victim], signal.SIGKILL)
    killed_after = last_logged_step(job.run_dir)
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        raise AssertionError(f"the job did not finish after the rank was killed:\n{job.output()[-3000:]}") from None
    assert code == 0, f"torchrun exited with {code} after one rank was killed:\n{job.output()[-3000:]}"
    return f"SIGKILL worker {victim} of {job.nproc} after step {killed_after}; {resume_line(job) or 'restarted from scratch'}"


def differences_from(job: TrainJob, reference: TrainJob) -> list[str]:
    """What the faulty run lost or changed compared with the uninterrupted reference (goal: nothing):
    a step's loss, the final step, the final model/optimizer bytes, or a partial write left behind."""
    problems = []
    try:
        got = losses(job.run_dir)
    except AssertionError as err:
        return [str(err)]
    want = losses(reference.run_dir)
    rows = read_metrics(job.run_dir)
    loss_steps = [row["step"] for row in rows if "loss" in row]
    if len(loss_steps) != len(set(loss_steps)):  # the resume rewinds rows past its checkpoint
        problems.append(f"metrics.jsonl repeats steps: {sorted(s for s in set(loss_steps) if loss_steps.count(s) > 1)}")
    if sorted(got) != sorted(want):
        problems.append(f"steps logged {sorted(got)} != {sorted(want)}")
    problems += [f"step {s}: loss {got[s]!r} != {want[s]!r}" for s in sorted(want) if s in got and got[s] != want[s]]
    try:
        if summary(job.run_dir)["step"] != job.max_steps:
            problems.append(f"summary.json step {summary(job.run_dir)['step']} != {job.max_steps}")
    except FileNotFoundError:
        problems.append("no summary.json: the run did not finish")
    final = f"step_{job.max_steps:08d}"
    if not (checkpoints_dir(job.run_dir) / final / "MANIFEST.json").is_file():
        problems.append(f"final checkpoint {final} missing")
    elif tensor_file_crcs(checkpoints_dir(job.run_dir) / final) != tensor_file_crcs(checkpoints_dir(reference.run_dir) / final):
        problems.append("final model/optimizer state is not bit-identical to the uninterrupted run's")
    if list(checkpoints_dir(job.run_dir).glob(".tmp_*")):
        problems.append("a partial checkpoint write was left behind")
    return problems
