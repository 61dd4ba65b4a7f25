"""Exact resume after SIGKILL: the real train.py, killed by a real signal inside a training step and
inside a checkpoint write, resumed with trainer.resume=auto in the same run directory, logs the same
loss at every step as an uninterrupted run (==, fp32 CPU) and ends with bit-identical model and
optimizer state (equal CRC32 of the DCP data files). AdamW and NAMO-D (Muon family); one process, and
2 ranks under torchrun (the rank-failure test, tests/test_reliability_rank_failure.py, covers the
2-rank kill inside a step).

Kill moments are random; the seed is printed (rerun with FAULT_SEED=<seed> to replay).
"""

from __future__ import annotations

import random

import pytest

from scripts.fault_injection.harness import (
    TrainJob, differences_from, fault_kill_inside_checkpoint_write, fault_kill_inside_step,
    needs_multiprocess_training, resume_line, seed_from_env,
)

pytestmark = pytest.mark.slow  # kills and relaunches real training processes


FP32_NEWTON_SCHULZ = "optim.orthogonalize.compute_dtype=float32"  # the same dtype on any CPU (auto: bf16 on AMX)


@pytest.mark.parametrize("optim_name", ["adamw", "namo_d"])
def test_sigkill_in_step_and_in_checkpoint_write_resumes_exactly(prepared_embedded, data_cache_dir, tmp_path,
                                                                 optim_name):
    seed = seed_from_env()
    print(f"FAULT_SEED={seed}")
    rng = random.Random(seed)
    overrides = (f"optim={optim_name}", *(() if optim_name == "adamw" else (FP32_NEWTON_SCHULZ,)))
    reference = TrainJob(tmp_path / "reference", data_cache_dir, overrides)
    reference.run()
    job = TrainJob(tmp_path / "killed", data_cache_dir, overrides)
    events = [fault_kill_inside_step(job, rng), fault_kill_inside_checkpoint_write(job, rng, not_first=True)]
    events.append(resume_line(job) or "(the launch killed in the write had started from scratch)")
    job.run()
    events.append(resume_line(job))
    assert "resumed from" in events[-1], events
    assert differences_from(job, reference) == [], f"seed {seed}: {events}"


@pytest.mark.distributed
def test_two_ranks_sigkill_in_checkpoint_write_resumes_exactly(prepared_embedded, data_cache_dir, tmp_path):
    """Both ranks and the torchrun agent killed at once (a preempted node) while they write a
    checkpoint; the relaunch resumes from the previous one and matches the uninterrupted run."""
    needs_multiprocess_training()
    seed = seed_from_env()
    print(f"FAULT_SEED={seed}")
    rng = random.Random(seed)
    sizes = dict(nproc=2, max_steps=8, checkpoint_every=2, micro_batch_size=1)
    overrides = ("optim=namo_d", FP32_NEWTON_SCHULZ)
    reference = TrainJob(tmp_path / "reference", data_cache_dir, overrides, **sizes)
    reference.run()
    job = TrainJob(tmp_path / "killed", data_cache_dir, overrides, **sizes)
    events = [fault_kill_inside_checkpoint_write(job, rng, not_first=True)]
    job.run()
    events.append(resume_line(job))
    assert differences_from(job, reference) == [], f"seed {seed}: {events}"
