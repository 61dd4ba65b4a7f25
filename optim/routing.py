"""Parameter routing: a table the model provides maps every trainable parameter to a role.

Roles:
  matrix     hidden 2-D weights; these take the orthogonalized optimizer.
  embedding  2-D, but not hidden matrices (token/position embeddings, a tied output head): AdamW.
  vector     biases and norm gains/biases: AdamW.

The table is the model's, as plain data: ``model.param_roles()`` returns ``(rules, canonical_name)``,
with ``rules`` (regex, role) pairs fullmatched against a parameter's canonical name and
``canonical_name`` removing wrapper components (torch.compile, checkpointing, FSDP1, DDP) from a name.
This file holds the mechanism only: every parameter is claimed by exactly one rule; anything
unclaimed (or claimed twice) is an error that names it. Routing is by role, never by ``ndim``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import NamedTuple

import torch.nn as nn

ROLES = ("matrix", "embedding", "vector")


class RoutingError(ValueError):
    pass


class RoutingTable(NamedTuple):
    rules: tuple[tuple[str, str], ...]  # (regex over canonical names, role)
    canonical_name: Callable[[str], str]

    def role_of(self, name: str) -> str:
        """The role of one parameter name; raises RoutingError if zero or several rules claim it."""
        name = self.canonical_name(name)
        roles = [role for pattern, role in self.rules if re.fullmatch(pattern, name)]
        if len(roles) != 1:
            what = "no rule claims it" if not roles else f"several rules claim it ({roles})"
            raise RoutingError(f"parameter '{name}': {what}. Give it exactly one rule in the model's param_roles()")
        return roles[0]


def routing_of(model: nn.Module) -> RoutingTable:
    """The model's own table, from ``model.param_roles()``."""
    param_roles = getattr(model, "param_roles", None)
    if param_roles is None:
        raise RoutingError(
            f"{type(model).__name__} has no param_roles(): give the model a param_roles() method returning "
            f"(rules, canonical_name) -- rules: (regex over canonical parameter names, role) pairs, roles in "
            f"{ROLES} -- or pass routing=RoutingTable(rules, canonical_name)"
        )
    return RoutingTable(*param_roles())


def route_parameters(
    model: nn.Module | Iterable[tuple[str, nn.Parameter]], routing: RoutingTable | None = None,
) -> dict[str, list[tuple[str, nn.Parameter]]]:
    """Split trainable parameters into {role: [(canonical name, param), ...]}, every one claimed once.

    ``model``: a module (its table is ``model.param_roles()`` unless ``routing`` is given) or
    (name, parameter) pairs, which need ``routing``."""
    if routing is None:
        if not isinstance(model, nn.Module):
            raise RoutingError("route_parameters: (name, parameter) pairs need routing=RoutingTable(rules, canonical_name)")
        routing = routing_of(model)
    unknown = sorted({role for _, role in routing.rules} - set(ROLES))
    if unknown:
        raise RoutingError(f"the routing table names roles {unknown}; roles are {ROLES}")
    named_parameters = model.named_parameters() if isinstance(model, nn.Module) else model
    routed: dict[str, list[tuple[str, nn.Parameter]]] = {role: [] for role in ROLES}
    seen: set[int] = set()
    errors: list[str] = []
    for name, param in named_parameters:
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))
        try:
            role = routing.role_of(name)
        except RoutingError as err:
            errors.append(str(err))
            continue
        if role == "matrix" and param.ndim != 2:
            errors.append(f"parameter '{name}' is routed to 'matrix' but has shape {tuple(param.shape)}")
            continue
        routed[role].append((routing.canonical_name(name), param))
    if errors:
        raise RoutingError("parameter routing failed:\n  " + "\n  ".join(errors))
    return routed
