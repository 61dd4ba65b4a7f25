"""Trainer: loss falls on the embedded corpus, exact resume, grad accumulation, schedules, end to end."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from trainer.checkpoint import CheckpointError
from trainer.config import build_config
from trainer.distributed import DistContext
from trainer.loop import Trainer
from trainer.resume import resolve_resume
from trainer.schedule import Schedule

ROOT = Path(__file__).resolve().parents[1]


def make_cfg(data_cache_dir, *overrides):
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base=None):
        return compose(
            "train",
            overrides=[
                "model=gpt2-test", f"data.cache_dir={data_cache_dir}", "logging=disabled",
                "logging.progress_bar=false", "trainer.micro_batch_size=4", "trainer.seq_len=32",
                "trainer.eval_batches=2", "trainer.log_every=1", "trainer.plot=false",
                "schedule.warmup_steps=2", "trainer.peak_tflops=1.0", *overrides,
            ],
        )


def run(cfg, run_dir) -> list[dict]:
    Trainer(build_config(cfg), DistContext(), run_dir).fit()
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def train_losses(rows):
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


@pytest.mark.parametrize("optim_name", ["muon", *(pytest.param(n, marks=pytest.mark.slow) for n in ("adamw", "spectral_adam", "auon"))])
def test_resume_reproduces_uninterrupted_run(prepared_embedded, data_cache_dir, tmp_path, optim_name):
    base = [f"optim={optim_name}", "trainer.max_steps=8", "trainer.checkpoint_every=4", "trainer.eval_every=0",
            *([] if optim_name == "adamw" else ["optim.orthogonalize.compute_dtype=float32"])]  # fp32 on any CPU
    full = train_losses(run(make_cfg(data_cache_dir, *base), tmp_path / "full"))
    ckpt = tmp_path / "full" / "checkpoints" / "step_00000004"
    assert ckpt.is_dir()
    resumed = train_losses(run(make_cfg(data_cache_dir, *base, f"trainer.resume={ckpt}"), tmp_path / "resumed"))
    assert sorted(resumed) == [5, 6, 7, 8]
    for step in resumed:
        assert resumed[step] == full[step], (step, resumed[step], full[step])  # bit-exact on CPU


@pytest.mark.slow  # 64 steps of training
def test_loss_falls_on_embedded_corpus(prepared_embedded, data_cache_dir, tmp_path):
    cfg = make_cfg(data_cache_dir, "trainer.max_steps=30", "trainer.eval_every=30", "trainer.checkpoint_every=0",
                   "optim.matrix.lr=1e-2", "optim.embedding.lr=1e-2", "optim.vector.lr=1e-2")
    rows = run(cfg, tmp_path)
    losses = train_losses(rows)
    assert abs(losses[1] - math.log(50257)) < 0.5
    assert sum(losses[s] for s in range(26, 31)) / 5 < losses[1] - 2.0
    val = [r["val_loss"] for r in rows if "val_loss" in r]
    assert val and val[-1] < losses[1] - 2.0


def test_first_evaluation_is_at_initialization_and_not_repeated_on_resume(prepared_embedded, data_cache_dir,
                                                                         tmp_path):
    base = ["trainer.max_steps=4", "trainer.eval_every=2", "trainer.checkpoint_every=2"]
    rows = run(make_cfg(data_cache_dir, *base), tmp_path / "fresh")
    assert rows[0]["step"] == 0 and rows[0]["tokens"] == 0 and "loss" not in rows[0]
    assert [r["step"] for r in rows if "val_loss" in r] == [0, 2, 4]
    assert abs(rows[0]["val_loss"] - math.log(50257)) < 0.5  # the untrained model's loss
    ckpt = tmp_path / "fresh" / "checkpoints" / "step_00000002"
    resumed = run(make_cfg(data_cache_dir, *base, f"trainer.resume={ckpt}"), tmp_path / "resumed")
    assert [r["step"] for r in resumed if "val_loss" in r] == [4]


def test_mfu_denominator_is_configured_or_a_best_of_spaced_samples(monkeypatch):
    from trainer import mfu

    assert mfu.mfu_denominator(989.0, torch.device("cuda")) == (989.0, "trainer.peak_tflops")
    assert mfu.mfu_denominator(None, torch.device("cuda"))[0] is None
    timings = iter([10.0, 10.0 + 4.0, 20.0, 20.0 + 1.0, 30.0, 30.0 + 2.0])  # start/stop pairs: 4 s, 1 s, 2 s
    monkeypatch.setattr(mfu.time, "perf_counter", lambda: next(timings))
    slept = []
    monkeypatch.setattr(mfu.time, "sleep", slept.append)
    rate = mfu.measure_matmul_tflops(torch.device("cpu"), n=8, repeats=1, samples=3, spacing_s=0.5)
    assert rate == 2 * 8**3 / 1.0 / 1e12  # the fastest sample: a busy moment does not set the rate
    assert slept == [0.5, 0.5]
    # the CPU rate is measured once per machine and cached: tests/test_mfu.py


def test_grad_accumulation_steps_optimizer_once_per_global_step(prepared_embedded, data_cache_dir, tmp_path):
    cfg = make_cfg(data_cache_dir, "trainer.max_steps=3", "trainer.global_batch_size=12",
                   "trainer.eval_every=0", "trainer.checkpoint_every=0")
    trainer = Trainer(build_config(cfg), DistContext(), tmp_path)
    assert (trainer.micro_batch, trainer.grad_accum) == (4, 3)
    calls = []
    original = trainer.optimizer.step
    trainer.optimizer.step = lambda *a, **k: (calls.append(1), original(*a, **k))[1]
    summary = trainer.fit()
    assert len(calls) == 3 and summary["optimizer_steps"] == 3
    assert trainer.train_loader.state_dict()["cursor"] == 3 * 12


def test_batch_that_does_not_divide_is_rejected(data_cache_dir):
    cfg = make_cfg(data_cache_dir, "trainer.global_batch_size=10")
    with pytest.raises(ValueError, match="global_batch_size=10"):
        build_config(cfg, world_size=1)
    with pytest.raises(ValueError, match="seq_len"):
        build_config(make_cfg(data_cache_dir, "trainer.seq_len=128"))
    with pytest.raises(ValueError, match="optim.matrix.lr"):
        build_config(make_cfg(data_cache_dir, "optim=muon", "optim.matrix.lr=-1"))


def test_checkpoint_from_another_model_shape_is_refused(prepared_embedded, data_cache_dir, tmp_path):
    run(make_cfg(data_cache_dir, "trainer.max_steps=3", "trainer.checkpoint_every=3", "trainer.eval_every=0"), tmp_path / "a")
    ckpt = tmp_path / "a" / "checkpoints" / "step_00000003"
    cfg = make_cfg(data_cache_dir, "trainer.max_steps=6", "model.n_embd=64", f"trainer.resume={ckpt}")
    with pytest.raises(RuntimeError, match="another model shape"):
        Trainer(build_config(cfg), DistContext(), tmp_path / "b").fit()


@pytest.mark.parametrize("name", ["cosine", "linear", "wsd", "constant"])
def test_schedules_warm_up_then_reach_their_end(name):
    s = Schedule(name=name, max_steps=100, warmup_steps=10, min_lr_ratio=0.1, decay_fraction=0.2, decay_shape="linear")
    assert s.factor(0) == pytest.approx(0.1) and s.factor(9) == pytest.approx(1.0)
    end = s.factor(100)
    assert end == pytest.approx(1.0 if name == "constant" else 0.1)
    if name == "wsd":
        assert s.factor(79) == 1.0 and s.factor(90) == pytest.approx(0.55)


@pytest.mark.slow
def test_default_train_py_end_to_end(data_cache_dir, tmp_path):
    """The README's `python train.py`, shortened by overrides: exits 0, writes log, checkpoint, plot."""
    env = dict(os.environ, ORTHOGPT_DATA_DIR=str(data_cache_dir), WANDB_SILENT="true")
    cmd = [sys.executable, "train.py", "trainer.max_steps=6", "schedule.warmup_steps=2", "trainer.eval_every=3",
           "trainer.checkpoint_every=3", "trainer.eval_batches=2", "trainer.micro_batch_size=2",
           "logging.progress_bar=false", f"hydra.run.dir={tmp_path}"]
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert any({"step", "tokens", "loss", "lr"} <= set(r) for r in rows) and any("val_loss" in r for r in rows)
    assert (tmp_path / "checkpoints" / "step_00000006" / "MANIFEST.json").is_file()
    assert (tmp_path / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "config.yaml").is_file() and (tmp_path / "git_commit.txt").is_file()
    assert list((tmp_path / "wandb").glob("offline-run-*"))


