"""The CUDA configuration, exercised on CPU (gloo, W = 2 and 1) through the real command line.

Each choice the GPU path makes that is not CUDA-specific runs here: FSDP2 MixedPrecisionPolicy
(bf16 parameters, fp32 gradient reduction), bf16 autocast, the bf16 Newton-Schulz exchange and
iteration (each alone for a Muon-family optimizer), and with activation checkpointing and torch.compile
per block (Inductor's CPU backend) all together for Muon and AdamW. Every run must train (loss
falls) and stay within BOUND of the fp32 eager run's losses; a checkpoint written in the all-bf16
configuration resumes to the same losses in it, loads into the fp32 configuration, and holds fp32
parameters and optimizer state (master weights: FSDP2 casts only the gathered copies).

Not covered on CPU (gpu_check's CUDA tests run them): NCCL, bf16 gradient reduction (gloo has no
bf16 reduce-scatter on CPU; refused with a message), CUDA kernels of Inductor, TF32.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # every test launches train.py (W = 1 and 2, torch.compile)


ROOT = Path(__file__).resolve().parents[1]
STEPS = 6
BOUND = 0.05  # nats: |loss - fp32 eager loss| per step (bf16 rounding; the losses go ~10.8 -> ~9.7)
# each choice alone: (world size, overrides); the FSDP2 / exchange ones need W = 2, the rest run at W = 1
ALONE = {
    "fsdp_bf16": (2, ["distributed.param_dtype=bfloat16", "distributed.reduce_dtype=float32"]),
    "exchange_bf16": (2, ["optim.orthogonalize.comm_dtype=bfloat16"]),
    "autocast": (1, ["trainer.compute_dtype=bfloat16"]),
    "ns_bf16": (1, ["optim.orthogonalize.compute_dtype=bfloat16"]),
}
# Recomputation and fusion change no number, so alone they are not run here: activation checkpointing
# is held to "changes no number" under FSDP2 by tests/test_fsdp_training.py, and torch.compile runs in
# every all-together run below (train, resume exactly, load into fp32).
NUMERICALLY_EXACT = ["trainer.activation_checkpointing=true", "trainer.compile=true"]
ALL_MUON = [kv for _, kvs in ALONE.values() for kv in kvs] + NUMERICALLY_EXACT
ALL_ADAMW = [kv for kv in ALL_MUON if not kv.startswith("optim.")]


def train(run_dir: Path, data_cache_dir, world_size: int, optim_name: str, *overrides: str) -> dict[int, float]:
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world_size}"]
                if world_size > 1 else [sys.executable])
    fp32_ns = [] if optim_name == "adamw" else ["optim.orthogonalize.compute_dtype=float32",
                                                 "optim.orthogonalize.comm_dtype=float32"]
    cmd = [*launcher, str(ROOT / "train.py"), "model=gpt2-test", f"optim={optim_name}", f"data.cache_dir={data_cache_dir}",
           "logging=disabled", "logging.progress_bar=false", "trainer.seq_len=32", "trainer.micro_batch_size=2",
           "trainer.global_batch_size=4", f"trainer.max_steps={STEPS}", "trainer.log_every=1", "trainer.eval_every=0",
           "trainer.checkpoint_every=3", "trainer.keep_checkpoints=5", "trainer.plot=false", "trainer.peak_tflops=1.0",
           "schedule.warmup_steps=1", "optim.embedding.lr=0.01", "optim.vector.lr=0.01",  # visible progress in 6 steps
           *fp32_ns, f"hydra.run.dir={run_dir}", *overrides]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stderr[-3000:]}"
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def assert_trains_within_bound(losses: dict[int, float], reference: dict[int, float], label: str) -> None:
    assert sorted(losses) == list(range(1, STEPS + 1)), label
    assert losses[STEPS] < losses[1] - 0.5, f"{label}: loss did not fall {losses}"
    for step, ref in reference.items():
        assert abs(losses[step] - ref) <= BOUND, f"{label} step {step}: {losses[step]} vs fp32 {ref}"


@pytest.fixture(scope="module")
def references(tmp_path_factory, data_cache_dir):
    """fp32 eager at W = 1 (W = 2 computes the same to 1e-5: tests/test_fsdp_training.py)."""
    root = tmp_path_factory.mktemp("cuda_config_ref")
    return {name: train(root / name, data_cache_dir, 1, name) for name in ("muon", "adamw")}


@pytest.mark.parametrize("variant", list(ALONE))
def test_each_choice_alone_trains_like_fp32(variant, references, tmp_path, data_cache_dir):
    world_size, overrides = ALONE[variant]
    losses = train(tmp_path / variant, data_cache_dir, world_size, "muon", *overrides)
    assert_trains_within_bound(losses, references["muon"], variant)
    assert losses != references["muon"], f"{variant}: identical to fp32, so the option did nothing"


def test_all_together_for_adamw_at_w2(references, tmp_path, data_cache_dir):
    assert_trains_within_bound(train(tmp_path / "all", data_cache_dir, 2, "adamw", *ALL_ADAMW), references["adamw"], "adamw all")


def test_all_together_resumes_exactly_loads_into_fp32_and_keeps_fp32_state(references, tmp_path, data_cache_dir):
    import torch.distributed.checkpoint as dcp

    run = tmp_path / "all"
    losses = train(run, data_cache_dir, 2, "muon", *ALL_MUON)
    assert_trains_within_bound(losses, references["muon"], "muon all")
    step3 = run / "checkpoints" / "step_00000003"
    # master weights and optimizer state stay fp32 in the checkpoint (FSDP2 casts only gathered copies)
    metadata = dcp.FileSystemReader(str(step3)).read_metadata()
    dtypes = {key: meta.properties.dtype for key, meta in metadata.state_dict_metadata.items()
              if hasattr(meta, "properties") and hasattr(meta.properties, "dtype")}
    params = [k for k in dtypes if k.startswith("model.")]
    state = [k for k in dtypes if "momentum" in k or "exp_avg" in k]
    assert params and state, sorted(dtypes)[:10]
    assert {str(dtypes[k]) for k in params + state} == {"torch.float32"}
    # resume in the same configuration: steps 4..6 again, the same losses
    later = range(4, STEPS + 1)
    resumed = train(tmp_path / "resumed", data_cache_dir, 2, "muon", *ALL_MUON, f"trainer.resume={step3}")
    assert {s: resumed[s] for s in later} == {s: losses[s] for s in later}
    # and into the fp32 eager configuration (a GPU checkpoint examined on a CPU): it loads and trains on
    into_fp32 = train(tmp_path / "fp32", data_cache_dir, 2, "muon", f"trainer.resume={step3}")
    assert sorted(into_fp32) == list(later) and all(abs(into_fp32[s] - losses[s]) <= BOUND for s in later)


def test_bf16_gradient_reduction_is_refused_on_cpu_with_the_fix(tmp_path, data_cache_dir):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(ROOT / "train.py"),
           "model=gpt2-test", "logging=disabled", f"data.cache_dir={data_cache_dir}", f"hydra.run.dir={tmp_path}",
           "trainer.seq_len=32", "trainer.max_steps=2", "schedule.warmup_steps=1", "distributed.reduce_dtype=bfloat16"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode != 0 and "distributed.reduce_dtype=bfloat16 is not supported on CPU" in proc.stderr
