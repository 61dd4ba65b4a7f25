"""ROOT: Muon with the momentum clipped at its own 90th-percentile magnitude before Newton-Schulz.

Source: He, Han, Zhou, Chen, Liu, Chen, Wang, "ROOT: Robust Orthogonalized Optimizer for Neural
Network Training", arXiv 2511.20626; code github.com/huawei-noah/noah-research
ROOT/examples/example_train.py at aea3c60 (``simple_quantile``, ``root5``, class ``ROOT``).
Spec: ../shared/OPTIMIZERS_FAMILY2.md §1. The code, not the README's algorithm box, is followed:

    M = mu M + G                         torch-SGD sum momentum (mu 0.95; no (1 - mu), no dampening)
    U = G + mu M  (Nesterov, default)    else U = M
    eps = q_0.9(|U|) + 1e-9              fp32 linear-interpolation quantile over the WHOLE matrix
                                         (kthvalue twice, the fractional index an fp32 tensor: fp32
                                         even for fp64 parameters, as theirs)
    B = U - sign(U) relu(|U| - eps)      (= clamp(U, -eps, eps): the outliers' excess is dropped)
    X = NS5(B; a, b, c)                  (a, b, c) = TABLE[(min(m, n), max(m, n))] of the FULL shape,
                                         else the configured Newton-Schulz (Muon's triplet), logged
                                         once per shape; no bf16 cast (compute_dtype float32 in the YAML)
    W *= 1 - lr wd;  W -= lr 0.2 sqrt(max(m, n)) X      (Moonlight; shape_scaling match_rms_adamw)

The README's box differs (fixed threshold hyper-parameter, no Nesterov, no decay, no shape factor).
The table holds the four shapes of the authors' 2048-wide toy model; every GPT-2 shape falls back, so
for GPT-2 ROOT is "Muon with q_0.9 clipping of the (sum, Nesterov) momentum, fp32 NS, Moonlight
scaling". The authors' internal AdamW (eps on the uncorrected sqrt(v), same lr and wd 0.1 on every
other parameter) is ``optim.adamw.impl=namo_repo``, the identical formula (configs/optim/root.yaml).

Placement: the quantile is an order statistic, not a sum, so ``reduce_sum`` cannot give it; it runs
inside the whole-matrix transform (``QuantileClippedNewtonSchulz``), i.e. on the owner rank, where
the matrix is gathered for Newton-Schulz anyway (``supports_row_shards`` is False). Under
``optim.orthogonalize.split`` each block's quantile is its own (the split's reading of a matrix).
State: M (param-shaped, 4 B/param), as Muon.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from optim.hparams import check_in, check_nonnegative
from optim.orthogonalize.coefficients import Triplet
from optim.orthogonalize.newton_schulz import NewtonSchulz, orthogonalize
from optim.orthogonalize.transform import MatrixTransform
from optim.rules.base import MatrixContext, MatrixRule, MatrixStats, MomentumHParams
from optim.rules.muon import muon_apply_
from optim.rules.spectral import sgd_momentum_

log = logging.getLogger(__name__)

# root5's COEFF_MAP_CANONICAL, verbatim, keyed (min(rows, cols), max(rows, cols))
AUTHORS_TABLE: dict[tuple[int, int], Triplet] = {
    (2048, 2048): (3.4916, -4.8224, 2.1095),
    (2048, 16384): (3.1943, -3.8221, 1.5322),
    (2048, 3072): (3.4509, -4.5790, 1.9325),
    (2048, 8192): (2.9794, -3.6674, 1.6207),
}
COEFFICIENT_TABLES = {"authors": AUTHORS_TABLE, "none": {}}


@dataclass
class ROOTHParams(MomentumHParams):
    clip_quantile: float  # q of the threshold (the code's 0.9)
    clip_eps: float  # added to the quantile (the code's 1e-9)
    coefficient_table: str  # authors: root5's shape table (fallback: the configured NS) | none

    def validate(self, prefix: str = "optim.matrix") -> None:
        super().validate(prefix)
        if not 0.0 <= float(self.clip_quantile) <= 1.0:
            raise ValueError(f"{prefix}.clip_quantile must be in [0, 1], got {self.clip_quantile}")
        check_nonnegative(f"{prefix}.clip_eps", self.clip_eps)
        check_in(f"{prefix}.coefficient_table", self.coefficient_table, tuple(COEFFICIENT_TABLES))


def quantile_threshold(stack: torch.Tensor, q: float) -> torch.Tensor:
    """Per matrix of ``stack`` (batch, rows, cols): the q-quantile of |entries|, in fp32, by linear
    interpolation between the order statistics v[lower] and v[lower + 1], exactly as ``simple_quantile``
    (shape (batch,)). One selection instead of their two: v[lower + 1] is v[lower] itself when more
    than lower + 1 entries are <= v[lower] (ties), else the smallest entry above it."""
    flat = stack.abs().float().flatten(1)
    index = torch.tensor(q * (flat.shape[1] - 1), dtype=torch.float32, device=flat.device)
    lower, upper = int(torch.floor(index)), int(torch.ceil(index))
    low = flat.kthvalue(lower + 1, dim=1).values
    if lower == upper:
        return low
    at_most_low = flat <= low[:, None]
    above = flat.masked_fill(at_most_low, float("inf")).amin(dim=1)
    high = torch.where(at_most_low.sum(dim=1) > lower + 1, low, above)
    return torch.lerp(low, high, index - lower)


def quantile_clip(stack: torch.Tensor, q: float, eps: float) -> torch.Tensor:
    """B = clamp(U, -t, t), t = q-quantile(|U|) + eps per matrix (a new tensor): the authors'
    U - sign(U) relu(|U| - t) in one pass (the same up to one rounding of the clipped entries)."""
    threshold = (quantile_threshold(stack, q) + eps).to(stack.dtype).view(-1, 1, 1)
    return torch.minimum(torch.maximum(stack, -threshold), threshold)


@dataclass(frozen=True)
class QuantileClippedNewtonSchulz(MatrixTransform):
    """ROOT's whole-matrix transform: the quantile clip, then 5 quintic steps with the shape's
    coefficients from ``table`` (keyed on the full (min, max) shape the transform is given), else
    ``newton_schulz`` itself (the configured one), logged once per shape."""

    newton_schulz: NewtonSchulz
    quantile: float
    clip_eps: float
    table: Mapping[tuple[int, int], Triplet]
    warned: set = field(default_factory=set, compare=False, hash=False, repr=False)

    @property
    def steps(self) -> int:
        return self.newton_schulz.steps

    def coefficients_for(self, rows: int, cols: int) -> Triplet | None:
        """The table's triplet for a rows x cols matrix (None: the configured Newton-Schulz)."""
        key = (min(rows, cols), max(rows, cols))
        triplet = self.table.get(key)
        if triplet is None and self.table and key not in self.warned:
            self.warned.add(key)
            log.warning("ROOT: shape %s is not in the coefficient table; using the configured Newton-Schulz "
                        "(coefficients %s) for it", key, self.newton_schulz.coefficients)
        return triplet

    def __call__(self, stack: torch.Tensor) -> torch.Tensor:
        clipped = quantile_clip(stack, self.quantile, self.clip_eps)
        triplet = self.coefficients_for(*stack.shape[-2:])
        if triplet is None:
            return self.newton_schulz(clipped)
        return orthogonalize(clipped, self.newton_schulz.steps, triplet, self.newton_schulz.compute_dtype)

    def flops(self, rows: int, cols: int) -> int:
        return self.newton_schulz.flops(rows, cols)


class ROOTRule(MatrixRule[ROOTHParams, None, MatrixStats]):
    name = "root"

    def transform(self, newton_schulz: NewtonSchulz) -> QuantileClippedNewtonSchulz:
        return QuantileClippedNewtonSchulz(newton_schulz, float(self.hp.clip_quantile), float(self.hp.clip_eps),
                                           COEFFICIENT_TABLES[self.hp.coefficient_table])

    def before_orthogonalize(self, state, grad, ctx: MatrixContext) -> tuple[torch.Tensor, None]:
        return sgd_momentum_(state["momentum_buffer"], grad, self.hp.momentum, self.hp.nesterov), None

    def after_orthogonalize(self, state, param, ortho, carry: None, ctx: MatrixContext) -> MatrixStats:
        return MatrixStats(update_sq=muon_apply_(param, ortho, ctx.lr, ctx.weight_decay, self.scale(ctx)))
