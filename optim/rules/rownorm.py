"""RowNormM: row-normalized momentum, the symmetry-compatible rule for embeddings and LM heads.

Source: Lau & Su, symmetry-compatible updates, arXiv 2605.18106 (an update should be equivariant
under its weight block's symmetry group: permutations of tokens / neurons, and for a softmax head the
shared logit shift); code github.com/timlautk/equivariant_optimizers at a773b3f, optim/rownorm.py
(``RowNormM``) and optim/row_ops.py (``apply_row_scaling``, mode inverse_eps). Spec:
../shared/OPTIMIZERS_FAMILY2.md §2.1.

    M = beta M + (1 - beta) G            (beta 0.95; EMA, no Nesterov, no bias correction)
    W *= 1 - lr wd                       (skipped when wd = 0)
    X = M (orientation row) or M^T (col: the authors' rule for down projections)
    X = X - 1 mean_rows(X)               if center (LM heads, routers: the softmax shift symmetry)
    U_i = X_i / (||X_i|| + 1e-8)         every row of unit norm; no sqrt(n) factor (entry RMS 1/sqrt(n))
    U = U - 1 mean_rows(U)               if center, again
    W -= lr U  (un-oriented)

Placement under FSDP2 (dim-0 row shards): ``row`` without centering is row-local, no communication.
The centered mean spans rows: one ``reduce_sum`` of an (n + 1)-vector before and one after the
normalization. ``col`` normalizes columns: one ``reduce_sum`` of the n squared column norms; its
centering runs along each row (local). Every variant is exact at any world size.

Rows of M that are exactly zero are rows that never had a gradient: the padded vocabulary rows of
GPT-2's wte/head (no token). The centered mean leaves them out and they stay zero; with no zero row
(any real head) this is the authors' mean over all rows. State: M (param-shaped, 4 B/param).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from optim.hparams import check_beta, check_in
from optim.rules.base import MatrixContext, MatrixRule, MatrixStats, RuleHParams

ORIENTATIONS = ("row", "col")
ROW_EPS = 1e-8  # row_ops.row_scale, mode inverse_eps


def check_rownorm_keys(prefix: str, momentum: float, orientation: str, center: bool) -> None:
    check_beta(f"{prefix}.momentum", momentum)
    check_in(f"{prefix}.orientation", orientation, ORIENTATIONS)
    if not isinstance(center, bool):
        raise ValueError(f"{prefix}.center must be true or false, got {center!r}")


@dataclass
class RowNormHParams(RuleHParams):
    momentum: float  # beta of the EMA
    orientation: str  # row | col
    center: bool  # center the (oriented) rows: the LM-head / router rule

    def validate(self, prefix: str = "optim.matrix") -> None:
        check_rownorm_keys(prefix, self.momentum, self.orientation, self.center)


def ema_momentum_(momentum: torch.Tensor, grad: torch.Tensor, beta: float) -> torch.Tensor:
    """M = beta M + (1 - beta) G in place (the authors' mul_/add_ order); returns M."""
    return momentum.mul_(beta).add_(grad, alpha=1.0 - beta)


def unit_rows(x: torch.Tensor) -> torch.Tensor:
    """X_i / (||X_i|| + 1e-8) for every row of a (local) row block."""
    return (1.0 / (x.norm(dim=1, keepdim=True) + ROW_EPS)) * x


def center_live_rows(x: torch.Tensor, live: torch.Tensor, reduce_sum) -> torch.Tensor:
    """x minus the mean of the live rows over the whole matrix, on the live rows (others stay 0)."""
    sums = reduce_sum(torch.cat([x.sum(dim=0), live.sum().to(x.dtype).reshape(1)]))
    return (x - sums[:-1] / sums[-1].clamp_min(1)) * live


def rownorm_direction(m: torch.Tensor, orientation: str, center: bool, reduce_sum) -> torch.Tensor:
    """U of the module docstring for a local row block ``m`` of the momentum (``reduce_sum``: the
    sum over the row blocks of the matrix; identity for a whole one)."""
    if orientation == "row":
        if not center:
            return unit_rows(m)
        live = (m != 0).any(dim=1, keepdim=True)
        return center_live_rows(unit_rows(center_live_rows(m, live, reduce_sum)), live, reduce_sum)
    x = m - m.mean(dim=1, keepdim=True) if center else m  # the columns' mean, along each row
    column_norms = reduce_sum(x.square().sum(dim=0)).sqrt()
    u = (1.0 / (column_norms + ROW_EPS)) * x
    return u - u.mean(dim=1, keepdim=True) if center else u


def rownorm_apply_(param: torch.Tensor, direction: torch.Tensor, lr: float, weight_decay: float) -> torch.Tensor:
    """W *= 1 - lr*wd (when wd != 0); W -= lr*U. Returns the local sum of squares of the step."""
    if weight_decay:
        param.mul_(1 - lr * weight_decay)
    param.add_(direction, alpha=-lr)
    return direction.square().sum() * lr**2


class RowNormRule(MatrixRule[RowNormHParams, None, MatrixStats]):
    """RowNormM on a matrix group (``optim=rownorm``) or as the embedding group's rule
    (``optim.embedding.rule=rownorm``, optim/role_rules.py). No whole-matrix transform."""

    name = "rownorm"
    uses_transform = False

    def before_orthogonalize(self, state, grad, ctx: MatrixContext) -> tuple[torch.Tensor, None]:
        return ema_momentum_(state["momentum_buffer"], grad, self.hp.momentum), None

    def after_orthogonalize(self, state, param, ortho, carry: None, ctx: MatrixContext) -> MatrixStats:
        """``ortho``: M itself (no transform)."""
        direction = rownorm_direction(ortho, self.hp.orientation, self.hp.center, ctx.reduce_sum)
        return MatrixStats(update_sq=rownorm_apply_(param, direction, ctx.lr, ctx.weight_decay))
