"""``orthogpt-reproduce <study>``: validate every run, run what is not done, write the report.

    orthogpt-reproduce cpu                  # configs/study/cpu.yaml -> studies/cpu/
    orthogpt-reproduce cpu --plan           # validate and list the runs (and predicted GPU-hours); run nothing
    orthogpt-reproduce cpu --report-only    # rebuild report.md / figures from the runs on disk
    orthogpt-reproduce my_study.yaml --out /scratch/studies/mine --launcher torchrun --parallel 1

Stop it at any time (Ctrl-C, SIGTERM, a lost node): the same command resumes; finished runs are
skipped, interrupted ones continue from their checkpoints (scripts/study/plan.py).
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
from scripts.study.plan import DONE, PARTIAL, PENDING, plan_study, predicted_gpu_hours
from scripts.study.report import TIMINGS, write_report
from scripts.study.spec import LAUNCHERS, StudyError, load_study


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


def _launcher(study, args):
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


def describe(study, runs, out=print) -> None:
    counts = {s: sum(r.state == s for r in runs) for s in (DONE, PARTIAL, PENDING)}
    out(f"study {study.name}: {len(runs)} runs ({len(study.grids)} optimizers, {study.seeds} seed(s)); "
        f"{counts[DONE]} done, {counts[PARTIAL]} interrupted (will resume), {counts[PENDING]} to start")
    for name, grid in study.grids.items():
        shown = ", ".join(f"{k}={list(v)}" for k, v in grid.items())
        out(f"  {name}: {shown}")
    tflop = sum(r.train_flops for r in runs) / 1e12
    out(f"  training compute: {tflop:,.0f} TFLOP in all ({tflop / len(runs):,.1f} per run)")
    hours = predicted_gpu_hours(study, runs)
    if hours is not None:
        c = study.compute
        out(f"  predicted: {hours:,.1f} {c.gpu} GPU-hours at {c.assumed_mfu:.0%} MFU of {c.peak_tflops:g} TFLOP/s "
            f"({hours / len(runs):,.2f} per run)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        study = _launcher(load_study(args.study), args)
        study_dir = (args.out or Path("studies") / study.name).resolve()
        runs = plan_study(study, study_dir, check_configs=not args.report_only)
    except StudyError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    describe(study, runs)
    if args.plan:
        return 0
    study_dir.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        try:
            print(f"report: {write_report(study, study_dir, runs)}")
        except FileNotFoundError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        return 0
    shutil.copyfile(study.path, study_dir / "study.yaml")  # what this directory is a study of
    begun, started_at = time.monotonic(), time.time()
    runner = StudyRunner(study.launcher, runs, study_dir / "logs", args.progress_every)
    try:
        code = runner.run()
    finally:
        with open(study_dir / TIMINGS, "a") as f:
            f.write(json.dumps({"kind": "invocation", "started": started_at, "seconds": time.monotonic() - begun,
                                "pid": os.getpid(), "runs_finished": len(runner.durations)}) + "\n")
    if all(run.state == DONE for run in runs):
        print(f"report: {write_report(study, study_dir, runs)}")
    elif code == 0:
        code = 1
    return code


if __name__ == "__main__":
    sys.exit(main())
