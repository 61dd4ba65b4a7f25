"""The contract every Muon-family update rule follows: two phases around the orthogonalization.

    before_orthogonalize(state, grad_block, ctx)              -> (U_block, carry)
    <every matrix of the step orthogonalized at once (optim.orthogonalize)>
    after_orthogonalize(state, param_block, O_block, carry, ctx) -> stats

``carry`` is the rule's own typed value that crosses the gap (NAMO's step size, NAMO-D's column
steps; ``None`` when a rule needs nothing); ``stats`` is a ``MatrixStats`` (or a subclass with the
rule's diagnostics). A rule works on a ROW BLOCK of one matrix: the whole matrix in one process, the
local dim-0 shard under FSDP2; ``ctx.full_shape`` is the full (rows, cols). Every statistic that spans
rows (Frobenius norms, column sums) goes through ``ctx.reduce_sum``:

    reduce_sum(t: Tensor) -> Tensor
        the elementwise sum of ``t`` over all row blocks of the matrix (same shape, may work in place).
        Identity in one process; an all-reduce(SUM) over the shard group under FSDP2. Every rank
        calls it the same number of times in the same order (a collective).

Row-local statistics (NorMuon's per-row mean) need no reduction. ``state`` is a dict of local
tensors (param-shaped state is the local shard; per-column and scalar state are full, replicated
tensors). Rules hold only hyper-parameters; ``lr`` / ``weight_decay`` come from the param group, so
LR schedules apply. Functions that modify an argument in place end in ``_``; each rule's update is
one ``<rule>_apply_(param, ortho, step, weight_decay, ...)`` returning the step's sum of squares.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import torch

from optim.hparams import check_beta, check_in, check_positive
from optim.orthogonalize.from_mesh import ReduceFn, identity_reduce
from optim.orthogonalize.newton_schulz import NewtonSchulz
from optim.orthogonalize.transform import MatrixTransform

SHAPE_SCALINGS = ("original", "match_rms_adamw", "none")


def statistic_dtype(param: torch.Tensor) -> torch.dtype:
    """Scalar/column statistics in at least fp32 (bf16 params), float64 for float64 params."""
    return torch.promote_types(param.dtype, torch.float32)


def shape_scale(full_shape: tuple[int, int], mode: str, scale_coeff: float) -> float:
    """Step multiplier for a rows x cols matrix.

    original         sqrt(max(1, rows/cols))            Keller Jordan's Muon, NorMuon, torch default
    match_rms_adamw  scale_coeff * sqrt(max(rows, cols)) Moonlight; NAMO/NAMO-D code (coeff 0.2)
    none             1                                  the AdaGO paper's update
    """
    rows, cols = full_shape
    if mode == "none":
        return 1.0
    if mode == "original":
        return math.sqrt(max(1.0, rows / cols))
    if mode == "match_rms_adamw":
        return scale_coeff * math.sqrt(max(rows, cols))
    raise ValueError(f"shape_scaling must be one of {list(SHAPE_SCALINGS)}, got '{mode}'")


def nesterov_momentum_(momentum: torch.Tensor, grad: torch.Tensor, beta: float, nesterov: bool) -> torch.Tensor:
    """M = beta M + (1-beta) G (in place); returns the NS input U = lerp(G, M, beta) or M."""
    momentum.lerp_(grad, 1 - beta)
    return grad.lerp(momentum, beta) if nesterov else momentum


@dataclass(frozen=True)
class MatrixContext:
    """What a rule needs to know about one matrix besides its tensors."""

    full_shape: tuple[int, int]
    lr: float
    weight_decay: float
    step: int  # 1-based, already incremented for this step
    reduce_sum: ReduceFn = identity_reduce


@dataclass
class MatrixStats:
    """Per-matrix figures of one step. ``update_sq``: local sum of squares of the applied step
    (without weight decay), summed into ``update_rms/matrix``. Rules subclass it for their own."""

    update_sq: torch.Tensor


@dataclass
class StepSizeStats(MatrixStats):
    """Stats of rules with one adaptive step size per matrix (NAMO, AdaGO): ``alpha`` this step."""

    alpha: torch.Tensor


class RuleHParams:
    """Base of every rule's hyper-parameters: field names are the ``optim.matrix`` keys (besides lr
    and weight_decay). No defaults here: they live in configs/optim/<name>.yaml (the authors' values)."""

    def validate(self, prefix: str = "optim.matrix") -> None:
        pass


@dataclass
class MomentumHParams(RuleHParams):
    """What the Muon-family rules share: momentum, Nesterov and the shape scaling."""

    momentum: float
    nesterov: bool
    shape_scaling: str
    scale_coeff: float

    def validate(self, prefix: str = "optim.matrix") -> None:
        check_beta(f"{prefix}.momentum", self.momentum)
        check_in(f"{prefix}.shape_scaling", self.shape_scaling, SHAPE_SCALINGS)
        check_positive(f"{prefix}.scale_coeff", self.scale_coeff)


HParamsT = TypeVar("HParamsT", bound=RuleHParams)
CarryT = TypeVar("CarryT")
StatsT = TypeVar("StatsT", bound=MatrixStats)


class MatrixRule(ABC, Generic[HParamsT, CarryT, StatsT]):
    """Base of the rules: hyper-parameters, eager state, the two phases, diagnostics.

    ``uses_transform = False`` (AuON): no whole-matrix transform, so no exchange at all; the
    after-phase gets its own NS input back as ``ortho``. ``transform`` gives the rule's transform."""

    name = "matrix"
    uses_transform = True
    supports_split = True  # False: optim.orthogonalize.split is refused (its transform needs whole matrices)
    supports_ndim_routing = True  # False: optim.routing=ndim is refused (embeddings too large for its state)

    def __init__(self, hp: HParamsT):
        hp.validate()
        self.hp = hp

    def init_state(self, param: torch.Tensor) -> dict[str, torch.Tensor]:
        """Eager state for one (possibly DTensor) parameter: param-shaped tensors via zeros_like."""
        return {"momentum_buffer": torch.zeros_like(param, memory_format=torch.preserve_format)}

    @abstractmethod
    def before_orthogonalize(
        self, state: dict[str, torch.Tensor], grad: torch.Tensor, ctx: MatrixContext
    ) -> tuple[torch.Tensor, CarryT]:
        """Update momentum / second moments from the local gradient block; return (NS input, carry)."""

    @abstractmethod
    def after_orthogonalize(
        self, state: dict[str, torch.Tensor], param: torch.Tensor, ortho: torch.Tensor, carry: CarryT,
        ctx: MatrixContext,
    ) -> StatsT:
        """Apply the update in place to ``param`` (local block); return this matrix's stats."""

    def transform(self, newton_schulz: NewtonSchulz) -> MatrixTransform:
        """The whole-matrix transform, given the configured Newton-Schulz (``optim.orthogonalize``,
        resolved once by the build): that Newton-Schulz itself unless the rule has its own."""
        return newton_schulz

    def observe_model(self, model: Any, mesh: Any = None) -> None:
        """Called once by optim.build.build_optimizer with the model the optimizer steps (and its device
        mesh): a rule that reads activations registers its forward hooks here (Schatten-p). Default: none."""

    def summarize(self, stats: list[StatsT], reduce_max: ReduceFn) -> dict[str, float]:
        """Rule-specific diagnostics from the last step's per-matrix stats (default: none)."""
        return {}

    def scale(self, ctx: MatrixContext) -> float:
        return shape_scale(ctx.full_shape, self.hp.shape_scaling, self.hp.scale_coeff)


def stats_mean(stats: list[Any], field: str) -> float:
    """Mean over matrices of one 0-d stats field (a diagnostic)."""
    return float(torch.stack([getattr(s, field) for s in stats]).mean())
