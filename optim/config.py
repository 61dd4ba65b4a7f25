"""The ``optim`` node of the config as typed, validated values: what ``build_optimizer`` takes.

    optim.name             a name of the registry (optim.registry.OPTIMIZERS)
    optim.matrix           lr, weight_decay + the rule's hyper-parameters (its HParams class)
    optim.embedding        lr, weight_decay, rule (adamw | rownorm: optim/role_rules.py) and the
                           rule's keys (wte, wpe, the tied head)
    optim.vector           lr, weight_decay (AdamW: biases, LayerNorm)
    optim.adamw            betas, eps (AdamW, for every group it steps)
    optim.orthogonalize    method, steps, schedule, coefficients, split, compute_dtype, distributed,
                           comm_dtype, bucket_elements, overlap (orthogonalized optimizers only)
    optim.routing          roles (embeddings take AdamW) | ndim (every 2-D parameter takes the rule)

Each piece's class lives next to the code that uses it (AdamWHParams: optim/adamw.py;
OrthogonalizeConfig: optim/orthogonalize/config.py; a rule's HParams: optim/rules/<name>.py); this file
assembles them. Every default lives in configs/optim/*.yaml; these classes have none. ``optim_config``
checks every key and range, so a bad value fails before any process group, data or model work.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optim.adamw import AdamWHParams
from optim.hparams import check_in, check_nonnegative, check_positive, from_mapping
from optim.orthogonalize.config import OrthogonalizeConfig
from optim.registry import registry_entry
from optim.role_rules import ROLE_RULES, EmbeddingRowNorm
from optim.rules.base import RuleHParams

CONFIGS_DIR = Path(__file__).resolve().parents[1] / "configs"
ROUTINGS = ("roles", "ndim")
GROUP_KEYS = ("lr", "weight_decay")  # of optim.matrix: the param group's, not the rule's
MOVED_KEYS = {"split_qkv": "optim.orthogonalize.split=qkv"}  # retired optim.matrix keys -> what says it now


@dataclass(frozen=True)
class GroupHParams:
    """lr and decoupled weight decay of one routed parameter group (the schedule scales lr)."""

    lr: float
    weight_decay: float


@dataclass(frozen=True)
class EmbeddingGroupHParams(GroupHParams):
    """The embedding group's lr and decay, and the rule that steps it (optim/role_rules.py)."""

    rule: str  # adamw | rownorm
    rownorm: EmbeddingRowNorm


@dataclass(frozen=True)
class OptimConfig:
    name: str
    groups: dict[str, GroupHParams]  # role (matrix, embedding, vector) -> lr, weight decay
    adamw: AdamWHParams
    rule: RuleHParams | None  # the rule's hyper-parameters; None for plain AdamW
    orthogonalize: OrthogonalizeConfig | None  # None for plain AdamW
    routing: str  # roles | ndim


