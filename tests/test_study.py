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

from scripts.study.plan import PlannedRun
from scripts.study.spec import STUDY_DIR, StudyError, load_study
from scripts.study.stages import RunSpec

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
    """What the run printed (the study sends each run's stdout to logs/<stage>__<arm>__<setting>.log)."""
    path = study_dir / "logs" / f"{run_dir.parent.parent.name}__{run_dir.parent.name}__{run_dir.name}.log"
    return path.read_text() if path.is_file() else ""


def final_val_loss(run_dir: Path) -> float:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    by_step = {r["step"]: r["val_loss"] for r in rows if "val_loss" in r}
    return by_step[max(by_step)]


@pytest.mark.slow
def test_smoke_study_survives_a_kill_between_stages_and_reports_the_logs(tmp_path):
    out = tmp_path / "smoke"
    proc = subprocess.Popen([sys.executable, "-m", "scripts.study.cli", "cpu_smoke", "--out", str(out),
                             "--progress-every", "1"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    runs = out / "runs"
    deadline = time.monotonic() + 400
    # kill in stage 2: every grid point tuned, and a confirmation run checkpointed but not finished
    while time.monotonic() < deadline:
        tuned = list(runs.glob("tune/*/*/summary.json"))
        partial = [d for d in runs.glob("confirm/*/*") if not (d / "summary.json").exists()
                   and "saved checkpoint" in run_log(out, d)]
        if len(tuned) >= 6 and partial:
            break
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.2)
    else:
        pytest.fail("the study never reached a half-finished confirmation")
    os.killpg(proc.pid, signal.SIGKILL)  # the study command, hard
    proc.wait()
    for pid in processes_mentioning(str(out)):  # and its runs (their own sessions): a lost node
        os.kill(pid, signal.SIGKILL)
    finished = {d: (d / "metrics.jsonl").read_bytes() for d in (p.parent for p in runs.glob("*/*/*/summary.json"))}
    interrupted = [d for d in runs.glob("confirm/*/*") if not (d / "summary.json").exists()]
    assert finished and interrupted

    second = reproduce("cpu_smoke", "--out", out, "--progress-every", "1")
    assert second.returncode == 0, second.stdout + second.stderr
    for run_dir, metrics in finished.items():  # skipped, not rerun
        assert (run_dir / "metrics.jsonl").read_bytes() == metrics
        assert f"start  {run_dir.relative_to(runs)} " not in second.stdout
    resumed = [d for d in interrupted if "resumed from" in run_log(out, d)]
    assert resumed, "an interrupted run with a checkpoint must continue from it"

    report = json.loads((out / "report.json").read_text())
    assert report["runs_done"] == report["runs_planned"] and not report["missing"] and not report["waiting"]
    for run_id, row in report["runs"].items():  # every number is the run's own log
        assert row["final_val_loss"] == final_val_loss(runs / run_id)
    for name, arm in report["arms"].items():
        assert arm["bracketed"] is True or arm["setting"] is None
        if arm["setting"] is None:
            continue
        lr = arm["setting"]["optim.matrix.lr"]
        for seed, loss in arm["confirmation"].items():
            run_id = next(r for r in report["runs"] if r.startswith(f"confirm/{name}/") and r.endswith(f"_s{seed}"))
            assert loss == report["runs"][run_id]["counted_loss"] and f"lr{lr:g}" in run_id
        assert set(arm["confirmation"]) == {"1", "2", "3"}   # the fresh seeds, shared by both arms
    (claim,) = [c for c in report["claims"] if c["id"] == "muon_not_better_than_adam"]
    if claim["comparisons"][0].get("seeds"):
        comparison = claim["comparisons"][0]
        diffs = [w - b for b, w in zip(comparison["loss_better"], comparison["loss_worse"])]
        assert comparison["mean_diff"] == pytest.approx(sum(diffs) / len(diffs), rel=1e-12)
    md = (out / "report.md").read_text()
    assert "The Muon update (p = 0) does not consistently outperform Adam" in md and "Stage 1: tuning" in md
    for figure in ("confirmation_curves.png", "tuning.png"):
        assert (out / "figures" / figure).stat().st_size > 2000

    third = reproduce("cpu_smoke", "--out", out, "--plan")  # nothing left to do
    total = report["runs_planned"]
    assert third.returncode == 0 and f"{total} done, 0 interrupted (will resume), 0 to start" in third.stdout
    again = reproduce("cpu_smoke", "--out", out, "--report-only")  # composes nothing, same verdicts
    assert again.returncode == 0, again.stderr
    assert [c["verdict"] for c in json.loads((out / "report.json").read_text())["claims"]] == \
        [c["verdict"] for c in report["claims"]]


def write_study(tmp_path: Path, **changes) -> Path:
    raw = yaml.safe_load(SMOKE.read_text())
    raw.update(changes)
    path = tmp_path / "cpu_smoke.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("changes, message", [
    ({"arms": {"adamw": {"grid": {"optim.matrix.lr": [1e-3, 2e-3, 4e-3]}}, "adamz": {"grid": {"optim.matrix.lr": [1e-3]}}}},
     "arms.adamz: unknown optimizer 'adamz'"),
    ({"arms": {"adamw": {"grid": {"optim.matrix.lr": []}}}}, "arms.adamw.grid.optim.matrix.lr must be a non-empty list"),
    ({"arms": {"adamw": {"grid": {"optim.matrix.lr": [1e-3, 3e-3, 9e-3]}}}}, "must be a factor-2 ladder of at least 3"),
    ({"arms": {"muon": {"grid": {"optim.matrix.lr": [1e-2, 2e-2, 4e-2]}, "chosen": {"optim.matrix.lr": 0.02}}}},
     "needs exactly one of 'grid' (tune it) and 'chosen'"),
    ({"arms": {"muon": {"grid": {"optim.matrix.momentum": [0.9]}}}}, "have a 'optim.matrix.lr' list"),
    ({"arms": {}}, "'arms' is empty"),
    ({"confirm": {"seeds": [0, 1, 2]}}, "confirm.seeds must be fresh, but [0] also tune"),
    ({"confirm": {"seeds": [1, 2], "per_arm": {"muon": 5}}}, "per_arm.muon must be a seed count in 1..2"),
    ({"tune": {"seeds": "two", "max_extensions": 1, "round_log2": 0.5}}, "tune.seeds must be a non-empty list"),
    ({"tokens": {"reference": "namo", "max_steps": [16], "seeds": 2}}, "tokens.reference 'namo' is not an arm"),
    ({"launcher": {"kind": "mpi", "parallel": 1, "threads_per_run": None, "nproc_per_node": 1,
                   "slurm_launcher": "slurm_cpu"}}, "launcher: kind must be one of"),
    ({"overrides": ["optim=muon"]}, "overrides must not set optim"),
    ({"report": {"alpha": 0.05, "margin": 0.01, "robust_window": 0.02, "window": 1}}, "report: unknown key 'window'"),
])
def test_bad_study_file_is_refused_before_anything_runs(tmp_path, changes, message):
    path = write_study(tmp_path, **changes)
    with pytest.raises(StudyError, match=None) as err:
        load_study(str(path))
    assert message in str(err.value)


