"""Non-finite values: a NaN loss is skipped (parameters and optimizer state untouched, counted in the
metrics) or stops the run naming the step; parameters that went NaN never reach a checkpoint."""

from __future__ import annotations

import json

import pytest
import torch

import trainer.checkpoint as ckpt
from scripts.fault_injection.harness import compose_config
from trainer.config import build_config
from trainer.distributed import DistContext
from trainer.loop import Trainer

NAN_STEP = 4


def trainer_with_nan_loss_at(cfg, run_dir, step: int) -> tuple[Trainer, dict]:
    """A Trainer whose training forward returns a NaN loss at ``step`` (1-based, as in metrics.jsonl).
    Also records the parameters and AdamW step count around that step."""
    trainer = Trainer(build_config(cfg), DistContext(), run_dir)
    original, seen = trainer.forward, {"calls": 0}

    def forward(x, y, reduction="mean"):
        logits, loss = original(x, y, reduction=reduction)
        if trainer.model.training:
            seen["calls"] += 1
            params = [p.detach().clone() for p in trainer.model.parameters()]
            adam_step = int(trainer.optimizer.state[next(trainer.model.parameters())].get("step", 0))
            if seen["calls"] == step:
                seen["before"], seen["adam_step_before"] = params, adam_step
                loss = loss * float("nan")
            elif seen["calls"] == step + 1:
                seen["after"], seen["adam_step_after"] = params, adam_step
        return logits, loss

    trainer.forward = forward
    return trainer, seen


def test_nan_loss_is_skipped_counted_and_leaves_parameters_untouched(prepared_embedded, data_cache_dir, tmp_path):
    cfg = compose_config(data_cache_dir, "trainer.on_nonfinite=skip", max_steps=6)
    trainer, seen = trainer_with_nan_loss_at(cfg, tmp_path, NAN_STEP)
    summary = trainer.fit()
    assert summary["skipped_steps"] == 1 and summary["optimizer_steps"] == 5
    assert all(torch.equal(a, b) for a, b in zip(seen["before"], seen["after"]))
    assert seen["adam_step_before"] == seen["adam_step_after"] == NAN_STEP - 1
    rows = {r["step"]: r for r in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines()) if "loss" in r}
    assert rows[NAN_STEP]["loss"] is None  # NaN is written as null (valid JSON)
    assert [rows[s]["skipped_steps"] for s in range(1, 7)] == [0, 0, 0, 1, 1, 1]
    for step in (3, 6):  # both checkpoints written, finite, and carry the count
        state = ckpt.verify_checkpoint(tmp_path / "checkpoints" / ckpt.step_dir_name(step), deep=True).state
        assert state["skipped_steps"] == (step >= NAN_STEP)


def test_nan_loss_stops_the_run_naming_the_step(prepared_embedded, data_cache_dir, tmp_path):
    cfg = compose_config(data_cache_dir, "trainer.on_nonfinite=stop", max_steps=6)
    trainer, _ = trainer_with_nan_loss_at(cfg, tmp_path, NAN_STEP)
    with pytest.raises(FloatingPointError, match=rf"non-finite loss \(nan\).* at step {NAN_STEP}\b"):
        trainer.fit()
    assert [p.name for p in ckpt.list_complete(tmp_path / "checkpoints")] == ["step_00000003"]


def test_parameters_gone_nan_are_never_checkpointed(prepared_embedded, data_cache_dir, tmp_path, capsys):
    """An optimizer step that writes NaN into a weight at step 5: checkpoint 6 is refused, checkpoint 3
    stays the newest, and a resume picks it."""
    cfg = compose_config(data_cache_dir, "trainer.on_nonfinite=skip", max_steps=6)
    trainer = Trainer(build_config(cfg), DistContext(), tmp_path)
    original = trainer.optimizer.step

    def step(*args, **kwargs):
        result = original(*args, **kwargs)
        if trainer.step + 1 == 5:
            with torch.no_grad():
                trainer.model.transformer.h[0].mlp.c_fc.weight[0, 0] = float("nan")
        return result

    trainer.optimizer.step = step
    summary = trainer.fit()
    assert "step 6: parameters are not finite; checkpoint skipped" in capsys.readouterr().out
    assert summary["skipped_steps"] == 1  # step 6: the NaN weight makes the loss NaN
    assert [p.name for p in ckpt.list_complete(tmp_path / "checkpoints")] == ["step_00000003"]
    assert ckpt.find_resumable(tmp_path / "checkpoints").path == tmp_path / "checkpoints" / "step_00000003"
