"""The GPU acceptance script (scripts/gpu_check.sh -> scripts/gpu_check.py): its CPU dry run runs the
whole sequence (setup, the CUDA tests, which skip here, the per-optimizer benchmark, the exchange
under torchrun) and writes its report; its mistakes are one line and exit 2 before any work."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def gpu_check(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env=dict(os.environ, OMP_NUM_THREADS="1"))


@pytest.mark.slow
def test_cpu_dry_run_runs_every_phase_and_writes_the_report(tmp_path):
    # --skip-setup: the setup phase is scripts/setup.sh, which CI itself runs before this suite (~10 s saved)
    out = tmp_path / "report"
    proc = gpu_check("--out", str(out), "--cpu-dry-run", "--skip-setup")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    assert {name: phase["status"] for name, phase in report["phases"].items()} == {
        "cuda_tests": "ok", "optimizers": "ok", "exchange": "ok"}
    assert "skipped" in report["tests"]  # no GPU here: the CUDA tests were collected and skipped
    rows = {r["optimizer"]: r for r in report["optimizers"]["rows"]}
    assert set(rows) == {"adamw", "muon", "namo_d"}
    assert all(r["finite"] and r["tokens_per_s"] > 0 and r["mfu"] > 0 for r in rows.values())
    assert rows["adamw"]["ns_ms"] == 0 < rows["muon"]["ns_ms"]
    assert "| 2 | sharded |" in report["exchange"] and "| 2 | replicated |" in report["exchange"]
    markdown = (out / "gpu_check.md").read_text()
    assert "| muon |" in markdown and "NS share" in markdown
    assert report["elapsed_s"] < 450


@pytest.mark.parametrize("args,message", [
    (["--peak-tflops", "fast"], "--peak-tflops must be a number"),
    (["--peak-tflops", "-5"], "--peak-tflops must be a positive number"),
    ([], "no NVIDIA GPU found"),
])
def test_mistakes_are_one_line_and_exit_2(tmp_path, args, message):
    if not args and shutil.which("nvidia-smi"):
        pytest.skip("this machine has nvidia-smi: the missing-GPU error cannot be shown here")
    dry = ["--cpu-dry-run"] if args else []
    proc = gpu_check("--out", str(tmp_path / "out"), *dry, *args, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert not (tmp_path / "out" / "gpu_check.json").exists()


def test_unwritable_output_directory_is_named(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    proc = gpu_check("--out", str(blocker / "report"), "--cpu-dry-run", timeout=60)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "is not a writable directory" in proc.stderr
