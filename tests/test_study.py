"""Reproduction studies (scripts/study/): the smoke study end to end with a kill in the middle, the
report's numbers against the runs' own logs, and bad study files refused before anything runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from scripts.analysis.compare import RunSummary
from scripts.study.aggregate import Gap, RunResult, summarize_optimizers
from scripts.study.claims import judge_all
from scripts.study.plan import PlannedRun
from scripts.study.spec import STUDY_DIR, RunSpec, StudyError, load_study

ROOT = Path(__file__).resolve().parents[1]
SMOKE = STUDY_DIR / "cpu_smoke.yaml"


def reproduce(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scripts.study.cli", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, **kwargs)


def processes_mentioning(text: str) -> list[int]:
    """PIDs whose command line contains ``text`` (the train.py children of a study)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def run_log(study_dir: Path, run_dir: Path) -> str:
    """What the run printed (the study sends each run's stdout to logs/<optimizer>__<setting>.log)."""
    path = study_dir / "logs" / f"{run_dir.parent.name}__{run_dir.name}.log"
    return path.read_text() if path.is_file() else ""


def final_val_loss(run_dir: Path) -> float:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    by_step = {r["step"]: r["val_loss"] for r in rows if "val_loss" in r}
    return by_step[max(by_step)]


@pytest.mark.slow
def test_smoke_study_survives_a_kill_and_reports_the_logs(tmp_path):
    out = tmp_path / "smoke"
    proc = subprocess.Popen([sys.executable, "-m", "scripts.study.cli", "cpu_smoke", "--out", str(out),
                             "--progress-every", "1"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    runs = out / "runs"
    deadline = time.monotonic() + 300
    # kill once two runs are done and a running one has written a checkpoint but not finished
    while time.monotonic() < deadline:
        done = list(runs.glob("*/*/summary.json"))
        partial = [d for d in runs.glob("*/*") if not (d / "summary.json").exists()
                   and "saved checkpoint" in run_log(out, d)]
        if len(done) >= 2 and partial:
            break
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.2)
    else:
        pytest.fail("the study never reached a half-finished state")
    os.killpg(proc.pid, signal.SIGKILL)  # the study command, hard
    proc.wait()
    for pid in processes_mentioning(str(out)):  # and its runs (their own sessions): a lost node
        os.kill(pid, signal.SIGKILL)
    finished = {d: (d / "metrics.jsonl").read_bytes() for d in (p.parent for p in runs.glob("*/*/summary.json"))}
    interrupted = [d for d in runs.glob("*/*") if not (d / "summary.json").exists() and (d / "config.yaml").exists()]
    assert finished and interrupted

    second = reproduce("cpu_smoke", "--out", out, "--progress-every", "1")
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"{len(finished)}/8 runs already done" in second.stdout
    for run_dir, metrics in finished.items():  # skipped, not rerun
        assert (run_dir / "metrics.jsonl").read_bytes() == metrics
        assert f"start  {run_dir.parent.name}/{run_dir.name} " not in second.stdout
    resumed = [d for d in interrupted if "resumed from" in run_log(out, d)]
    assert resumed, "an interrupted run with a checkpoint must continue from it"

    report = json.loads((out / "report.json").read_text())
    assert report["runs_done"] == report["runs_total"] == 8 and not report["missing"]
    md = (out / "report.md").read_text()
    for row in report["ranking"]:
        for setting in row["settings"]:
            logged = [final_val_loss(Path(d)) for d in setting["run_dirs"]]
            assert setting["final_val_losses"] == logged  # the table is the logs, exactly
        if row["rank"] is not None:
            best = next(s for s in row["settings"] if s["setting"] == row["best_setting"])
            mean = sum(best["final_val_losses"]) / len(best["final_val_losses"])
            assert row["final_val_mean"] == pytest.approx(mean, rel=1e-12)
            edge = " (edge)" if row["best_lr_at_grid_edge"] else ""
            assert f"| {row['rank']} | {row['optimizer']} | {row['best_setting']}{edge} | {row['final_val_mean']:.4f} ±" in md
    assert {c["claim"] for c in report["claims"]} and "p = 0 (Muon) does not consistently beat Adam" in md
    for figure in ("val_loss_curves.png", "lr_sensitivity.png", "robustness.png"):
        assert (out / "figures" / figure).stat().st_size > 2000

    third = reproduce("cpu_smoke", "--out", out, "--plan")  # nothing left to do
    assert third.returncode == 0 and "8 done, 0 interrupted (will resume), 0 to start" in third.stdout


def write_study(tmp_path: Path, **changes) -> Path:
    raw = yaml.safe_load(SMOKE.read_text())
    raw.update(changes)
    path = tmp_path / "cpu_smoke.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("changes, message", [
    ({"optimizers": {"adamw": {"optim.matrix.lr": [1e-3]}, "adamz": {"optim.matrix.lr": [1e-3]}}},
     "optimizers.adamz: unknown optimizer 'adamz'"),
    ({"optimizers": {"adamw": {"optim.matrix.lr": []}}}, "optimizers.adamw.optim.matrix.lr must be a non-empty list"),
    ({"optimizers": {"adamw": {"optim.matrix.lr": [1e-3]}, "muon": None}}, "optimizers.muon has no grid"),
    ({"optimizers": {"muon": {"optim.matrix.momentum": [0.9]}}}, "optimizers.muon has no 'optim.matrix.lr'"),
    ({"optimizers": {}}, "'optimizers' is empty"),
    ({"seeds": 0}, "'seeds' must be an integer >= 1"),
    ({"seeds": "two"}, "'seeds' must be int"),
    ({"launcher": {"kind": "mpi", "parallel": 1, "threads_per_run": None, "nproc_per_node": 1,
                   "slurm_launcher": "slurm_cpu"}}, "launcher: kind must be one of"),
    ({"overrides": ["optim=muon"]}, "'overrides' must not set optim"),
    ({"report": {"robust_window": 0.02, "window": 1}}, "report: unknown key 'window'"),
])
def test_bad_study_file_is_refused_before_anything_runs(tmp_path, changes, message):
    path = write_study(tmp_path, **changes)
    with pytest.raises(StudyError, match=None) as err:
        load_study(str(path))
    assert message in str(err.value)
    result = reproduce(path, "--out", tmp_path / "out")
    assert result.returncode == 2 and message in result.stderr and result.stderr.startswith("error: ")
    assert not (tmp_path / "out").exists()  # nothing run, nothing written


