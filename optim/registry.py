"""The optimizer registry: one line per optimizer, the whole table in view.

``optim=<name>`` in Hydra picks a row. A row names the matrix rule (``optim/rules/<name>.py``: the
math, with the paper's equations) and its hyper-parameter class (the ``optim.matrix`` keys besides
lr and weight_decay). ``rule=None`` is plain AdamW on every group. Every orthogonalized optimizer is
one ``OrthogonalizedOptimizer`` (optim/orthogonalized_optimizer.py) around its rule, distributed by
optim/orthogonalize/. Adding an optimizer: one rule file, one YAML in configs/optim/, one row here.
"""

from __future__ import annotations

from dataclasses import dataclass

from optim.rules.adago import AdaGOHParams, AdaGORule
from optim.rules.aro import AROHParams, ARORule
from optim.rules.auon import AuONHParams, AuONRule
from optim.rules.base import MatrixRule, MomentumHParams, RuleHParams
from optim.rules.fismo import FISMOHParams, FISMORule
from optim.rules.muon import MuonRule
from optim.rules.namo import NAMOHParams, NAMORule
from optim.rules.namo_d import NAMODHParams, NAMODRule
from optim.rules.normuon import NorMuonHParams, NorMuonRule
from optim.rules.root import ROOTHParams, ROOTRule
from optim.rules.rownorm import RowNormHParams, RowNormRule
from optim.rules.schatten import SchattenHParams, SchattenRule
from optim.rules.spectral import SpectralAdamHParams, SpectralAdamRule, SpectralMomentumHParams, SpectralMomentumRule


@dataclass(frozen=True)
class RegistryEntry:
    rule: type[MatrixRule] | None  # None: torch.optim.AdamW for every parameter
    hparams: type[RuleHParams] | None


OPTIMIZERS: dict[str, RegistryEntry] = {
    "adamw":   RegistryEntry(rule=None,        hparams=None),            # Loshchilov & Hutter 2017
    "muon":    RegistryEntry(rule=MuonRule,    hparams=MomentumHParams), # Keller Jordan 2024
    "namo":    RegistryEntry(rule=NAMORule,    hparams=NAMOHParams),     # arXiv 2602.17080
    "namo_d":  RegistryEntry(rule=NAMODRule,   hparams=NAMODHParams),    # arXiv 2602.17080
    "adago":   RegistryEntry(rule=AdaGORule,   hparams=AdaGOHParams),    # arXiv 2509.02981
    "normuon": RegistryEntry(rule=NorMuonRule, hparams=NorMuonHParams),  # arXiv 2510.05491
    "spectral_msgd": RegistryEntry(rule=SpectralMomentumRule, hparams=SpectralMomentumHParams),  # arXiv 2602.04669
    "spectral_adam": RegistryEntry(rule=SpectralAdamRule, hparams=SpectralAdamHParams),  # arXiv 2602.04669
    "auon":    RegistryEntry(rule=AuONRule,    hparams=AuONHParams),     # arXiv 2509.24320
    "root":    RegistryEntry(rule=ROOTRule,    hparams=ROOTHParams),     # arXiv 2511.20626
    "rownorm": RegistryEntry(rule=RowNormRule, hparams=RowNormHParams),  # arXiv 2605.18106
    "schatten": RegistryEntry(rule=SchattenRule, hparams=SchattenHParams),  # arXiv 2605.19781 (reading; no authors' code)
    "aro":     RegistryEntry(rule=ARORule,     hparams=AROHParams),      # arXiv 2602.09006 (reading; no authors' code)
    "fismo":   RegistryEntry(rule=FISMORule,   hparams=FISMOHParams),    # arXiv 2601.21750 (reading; no authors' code)
}


def known_optimizers() -> list[str]:
    return sorted(OPTIMIZERS)


def registry_entry(name: str) -> RegistryEntry:
    if name not in OPTIMIZERS:
        raise ValueError(
            f"unknown optimizer '{name}'; known optimizers: {', '.join(known_optimizers())} "
            f"(choose one with optim=<name>)"
        )
    return OPTIMIZERS[name]
