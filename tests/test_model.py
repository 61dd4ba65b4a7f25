"""GPT-2 model (models/gpt2.py): shapes, initial loss, causality, parameter count, tying, init, errors,
FLOPs per token, and every model config."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from tests.head_keys import HEAD

from models.gpt2 import GPT, GPTConfig, flops_per_token
from models.model_config import load_model_config

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "model"

# every GPTConfig key (its defaults live in configs/model/*.yaml)
SMALL = dict(name="small", vocab_size=64, block_size=16, n_layer=1, n_head=2, n_embd=8, dropout=0.0, bias=True, **HEAD)


def load_config(name: str) -> GPTConfig:
    return load_model_config(name)


@pytest.fixture(scope="module")
def test_model() -> GPT:
    torch.manual_seed(0)
    return GPT(load_config("gpt2-test")).eval()


def test_output_shapes(test_model):
    cfg = test_model.config
    idx = torch.randint(0, cfg.vocab_size, (3, 17))
    logits, loss = test_model(idx)
    assert logits.shape == (3, 17, cfg.vocab_size)
    assert loss is None

    logits, loss = test_model(idx, targets=idx)
    assert loss.shape == ()
    _, loss_sum = test_model(idx, targets=idx, reduction="sum")
    # "sum" is the mean times the token count (the trainer divides by global tokens itself).
    torch.testing.assert_close(loss_sum, loss * idx.numel(), rtol=1e-5, atol=0)


def test_initial_loss_is_near_uniform(test_model):
    # Small init (std 0.02, width 32) gives logits with std ~0.02*sqrt(32) ~ 0.11, so the loss is
    # ln(V) + var/2 ~ ln(50257) + 0.006: a near-uniform prediction.
    assert test_model.config.vocab_size == 50257
    g = torch.Generator().manual_seed(1)
    idx = torch.randint(0, 50257, (4, 64), generator=g)
    targets = torch.randint(0, 50257, (4, 64), generator=g)
    with torch.no_grad():
        _, loss = test_model(idx, targets)
    assert abs(loss.item() - math.log(50257)) < 0.05, loss.item()


def test_causality_future_token_does_not_change_past_logits(test_model):
    cfg = test_model.config
    g = torch.Generator().manual_seed(2)
    idx = torch.randint(0, cfg.vocab_size, (2, 32), generator=g)
    t = 20
    changed = idx.clone()
    changed[:, t] = (idx[:, t] + 1) % cfg.vocab_size
    with torch.no_grad():
        a, _ = test_model(idx)
        b, _ = test_model(changed)
    torch.testing.assert_close(a[:, :t], b[:, :t], rtol=0, atol=1e-6)
    # The change is visible from position t on, so the comparison above is not vacuous.
    assert (a[:, t:] - b[:, t:]).abs().amax(dim=-1).min() > 1e-4


def test_gpt2_small_parameter_count_with_tied_head():
    with torch.device("meta"):
        model = GPT(load_config("gpt2"))
    assert model.num_parameters() == 124_439_808
    # wte (50257 x 768) and wpe (1024 x 768) excluded.
    assert model.num_parameters(non_embedding=True) == 124_439_808 - 50257 * 768 - 1024 * 768


def test_head_is_tied_to_token_embedding(test_model):
    assert test_model.lm_head.weight is test_model.transformer.wte.weight
    params = dict(test_model.named_parameters())  # named_parameters lists a shared tensor once
    assert "lm_head.weight" not in params and "transformer.wte.weight" in params


def test_init_statistics():
    # Wide enough that sample stds are within ~1% of the target.
    cfg = GPTConfig(name="init", vocab_size=4096, block_size=128, n_layer=4, n_head=4, n_embd=256, dropout=0.0, bias=True, **HEAD)
    torch.manual_seed(0)
    model = GPT(cfg)
    residual_std = 0.02 / math.sqrt(2 * cfg.n_layer)
    for name, p in model.named_parameters():
        if name.endswith("c_proj.weight"):
            assert p.std().item() == pytest.approx(residual_std, rel=0.03), name
        elif name.endswith(("c_attn.weight", "c_fc.weight", "wte.weight", "wpe.weight")):
            assert p.std().item() == pytest.approx(0.02, rel=0.03), name
        elif "ln_" in name and name.endswith("weight"):
            assert torch.equal(p, torch.ones_like(p)), name
        elif name.endswith("bias"):
            assert torch.equal(p, torch.zeros_like(p)), name
        else:
            pytest.fail(f"parameter {name} not covered by the init test")
        if p.dim() == 2:
            assert abs(p.mean().item()) < 1e-3, name


def test_heads_must_divide_width():
    with pytest.raises(ValueError, match=r"n_embd \(64\) must be divisible by model.n_head \(5\)"):
        GPTConfig(**{**SMALL, "n_embd": 64, "n_head": 5})


def test_sequence_longer_than_context_is_refused(test_model):
    T = test_model.config.block_size + 1
    with pytest.raises(ValueError, match=r"sequence length 65 exceeds .*block_size=64"):
        test_model(torch.zeros(1, T, dtype=torch.long))


@pytest.mark.parametrize(
    "bad", [dict(n_layer=0), dict(vocab_size=0), dict(dropout=1.0), dict(dropout=-0.1)]
)
def test_out_of_range_config_values_are_refused(bad):
    key = next(iter(bad))
    with pytest.raises(ValueError, match=f"model.{key}"):
        GPTConfig(**{**SMALL, **bad})


@pytest.mark.parametrize("seq_len", [1024, 256])
def test_flops_per_token_gpt2(seq_len):
    cfg = load_config("gpt2")
    with torch.device("meta"):
        model = GPT(cfg)
    # N: every parameter taking part in a matmul or elementwise op per token, i.e. all unique
    # parameters minus the position-embedding lookup (the tied wte counts once, as the head).
    n = sum(p.numel() for name, p in model.named_parameters() if name != "transformer.wpe.weight")
    expected = 6 * n + 12 * cfg.n_layer * seq_len * cfg.n_embd
    assert flops_per_token(cfg, seq_len) == expected
    assert flops_per_token(cfg, seq_len, n_params=n) == expected


def test_flops_per_token_without_bias_matches_parameter_count():
    cfg = GPTConfig(name="nobias", vocab_size=1000, block_size=32, n_layer=3, n_head=2, n_embd=16, dropout=0.0, bias=False, **HEAD)
    model = GPT(cfg)
    n = model.num_parameters() - model.transformer.wpe.weight.numel()
    padded_head_rows = cfg.padded_vocab_size - cfg.vocab_size  # 1000 -> 1024: the head matmul computes them
    assert padded_head_rows == 24
    assert flops_per_token(cfg, 32) == 6 * (n + padded_head_rows * 16) + 12 * 3 * 32 * 16


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_model_config_builds(path):
    cfg = load_config(path.stem)
    assert cfg.name == path.stem  # the name in the file matches the file, as Hydra selects by file
    with torch.device("meta"):
        model = GPT(cfg)
    assert model.lm_head.weight is model.transformer.wte.weight


def test_cpu_scale_configs_have_the_documented_sizes():
    with torch.device("meta"):
        mini = GPT(load_config("gpt2-mini"))
        tiny = GPT(load_config("gpt2-tiny"))
    assert mini.num_parameters(non_embedding=True) == pytest.approx(10.6e6, rel=0.01)
    assert mini.config.block_size == 256 and tiny.config.block_size == 256


def test_loss_accepts_non_contiguous_targets():
    from models.gpt2 import GPT, GPTConfig

    torch.manual_seed(0)
    model = GPT(GPTConfig(**{**SMALL, "vocab_size": 64, "block_size": 16, "n_layer": 1, "n_head": 2, "n_embd": 16}))
    tokens = torch.randint(0, 64, (2, 9))
    x, y = tokens[:, :-1], tokens[:, 1:]  # y is a non-contiguous view
    assert not y.is_contiguous()
    _, loss = model(x, y)
    _, loss_contiguous = model(x, y.contiguous())
    assert torch.equal(loss, loss_contiguous)