def test_a_run_that_would_fail_is_found_before_any_starts(tmp_path):
    path = write_study(tmp_path, optimizers={"adamw": {"optim.matrix.lr": [1e-3]},
                                             "muon": {"optim.matrix.lr": [1e-2], "optim.matrix.momentum": [0.9, 1.5]}})
    result = reproduce(path, "--out", tmp_path / "out")
    assert result.returncode == 2, result.stdout
    assert "muon/lr0.01_momentum1.5_s0" in result.stderr and "optim.matrix.momentum" in result.stderr
    assert "no run was started" in result.stderr and not (tmp_path / "out").exists()


def test_an_edited_study_does_not_mix_into_old_runs(tmp_path):
    out = tmp_path / "out"
    run_dir = out / "runs" / "adamw" / "lr0.001_s0"
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"seed": 0, "trainer": {"max_steps": 999}}))
    result = reproduce("cpu_smoke", "--out", out)
    assert result.returncode == 2
    assert "trainer.max_steps: on disk 999, study 8" in result.stderr and "Nothing was run" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["runs"]


def test_gap_needs_two_seeds_and_non_overlapping_spreads():
    assert Gap("a", "b", gap=0.05, spread=0.04, seeds=2).conclusive
    assert not Gap("a", "b", gap=0.03, spread=0.04, seeds=3).conclusive
    assert not Gap("a", "b", gap=1.0, spread=0.0, seeds=1).conclusive  # one seed: never conclusive


