"""``build_optimizer``: a model and a typed ``OptimConfig`` -> the ``torch.optim.Optimizer``.

    routing (optim.routing)  every parameter -> matrix | embedding | vector, by the model's
                             table (model.param_roles())
    param_groups             one group per role, with the role's lr and weight decay
    registry row             plain AdamW, or OrthogonalizedOptimizer(rule(hparams), distribution)
    role rules               the embedding group's rule when it is not AdamW (optim.role_rules)
    matrix_transform         the configured Newton-Schulz, resolved once, handed to the rule
                             (rule.transform), then split as configured (optim.orthogonalize.split)
    distribution             that transform on the device mesh (optim.orthogonalize.from_mesh)
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from optim.adamw import build_adamw
from optim.config import OptimConfig
from optim.orthogonalize.config import OrthogonalizeConfig, newton_schulz_from_config
from optim.orthogonalize.from_mesh import build_distribution
from optim.orthogonalize.split import SplitRows
from optim.orthogonalize.transform import MatrixTransform
from optim.orthogonalized_optimizer import OrthogonalizedOptimizer
from optim.registry import registry_entry
from optim.role_rules import embedding_role_rules, output_head_names
from optim.routing import ROLES, RoutingTable, route_parameters, routing_of
from optim.rules.base import MatrixRule


def param_groups(model: nn.Module, config: OptimConfig, routing: RoutingTable | None = None) -> list[dict[str, Any]]:
    """One param group per non-empty role, with the role's lr and weight decay (``routing``: the
    table, default ``model.param_roles()``).

    Groups carry ``role`` and ``param_names`` so optimizers, diagnostics and checkpoints can tell
    them apart. ``optim.routing=ndim`` moves the embeddings (and the tied head) into the matrix group,
    as the BeyondMuon code routes them; that group then says so (``"embeddings": True``). The
    embedding group on a role rule lists which of its parameters are the output head (``head_names``; the tied wte).
    """
    routing = routing or routing_of(model)
    routed = route_parameters(model, routing)
    ndim_routing = config.routing == "ndim" and bool(routed["embedding"])
    if ndim_routing:
        routed = {**routed, "matrix": routed["matrix"] + routed["embedding"], "embedding": []}
    groups = []
    for role in ROLES:
        if not routed[role]:
            continue
        names, params = zip(*routed[role])
        hp = config.groups[role]
        groups.append(
            {"params": list(params), "param_names": list(names), "role": role, "lr": hp.lr,
             "weight_decay": hp.weight_decay}
        )
        if role == "matrix" and ndim_routing:
            groups[-1]["embeddings"] = True
        if role == "embedding" and hp.rule != "adamw":  # only a role rule reads it; AdamW groups keep the
            # keys earlier checkpoints were written with (DCP refuses a param-group key it cannot find)
            groups[-1]["head_names"] = sorted(output_head_names(model, routing.canonical_name) & set(names))
    return groups


def matrix_transform(
    rule: MatrixRule, config: OrthogonalizeConfig, device: torch.device, n_head: int | None = None
) -> MatrixTransform:
    """The whole-matrix transform ``rule`` runs under ``optim.orthogonalize``: the configured
    Newton-Schulz (its dtype resolved on ``device``) handed to the rule, split by ``config.split``
    (``n_head``: the model's attention heads, for ``split: heads``)."""
    transform = rule.transform(newton_schulz_from_config(config, device))
    if config.split != "none" and not rule.supports_split:  # checked in optim_config too; hand-built configs
        raise ValueError(f"optim.orthogonalize.split={config.split} does not apply to '{rule.name}' (its transform "
                         f"needs whole matrices); set optim.orthogonalize.split=none")
    return transform if config.split == "none" else SplitRows(transform, config.split, n_head)


def build_from_groups(
    groups: list[dict[str, Any]], config: OptimConfig, mesh: Any = None, n_head: int | None = None,
    routing: RoutingTable | None = None,
) -> torch.optim.Optimizer:
    """The optimizer of ``config`` over already-routed groups (hand-built groups in tests too);
    ``n_head``: the model's attention heads (``optim.orthogonalize.split: heads``); ``routing``: the
    table the groups were routed by, which the matrix group is checked against."""
    entry = registry_entry(config.name)
    if entry.rule is None:
        return build_adamw(groups, config.adamw)
    device = groups[0]["params"][0].device if groups else torch.device("cpu")
    rule = entry.rule(config.rule)
    transform = matrix_transform(rule, config.orthogonalize, device, n_head)
    embedding = config.groups["embedding"]
    role_rules = embedding_role_rules(embedding.rule, embedding.rownorm)
    return OrthogonalizedOptimizer(
        groups, rule, adamw=config.adamw, distribution=build_distribution(config.orthogonalize, device, transform, mesh),
        routing=routing, role_rules={"embedding": role_rules} if role_rules else None,
    )


def build_optimizer(model: nn.Module, config: OptimConfig, mesh: Any = None) -> torch.optim.Optimizer:
    n_head = getattr(getattr(model, "config", None), "n_head", None)
    routing = routing_of(model)
    optimizer = build_from_groups(param_groups(model, config, routing), config, mesh, n_head, routing)
    if isinstance(optimizer, OrthogonalizedOptimizer):
        optimizer.rule.observe_model(model, mesh)  # forward hooks of rules that read activations
    return optimizer
