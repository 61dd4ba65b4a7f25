"""GPU acceptance run: one command on a fresh GPU machine checks the CUDA path and measures it.

    bash scripts/gpu_check.sh --out gpu_check/             # setup, CUDA tests, benchmarks (<= 8 min)
    bash scripts/gpu_check.sh --out /tmp/dry --cpu-dry-run # the same sequence, tiny, on CPU (CI runs it)

Phases, each a subprocess with a timeout cut from one overall budget (``--budget-s``, default 450 s,
so the run stops by itself inside 8 minutes even if a phase hangs):

    setup        scripts/setup.sh (with a GPU, pip resolves a CUDA torch)
    cuda tests   pytest -m cuda (tests/test_cuda.py: bf16 NS vs torch.optim.Muon, chunked loss, a
                 compiled bf16 trainer run, HF export logits, DCP of CUDA DTensors, NCCL exchange)
    optimizers   GPT-2 124M, bf16 autocast + torch.compile, a few dozen steps per optimizer
                 (scripts.benchmarks.optimizer_step_time): tokens/s, MFU against --peak-tflops
                 (H100/H200 dense bf16: 989), Newton-Schulz ms per step and its share, peak memory
    exchange     with >= 2 GPUs: sharded vs replicated Newton-Schulz under torchrun (NCCL)

It writes gpu_check.md (the tables) and gpu_check.json (everything) to ``--out`` after every phase,
so a killed run leaves what it measured, and each phase's whole output to <phase>.log beside them. This module imports only the standard library: it runs
before setup has installed torch. Mistakes (a bad --peak-tflops, an output directory that cannot be
written, no GPU without --cpu-dry-run) are one line on stderr and exit status 2, before any work.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# (phase, seconds it may take at most, before the budget cuts it shorter)
PHASE_CAPS = {"setup": 240, "cuda_tests": 150, "optimizers": 240, "exchange": 90}
RESERVE_S = 5  # kept to write the report


class CheckError(Exception):
    """A mistake in the command line or the machine: one line, exit 2."""


def parse_args(argv):
    p = argparse.ArgumentParser(prog="gpu_check", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="directory for gpu_check.md / gpu_check.json")
    p.add_argument("--peak-tflops", default="989", help="MFU denominator, dense bf16 TFLOP/s (H100/H200: 989)")
    p.add_argument("--budget-s", type=float, default=450.0, help="the whole run stops within this")
    p.add_argument("--steps", type=int, default=None, help="timed steps per optimizer (default 30; dry run 2)")
    p.add_argument("--cpu-dry-run", action="store_true", help="the same sequence at tiny size on CPU")
    p.add_argument("--skip-setup", action="store_true", help="the environment is set up already")
    return p.parse_args(argv)


def validate(args) -> float:
    """Checks before any work; returns the peak TFLOP/s."""
    try:
        peak = float(args.peak_tflops)
    except ValueError:
        raise CheckError(f"--peak-tflops must be a number of TFLOP/s (e.g. 989 for H100/H200 bf16), got {args.peak_tflops!r}")
    if not math.isfinite(peak) or peak <= 0:
        raise CheckError(f"--peak-tflops must be a positive number of TFLOP/s (e.g. 989), got {args.peak_tflops!r}")
    if args.budget_s < 30:
        raise CheckError(f"--budget-s must be at least 30 seconds, got {args.budget_s}")
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".gpu_check_write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise CheckError(f"--out {out} is not a writable directory ({e.strerror or e}); pass a directory you can write")
    if not args.cpu_dry_run and gpu_count() == 0:
        raise CheckError("no NVIDIA GPU found (nvidia-smi -L lists none); run on a GPU machine, or pass --cpu-dry-run")
    return peak


def gpu_count() -> int:
    """GPUs that ``nvidia-smi -L`` lists (0 without the tool): torch may not be installed yet."""
    if shutil.which("nvidia-smi") is None:
        return 0
    proc = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
    return sum(1 for line in proc.stdout.splitlines() if line.startswith("GPU")) if proc.returncode == 0 else 0


class Run:
    """The phases against one deadline, and the report written after each."""

    def __init__(self, args, peak: float):
        self.args, self.peak = args, peak
        self.out = Path(args.out)
        self.start = time.monotonic()
        self.deadline = self.start + args.budget_s
        self.report = {"started": datetime.datetime.now().isoformat(timespec="seconds"), "dry_run": args.cpu_dry_run,
                       "peak_tflops": peak, "phases": {}}

    def phase(self, name: str, cmd: list[str]) -> subprocess.CompletedProcess | None:
        remaining = self.deadline - time.monotonic() - RESERVE_S
        timeout = min(PHASE_CAPS[name], remaining)
        record = {"command": " ".join(cmd), "timeout_s": round(timeout, 1)}
        self.report["phases"][name] = record
        if timeout <= 1:
            record["status"] = "skipped: budget spent"
            self.write()
            return None
        begin = time.monotonic()
        env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
        try:
            proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            record.update(status="timed out", seconds=round(time.monotonic() - begin, 1))
            self.write()
            return None
        log = self.out / f"{name}.log"
        log.write_text(f"$ {record['command']}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}")
        record.update(status="ok" if proc.returncode == 0 else f"failed (exit {proc.returncode})",
                      seconds=round(time.monotonic() - begin, 1), log=str(log), output_tail=(proc.stdout + proc.stderr)[-3000:])
        self.write()
        return proc

    def write(self) -> None:
        self.report["elapsed_s"] = round(time.monotonic() - self.start, 1)
        (self.out / "gpu_check.json").write_text(json.dumps(self.report, indent=2))
        (self.out / "gpu_check.md").write_text(markdown(self.report))


def markdown(report: dict) -> str:
    lines = [f"# GPU check ({'CPU dry run' if report['dry_run'] else 'GPU'}), {report['started']}", "",
             f"Elapsed {report.get('elapsed_s', 0)} s. MFU against {report['peak_tflops']} TFLOP/s.", "",
             "| phase | status | seconds |", "|---|---|---|"]
    for name, rec in report["phases"].items():
        lines.append(f"| {name} | {rec.get('status', '?')} | {rec.get('seconds', '-')} |")
    if "tests" in report:
        lines += ["", f"CUDA tests: {report['tests']}"]
    bench = report.get("optimizers")
    if bench:
        lines += ["", f"Optimizers: {bench['model']}, batch {bench['batch_size']}, {bench['dtype']} autocast, "
                      f"compile={bench['compile']}, {bench['device']}, torch {bench['torch']}", "",
                  "| optimizer | step (ms) | tokens/s | MFU | NS (ms/step) | NS share | peak memory (GiB) | loss first -> last |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in bench["rows"]:
            mfu = f"{r['mfu']:.1%}" if r.get("mfu") is not None else "-"
            lines.append(f"| {r['optimizer']} | {r['step_ms']:.1f} | {r['tokens_per_s']:,.0f} | {mfu} | {r['ns_ms']:.2f} | "
                         f"{r['ns_share']:.1%} | {r['peak_memory_gib']:.2f} | {r['loss_first']:.3f} -> {r['loss_last']:.3f} |")
    if report.get("exchange"):
        lines += ["", "Exchange (Newton-Schulz + all-to-all per optimizer step):", "", report["exchange"]]
    return "\n".join(lines) + "\n"


def run(args, peak: float) -> int:
    run_ = Run(args, peak)
    dry = args.cpu_dry_run
    py = sys.executable
    if not args.skip_setup:
        run_.phase("setup", ["bash", "scripts/setup.sh"])
    tests = run_.phase("cuda_tests", [py, "-m", "pytest", "-q", "-m", "cuda", "tests/test_cuda.py", "-p", "no:cacheprovider"])
    if tests is not None:
        summary = [line for line in tests.stdout.splitlines() if " passed" in line or " skipped" in line or " failed" in line]
        run_.report["tests"] = summary[-1].strip("= ") if summary else "no summary"
    bench_json = run_.out / "optimizers.json"
    model, steps = ("gpt2-test", args.steps or 2) if dry else ("gpt2", args.steps or 30)
    cmd = [py, "-m", "scripts.benchmarks.optimizer_step_time", "--model", model, "--steps", str(steps),
           "--warmup", "1" if dry else "3", "--batch-size", "2" if dry else "8", "--peak-tflops", str(peak),
           "--json-out", str(bench_json), "--device", "cpu" if dry else "cuda"]
    if dry:
        cmd += ["--seq-len", "32", "--dtype", "float32", "--optimizers", "adamw,muon,namo_d"]
    else:
        cmd += ["--compile", "--dtype", "bfloat16"]
    if run_.phase("optimizers", cmd) is not None and bench_json.is_file():
        run_.report["optimizers"] = json.loads(bench_json.read_text())
    gpus = 0 if dry else gpu_count()
    if dry or gpus >= 2:
        world = 2 if dry else gpus
        exchange = run_.phase("exchange", [
            py, "-m", "scripts.benchmarks.distributed", "--device", "cpu" if dry else "cuda",
            "--world-size", str(world), "--layers", "1" if dry else "12", "--width", "96" if dry else "768",
            "--modes", "sharded,replicated", "--rounds", "1", "--repeats", "1" if dry else "3",
            "--out", str(run_.out / "exchange.jsonl")])
        if exchange is not None:
            run_.report["exchange"] = "\n".join(line for line in exchange.stdout.splitlines() if line.startswith(("|", "#")))
    else:
        run_.report["phases"]["exchange"] = {"status": f"skipped: {gpus} GPU(s), needs >= 2"}
    run_.write()
    failed = [n for n, r in run_.report["phases"].items() if not r.get("status", "").startswith(("ok", "skipped"))]
    print(f"gpu_check: report in {run_.out / 'gpu_check.md'}; " + (f"phases not ok: {', '.join(failed)}" if failed else "all phases ok"))
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        peak = validate(args)
    except CheckError as e:
        print(f"gpu_check: error: {e}", file=sys.stderr)
        return 2
    return run(args, peak)


if __name__ == "__main__":
    sys.exit(main())