def fake_results(finals: dict[str, list[list[float]]], window: float = 0.02):
    """OptimizerResults from final val losses: optimizer -> one list of per-seed losses per lr."""
    results = []
    for name, per_lr in finals.items():
        for i, seeds in enumerate(per_lr):
            for seed, loss in enumerate(seeds):
                spec = RunSpec(name, (("optim.matrix.lr", 10.0 ** -(i + 1)),), seed)
                summary = RunSummary(Path("/nowhere"), "r", name, spec.lr, loss, loss, 1, 1.0, 1.0, [0.0, 1.0],
                                     [10.0, loss])
                results.append(RunResult(PlannedRun(spec, Path("/nowhere"), [], {}, 1, 0.0), summary, 10.0))
    return summarize_optimizers(results, window)


def verdicts(finals, grids=None):
    results = fake_results(finals)
    return {v.claim.text: v.verdict for v in judge_all(results, grids or {})}


def test_claim_verdicts_follow_the_seed_spread():
    namo_claim = "NAMO beats AdamW and Muon on GPT-2 pretraining"
    muon_claim = "p = 0 (Muon) does not consistently beat Adam"
    clear = verdicts({"namo": [[3.00, 3.01]], "adamw": [[3.20, 3.21]], "muon": [[3.10, 3.11]]})
    assert clear[namo_claim] == "holds" and clear[muon_claim] == "does not hold"
    close = verdicts({"namo": [[3.00, 3.10]], "adamw": [[3.07, 3.10]], "muon": [[3.04, 3.08]]})
    assert close[namo_claim] == "inconclusive" and close[muon_claim] == "holds"
    reversed_ = verdicts({"namo": [[3.30, 3.31]], "adamw": [[3.20, 3.21]], "muon": [[3.10, 3.11]]})
    assert reversed_[namo_claim] == "does not hold"
    assert verdicts({"adamw": [[3.2, 3.2]]})[namo_claim] == "not tested"


def test_best_setting_is_chosen_on_the_mean_and_skips_diverged_settings():
    (result,) = fake_results({"muon": [[3.00, 3.40], [3.15, 3.16], [2.0, 11.0]]})
    assert result.best.lr == pytest.approx(1e-2)      # mean 3.155 beats 3.20; lr 1e-3 has a diverged seed
    assert result.settings[0].diverged and not result.settings[1].diverged
    assert result.robust_lrs == [pytest.approx(1e-2)]


def test_launcher_commands(tmp_path):
    from scripts.study.launch import TRAIN_PY, run_command
    from scripts.study.spec import Launcher

    spec = RunSpec("muon", (("optim.matrix.lr", 0.02),), 1)
    run = PlannedRun(spec, tmp_path / "runs" / "muon" / "lr0.02_s1", ["optim=muon", f"hydra.run.dir={tmp_path}/x"], {},
                     8, 0.0)
    local = run_command(Launcher("local", 2, 1, 1, "slurm_cpu"), run)
    assert local == [sys.executable, TRAIN_PY, "optim=muon", f"hydra.run.dir={tmp_path}/x"]
    torchrun = run_command(Launcher("torchrun", 1, None, 4, "slurm_cpu"), run)
    assert torchrun[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4"]
    assert torchrun[5:] == local[1:]
    slurm = run_command(Launcher("slurm", 8, None, 8, "slurm_gpu_node"), run)
    assert slurm[1:4] == [TRAIN_PY, "-m", "hydra/launcher=slurm_gpu_node"]
    assert f"hydra.sweep.dir={run.run_dir.parent}" in slurm and f"hydra.sweep.subdir={run.run_dir.name}" in slurm
    assert "hydra.launcher.tasks_per_node=8" in slurm and not any(a.startswith("hydra.run.dir") for a in slurm)


@pytest.mark.slow
def test_paper_study_plans_with_its_gpu_hours():
    result = reproduce("gpt2_124m_paper", "--plan")
    assert result.returncode == 0, result.stderr
    assert "99 runs (9 optimizers, 3 seed(s))" in result.stdout
    assert "predicted: 292.1 H100 GPU-hours at 40% MFU" in result.stdout