def optim_config(node: Mapping[str, Any]) -> OptimConfig:
    """Typed ``OptimConfig`` from the composed ``optim`` node (a DictConfig or a plain mapping)."""
    node = _plain(node)
    name = node.get("name")
    entry = registry_entry(name)  # unknown name: lists the known ones
    expected = {"name", "routing", "matrix", "embedding", "vector", "adamw"} | ({"orthogonalize"} if entry.rule else set())
    unknown = sorted(set(node) - expected)
    if unknown:
        raise ValueError(f"optim.{unknown[0]} is not a key of optimizer '{name}' (known: {', '.join(sorted(expected))})")
    missing = sorted(expected - set(node))
    if missing:
        raise ValueError(f"optim.{missing[0]} is missing for optimizer '{name}'")
    matrix = dict(node["matrix"])
    groups = {
        "matrix": from_mapping(GroupHParams, {k: matrix.pop(k) for k in GROUP_KEYS if k in matrix}, "optim.matrix"),
        "embedding": from_mapping(EmbeddingGroupHParams, node["embedding"], "optim.embedding"),
        "vector": from_mapping(GroupHParams, node["vector"], "optim.vector"),
    }
    for role, group in groups.items():
        check_positive(f"optim.{role}.lr", group.lr)
        check_nonnegative(f"optim.{role}.weight_decay", group.weight_decay)
    adamw = from_mapping(AdamWHParams, node["adamw"], "optim.adamw")
    routing = check_in("optim.routing", node["routing"], ROUTINGS)
    _check_embedding_rule(groups["embedding"].rule, name, entry.rule is not None, routing)
    # a recipe spanning optimizers sets a rule key to null where that rule has no such key
    rule_keys = {f.name for f in dataclasses.fields(entry.hparams)} if entry.hparams else set()
    matrix = {k: v for k, v in matrix.items() if v is not None or k in rule_keys}
    moved = sorted(set(matrix) & set(MOVED_KEYS))
    if moved:
        raise ValueError(f"optim.matrix.{moved[0]} is not a known key; use {MOVED_KEYS[moved[0]]}")
    if entry.rule is None:
        if matrix:
            raise ValueError(f"optim.matrix.{sorted(matrix)[0]} is not a key of '{name}' (it takes lr, weight_decay)")
        return OptimConfig(name=name, groups=groups, adamw=adamw, rule=None, orthogonalize=None, routing=routing)
    rule_hparams = from_mapping(entry.hparams, matrix, "optim.matrix")
    rule_hparams.validate()
    orthogonalize = from_mapping(OrthogonalizeConfig, node["orthogonalize"], "optim.orthogonalize")
    if orthogonalize.split != "none" and not entry.rule.supports_split:
        raise ValueError(f"optim.orthogonalize.split={orthogonalize.split} does not apply to '{name}' (its transform "
                         f"needs whole matrices); set optim.orthogonalize.split=none")
    if routing == "ndim" and not entry.rule.supports_ndim_routing:
        raise ValueError(f"optim.routing=ndim puts the embeddings on '{name}', whose whole-matrix state grows with "
                         f"the square of a matrix's sides (a 50304-row vocabulary: 10 GB); use optim.routing=roles")
    return OptimConfig(name=name, groups=groups, adamw=adamw, rule=rule_hparams, orthogonalize=orthogonalize,
                       routing=routing)


def _check_embedding_rule(rule: str, name: str, has_matrix_rule: bool, routing: str) -> None:
    check_in("optim.embedding.rule", rule, ROLE_RULES)
    if rule == "adamw":
        return
    if not has_matrix_rule:
        raise ValueError(f"optim.embedding.rule={rule} needs a matrix optimizer (e.g. optim=muon); "
                         f"optim={name} steps every group with AdamW")
    if routing == "ndim":
        raise ValueError(f"optim.embedding.rule={rule} has no embeddings to step under optim.routing=ndim "
                         f"(they join the matrix group); use optim.routing=roles")


def compose_optim_node(name: str, overrides: Sequence[str] = ()):
    """``configs/optim/<name>.yaml`` composed with Hydra (its shared defaults included) plus
    ``optim.*`` overrides, as the ``optim`` DictConfig (outside a running Hydra app). Each distinct
    composition runs once per process (~50 ms each); callers get their own copy to change."""
    return copy.deepcopy(_composed_optim_node(name, tuple(overrides)))


@functools.lru_cache(maxsize=256)
def _composed_optim_node(name: str, overrides: tuple[str, ...]):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIGS_DIR), version_base=None):
        return compose(overrides=[f"+optim={name}", *overrides]).optim


def load_optim_config(name: str, overrides: Sequence[str] = ()) -> OptimConfig:
    """The typed config of ``optim=<name>`` with its YAML defaults (benchmarks, tests, notebooks)."""
    return optim_config(compose_optim_node(name, overrides))


def _plain(node: Mapping[str, Any]) -> dict[str, Any]:
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(node, DictConfig):
            return OmegaConf.to_container(node, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    return dict(node)
