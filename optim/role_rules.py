"""Role rules: the embedding group (wte, wpe, the tied head) on a rule other than AdamW, beside any
matrix optimizer.

    optim.embedding.rule      adamw (default) | rownorm (RowNormM, optim/rules/rownorm.py)
    optim.embedding.rownorm   momentum, orientation (row | col), center_head

A role rule is a ``MatrixRule`` without a whole-matrix transform (``uses_transform`` False), run by
``OrthogonalizedOptimizer`` on the group's parameters after the matrices: its two phases back to back,
with the same ``MatrixContext`` (full shape, ``reduce_sum`` over the row shards), so it is exact under
FSDP2 at any world size and its state is checkpointed like the matrices'. The output head (an untied
``lm_head``, or GPT-2's wte, which IS the head) may take another instance of the rule than the
embeddings: Lau & Su route embeddings to uncentered RowNormM and the LM head (tied weights included) to
the centered one. ``center_head`` picks between the two readings for the tied matrix; wpe and an untied
wte are embeddings, never centered. ``param_groups`` (optim/build.py) records which parameters are the
head: those also registered under a name ``lm_head.weight`` (``OUTPUT_HEAD``, the nanoGPT / HF naming).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch.nn as nn

from optim.rules.base import MatrixRule
from optim.rules.rownorm import RowNormHParams, RowNormRule, check_rownorm_keys

ROLE_RULES = ("adamw", "rownorm")
OUTPUT_HEAD = re.compile(r"(.+\.)?lm_head\.weight")


@dataclass(frozen=True)
class EmbeddingRowNorm:
    """``optim.embedding.rownorm`` (defaults: configs/optim/shared/adamw_groups.yaml)."""

    momentum: float
    orientation: str
    center_head: bool

    def __post_init__(self) -> None:
        check_rownorm_keys("optim.embedding.rownorm", self.momentum, self.orientation, self.center_head)


@dataclass(frozen=True)
class RoleRules:
    """The rule of a role's parameters, and of those among them that are an output head."""

    rule: MatrixRule
    head_rule: MatrixRule

    def of(self, name: str, head_names) -> MatrixRule:
        return self.head_rule if name in head_names else self.rule


def embedding_role_rules(rule: str, hp: EmbeddingRowNorm) -> RoleRules | None:
    """The embedding group's rules for ``optim.embedding.rule`` (None: AdamW steps the group)."""
    if rule == "adamw":
        return None
    if rule == "rownorm":
        def make(center: bool) -> RowNormRule:
            return RowNormRule(RowNormHParams(momentum=hp.momentum, orientation=hp.orientation, center=center))
        return RoleRules(rule=make(False), head_rule=make(hp.center_head))
    raise ValueError(f"optim.embedding.rule must be one of {list(ROLE_RULES)}, got '{rule}'")


def output_head_names(model: nn.Module, canonical_name) -> set[str]:
    """Canonical names (as ``route_parameters`` reports them: each parameter's first name) of the
    parameters that are also registered as an output head (tied or not)."""
    first: dict[int, str] = {}
    heads: set[str] = set()
    for name, param in model.named_parameters(remove_duplicate=False):
        first.setdefault(id(param), canonical_name(name))
        if OUTPUT_HEAD.fullmatch(canonical_name(name)):
            heads.add(first[id(param)])
    return heads
