"""Optimizers: registry, parameter routing and the registered optimizers.

Importing the package registers every optimizer module listed here.
"""

from optim import adamw  # noqa: F401  (registers "adamw")
from optim import orthogonalized  # noqa: F401  (registers muon, namo, namo_d, adago, normuon)
from optim.registry import build_optimizer, known_optimizers, param_groups, register
from optim.routing import ROLES, RoutingError, route_parameters

__all__ = ["ROLES", "RoutingError", "build_optimizer", "known_optimizers", "param_groups", "register", "route_parameters"]
