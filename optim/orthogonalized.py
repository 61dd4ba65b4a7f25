"""Registered builders ``muon``, ``namo``, ``namo_d``, ``adago``, ``normuon``.

Each reads ``optim.matrix`` (lr, weight_decay + the rule's hyper-parameters, validated with the
config key in the error), ``optim.embedding`` / ``optim.vector`` (AdamW lr, wd), ``optim.adamw``
(betas, eps) and ``optim.orthogonalize`` (method, steps, coefficients, compute_dtype, ...), and
returns one ``OrthogonalizedOptimizer``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from optim.adago import AdaGOHParams, AdaGORule
from optim.adamw import validate_group_hparams
from optim.hparams import check_betas, check_positive
from optim.matrix_optimizer import OrthogonalizedOptimizer
from optim.matrix_rule import MatrixRule, MomentumHParams
from optim.distributed import build_seams
from optim.muon import MuonRule
from optim.namo import NAMOHParams, NAMORule
from optim.namo_d import NAMODHParams, NAMODRule
from optim.normuon import NorMuonHParams, NorMuonRule
from optim.registry import register

RULES: dict[str, tuple[type[MatrixRule], type[MomentumHParams]]] = {
    "muon": (MuonRule, MomentumHParams),
    "namo": (NAMORule, NAMOHParams),
    "namo_d": (NAMODRule, NAMODHParams),
    "adago": (AdaGORule, AdaGOHParams),
    "normuon": (NorMuonRule, NorMuonHParams),
}
GROUP_KEYS = ("lr", "weight_decay")  # read by registry.param_groups, not by the rule


def rule_from_config(name: str, matrix_cfg: Any) -> MatrixRule:
    rule_cls, hp_cls = RULES[name]
    values = OmegaConf.to_container(matrix_cfg, resolve=True) if isinstance(matrix_cfg, DictConfig) else dict(matrix_cfg)
    fields = {f.name for f in dataclasses.fields(hp_cls)}
    unknown = sorted(set(values) - fields - set(GROUP_KEYS))
    if unknown:
        raise ValueError(
            f"optim.matrix.{unknown[0]} is not a hyper-parameter of '{name}' (known: {', '.join(sorted(fields))})"
        )
    return rule_cls(hp_cls(**{k: v for k, v in values.items() if k in fields}))


def build_orthogonalized(
    name: str, groups: list[dict[str, Any]], cfg: DictConfig, mesh: Any = None, **seams: Any
) -> OrthogonalizedOptimizer:
    """``seams``: orthogonalizer / reduce_sum / reduce_max overrides (the FSDP2 layer passes them)."""
    validate_group_hparams(groups)
    rule = rule_from_config(name, cfg.matrix)
    betas = check_betas("optim.adamw.betas", list(cfg.adamw.betas))
    eps = check_positive("optim.adamw.eps", cfg.adamw.eps)
    device = groups[0]["params"][0].device if groups else torch.device("cpu")
    for key, value in build_seams(cfg.get("orthogonalize", {}), device, mesh).items():
        seams.setdefault(key, value)
    return OrthogonalizedOptimizer(groups, rule, adamw_betas=betas, adamw_eps=eps, **seams)


def _register(name: str) -> None:
    @register(name)
    def build(groups: list[dict[str, Any]], cfg: DictConfig, mesh: Any = None) -> torch.optim.Optimizer:
        return build_orthogonalized(name, groups, cfg, mesh)

    build.__name__ = f"build_{name}"


for _name in RULES:
    _register(_name)
