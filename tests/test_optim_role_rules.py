"""RowNormM's invariants, and the embedding group on it beside a matrix optimizer (optim/role_rules.py).

The authors' numbers are matched in tests/test_optim_family2_vectors.py; W ranks equal one process in
tests/test_fsdp_equivalence.py (rownorm, rownorm+col, muon+rownorm_head at W = 2 and 4).
"""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from optim.config import optim_config
from optim.rules.rownorm import rownorm_direction
from tests.test_optim_training import build_optimizer, optim_cfg, pattern_batch, tiny_model, train


def identity(t):
    return t


def momentum_with_zero_rows(rows: int = 40, cols: int = 12) -> torch.Tensor:
    m = torch.randn(rows, cols, generator=torch.Generator().manual_seed(3), dtype=torch.float64) + 0.5
    m[-5:] = 0  # padded vocabulary rows: never a gradient
    return m


def test_row_rule_gives_unit_rows_and_leaves_zero_rows_alone():
    u = rownorm_direction(momentum_with_zero_rows(), "row", False, identity)
    assert torch.allclose(u[:-5].norm(dim=1), torch.ones(35, dtype=torch.float64), atol=1e-7)
    assert u[-5:].abs().max() == 0


def test_centered_rule_is_the_authors_on_the_live_rows_and_keeps_padded_rows_zero():
    m = momentum_with_zero_rows()
    u = rownorm_direction(m, "row", True, identity)
    live = m[:-5]
    x = live - live.mean(dim=0)  # the authors' rule on the real rows: center, normalize, center
    x = x / (x.norm(dim=1, keepdim=True) + 1e-8)
    assert torch.allclose(u[:-5], x - x.mean(dim=0), atol=1e-14)
    assert u[-5:].abs().max() == 0
    assert u[:-5].mean(dim=0).abs().max() < 1e-15  # the shared logit shift is not a direction it moves


def test_col_rule_gives_unit_columns_and_centers_along_rows():
    m = momentum_with_zero_rows()
    u = rownorm_direction(m, "col", False, identity)
    assert torch.allclose(u.norm(dim=0), torch.ones(12, dtype=torch.float64), atol=1e-7)
    centered = rownorm_direction(m, "col", True, identity)
    assert centered.mean(dim=1).abs().max() < 1e-15 and centered[-5:].abs().max() == 0


def embedding_rule_cfg(name: str = "muon", **embedding):
    cfg = optim_cfg(name)
    cfg.embedding.rule = "rownorm"
    cfg.embedding.lr = 0.05
    cfg.embedding.weight_decay = 0.0
    for key, value in embedding.items():
        OmegaConf.update(cfg, f"embedding.rownorm.{key}", value)
    return cfg


@pytest.mark.parametrize("center_head", [False, True])
def test_embedding_group_takes_rownorm_beside_muon_and_only_the_head_is_centered(center_head):
    model = tiny_model()
    opt = build_optimizer(model, embedding_rule_cfg(center_head=center_head))
    wte, wpe = model.transformer.wte.weight, model.transformer.wpe.weight
    group = next(g for g in opt.param_groups if g["role"] == "embedding")
    assert group["head_names"] == ["transformer.wte.weight"]  # the tied head is wte
    assert set(opt.state[wte]) == set(opt.state[wpe]) == {"step", "momentum_buffer"}  # no Adam moments
    assert "exp_avg" in opt.state[model.transformer.h[0].ln_1.weight]  # vectors stay on AdamW
    before = {"wte": wte.detach().clone(), "wpe": wpe.detach().clone()}
    train(model, opt, 1)
    step_wte, step_wpe = (before["wte"] - wte.detach()) / 0.05, (before["wpe"] - wpe.detach()) / 0.05
    vocab = model.config.vocab_size
    assert step_wte[vocab:].abs().max() == 0 and wte[vocab:].abs().max() == 0  # padded rows stay zero
    used = pattern_batch(0)[0].shape[1]  # positions with a gradient: unit rows, never centered
    assert torch.allclose(step_wpe[:used].norm(dim=1), torch.ones(used), atol=1e-4)
    expected = rownorm_direction(opt.state[wte]["momentum_buffer"], "row", center_head, identity)
    assert torch.allclose(step_wte, expected, atol=1e-5)  # the head's rule: centered or not, as asked
    if center_head:
        assert step_wte[:vocab].mean(dim=0).abs().max() < 1e-6


@pytest.mark.parametrize("name, key, value, message", [
    ("adamw", "embedding.rule", "rownorm", "optim.embedding.rule=rownorm needs a matrix optimizer"),
    ("muon", "routing", "ndim", "has no embeddings to step under optim.routing=ndim"),
    ("muon", "embedding.rule", "lion", "optim.embedding.rule must be one of"),
    ("muon", "embedding.rownorm.orientation", "diag", "optim.embedding.rownorm.orientation must be one of"),
    ("rownorm", "matrix.center", "yes", "optim.matrix.center must be true or false"),
])
def test_bad_role_rule_keys_are_refused_by_name(name, key, value, message):
    cfg = optim_cfg(name)
    OmegaConf.update(cfg, key, value)
    if key == "routing":
        cfg.embedding.rule = "rownorm"
    with pytest.raises(ValueError, match=message):
        optim_config(cfg)
