"""Every optimizer on the gpt2-test model: loss falls, state_dict round-trips, diagnostics are right."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from models.gpt2 import GPT, GPTConfig
from models.model_config import load_model_config
from optim import build_optimizer as build_typed
from optim.config import compose_optim_node, optim_config
from optim.registry import OPTIMIZERS

ROOT = Path(__file__).resolve().parents[1]
NAMES = list(OPTIMIZERS)  # every registered optimizer


def optim_cfg(name: str, **matrix_overrides):
    """The composed ``optim`` node of configs/optim/<name>.yaml (mutable: tests adjust it)."""
    cfg = compose_optim_node(name)
    if "orthogonalize" in cfg:  # fp32 Newton-Schulz on any CPU: the exact comparisons below are fp32's
        cfg.orthogonalize.compute_dtype = "float32"
    for key, value in matrix_overrides.items():
        cfg.matrix[key] = value
    return cfg


def build_optimizer(model, cfg):
    return build_typed(model, optim_config(cfg))


def tiny_model(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(load_model_config("gpt2-test"))


def pattern_batch(step: int, batch: int = 4, length: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """A repeating 8-token pattern at a per-row offset: learnable in a few steps."""
    pattern = torch.tensor([11, 503, 7, 90, 1234, 5, 42, 777])
    offsets = (torch.arange(batch) + step) % 8
    idx = torch.stack([pattern[(torch.arange(length + 1) + o) % 8] for o in offsets])
    return idx[:, :-1].contiguous(), idx[:, 1:].contiguous()


def train(model, opt, steps, start=0):
    losses = []
    for s in range(start, start + steps):
        x, y = pattern_batch(s)
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.slow  # ~20-60 s each on 2 loaded cores; the fast tier keeps the state-dict round trips
@pytest.mark.parametrize("name", NAMES)
def test_loss_falls(name):
    model = tiny_model()
    cfg = optim_cfg(name)
    cfg.vector.lr = 3e-3
    if cfg.embedding.rule == "adamw":  # RowNormM's unit rows (optim=rownorm) keep the YAML's own lr
        cfg.embedding.lr = 3e-3
    opt = build_optimizer(model, cfg)
    losses = train(model, opt, 25)
    # spectral_msgd (p = 1/2 of an SGD momentum sum) learns this pattern more slowly: 0.68 measured,
    # about the same at lr 0.2, 0.5 and 1.0
    assert sum(losses[-3:]) / 3 < (0.7 if name == "spectral_msgd" else 0.6) * losses[0], losses


@pytest.mark.parametrize("name", NAMES[1:])
def test_state_dict_round_trip_gives_identical_next_steps(name):
    model = tiny_model()
    opt = build_optimizer(model, optim_cfg(name))
    train(model, opt, 3)
    saved_model, saved_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    assert all(torch.is_tensor(v) for st in saved_opt["state"].values() for v in st.values())

    resumed = tiny_model(seed=1)  # different init: everything must come from the checkpoint
    resumed.load_state_dict(saved_model)
    resumed_opt = build_optimizer(resumed, optim_cfg(name))
    resumed_opt.load_state_dict(saved_opt)

    train(model, opt, 2, start=3)
    train(resumed, resumed_opt, 2, start=3)
    for (n, a), (_, b) in zip(model.named_parameters(), resumed.named_parameters()):
        assert torch.equal(a, b), n


def test_state_is_eager_and_sized_as_the_spec_says():
    model = tiny_model()
    sizes = {}
    for name in NAMES[1:]:
        opt = build_optimizer(model, optim_cfg(name))
        matrix = next(g for g in opt.param_groups if g["role"] == "matrix")
        assert all(opt.state[p] for g in opt.param_groups for p in g["params"])  # before any step
        p = matrix["params"][0]
        sizes[name] = {k: tuple(v.shape) for k, v in opt.state[p].items()}
    rows, cols = p.shape
    assert sizes["muon"] == {"step": (), "momentum_buffer": (rows, cols)}
    assert sizes["namo"] == {"step": (), "momentum_buffer": (rows, cols), "second_moment": ()}
    assert sizes["namo_d"] == {"step": (), "momentum_buffer": (rows, cols), "col_second_moment": (cols,)}
    assert sizes["adago"] == {"step": (), "momentum_buffer": (rows, cols), "accumulator": ()}
    assert sizes["normuon"] == {"step": (), "momentum_buffer": (rows, cols), "second_moment": (rows, 1)}
    assert sizes["spectral_msgd"] == sizes["auon"] == {"step": (), "momentum_buffer": (rows, cols)}
    assert sizes["spectral_adam"] == {"step": (), "exp_avg": (rows, cols), "exp_avg_sq": (rows, cols)}


@pytest.mark.parametrize("name", NAMES[1:])
def test_update_rms_diagnostic_equals_measured_step(name):
    # weight decay off everywhere so the parameter change is exactly the reported update
    model = tiny_model()
    cfg = optim_cfg(name, weight_decay=0.0)
    opt = build_optimizer(model, cfg)
    train(model, opt, 1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train(model, opt, 1, start=1)
    diag = opt.diagnostics()
    for group in opt.param_groups:
        delta_sq = sum((p.detach() - before[n]).square().sum() for n, p in zip(group["param_names"], group["params"]))
        numel = sum(p.numel() for p in group["params"])
        measured = (delta_sq / numel).sqrt().item()
        assert diag[f"update_rms/{group['role']}"] == pytest.approx(measured, rel=1e-3), group["role"]


def test_rule_diagnostics():
    model = tiny_model()
    values = {}
    for name, over in [("namo", {}), ("adago", {}), ("normuon", {}), ("namo_d", {"clamp_c": 1.0}),
                       ("namo_d_small", {"clamp_c": 1e-6})]:
        opt = build_optimizer(model, optim_cfg(name.replace("_small", ""), **over))
        train(model, opt, 2)
        values[name] = opt.diagnostics()
    assert 0 < values["namo"]["namo/alpha_mean"] < 1
    assert values["adago"]["adago/alpha_mean"] > 0
    assert values["normuon"]["normuon/row_scale_spread"] >= 1.0
    # AuON's brake r is 1 + O(sinh(gamma)^2 / N): above 1, and tiny at any real size (spec §2.4)
    opt = build_optimizer(model, optim_cfg("auon"))
    train(model, opt, 2)
    assert 0 < opt.diagnostics()["auon/brake_minus_1_max"] < 1e-2
    # c = 1 pins every column to the mean; a tiny c never clamps
    assert values["namo_d"]["namo_d/clamp_hit_fraction"] > 0.9
    assert values["namo_d_small"]["namo_d/clamp_hit_fraction"] == 0.0


@pytest.mark.slow
def test_ndim_routing_sends_the_embeddings_through_the_rule():
    """optim.routing=ndim (the BeyondMuon code's routing): wte (the tied head) and wpe join the matrix
    group and get the spectral transform; the default role routing leaves them to AdamW."""
    model = tiny_model()
    cfg = optim_cfg("spectral_adam")
    cfg.routing = "ndim"
    opt = build_optimizer(model, cfg)
    matrix = next(g for g in opt.param_groups if g["role"] == "matrix")
    assert {"transformer.wte.weight", "transformer.wpe.weight"} <= set(matrix["param_names"])
    assert not any(g["role"] == "embedding" for g in opt.param_groups)
    before = model.transformer.wte.weight.detach().clone()
    losses = train(model, opt, 25)
    assert sum(losses[-3:]) / 3 < 0.85 * losses[0], losses  # slower here (0.81): the matrix lr on wte
    assert not torch.equal(model.transformer.wte.weight, before)
    assert "exp_avg" in opt.state[model.transformer.wte.weight]
    default = build_optimizer(tiny_model(), optim_cfg("spectral_adam"))
    assert "transformer.wte.weight" in next(g for g in default.param_groups if g["role"] == "embedding")["param_names"]
