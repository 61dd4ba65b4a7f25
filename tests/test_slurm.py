"""slurm/train.sbatch on a real single-node Slurm started by this module (tests/slurm_cluster.py).

A 2-process CPU training job runs to completion; a job sent the pre-timeout signal checkpoints, is
requeued, resumes from its checkpoint and ends at the same step with the same losses as the
uninterrupted job; a missing variable stops the script with a message naming it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from slurm_cluster import LocalSlurm, ensure_slurm_installed

pytestmark = [pytest.mark.slurm, pytest.mark.distributed, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
NPROC = 2
MAX_STEPS = 60
SUBMITIT_STEPS = 40
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    reason = ensure_slurm_installed()
    if reason is not None:
        pytest.skip(f"no local Slurm: {reason}")
    cluster = LocalSlurm(tmp_path_factory.mktemp("slurm"))
    print(f"[slurm] starting munged, slurmctld, slurmd in {cluster.root}", flush=True)
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("slurm_runs")


def train_args(data_dir: Path) -> list[str]:
    return [
        "model=gpt2-test", f"data.cache_dir={data_dir}", "logging.wandb.mode=disabled",
        "logging.progress_bar=false", f"trainer.max_steps={MAX_STEPS}", "trainer.micro_batch_size=2",
        "trainer.seq_len=32", "trainer.log_every=1", "trainer.eval_every=10", "trainer.eval_batches=2",
        "trainer.checkpoint_every=20", "trainer.plot=false", "trainer.peak_tflops=1.0",
        "schedule.warmup_steps=2",
    ]


def submit(slurm: LocalSlurm, runs_dir: Path, name: str, args: list[str], **env: str) -> tuple[int, Path]:
    job = slurm.sbatch(
        [f"--job-name={name}", f"--output={runs_dir}/{name}-%j.out", f"--cpus-per-task={NPROC}", "slurm/train.sbatch", *args],
        env={"RUNS_DIR": str(runs_dir), "WANDB_SILENT": "true", **env}, cwd=REPO,
    )
    return job, runs_dir / f"{name}-{job}.out"


def read_rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def train_losses(rows: list[dict]) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


@pytest.fixture(scope="module")
def completed_job(slurm, runs_dir, prepared_embedded, data_cache_dir):
    job, out = submit(slurm, runs_dir, "full", train_args(data_cache_dir),
                      DEVICE="cpu", NPROC_PER_NODE=str(NPROC))
    info = slurm.wait_state(job, ENDED, timeout=240)
    return job, out, info


# ------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("env, args, message", [
    ({"NPROC_PER_NODE": "2"}, [], "required variable DEVICE is not set"),
    ({"DEVICE": "cpu"}, [], "required variable NPROC_PER_NODE is not set"),
    ({"DEVICE": "tpu", "NPROC_PER_NODE": "2"}, [], "DEVICE must be cpu or cuda, got 'tpu'"),
    ({"DEVICE": "cpu", "NPROC_PER_NODE": "2"}, ["hydra.run.dir=/x"], "'hydra.run.dir=/x': this script sets hydra.run.dir itself"),
])
def test_bad_variables_fail_the_job_with_a_message_naming_them(slurm, runs_dir, env, args, message):
    # env={} entries override the caller's environment, so an unset variable must be removed explicitly
    for name in ("DEVICE", "NPROC_PER_NODE"):
        env.setdefault(name, "")
    job, out = submit(slurm, runs_dir, "bad", ["model=gpt2-test", *args], **env)
    info = slurm.wait_state(job, ENDED, timeout=60)
    assert info["JobState"] == "FAILED" and info["ExitCode"] == "2:0"
    log = out.read_text()
    assert f"slurm/train.sbatch: {message}" in log
    assert "torch.distributed.run" not in log and "Traceback" not in log  # nothing was launched


# ------------------------------------------------------------------------------ training
def test_two_process_cpu_job_runs_to_completion(completed_job, runs_dir):
    job, out, info = completed_job
    log = out.read_text()
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", log[-3000:]
    assert f"1 node(s) x {NPROC} process(es) on cpu" in log
    run_dir = runs_dir / "full" / str(job)
    assert [p.name for p in (runs_dir / "full").iterdir()] == [str(job)]  # one run dir for all ranks
    assert json.loads((run_dir / "summary.json").read_text())["step"] == MAX_STEPS
    assert sorted(train_losses(read_rows(run_dir))) == list(range(1, MAX_STEPS + 1))
    assert (run_dir / "checkpoints" / f"step_{MAX_STEPS:08d}" / "MANIFEST.json").is_file()
    assert "requeue" not in log and not (run_dir / "STOP").exists()


def wait_for_line(path: Path, pattern: str, timeout: float) -> re.Match:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and (match := re.search(pattern, path.read_text())):
            return match
        time.sleep(0.2)
    raise TimeoutError(f"'{pattern}' not in {path} after {timeout:.0f} s:\n"
                       f"{path.read_text()[-3000:] if path.exists() else '(no file)'}")


def test_preempted_job_checkpoints_requeues_and_resumes(slurm, runs_dir, data_cache_dir, completed_job):
    job, out = submit(slurm, runs_dir, "preempted", train_args(data_cache_dir),
                      DEVICE="cpu", NPROC_PER_NODE=str(NPROC))
    wait_for_line(out, r"step 10: val_loss", timeout=180)
    # What --signal=B:USR1@<secs> sends before the time limit, sent now
    slurm.run(["scancel", "--signal=USR1", "--batch", str(job)])
    info = slurm.wait_state(job, ENDED, timeout=240)
    log = out.read_text()
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "1", log[-3000:]

    run_dir = runs_dir / "preempted" / str(job)
    stopped = int(re.search(r"stopping at step (\d+): stop file", log).group(1))
    assert 10 <= stopped < MAX_STEPS
    assert f"training stopped (exit 0); requeueing job {job}" in log
    assert f"resumed from {run_dir}/checkpoints/step_{stopped:08d} at step {stopped}" in log
    assert json.loads((run_dir / "summary.json").read_text())["step"] == MAX_STEPS

    # Every step was trained once, and the resumed steps match the uninterrupted job exactly
    reference = train_losses(read_rows(runs_dir / "full" / str(completed_job[0])))
    losses = train_losses(read_rows(run_dir))
    assert sorted(losses) == list(range(1, MAX_STEPS + 1))
    assert losses == reference


# ------------------------------------------------------------------------------ sweeps
def wait_until_gone(slurm: LocalSlurm, job: int, timeout: float) -> None:
    """Until no task of job (an array job id works too) is pending, running or completing."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not slurm.run(["squeue", "-h", "-j", str(job), "-t", "PD,R,CG,RQ,S"], check=False).stdout.strip():
            return
        time.sleep(0.5)
    raise TimeoutError(f"job {job} still queued after {timeout:.0f} s\n{slurm.logs()}")


