"""Dry runs through train.py: ``--validate`` (or trainer.dry_run=true) composes, validates and prints
the plan of a run or of every job of a ``-m`` sweep, and trains, reads and writes nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BASE = ["model=gpt2-test", "trainer.seq_len=32", "device=cpu", "logging=disabled"]


def train_py(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "ORTHOGPT_DEBUG")}
    cmd = [sys.executable, str(ROOT / "train.py"), *args, f"data.cache_dir={tmp_path / 'data'}",
           f"hydra.run.dir={tmp_path / 'runs' / 'stamp'}", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("flag", [["--validate"], pytest.param(["trainer.dry_run=true"], marks=pytest.mark.slow)],
                         ids=["--validate", "trainer.dry_run"])
def test_dry_run_prints_the_plan_and_touches_nothing(tmp_path, flag):
    run = train_py(tmp_path, *flag, *BASE, "optim=muon", "trainer.max_steps=30")
    assert run.returncode == 0, run.stderr[-3000:]
    out = run.stdout.splitlines()
    assert out[0].startswith("run         gpt2-test-muon -> ") and "  matrix      24.6k  muon (lr 0.02" in run.stdout
    assert "steps       30 steps, 7.68k tokens" in run.stdout  # 8 sequences x 32 tokens x 30 steps
    assert out[-1].startswith("dry run: the config is valid; nothing was trained or written")
    assert not (tmp_path / "data").exists()  # no data prepared
    assert not (tmp_path / "runs" / "stamp").exists()  # the job's directory Hydra made is gone again


@pytest.mark.slow
def test_dry_run_refuses_what_a_run_refuses(tmp_path):
    run = train_py(tmp_path, "--validate", *BASE, "trainer.seq_len=128")
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.strip() == ("error: trainer.seq_len (128) is longer than the model's context "
                                  "(model.block_size=64); lower trainer.seq_len or raise model.block_size")


def test_dry_run_of_a_sweep_plans_every_job_before_any_starts(tmp_path):
    run = train_py(tmp_path, "--validate", "-m", *BASE, "optim=adamw,muon", "trainer.max_steps=30,40")
    assert run.returncode == 0, run.stderr[-3000:]
    jobs = [line for line in run.stdout.splitlines() if line.startswith("job ")]
    swept = [f"optim={o} trainer.max_steps={s}" for o in ("adamw", "muon") for s in (30, 40)]  # launch order
    assert [line.split(": ")[0] for line in jobs] == ["job 0", "job 1", "job 2", "job 3"]
    assert all(overrides in line for overrides, line in zip(swept, jobs)), jobs
    assert "  gpt2-test-muon: 1.64M params, muon (lr matrix 0.02" in run.stdout
    assert "dry run: all 4 jobs compose and validate" in run.stdout
    assert not (tmp_path / "sweep").exists()  # stopped before the sweep directory


@pytest.mark.slow
def test_a_bad_job_fails_the_dry_run_of_its_sweep(tmp_path):
    run = train_py(tmp_path, "--validate", "-m", *BASE, "optim=adamw,muon", "optim.matrix.lr=0.01,-1")
    assert run.returncode != 0 and "Traceback" not in run.stderr
    assert "sweep check failed: sweep job 1 of 4 is invalid" in run.stderr
    assert "optim.matrix.lr must be > 0" in run.stderr and not (tmp_path / "sweep").exists()


def test_cfg_with_multirun_points_at_validate(tmp_path):
    run = train_py(tmp_path, "--cfg", "job", "-m", *BASE, "optim=adamw,muon")
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.startswith("error: --cfg cannot be combined with -m") and "--validate -m" in run.stderr
