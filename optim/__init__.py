"""Optimizers for GPT-2: the registry table, routing, the update rules and the orthogonalization.

    registry                  the table: name -> rule, hyper-parameter class
    config                    the typed ``optim`` config (optim_config validates it)
    build                     build_optimizer(model, OptimConfig, mesh)
    routing                   parameter -> matrix | embedding | vector, by the model's table
    orthogonalized_optimizer  OrthogonalizedOptimizer (every Muon-family rule)
    role_rules                the embedding group's rule when it is not AdamW (RowNormM)
    adamw                     plain AdamW
    input_grams               forward hooks summing x xᵀ of the layer inputs a rule reads (Schatten-p)
    rules/                    one file per optimizer: the math
    orthogonalize/            Newton-Schulz, the spectral powers, and their exchange under FSDP2
"""

from optim.build import build_optimizer, param_groups
from optim.config import OptimConfig, optim_config
from optim.registry import OPTIMIZERS, known_optimizers
from optim.routing import ROLES, RoutingError, RoutingTable, route_parameters

__all__ = [
    "OPTIMIZERS", "ROLES", "OptimConfig", "RoutingError", "RoutingTable", "build_optimizer", "known_optimizers", "optim_config",
    "param_groups", "route_parameters",
]
