"""A checkpoint written before the optim/ and trainer/checkpoint/ restructure still resumes.

tests/data/checkpoints/namo_d_pre_restructure was written by commit 74a997e (``python train.py``, the
overrides in its .json); that commit then resumed it to step 4 and logged the losses recorded there.
The current code, resuming the same checkpoint with the same config, must log the same losses.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from trainer.checkpoint import CheckpointError, verify_checkpoint
from trainer.config import build_config
from trainer.distributed import DistContext
from trainer.loop import Trainer

pytestmark = pytest.mark.slow  # launches training processes: the full suite runs it, the fast tier does not

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "data" / "checkpoints" / "namo_d_pre_restructure"


def test_pre_restructure_checkpoint_resumes_to_the_same_losses(prepared_embedded, data_cache_dir, tmp_path):
    record = json.loads(FIXTURE.with_suffix(".json").read_text())
    checkpoint = tmp_path / "old" / FIXTURE.name
    shutil.copytree(FIXTURE, checkpoint)
    assert verify_checkpoint(checkpoint, deep=True).step == record["checkpoint_step"]
    # written before the padded vocabulary (50257 rows), with the plain loss and with Newton-Schulz in
    # fp32 (that commit's CPU default; auto is bf16 on AMX / AVX512-BF16 CPUs): all named to resume bit-exactly
    overrides = [*record["overrides"], f"trainer.max_steps={record['resumed_to']}", f"trainer.resume={checkpoint}",
                 f"data.cache_dir={data_cache_dir}", "model.vocab_pad_to=1", "model.loss_impl=plain",
                 "optim.orthogonalize.compute_dtype=float32"]
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base=None):
        cfg = compose("train", overrides=overrides)
    run_dir = tmp_path / "run"
    summary = Trainer(build_config(cfg), DistContext(), run_dir).fit()
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = {str(r["step"]): r["loss"] for r in rows if "loss" in r}
    assert losses == record["losses_after_resume_by_that_commit"]
    assert summary["val_loss"] == record["final_val_loss_by_that_commit"]


def test_pre_padding_checkpoint_is_refused_with_the_fix(prepared_embedded, data_cache_dir, tmp_path):
    record = json.loads(FIXTURE.with_suffix(".json").read_text())
    overrides = [*record["overrides"], f"trainer.max_steps={record['resumed_to']}", f"trainer.resume={FIXTURE}",
                 f"data.cache_dir={data_cache_dir}"]
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base=None):
        cfg = compose("train", overrides=overrides)
    with pytest.raises(CheckpointError, match="resume it with model.vocab_pad_to=1"):
        Trainer(build_config(cfg), DistContext(), tmp_path / "run").fit()
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
