"""Inject many random faults into real train.py runs and tabulate what was lost (goal: nothing).

    orthogpt-fault-inject --trials 20 --faults kill-step kill-write --out /tmp/faults.json
    orthogpt-fault-inject --trials 10 --faults kill-step-2r kill-write-2r kill-rank-2r

Each trial launches a fresh run of the tiny deterministic configuration in tests/fault_injection.py,
injects one fault at a random moment (seeded; the seed of every trial is recorded), relaunches with
trainer.resume=auto where the fault killed the job, lets it finish, and compares it with an
uninterrupted reference run: every step's loss (==), the final step, the final model/optimizer bytes,
no partial write left behind. Prints a markdown table (the one in RELIABILITY.md) and writes the
per-trial records as JSON.

Faults: kill-step / kill-write (SIGKILL the job at a random moment after a random step / while it
writes a random checkpoint), -2r: the same with 2 ranks under torchrun (the whole job is killed, as
on a preempted node); kill-rank-2r: SIGKILL one worker under torchrun --max-restarts=1;
corrupt-<kind>: break the newest checkpoint on disk before relaunching (see CORRUPTIONS).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import random
import re
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the checkout (configs/, train.py)

from scripts.fault_injection.harness import (
    TrainJob, checkpoints_dir, differences_from, fault_kill_inside_checkpoint_write, fault_kill_inside_step,
    fault_kill_one_rank, is_complete, kill_group, last_logged_step, newest_complete_step, resume_line, wait_until,
)

ONE_RANK = dict(nproc=1, max_steps=12, checkpoint_every=3, micro_batch_size=2)
TWO_RANKS = dict(nproc=2, max_steps=8, checkpoint_every=2, micro_batch_size=1)


def _newest(job: TrainJob) -> Path:
    return checkpoints_dir(job.run_dir) / f"step_{newest_complete_step(job.run_dir):08d}"


def _truncate(job: TrainJob) -> None:
    data = sorted(_newest(job).glob("*.distcp"))[0]
    with open(data, "r+b") as f:
        f.truncate(data.stat().st_size // 2)


def _delete_shard(job: TrainJob) -> None:
    sorted(_newest(job).glob("*.distcp"))[-1].unlink()


def _flip_index_byte(job: TrainJob) -> None:
    index = _newest(job) / ".metadata"
    data = bytearray(index.read_bytes())
    data[len(data) // 2] ^= 0xFF
    index.write_bytes(bytes(data))


def _drop_manifest(job: TrainJob) -> None:
    (_newest(job) / "MANIFEST.json").unlink()


CORRUPTIONS = {"truncate": _truncate, "delete-shard": _delete_shard, "flip-index-byte": _flip_index_byte,
               "drop-manifest": _drop_manifest}


def run_trial(fault: str, job: TrainJob, rng: random.Random) -> dict:
    """Inject ``fault`` into ``job`` and finish the run. Returns what happened."""
    record: dict = {}
    if fault.startswith("kill-rank"):
        record["event"] = fault_kill_one_rank(job, rng)
        record["killed_after_step"] = int(re.search(r"after step (\d+)", record["event"]).group(1))
        record["resumed_from"] = resume_line(job)
        return record
    if fault.startswith("kill-step"):
        record["event"] = fault_kill_inside_step(job, rng)
    elif fault.startswith("kill-write"):
        record["event"] = fault_kill_inside_checkpoint_write(job, rng, max_delay=0.02, require_inside=False)
        record["inside_write"] = "while writing" in record["event"]
    else:
        raise SystemExit(f"unknown fault '{fault}'")
    record["killed_after_step"] = last_logged_step(job.run_dir)
    return record


def corrupt_and_resume(fault: str, job: TrainJob, rng: random.Random) -> dict:
    """corrupt-*: SIGKILL the run once a random checkpoint (not the first) is complete, break the
    newest checkpoint on disk; the relaunch must skip it, fall back, and reach the reference result."""
    target = rng.choice(job.checkpoint_steps[1:-1])
    proc = job.start()
    wait_until(lambda: is_complete(job.run_dir, target), proc, f"checkpoint {target} was complete")
    kill_group(proc)
    newest = _newest(job)
    CORRUPTIONS[fault.removeprefix("corrupt-")](job)
    return {"event": f"SIGKILL after checkpoint {target}; {fault} in {newest.name}",
            "killed_after_step": last_logged_step(job.run_dir)}


KNOWN_FAILURES = {  # signature in the job's output -> what it means
    "connectFullMesh failed": "restarted ranks could not connect (gloo address from the dead attempt)",
    "terminate called without an active exception": "a rank aborted (SIGABRT) while exiting",
    "did not finish": "the restarted job hung",
}


def failure_cause(job: TrainJob, err: AssertionError) -> str:
    text = str(err)
    try:
        text += job.output()
    except OSError:
        pass
    causes = [meaning for signature, meaning in KNOWN_FAILURES.items() if signature in text]
    return "; ".join(causes) or str(err).strip().splitlines()[0][:200]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faults", nargs="+", default=["kill-step", "kill-write"])
    parser.add_argument("--trials", type=int, default=20, help="trials per fault (corrupt-*: 1 is enough)")
    parser.add_argument("--optim", nargs="+", default=["adamw", "namo_d"], help="cycled over the trials")
    parser.add_argument("--seed", type=int, default=None, help="master seed (default: random, recorded)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/orthogpt_fault_inject"))
    parser.add_argument("--data-dir", type=Path, default=None, help="ORTHOGPT_DATA_DIR (default: <work>/data)")
    parser.add_argument("--out", type=Path, default=None, help="write the per-trial records (JSON) here")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    master = random.Random(seed)
    data_dir = args.data_dir or args.work / "data"
    references: dict[tuple, TrainJob] = {}
    records = []
    started = time.time()
    for fault in args.faults:
        sizes = TWO_RANKS if fault.endswith("-2r") else ONE_RANK
        for trial in range(args.trials):
            optim_name = args.optim[trial % len(args.optim)]
            key = (sizes["nproc"], optim_name)
            if key not in references:
                references[key] = TrainJob(args.work / f"reference_{sizes['nproc']}r_{optim_name}", data_dir,
                                           (f"optim={optim_name}",), **sizes)
                shutil.rmtree(references[key].run_dir, ignore_errors=True)
                references[key].run()
            trial_seed = master.randrange(2**31)
            run_dir = args.work / f"{fault}_{trial:03d}"
            shutil.rmtree(run_dir, ignore_errors=True)
            restarts = 1 if fault.startswith("kill-rank") else 0
            job = TrainJob(run_dir, data_dir, (f"optim={optim_name}",), max_restarts=restarts, **sizes)
            record = {"fault": fault, "trial": trial, "seed": trial_seed, "optim": optim_name, "ranks": sizes["nproc"]}
            t0 = time.time()
            try:
                rng = random.Random(trial_seed)
                if fault.startswith("corrupt-"):
                    record |= corrupt_and_resume(fault, job, rng)
                else:
                    record |= run_trial(fault, job, rng)
                if not fault.startswith("kill-rank"):
                    job.run()
                    record["resumed_from"] = resume_line(job)
                resumed = re.search(r"at step (\d+)", record["resumed_from"])
                record["steps_redone"] = record["killed_after_step"] - (int(resumed.group(1)) if resumed else 0)
                record["lost"] = differences_from(job, references[key])
            except AssertionError as err:  # the harness could not inject, or the job failed to finish
                record["lost"] = [f"job failed: {failure_cause(job, err)}"]
                record["error"] = str(err)[-3000:]
            record["seconds"] = round(time.time() - t0, 1)
            records.append(record)
            status = "ok" if not record["lost"] else f"LOST {record['lost']}"
            print(f"[{fault} {trial + 1}/{args.trials}] {record.get('event', '')} -> {status}", flush=True)
    header = {"command": " ".join(["python", "orthogpt-fault-inject", *(argv or sys.argv[1:])]), "seed": seed,
              "machine": f"{platform.node()} {platform.machine()} {platform.processor() or ''} "
                         f"python {platform.python_version()}",
              "date": datetime.datetime.now().isoformat(timespec="seconds"),
              "minutes": round((time.time() - started) / 60, 1)}
    if args.out:
        args.out.write_text(json.dumps({"header": header, "records": records}, indent=2))
    print(table(header, records))
    return 0 if all(not r["lost"] for r in records) else 1


def table(header: dict, records: list[dict]) -> str:
    lines = [f"command: `{header['command']}` (seed {header['seed']}), {header['date']}, {header['minutes']} min",
             "", "| fault | ranks | trials | optimizers | steps redone (mean / max) | lost |", "|---|---|---|---|---|---|"]
    for fault in dict.fromkeys(r["fault"] for r in records):
        rows = [r for r in records if r["fault"] == fault]
        redone = [r["steps_redone"] for r in rows if "steps_redone" in r]
        inside = [r["inside_write"] for r in rows if "inside_write" in r]
        if inside:
            fault = f"{fault} ({sum(inside)} inside the write)"
        spread = f"{sum(redone) / len(redone):.1f} / {max(redone)}" if redone else "-"
        failed = [r for r in rows if r["lost"]]
        causes = dict.fromkeys(problem for r in failed for problem in r["lost"])
        lost = "nothing" if not failed else f"{len(failed)} trial(s): " + "; ".join(causes)[:300]
        lines.append(f"| {fault} | {rows[0]['ranks']} | {len(rows)} | {', '.join(sorted({r['optim'] for r in rows}))} "
                     f"| {spread} | {lost} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
