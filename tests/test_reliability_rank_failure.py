"""Rank failure: under ``torchrun --max-restarts=1``, one worker SIGKILLed mid-run makes torchrun tear
the job down and restart it; the restarted workers resume (trainer.resume=auto, fixed hydra.run.dir)
from the newest complete checkpoint and finish, with the same loss at every step and the same final
model/optimizer bytes as an uninterrupted 2-rank run.
"""

from __future__ import annotations

import random

import pytest

from scripts.fault_injection.harness import (
    TrainJob, differences_from, fault_kill_one_rank, needs_multiprocess_training, seed_from_env,
)

pytestmark = pytest.mark.slow  # kills and relaunches real training processes


@pytest.mark.distributed
def test_killed_rank_restarts_resumes_and_finishes(prepared_embedded, data_cache_dir, tmp_path):
    needs_multiprocess_training()
    seed = seed_from_env()
    print(f"FAULT_SEED={seed}")
    rng = random.Random(seed)
    sizes = dict(nproc=2, max_steps=8, checkpoint_every=2, micro_batch_size=1)
    reference = TrainJob(tmp_path / "reference", data_cache_dir, ("optim=adamw",), **sizes)
    reference.run()
    job = TrainJob(tmp_path / "killed", data_cache_dir, ("optim=adamw",), max_restarts=1, **sizes)
    event = fault_kill_one_rank(job, rng)
    assert "resumed from" in event or "restarted from scratch" in event
    assert differences_from(job, reference) == [], f"seed {seed}: {event}"