def test_every_config_composes(data_cache_dir):
    groups = {g: sorted(p.stem for p in (ROOT / "configs" / g).glob("*.yaml")) for g in ("model", "optim", "data", "logging")}
    for group, names in groups.items():
        for name in names:
            cfg = make_cfg(data_cache_dir, f"{group}={name}")
            assert cfg[group].get("name", name) is not None
            if group in ("model", "optim"):
                build_config(cfg)


@pytest.mark.parametrize(
    "overrides, world_size, message",
    [
        (["distributed.dp_shard=3"], 2, "does not match the 2 launched"),
        (["distributed.dp_replicate=2"], 3, "does not divide the world size 3"),
        (["trainer.global_batch_size=12", "trainer.micro_batch_size=8"], 2, "cannot be split"),
        (["distributed.grad_sync=sometimes"], 2, "distributed.grad_sync"),
        (["distributed.reduce_dtype=float16"], 2, "distributed.reduce_dtype"),
    ],
)
def test_bad_distributed_config_is_refused_before_launch(data_cache_dir, overrides, world_size, message):
    with pytest.raises(ValueError, match=message):
        build_config(make_cfg(data_cache_dir, *overrides), world_size=world_size)


@pytest.mark.parametrize("fast_bf16", [False, True])
def test_build_config_resolves_every_dtype_once(data_cache_dir, monkeypatch, fast_bf16):
    """After build_config every *_dtype is a torch.dtype: autocast / FSDP2 / exchange by device, the
    Newton-Schulz by bf16 matmul capability (mocked both ways), explicit names as given."""
    from optim import dtypes

    monkeypatch.setattr(dtypes, "cpu_has_fast_bf16", lambda: fast_bf16)
    config = build_config(make_cfg(data_cache_dir, "device=cpu", "optim=muon"))
    ns = torch.bfloat16 if fast_bf16 else torch.float32
    assert (config.trainer.compute_dtype, config.distributed.param_dtype, config.distributed.reduce_dtype) == (
        torch.float32, torch.float32, torch.float32)
    assert (config.optim.orthogonalize.compute_dtype, config.optim.orthogonalize.comm_dtype) == (ns, torch.float32)
    explicit = build_config(make_cfg(data_cache_dir, "device=cpu", "optim=muon", "trainer.compute_dtype=bfloat16",
                                     "optim.orthogonalize.compute_dtype=float64"))
    assert (explicit.trainer.compute_dtype, explicit.optim.orthogonalize.compute_dtype) == (torch.bfloat16, torch.float64)
    cuda = build_config(make_cfg(data_cache_dir, "device=cuda", "optim=muon"))  # resolved without touching a GPU
    assert (cuda.trainer.compute_dtype, cuda.distributed.param_dtype, cuda.optim.orthogonalize.compute_dtype) == (
        torch.bfloat16, torch.bfloat16, torch.bfloat16)
    assert cuda.distributed.reduce_dtype == torch.float32  # configs/train.yaml: reduce in fp32
    with pytest.raises(ValueError, match="reduce_dtype=bfloat16 is not supported on CPU"):
        build_config(make_cfg(data_cache_dir, "device=cpu", "distributed.reduce_dtype=bfloat16"))


