"""Optimizer registry: ``optim=<name>`` in Hydra selects a builder registered here.

A builder takes the routed parameter groups (see ``param_groups``), the ``optim`` config and the
device mesh (None in one process) and returns a ``torch.optim.Optimizer``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn
from omegaconf import DictConfig

from optim.routing import ROLES, route_parameters

Builder = Callable[[list[dict[str, Any]], DictConfig, Any], torch.optim.Optimizer]
_BUILDERS: dict[str, Builder] = {}


def register(name: str) -> Callable[[Builder], Builder]:
    def wrap(builder: Builder) -> Builder:
        if name in _BUILDERS:
            raise KeyError(f"optimizer '{name}' is registered twice")
        _BUILDERS[name] = builder
        return builder

    return wrap


def known_optimizers() -> list[str]:
    return sorted(_BUILDERS)


def get_builder(name: str) -> Builder:
    if name not in _BUILDERS:
        raise KeyError(
            f"unknown optimizer '{name}'; known optimizers: {', '.join(known_optimizers())} "
            f"(choose one with optim=<name>)"
        )
    return _BUILDERS[name]


def param_groups(model: nn.Module, cfg: DictConfig) -> list[dict[str, Any]]:
    """One param group per non-empty role, with the role's lr and weight decay from ``cfg.<role>``.

    Groups carry ``role`` and ``param_names`` so optimizers, diagnostics and checkpoints can tell
    them apart.
    """
    routed = route_parameters(model)
    groups = []
    for role in ROLES:
        if not routed[role]:
            continue
        names, params = zip(*routed[role])
        groups.append(
            {
                "params": list(params),
                "param_names": list(names),
                "role": role,
                "lr": float(cfg[role].lr),
                "weight_decay": float(cfg[role].weight_decay),
            }
        )
    return groups


def build_optimizer(model: nn.Module, cfg: DictConfig, mesh: Any = None) -> torch.optim.Optimizer:
    builder = get_builder(cfg.name)
    return builder(param_groups(model, cfg), cfg, mesh)
