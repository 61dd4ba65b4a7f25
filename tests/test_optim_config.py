"""Configs build every optimizer; bad hyper-parameters and bad routing raise errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn as nn
from omegaconf import OmegaConf

from models.gpt2 import GPT, GPTConfig
from models.model_config import load_model_config
from optim import RoutingError, RoutingTable, known_optimizers, route_parameters
from optim import build_optimizer as build_typed
from optim.build import param_groups as typed_param_groups
from optim.config import compose_optim_node, load_optim_config, optim_config
from optim.orthogonalized_optimizer import OrthogonalizedOptimizer
from optim.registry import OPTIMIZERS
from optim.rules.muon import MuonRule

ROOT = Path(__file__).resolve().parents[1]
MATRIX_OPTIMIZERS = [name for name, entry in OPTIMIZERS.items() if entry.rule is not None]  # from the registry


def cfg_of(name: str):
    return compose_optim_node(name)


def build_optimizer(model, cfg):
    return build_typed(model, optim_config(cfg))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return GPT(load_model_config("gpt2-test"))


def test_every_config_builds_its_registered_optimizer(model):
    assert set(MATRIX_OPTIMIZERS + ["adamw"]) <= set(known_optimizers())
    for name in MATRIX_OPTIMIZERS:
        cfg = cfg_of(name)
        assert cfg.name == name
        assert cfg.matrix.get("shape_scaling", "original") in ("original", "match_rms_adamw")
        opt = build_optimizer(model, cfg)
        assert isinstance(opt, OrthogonalizedOptimizer) and opt.rule.name == name


def test_authors_shape_scaling_defaults():
    expected = {"muon": "original", "normuon": "original", "adago": "original",
                "namo": "match_rms_adamw", "namo_d": "match_rms_adamw"}
    assert {n: cfg_of(n).matrix.shape_scaling for n in expected} == expected
    assert all(cfg_of(n).matrix.nesterov for n in expected)
    assert not cfg_of("spectral_msgd").matrix.nesterov  # BeyondMuon: plain torch-SGD momentum


BAD = [  # (optimizer, dotted key, bad value, key named in the error)
    ("muon", "matrix.lr", 0.0, "optim.matrix.lr"),
    ("muon", "matrix.lr", -1.0, "optim.matrix.lr"),
    ("muon", "embedding.lr", 0.0, "optim.embedding.lr"),
    ("muon", "matrix.momentum", 1.0, "optim.matrix.momentum"),
    ("muon", "matrix.momentum", -0.1, "optim.matrix.momentum"),
    ("muon", "matrix.shape_scaling", "moonlight", "optim.matrix.shape_scaling"),
    ("muon", "orthogonalize.steps", 0, "optim.orthogonalize.steps"),
    ("muon", "orthogonalize.method", "qr", "optim.orthogonalize.method"),
    ("muon", "orthogonalize.compute_dtype", "fp8", "optim.orthogonalize.compute_dtype"),
    ("muon", "adamw.betas", [0.9, 1.0], "optim.adamw.betas[1]"),
    ("muon", "matrix.not_a_key", 1, "optim.matrix.not_a_key"),
    ("normuon", "matrix.beta2", 1.0, "optim.matrix.beta2"),
    ("namo", "matrix.mu2", 1.5, "optim.matrix.mu2"),
    ("namo", "matrix.eps", 0.0, "optim.matrix.eps"),
    ("namo_d", "matrix.clamp_c", 0.0, "optim.matrix.clamp_c"),
    ("namo_d", "matrix.clamp_c", 1.5, "optim.matrix.clamp_c"),
    ("adago", "matrix.gamma", 0.0, "optim.matrix.gamma"),
    ("adago", "matrix.v0", 0.0, "optim.matrix.v0"),
    ("spectral_msgd", "matrix.power", 0.75, "optim.matrix.power"),
    ("spectral_adam", "matrix.power", -1.0, "optim.matrix.power"),
    ("spectral_adam", "matrix.eps", -1e-8, "optim.matrix.eps"),
    ("spectral_msgd", "matrix.ridge_eps", -1.0, "optim.matrix.ridge_eps"),
    ("spectral_msgd", "matrix.input", "adam", "optim.matrix.input"),
    ("spectral_adam", "matrix.split_qkv", True, "use optim.orthogonalize.split=qkv"),  # the retired key says what replaced it
    ("auon", "matrix.variant", "v2", "optim.matrix.variant"),
    ("auon", "matrix.gamma", 0.0, "optim.matrix.gamma"),
]


@pytest.mark.parametrize("name,key,value,named", BAD, ids=[f"{b[0]}-{b[1]}={b[2]}" for b in BAD])
def test_bad_hyper_parameter_names_the_key(model, name, key, value, named):
    cfg = cfg_of(name)
    OmegaConf.update(cfg, key, value, force_add=True)
    with pytest.raises(ValueError) as err:
        build_optimizer(model, cfg)
    assert named in str(err.value)


def test_routing_claims_every_parameter_exactly_once(model):
    routed = route_parameters(model)
    claimed = [p for entries in routed.values() for _, p in entries]
    assert len(claimed) == len({id(p) for p in claimed}) == len(list(model.parameters()))
    groups = typed_param_groups(model, load_optim_config("muon"))
    assert sum(p.numel() for g in groups for p in g["params"]) == sum(p.numel() for p in model.parameters())
    assert all(n.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight"))
               for g in groups if g["role"] == "matrix" for n in g["param_names"])


def test_routing_rejects_an_unclaimed_parameter(model):
    named = list(model.named_parameters()) + [("transformer.h.0.attn.rotary.freq", nn.Parameter(torch.ones(4)))]
    with pytest.raises(RoutingError, match=r"transformer\.h\.0\.attn\.rotary\.freq"):
        route_parameters(named, RoutingTable(*model.param_roles()))


def test_non_matrix_parameter_in_matrix_group_is_rejected_by_name(model):
    rule = MuonRule(load_optim_config("muon").rule)
    wte = model.transformer.wte.weight
    bias = model.transformer.h[0].attn.c_attn.bias
    for name, p in [("transformer.wte.weight", wte), ("transformer.h.0.attn.c_attn.bias", bias)]:
        group = {"params": [p], "param_names": [name], "role": "matrix", "lr": 0.02, "weight_decay": 0.0}
        with pytest.raises(RoutingError, match=name.replace(".", r"\.")):
            OrthogonalizedOptimizer([group], rule, routing=RoutingTable(*model.param_roles()))


def test_module_without_a_routing_table_is_told_what_to_provide():
    with pytest.raises(RoutingError, match=r"Linear has no param_roles\(\).*RoutingTable"):
        route_parameters(nn.Linear(4, 4))
