"""Parameter routing: one explicit table maps every trainable parameter of GPT-2 to a role.

Roles:
  matrix     hidden 2-D weights (attention qkv and output projections, MLP fc and projection);
             these take the orthogonalized optimizer.
  embedding  token and position embeddings and the tied output head (2-D, but not hidden matrices).
  vector     biases and LayerNorm gains/biases.

Routing is by name and role, never by ``ndim``: embeddings are 2-D too. Every parameter must be
claimed by exactly one rule; anything unclaimed (or claimed twice) is an error that names it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import torch.nn as nn

from models.gpt2 import canonical_param_name

ROLES = ("matrix", "embedding", "vector")

ROUTING_TABLE: tuple[tuple[str, str], ...] = (
    (r"transformer\.h\.\d+\.attn\.(c_attn|c_proj)\.weight", "matrix"),
    (r"transformer\.h\.\d+\.mlp\.(c_fc|c_proj)\.weight", "matrix"),
    (r"transformer\.(wte|wpe)\.weight", "embedding"),
    (r"lm_head\.weight", "embedding"),  # tied to wte, so named_parameters() normally yields wte only
    (r".*\.bias", "vector"),
    (r"(transformer\.h\.\d+\.ln_[12]|transformer\.ln_f)\.weight", "vector"),
)



class RoutingError(ValueError):
    pass


def role_of(name: str) -> str:
    """The role of one parameter name; raises RoutingError if zero or several rules claim it."""
    name = canonical_param_name(name)
    roles = [role for pattern, role in ROUTING_TABLE if re.fullmatch(pattern, name)]
    if len(roles) != 1:
        what = "no rule claims it" if not roles else f"several rules claim it ({roles})"
        raise RoutingError(
            f"parameter '{name}': {what}. Add exactly one rule for it to optim.routing.ROUTING_TABLE"
        )
    return roles[0]


def route_parameters(
    named_parameters: Iterable[tuple[str, nn.Parameter]] | nn.Module,
) -> dict[str, list[tuple[str, nn.Parameter]]]:
    """Split trainable parameters into {role: [(name, param), ...]}, every one claimed once."""
    if isinstance(named_parameters, nn.Module):
        named_parameters = named_parameters.named_parameters()
    routed: dict[str, list[tuple[str, nn.Parameter]]] = {role: [] for role in ROLES}
    seen: set[int] = set()
    errors: list[str] = []
    for name, param in named_parameters:
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))
        try:
            role = role_of(name)
        except RoutingError as err:
            errors.append(str(err))
            continue
        if role == "matrix" and param.ndim != 2:
            errors.append(f"parameter '{name}' is routed to 'matrix' but has shape {tuple(param.shape)}")
            continue
        routed[role].append((canonical_param_name(name), param))
    if errors:
        raise RoutingError("parameter routing failed:\n  " + "\n  ".join(errors))
    return routed
