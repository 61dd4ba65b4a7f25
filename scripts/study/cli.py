"""``orthogpt-reproduce <study>``: validate every run, run what is not done, write the report.

    orthogpt-reproduce cpu                  # configs/study/cpu.yaml -> studies/cpu/
    orthogpt-reproduce cpu --plan           # validate and list the runs (and predicted GPU-hours); run nothing
    orthogpt-reproduce cpu --report-only    # rebuild report.md / figures from the runs on disk
    orthogpt-reproduce my_study.yaml --out /scratch/studies/mine --launcher torchrun --parallel 1

The study runs in passes: stage 1 (tuning, with edge extensions), then stage 2 (confirmation on
fresh seeds) and the token curve as each arm's choice becomes known (scripts/study/stages.py).
Stop it at any time (Ctrl-C, SIGTERM, a lost node): the same command resumes, between stages too;
finished runs are skipped, interrupted ones continue from their checkpoints (scripts/study/plan.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time
from pathlib import Path

from scripts.study.launch import StudyRunner
from scripts.study.plan import DONE, PARTIAL, PENDING, PlannedRun, plan_study, predicted_gpu_hours
from scripts.study.report import TIMINGS, write_report
from scripts.study.spec import Study, StudyError, load_study
from scripts.study.stages import CONFIRM, TOKENS, TUNE, StudyPlan
from scripts.study.study_file import LAUNCHERS


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="orthogpt-reproduce", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("study", help="a name in configs/study/ (e.g. cpu, cpu_smoke, gpt2_124m_paper) or a .yaml path")
    p.add_argument("--out", type=Path, default=None, help="study directory (default: studies/<name>)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--plan", action="store_true", help="validate and list the runs; run nothing")
    mode.add_argument("--report-only", action="store_true", help="write the report from the runs on disk")
    p.add_argument("--launcher", choices=LAUNCHERS, default=None, help="override the study's launcher.kind")
    p.add_argument("--parallel", type=int, default=None, help="override launcher.parallel")
    p.add_argument("--nproc-per-node", type=int, default=None, help="override launcher.nproc_per_node")
    p.add_argument("--progress-every", type=float, default=15.0, help="seconds between progress lines")
    return p.parse_args(argv)


def _launcher(study: Study, args: argparse.Namespace) -> Study:
    changes = {k: v for k, v in (("kind", args.launcher), ("parallel", args.parallel),
                                 ("nproc_per_node", args.nproc_per_node)) if v is not None}
    if not changes:
        return study
    if changes.get("parallel", 1) < 1 or changes.get("nproc_per_node", 1) < 1:
        raise StudyError("--parallel and --nproc-per-node must be >= 1")
    launcher = dataclasses.replace(study.launcher, **changes)
    if launcher.kind == "local" and launcher.nproc_per_node != 1:
        raise StudyError(f"nproc_per_node={launcher.nproc_per_node} needs --launcher torchrun")
    return dataclasses.replace(study, launcher=launcher)


def predicted_flops(study: Study, runs: list[PlannedRun], staged: StudyPlan) -> float:
    """Training FLOPs of the whole study: the runs known now, plus stage 2 and the token curve of the
    arms still tuning (at a tuning run's cost; edge extensions cannot be foreseen)."""
    flops = sum(r.train_flops for r in runs)
    per_arm = {r.spec.arm: r for r in runs if r.spec.stage == TUNE}
    for name, run in per_arm.items():
        if name not in staged.choices:
            flops += run.train_flops * len(study.confirm.seeds_of(name))
            curve = study.tokens
            if curve is not None and curve.reference == name:
                flops += sum(run.train_flops * steps / run.max_steps for steps in curve.max_steps) * curve.seeds
    return flops


def describe(study: Study, runs: list[PlannedRun], staged: StudyPlan, out=print) -> None:
    counts = {s: sum(r.state == s for r in runs) for s in (DONE, PARTIAL, PENDING)}
    stages = {stage: sum(r.spec.stage == stage for r in runs) for stage in (TUNE, CONFIRM, TOKENS)}
    out(f"study {study.name}: {len(runs)} runs planned ({stages[TUNE]} tuning, {stages[CONFIRM]} confirmation, "
        f"{stages[TOKENS]} token-curve; {len(study.arms)} arms); {counts[DONE]} done, "
        f"{counts[PARTIAL]} interrupted (will resume), {counts[PENDING]} to start")
    for name, arm in study.arms.items():
        shown = ", ".join(f"{k}={list(v)}" for k, v in arm.grid.items()) if arm.grid else f"chosen {dict(arm.chosen)}"
        out(f"  {name} ({arm.optimizer}): {shown}; confirmed on {len(study.confirm.seeds_of(name))} seeds")
    for line in staged.waiting:
        out(f"  waiting: {line}")
    flops = predicted_flops(study, runs, staged)
    shown = f"{flops / 1e12:,.0f}" if flops >= 1e13 else f"{flops / 1e12:.3g}"
    out(f"  training compute: {shown} TFLOP in all (stage 2 of arms still tuning included)")
    hours = predicted_gpu_hours(study, flops)
    if hours is not None:
        c = study.compute
        out(f"  predicted: {hours:,.1f} hours on one {c.gpu}, {hours / 8:,.1f} hours on 8 "
            f"(at {c.assumed_mfu:.0%} MFU of {c.peak_tflops:g} TFLOP/s; edge extensions not included)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        study = _launcher(load_study(args.study), args)
        study_dir = (args.out or Path("studies") / study.name).resolve()
        runs, staged = plan_study(study, study_dir, compose_configs=not args.report_only)
    except StudyError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    describe(study, runs, staged)
    if args.plan:
        return 0
    if args.report_only:
        try:
            print(f"report: {write_report(study, study_dir, runs, staged)}")
        except (FileNotFoundError, StudyError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        return 0
    study_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(study.path, study_dir / "study.yaml")  # what this directory is a study of
    code = 0
    while code == 0:  # each pass runs what the finished runs imply; a stage's end unlocks the next
        todo = [run for run in runs if run.state != DONE]
        if not todo:
            break
        code = run_batch(study, study_dir, runs, args.progress_every)
        try:
            runs, staged = plan_study(study, study_dir)
        except StudyError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        if code == 0 and any(run.state != DONE for run in runs):
            describe(study, runs, staged)
    if code == 0:
        print(f"report: {write_report(study, study_dir, runs, staged)}")
    return code


def run_batch(study: Study, study_dir: Path, runs: list[PlannedRun], progress_every: float) -> int:
    begun, started_at = time.monotonic(), time.time()
    runner = StudyRunner(study.launcher, runs, study_dir / "logs", progress_every)
    try:
        return runner.run()
    finally:
        with open(study_dir / TIMINGS, "a") as f:
            f.write(json.dumps({"kind": "invocation", "started": started_at, "seconds": time.monotonic() - begun,
                                "pid": os.getpid(), "runs_finished": len(runner.durations)}) + "\n")


if __name__ == "__main__":
    sys.exit(main())