def test_multi_process_config_validates(data_cache_dir):
    build_config(make_cfg(data_cache_dir, "distributed.dp_replicate=2"), world_size=4)


def test_stop_file_checkpoints_stops_and_the_resumed_run_finishes(prepared_embedded, data_cache_dir, tmp_path):
    """Preemption: <run_dir>/STOP -> checkpoint at the current step, clean return, no summary; the
    resumed run continues from that step and finishes (the sbatch scripts rely on exactly this)."""
    base = ("trainer.max_steps=4", "trainer.checkpoint_every=0", "trainer.eval_every=0")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "STOP").touch()
    cfg = make_cfg(data_cache_dir, *base)
    summary = Trainer(build_config(cfg), DistContext(), run_dir).fit()
    assert summary["step"] == 1 and summary["stopped"].startswith("stop file")
    assert (run_dir / "checkpoints" / "step_00000001" / "MANIFEST.json").is_file()
    assert not (run_dir / "summary.json").exists() and not (run_dir / "STOP").exists()
    summary = Trainer(build_config(make_cfg(data_cache_dir, *base, "trainer.resume=auto")), DistContext(), run_dir).fit()
    assert summary["step"] == 4 and summary["optimizer_steps"] == 4  # counted across the resume
    assert json.loads((run_dir / "summary.json").read_text())["step"] == 4