def short_args(data_dir: Path, steps: int) -> list[str]:
    return [a for a in train_args(data_dir) if not a.startswith("trainer.max_steps=")] + [f"trainer.max_steps={steps}"]


def test_sweep_file_runs_as_a_job_array(slurm, runs_dir, data_cache_dir, tmp_path):
    sweep = tmp_path / "opt_sweep.txt"
    sweep.write_text("# optimizer sweep\noptim=adamw optim.matrix.lr=1e-3\n\noptim=muon\n")
    env = {"DEVICE": "cpu", "NPROC_PER_NODE": "1", "RUNS_DIR": str(runs_dir), "WANDB_SILENT": "true"}
    done = slurm.run(["slurm/submit_sweep.sh", "--cpus-per-task=1", f"--output={runs_dir}/sweep-%A_%a.out",
                      str(sweep), *short_args(data_cache_dir, 6)], env=env, cwd=REPO, timeout=120)
    array_job = int(done.stdout.strip())
    wait_until_gone(slurm, array_job, timeout=180)
    for task, optimizer, lr in ((0, "adamw", 1e-3), (1, "muon", 0.02)):
        run_dir = runs_dir / "opt_sweep" / str(array_job) / str(task)
        log = (runs_dir / f"sweep-{array_job}_{task}.out").read_text()
        assert json.loads((run_dir / "summary.json").read_text())["step"] == 6, log[-3000:]
        config = OmegaConf.load(run_dir / "config.yaml")
        assert (config.optim.name, config.optim.matrix.lr) == (optimizer, lr)