def test_a_bad_study_file_is_one_line_exit_2_through_the_command_line(tmp_path):
    """The command line turns every StudyError of the cases above into the same one line (one process
    for all of them: the path from load_study to the exit is shared)."""
    message = "confirm.seeds must be fresh, but [0] also tune"
    path = write_study(tmp_path, confirm={"seeds": [0, 1, 2]})
    result = reproduce(path, "--out", tmp_path / "out")
    assert result.returncode == 2 and message in result.stderr and result.stderr.startswith("error: ")
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "out").exists()  # nothing run, nothing written


def test_a_run_that_would_fail_is_found_before_any_starts(tmp_path):
    path = write_study(tmp_path, arms={"adamw": {"grid": {"optim.matrix.lr": [1e-3, 2e-3, 4e-3]}},
                                       "muon": {"grid": {"optim.matrix.lr": [1e-2, 2e-2, 4e-2],
                                                         "optim.matrix.momentum": [0.9, 1.5]}}},
                       tokens=None, claims="all")
    result = reproduce(path, "--out", tmp_path / "out")
    assert result.returncode == 2, result.stdout
    assert "tune/muon/lr0.01_momentum1.5_s0" in result.stderr and "optim.matrix.momentum" in result.stderr
    assert "no run was started" in result.stderr and not (tmp_path / "out").exists()


def test_an_edited_study_does_not_mix_into_old_runs(tmp_path):
    out = tmp_path / "out"
    run_dir = out / "runs" / "tune" / "adamw" / "lr0.001_s0"
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"seed": 0, "trainer": {"max_steps": 999}}))
    result = reproduce("cpu_smoke", "--out", out)
    assert result.returncode == 2
    assert "trainer.max_steps: on disk 999, study 8" in result.stderr and "Nothing was run" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["runs"]


def test_launcher_commands(tmp_path):
    from scripts.study.launch import TRAIN_PY, run_command
    from scripts.study.study_file import Launcher

    spec = RunSpec("confirm", "muon", "muon", (("optim.matrix.lr", 0.02),), 1)
    run = PlannedRun(spec, tmp_path / "runs" / "confirm" / "muon" / "lr0.02_s1",
                     ["optim=muon", f"hydra.run.dir={tmp_path}/x"], {}, 8, 0.0)
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
    assert "30 runs planned (30 tuning, 0 confirmation, 0 token-curve; 4 arms)" in result.stdout
    # 30 tuning + 4 arms x 4 seeds + Muon at 1.5x and 2x on 2 seeds = 53 runs of 2.95 GPU-hours each
    assert "predicted: 156.4 hours on one H200, 19.5 hours on 8" in result.stdout


def test_a_run_written_before_later_keys_existed_is_kept_unless_the_study_asks_for_other_behaviour(tmp_path):
    """A run directory whose config.yaml predates keys added to the config tree (its code had no
    embedding rule, no sampling, no dry run) is the same experiment when the study asks for what the
    code did then; asking for something else is refused with the key named."""
    from scripts.run_list_check import comparable
    from scripts.study.plan import ADDED_KEYS, plan_study

    study = load_study("cpu_smoke")
    planned, _ = plan_study(study, tmp_path)
    first = planned[0]
    old = comparable(first.resolved)
    for key in ADDED_KEYS:  # written by the older code: none of these keys on disk
        section, name = key.rsplit(".", 1)
        node = old
        for part in section.split("."):
            node = node[part]
        del node[name]
    first.run_dir.mkdir(parents=True)
    (first.run_dir / "config.yaml").write_text(yaml.safe_dump(old))  # no summary yet: it would resume
    again, _ = plan_study(study, tmp_path)
    assert again[0].state == "partial"

    edited = write_study(tmp_path, overrides=[*yaml.safe_load(SMOKE.read_text())["overrides"], "trainer.sample_every=4"])
    with pytest.raises(StudyError, match=r"trainer.sample_every: on disk None, study 4"):
        plan_study(load_study(str(edited)), tmp_path)
