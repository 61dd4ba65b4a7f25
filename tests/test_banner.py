"""The start banner (trainer/banner.py): its numbers, counted independently here."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir

from trainer.banner import count_parameters, describe_run, plan_line
from trainer.config import build_config

ROOT = Path(__file__).resolve().parents[1]


def config(*overrides, world_size=2):
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base=None):
        cfg = compose("train", overrides=["model=gpt2-test", "device=cpu", "trainer.seq_len=32", *overrides])
    return build_config(cfg, world_size)


def test_banner_states_parameters_batch_split_steps_dtypes_mesh_and_start():
    c = config("optim=muon", "optim.orthogonalize.compute_dtype=float32", "trainer.micro_batch_size=4",
               "trainer.global_batch_size=16", "trainer.max_steps=100", "schedule.warmup_steps=10")
    lines = describe_run(c, Path("runs/x/2026"), start="no checkpoint found: starting fresh", mfu="1.000 TFLOP/s")
    text = "\n".join(lines)
    # gpt2-test: vocab 50257 (padded to 50304), context 64, 2 blocks of width 32, tied head, biases
    C, V, P, T = 32, 50257, 50304, 64
    block = 12 * C * C + 13 * C  # 4 weight matrices + their biases + 2 LayerNorms
    total = V * C + T * C + 2 * block + 2 * C
    assert f"({total:,})" in text and total == 1_635_744
    counts = count_parameters(c)
    assert (counts.total, counts.non_embedding) == (total, total - (V + T) * C)
    roles = {r.role: (r.parameters, r.optimizer, r.lr) for r in counts.roles}
    assert roles == {"matrix": (2 * 12 * C * C, "muon", 0.02), "embedding": (P * C + T * C, "adamw", 6e-4),
                     "vector": (2 * 13 * C + 2 * C, "adamw", 6e-4)}
    assert sum(r[0] for r in roles.values()) == total + (P - V) * C  # the optimizer holds the padded rows too
    assert "  matrix      24.6k  muon (lr 0.02, weight decay 0)" in lines
    # 16 sequences of 32 tokens: 4 per micro-batch x 2 accumulation steps x 2 ranks
    assert "batch       512 tokens/step = 16 sequences x 32 tokens; 4 micro-batch x 2 accumulation x 2 ranks" in lines
    assert "steps       100 steps, 51.2k tokens (51,200;" in text and "warmup 10 steps" in text
    assert ("dtypes      params float32, autocast float32, Newton-Schulz float32 (newton_schulz, 5 steps), "
            "FSDP compute float32 / reduce float32, exchange float32") in lines
    assert "devices     cpu, world size 2 (mesh dp_replicate 1 x dp_shard 2)" in lines
    assert lines[0] == "run         gpt2-test-muon -> runs/x/2026"
    assert lines[-2:] == ["mfu         1.000 TFLOP/s", "start       no checkpoint found: starting fresh"]


def test_adamw_banner_routes_every_role_to_adamw_and_plan_line_is_one_line():
    c = config("optim=adamw", "trainer.max_steps=50", "schedule.name=wsd", world_size=1)
    assert {r.optimizer for r in count_parameters(c).roles} == {"adamw"}
    text = "\n".join(describe_run(c))
    assert "Newton-Schulz" not in text and "FSDP" not in text  # nothing that does not apply
    assert "wsd: warmup 20 steps, stable, then linear decay over the last 10 steps to 0.1 x lr" in text
    line = plan_line(c)
    assert "\n" not in line and line.startswith("gpt2-test-adamw: 1.64M params, adamw")
    assert "50 steps x 256 tokens = 12.8k tokens" in line