@pytest.mark.parametrize(
    "env, expected",
    [
        ({}, (0, 1, 0)),
        ({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}, (3, 4, 1)),  # torchrun
        ({"SLURM_PROCID": "1", "SLURM_STEP_NUM_TASKS": "2", "SLURM_LOCALID": "1", "SLURM_NTASKS": "2"}, (1, 2, 1)),
        ({"SLURM_PROCID": "0", "SLURM_NTASKS": "2"}, (0, 1, 0)),  # the batch script is not a step: one process
        ({"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "SLURM_PROCID": "0", "SLURM_STEP_NUM_TASKS": "1"}, (0, 2, 0)),
    ],
)
def test_launcher_world_from_torchrun_or_slurm_step(monkeypatch, env, expected):
    from trainer.distributed import launcher_world

    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "SLURM_STEP_NUM_TASKS", "SLURM_LOCALID", "SLURM_NTASKS"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert launcher_world() == expected


def test_run_stamp_is_shared_by_a_job_and_explains_multi_node_without_rdzv_id(monkeypatch):
    from trainer.run_dir import run_stamp

    for key in ("ORTHOGPT_RUN_STAMP", "TORCHELASTIC_RUN_ID", "GROUP_WORLD_SIZE", "SLURM_STEP_NUM_TASKS", "SLURM_JOB_ID"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")  # torchrun on one node: the agent's start time
    assert run_stamp() == run_stamp() and len(run_stamp()) == len("2026-01-01_00-00-00")
    monkeypatch.setenv("GROUP_WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="--rdzv-id"):
        run_stamp()
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job42")
    assert run_stamp() == "job42"
    monkeypatch.setenv("ORTHOGPT_RUN_STAMP", "12345")  # set by slurm/train.sbatch: stable across requeues
    assert run_stamp() == "12345"


def test_same_size_corruption_of_tensor_data_falls_back_to_previous_checkpoint(prepared_embedded, data_cache_dir, tmp_path):
    """A flipped byte inside a .distcp keeps its size and would load silently: resume CRC-checks the
    tensor files, names the broken checkpoint and resumes from the previous one."""
    base = ("trainer.max_steps=4", "trainer.checkpoint_every=2", "trainer.eval_every=0", "trainer.keep_checkpoints=3")
    run_dir = tmp_path / "run"
    run(make_cfg(data_cache_dir, *base), run_dir)
    tensor_file = next((run_dir / "checkpoints" / "step_00000004").glob("*.distcp"))
    data = bytearray(tensor_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    tensor_file.write_bytes(bytes(data))
    cfg = make_cfg(data_cache_dir, *base, "trainer.max_steps=6", "trainer.resume=auto")
    lines = []
    trainer = Trainer(build_config(cfg), DistContext(), run_dir)
    trainer.resume_from(resolve_resume(trainer.cfg, run_dir, deep=True, ctx=trainer.ctx, log=lines.append), lines.append)
    assert trainer.step == 2, lines
    assert any("step_00000004" in line and "CRC32" in line for line in lines), lines
    with pytest.raises(CheckpointError, match="CRC32"):
        resolve_resume(build_config(make_cfg(data_cache_dir, *base, f"trainer.resume={tensor_file.parent}")), run_dir,
                       deep=True, ctx=DistContext())


def test_resume_verifies_the_checkpoint_once(prepared_embedded, data_cache_dir, tmp_path, monkeypatch):
    """Every file of the resumed checkpoint is hashed exactly once (manifest check + tensor CRCs), and
    the loader takes the verified handle without checking again."""
    from trainer.checkpoint import manifest

    base = ["trainer.max_steps=4", "trainer.eval_every=0", "trainer.checkpoint_every=2"]
    run_dir = tmp_path / "run"
    run(make_cfg(data_cache_dir, *base, "trainer.max_steps=2", "schedule.warmup_steps=1"), run_dir)
    resumed = run_dir / "checkpoints" / "step_00000002"
    hashed = []
    original = manifest.file_crc32
    monkeypatch.setattr(manifest, "file_crc32", lambda path, *a: (hashed.append(Path(path)), original(path, *a))[1])
    rows = run(make_cfg(data_cache_dir, *base, "schedule.warmup_steps=1", "trainer.resume=auto"), run_dir)
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4]
    files = sorted(p for p in resumed.iterdir() if p.name != "MANIFEST.json")
    assert sorted(p for p in hashed if p.parent == resumed) == files  # each once, the tensor files included
