"""Weights-only start (trainer.init_from) and eval-only (trainer.eval_only), through train.py.

The source is a short AdamW run. Starting from its weights, with any optimizer, the new run's val loss
at step 0 is the source's final val loss (same weights, same val windows); the optimizer state and
the step start fresh. Evaluating only prints that number and writes nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from models.gpt2 import GPT

ROOT = Path(__file__).resolve().parents[1]
BASE = ["model=gpt2-test", "trainer.seq_len=32", "trainer.micro_batch_size=2", "trainer.eval_batches=2",
        "schedule.warmup_steps=1", "trainer.plot=false", "logging=disabled", "logging.progress_bar=false",
        "device=cpu", "trainer.peak_tflops=1", "trainer.eval_every=0"]


def launch(run_dir: Path, data_cache_dir: Path, *overrides: str, nproc: int = 1) -> subprocess.CompletedProcess:
    launcher = [sys.executable] if nproc == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                    f"--nproc_per_node={nproc}"]
    env = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "ORTHOGPT_DEBUG", "WANDB_MODE")}
    cmd = [*launcher, str(ROOT / "train.py"), *BASE, f"data.cache_dir={data_cache_dir}", f"hydra.run.dir={run_dir}",
           *overrides]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def val_losses(run_dir: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["val_loss"] for r in rows if "val_loss" in r}


@pytest.fixture(scope="module")
def source(prepared_embedded, data_cache_dir, tmp_path_factory) -> tuple[Path, float]:
    """(run directory, final val loss) of a 4-step AdamW run with a checkpoint at step 4."""
    run_dir = tmp_path_factory.mktemp("init_from") / "source"
    done = launch(run_dir, data_cache_dir, "optim=adamw", "trainer.max_steps=4", "trainer.checkpoint_every=4")
    assert done.returncode == 0, done.stderr[-3000:]
    return run_dir, val_losses(run_dir)[4]


@pytest.mark.slow
def test_init_from_another_optimizer_starts_at_step_0_with_the_trained_weights(source, data_cache_dir, tmp_path):
    src, final = source
    run = launch(tmp_path / "ft", data_cache_dir, "optim=muon", "optim.orthogonalize.compute_dtype=float32",
                 "trainer.max_steps=2", "trainer.checkpoint_every=2", f"trainer.init_from={src}")
    assert run.returncode == 0, run.stderr[-3000:]
    val = val_losses(tmp_path / "ft")
    assert val[0] == final  # the same weights on the same val windows: bit-identical on CPU
    assert val[2] != final  # and it trained from there
    state = json.loads((tmp_path / "ft" / "checkpoints" / "step_00000002" / "trainer_state.json").read_text())
    assert (state["step"], state["optim"], state["optimizer_steps"]) == (2, "muon", 2)
    assert (f"start       weights from {src}/checkpoints/step_00000004 (step 4, optimizer adamw); "
            f"optimizer state fresh, step 0") in run.stdout.splitlines()


@pytest.mark.slow
def test_eval_only_prints_the_val_loss_of_a_checkpoint_or_hf_dir_and_writes_nothing(source, data_cache_dir, tmp_path):
    from scripts.hf.export_hf import export_checkpoint

    src, final = source
    for weights in (f"trainer.init_from={src}",  # a run directory: its newest checkpoint
                    f"trainer.resume={src}/checkpoints/step_00000004"):  # the weights of a checkpoint to resume
        run = launch(tmp_path / "eval", data_cache_dir, "trainer.eval_only=true", weights)
        assert run.returncode == 0, run.stderr[-3000:]
        assert f"val_loss {final:.4f} (2 batches, 128 tokens of the val split)" in run.stdout.splitlines()
        assert not (tmp_path / "eval").exists()
    hf_dir = export_checkpoint(src, tmp_path / "hf", log=lambda _: None)
    run = launch(tmp_path / "eval", data_cache_dir, "trainer.eval_only=true", f"trainer.init_from={hf_dir}")
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"eval only: weights from {hf_dir} (Hugging Face GPT-2)" in run.stdout
    assert f"val_loss {final:.4f}" in run.stdout  # the round trip through HF keeps the function


@pytest.fixture
def model_only_checkpoint(tmp_path) -> Path:
    """A model-only checkpoint of gpt2-test (as orthogpt-import-hf writes), made in-process."""
    from trainer.checkpoint.model_io import write_model_checkpoint

    torch.manual_seed(0)
    write_model_checkpoint(tmp_path / "imported", GPT(config().model))
    return tmp_path / "imported"


def config(*overrides):
    from hydra import compose, initialize_config_dir

    from trainer.config import build_config

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base=None):
        return build_config(compose("train", overrides=["model=gpt2-test", "device=cpu", "trainer.seq_len=32", *overrides]))


def test_a_bad_weights_only_start_is_one_line_exit_2(model_only_checkpoint, data_cache_dir, tmp_path):
    run = launch(tmp_path / "bad", data_cache_dir, "model.n_embd=64", f"trainer.init_from={model_only_checkpoint}")
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr[-3000:]
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: trainer.init_from="), run.stderr
    assert "its weights are for another model shape (n_embd: weights 32 vs config 64)" in lines[0]
    assert not (tmp_path / "bad" / "checkpoints").exists()


def test_weights_sources_are_checked_before_anything_starts(model_only_checkpoint, tmp_path):
    from trainer.checkpoint import CheckpointError
    from trainer.config import ConfigError
    from trainer.checkpoint.model_io import load_gpt
    from trainer.init_from import load_weights, plan_start
    from trainer.resume import ResumeDecision

    fresh = ResumeDecision(None, "no checkpoint found: starting fresh")
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.txt").write_text("x")
    refusals = [
        ("trainer.init_from=/nonexistent/run", ConfigError, "/nonexistent/run: it does not exist"),
        (f"trainer.init_from={tmp_path / 'file.txt'}", ConfigError, "file.txt: it is a file"),
        (f"trainer.init_from={tmp_path / 'empty'}", CheckpointError, "holds no complete checkpoint"),
        ("trainer.eval_only=true", ConfigError, "trainer.eval_only=true has no weights to evaluate (no checkpoint"),
    ]
    for override, error, message in refusals:
        with pytest.raises(error, match=message.replace("(", r"\(")):
            plan_start(config(override), fresh)
    # a model-only checkpoint (no optimizer state) is a fine start; its padding is redone for the config
    unpadded = config(f"trainer.init_from={model_only_checkpoint}", "model.vocab_pad_to=1")
    source, start = plan_start(unpadded, fresh)
    assert source.checkpoint is not None and source.written_for.vocab_pad_to == 64
    assert start == f"weights from {source.checkpoint.path} (model only); optimizer state fresh, step 0"
    model = GPT(unpadded.model)
    load_weights(source, model)
    original = load_gpt(model_only_checkpoint, log=lambda _: None)
    assert model.transformer.wte.weight.shape[0] == 50257
    assert torch.equal(model.transformer.wte.weight, original.transformer.wte.weight[:50257])
    assert model.lm_head.weight is model.transformer.wte.weight  # still tied
    assert torch.equal(model.transformer.h[1].mlp.c_fc.weight, original.transformer.h[1].mlp.c_fc.weight)


@pytest.mark.distributed
def test_init_from_on_two_ranks_loads_every_shard(source, data_cache_dir, tmp_path):
    """FSDP2: each rank keeps its shard of the full weights; the val loss at step 0 is the source's
    (summed over 2 ranks in another order: equal to rounding)."""
    src, final = source
    run = launch(tmp_path / "w2", data_cache_dir, "trainer.max_steps=2", f"trainer.init_from={src}",
                 "trainer.micro_batch_size=1", nproc=2)  # the source's global batch: 2 sequences
    assert run.returncode == 0, run.stderr[-3000:]
    assert val_losses(tmp_path / "w2")[0] == pytest.approx(final, rel=1e-6)
    assert run.stdout.count("parameters  ") == 1  # the banner, once (rank 0)
