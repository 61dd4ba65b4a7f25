"""Launching the real command lines from tests: ``python train.py`` (one process or torchrun) and
``python -m <module>``, in a chosen working directory, with a clean environment; and the checks of
the error surface every command shares (data/user_errors.py): one ``error:`` line, exit status 2, no
traceback."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NAME = "gpt2-test-adamw"  # run_name of model=gpt2-test optim=adamw
QUIET = ["trainer.eval_batches=1", "trainer.micro_batch_size=2", "trainer.plot=false", "logging.progress_bar=false",
         "device=cpu"]
SMALL = ["model=gpt2-test", "trainer.seq_len=32", "schedule.warmup_steps=0", "logging=disabled", *QUIET]
SCRUBBED = ("HYDRA_FULL_ERROR", "ORTHOGPT_DEBUG", "WANDB_MODE", "WANDB_API_KEY", "ORTHOGPT_RUN_STAMP", "NETRC")


def launch(args: list[str], cwd: Path = ROOT, env: dict | None = None, nproc: int = 1,
           module: str | None = None) -> subprocess.CompletedProcess:
    """``python train.py args`` (``module``: ``python -m module args``; ``nproc`` > 1: torchrun). ``env``
    is added to the environment; its PYTHONPATH goes before the checkout's."""
    if module:
        cmd = [sys.executable, "-m", module, *args]
    elif nproc == 1:
        cmd = [sys.executable, str(ROOT / "train.py"), *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               str(ROOT / "train.py"), *args]
    env = dict(env or {})
    environment = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
    environment["PYTHONPATH"] = os.pathsep.join(p for p in (env.pop("PYTHONPATH", ""), str(ROOT)) if p)
    return subprocess.run(cmd, cwd=cwd, env={**environment, **env}, capture_output=True, text=True, timeout=600)


def one_line_error(proc: subprocess.CompletedProcess, *texts: str) -> str:
    """The single ``error:`` line of a refused start (exit status 2, no traceback, nothing else)."""
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), output[-3000:]
    for text in texts:
        assert text in lines[0], lines[0]
    return lines[0]


def error_line(proc: subprocess.CompletedProcess, *texts: str) -> str:
    """The single ``error:`` line of a run that failed after it started (its log lines before it)."""
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, output[-3000:]
    for text in texts:
        assert text in errors[0], errors[0]
    return errors[0]


def snapshot(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def checkpoints(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "checkpoints").iterdir())