def test_bad_sweep_line_is_refused_before_anything_is_queued(slurm, runs_dir, tmp_path):
    sweep = tmp_path / "bad_sweep.txt"
    sweep.write_text("optim=adamw\noptim=nosuch\noptim=muon optim.matrix.lr=-1\n")
    env = {"DEVICE": "cpu", "NPROC_PER_NODE": "1", "RUNS_DIR": str(runs_dir)}
    done = slurm.run(["slurm/submit_sweep.sh", str(sweep), "model=gpt2-test", "trainer.seq_len=32"],
                     env=env, cwd=REPO, check=False, timeout=120)
    assert done.returncode == 1 and done.stdout == ""  # no job id: nothing submitted
    assert f"{sweep}:2: optim=nosuch" in done.stderr and "Could not find 'optim/nosuch'" in done.stderr
    assert f"{sweep}:3: optim=muon optim.matrix.lr=-1" in done.stderr and "optim.matrix.lr must be > 0" in done.stderr
    assert f"{sweep}:1:" not in done.stderr
    assert not (runs_dir / "bad_sweep").exists()


def test_hydra_submitit_multirun_survives_preemption(slurm, data_cache_dir, tmp_path):
    """python train.py -m hydra/launcher=slurm_cpu: one Slurm job per point; submitit's pre-timeout
    signal (USR2) to one of them -> checkpoint -> submitit requeues -> resume -> both complete."""
    sweep_dir = tmp_path / "multirun"
    cmd = [sys.executable, "train.py", "-m", "hydra/launcher=slurm_cpu", "hydra.launcher.cpus_per_task=1",
           f"hydra.sweep.dir={sweep_dir}", "optim=adamw,muon", "trainer.resume=auto",
           *short_args(data_cache_dir, SUBMITIT_STEPS)]
    launcher = subprocess.Popen(cmd, cwd=REPO, env={**slurm.env(), "WANDB_SILENT": "true"},
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        metrics = sweep_dir / "0_gpt2-test-adamw" / "metrics.jsonl"
        wait_for_line(metrics, r'"step": ?10\b', timeout=180)
        task = slurm.run(["squeue", "-h", "-o", "%i", "-n", "train"]).stdout.split()
        first = sorted(task)[0]  # <array id>_0: the adamw point
        slurm.run(["scancel", "--signal=USR2", first])
        out, _ = launcher.communicate(timeout=300)
    finally:
        launcher.kill()
    assert launcher.returncode == 0, out[-3000:]
    logs = "".join(p.read_text() for p in (sweep_dir / ".submitit").glob("*/*_log.out"))
    stopped = int(re.search(r"stopping at step (\d+): signal SIGUSR2 on rank 0", logs).group(1))
    assert f"resumed from {sweep_dir}/0_gpt2-test-adamw/checkpoints/step_{stopped:08d} at step {stopped}" in logs
    for point in ("0_gpt2-test-adamw", "1_gpt2-test-muon"):
        assert json.loads((sweep_dir / point / "summary.json").read_text())["step"] == SUBMITIT_STEPS
        assert sorted(train_losses(read_rows(sweep_dir / point))) == list(range(1, SUBMITIT_STEPS + 1))


def test_submitit_point_with_two_tasks_trains_under_fsdp2(slurm, data_cache_dir, tmp_path):
    """hydra.launcher.tasks_per_node=2: submitit starts two plain processes (no torchrun); the trainer
    forms its process group from the step's SLURM_PROCID / SLURM_STEP_NUM_TASKS and trains FSDP2."""
    sweep_dir = tmp_path / "multirun"
    cmd = [sys.executable, "train.py", "-m", "hydra/launcher=slurm_cpu", "hydra.launcher.cpus_per_task=1",
           "hydra.launcher.tasks_per_node=2", f"hydra.sweep.dir={sweep_dir}", "optim=muon",
           "trainer.global_batch_size=8", "trainer.checkpoint_every=3", *short_args(data_cache_dir, 6)]
    done = subprocess.run(cmd, cwd=REPO, env={**slurm.env(), "WANDB_SILENT": "true"}, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    point = sweep_dir / "0_gpt2-test-muon"
    assert json.loads((point / "summary.json").read_text())["step"] == 6
    checkpoint = point / "checkpoints" / "step_00000006"
    assert {"rng_rank0.pt", "rng_rank1.pt", "__0_0.distcp", "__1_0.distcp"} <= {p.name for p in checkpoint.iterdir()}
    assert json.loads((checkpoint / "trainer_state.json").read_text())["world_size"] == 2
