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


def row_scales(x: torch.Tensor) -> torch.Tensor:
    """1 / (||X_i|| + 1e-8) for every row of a (local) row block, as a column."""
    return 1.0 / (x.norm(dim=1, keepdim=True) + ROW_EPS)


def live_mean(x: torch.Tensor, dead: torch.Tensor, reduce_sum) -> torch.Tensor:
    """The mean over the whole matrix of the rows of x that are not ``dead`` (local row indices of
    rows that are 0); column sums as a GEMV, counts and sums in one reduction."""
    live_count = torch.tensor([x.shape[0] - dead.numel()], dtype=x.dtype, device=x.device)
    sums = reduce_sum(torch.cat([x.new_ones(x.shape[0]) @ x, live_count]))
    return sums[:-1] / sums[-1].clamp_min(1)


def rownorm_direction(m: torch.Tensor, orientation: str, center: bool, reduce_sum) -> torch.Tensor:
    """U of the module docstring for a local row block ``m`` of the momentum (``reduce_sum``: the
    sum over the row blocks of the matrix; identity for a whole one). A new tensor."""
    if orientation == "row" and not center:
        return row_scales(m) * m
    if orientation == "row":
        dead = (torch.linalg.vector_norm(m, dim=1) == 0).nonzero().squeeze(1)
        x = (m - live_mean(m, dead, reduce_sum)).index_fill_(0, dead, 0)
        x.mul_(row_scales(x))
        return x.sub_(live_mean(x, dead, reduce_sum)).index_fill_(0, dead, 0)
    x = m - m.mean(dim=1, keepdim=True) if center else m  # the columns' mean, along each row
    x = (1.0 / (reduce_sum(x.new_ones(x.shape[0]) @ x.square()).sqrt() + ROW_EPS)) * x  # unit columns
    return x.sub_(x.mean(dim=1, keepdim=True)) if center else x


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
