"""NorMuon: Muon with neuron-wise (row-wise) normalization of the orthogonalized update.

Sources: Li et al., "NorMuon: Making Muon more efficient and scalable", arXiv 2510.05491;
code github.com/zichongli5/NorMuon normuon.py (``normuon_update``, ``SingleDeviceNorMuon``).

    M = beta M + (1 - beta) G;  U = lerp(G, M, beta) (Nesterov) else M;  O = NS(U)
    v_i = mean_j O_ij^2                        per row (neuron), shape rows x 1
    V = beta2 V + (1 - beta2) v                (beta2 0.95)
    r_i = 1 / (sqrt(V_i) + 1e-10)              row scale
    O' = r * O;  O' *= ||O||_F / (||O'||_F + 1e-10)      (keep the Frobenius norm of O)
    W *= 1 - lr * wd;  W -= lr * s * O'        s = sqrt(max(1, rows/cols)) ("original", the code's)

``rescale: paper`` takes the paper's rule instead of the code's norm-preserving one: with
O^ = r * O, the step is eta^ O^ with eta^ = scale_coeff * lr * sqrt(rows * cols) / ||O^||_F
(scale_coeff 0.2: the update's RMS is 0.2 lr, AdamW-like), and no shape factor.

Row statistics are local to a row block; the two Frobenius norms span rows and go through
``reduce_sum`` (one 2-vector), so a row-sharded run is exact, not a per-shard approximation.
||O||^2 = cols * sum_i v_i and ||O'||^2 = cols * sum_i r_i^2 v_i need no extra pass over O.
State: M (param-shaped) and V (rows x 1, sharded like the rows).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from optim.dtensor import rows_like
from optim.hparams import check_beta, check_in
from optim.rules.base import MatrixContext, MatrixRule, MatrixStats, MomentumHParams, nesterov_momentum_

NORMUON_EPS = 1e-10
NORMUON_RESCALES = ("code", "paper")


@dataclass
class NorMuonHParams(MomentumHParams):
    beta2: float  # EMA of the per-row mean square
    rescale: str  # code: keep ||O||_F (normuon.py); paper: eta^ = scale_coeff lr sqrt(mn) / ||O^||_F

    def validate(self, prefix: str = "optim.matrix") -> None:
        super().validate(prefix)
        check_beta(f"{prefix}.beta2", self.beta2)
        check_in(f"{prefix}.rescale", self.rescale, NORMUON_RESCALES)


def normuon_row_factors_(
    ortho: torch.Tensor, second_moment: torch.Tensor, beta2: float, full_shape: tuple[int, int], reduce_sum,
    paper_coeff: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Update V in place; return (row factor f with O' = f * O, row scale r, row mean-square v).
    f = r ||O||_F / ||r O||_F (the code's), or with ``paper_coeff`` f = r paper_coeff sqrt(mn) / ||r O||_F."""
    rows, cols = full_shape
    row_ms = ortho.square().mean(dim=1, keepdim=True)
    second_moment.lerp_(row_ms.to(second_moment.dtype), 1 - beta2)
    row_scale = 1.0 / (second_moment.sqrt() + NORMUON_EPS)
    sums = torch.stack([row_ms.sum(), (row_ms * row_scale.square()).sum()]) * cols
    norm_o, norm_scaled = reduce_sum(sums).sqrt().unbind()
    target = norm_o if paper_coeff is None else paper_coeff * (rows * cols) ** 0.5
    return row_scale * (target / (norm_scaled + NORMUON_EPS)), row_scale, row_ms


def normuon_apply_(
    param: torch.Tensor, ortho: torch.Tensor, lr: float, weight_decay: float, scale: float,
    row_factor: torch.Tensor, row_ms: torch.Tensor,
) -> torch.Tensor:
    """W *= 1 - lr*wd; W -= lr*scale * f * O (f per row). Returns the local step sum of squares,
    from the row mean squares (no second pass over O)."""
    step = row_factor.mul(-lr * scale).to(param.dtype)
    param.mul_(1 - lr * weight_decay)
    param.addcmul_(ortho, step)
    return (step.square() * row_ms).sum() * ortho.shape[1]


@dataclass
class NorMuonStats(MatrixStats):
    row_scale_max: torch.Tensor  # -inf on a rank that holds no row
    row_scale_neg_min: torch.Tensor


class NorMuonRule(MatrixRule[NorMuonHParams, None, NorMuonStats]):
    name = "normuon"

    def init_state(self, param):
        state = super().init_state(param)
        state["second_moment"] = rows_like(param)  # (rows, 1), sharded like the rows
        return state

    def before_orthogonalize(self, state, grad, ctx: MatrixContext) -> tuple[torch.Tensor, None]:
        return nesterov_momentum_(state["momentum_buffer"], grad, self.hp.momentum, self.hp.nesterov), None

    def after_orthogonalize(self, state, param, ortho, carry: None, ctx: MatrixContext) -> NorMuonStats:
        paper = self.hp.rescale == "paper"
        factor, row_scale, row_ms = normuon_row_factors_(
            ortho, state["second_moment"], self.hp.beta2, ctx.full_shape, ctx.reduce_sum,
            self.hp.scale_coeff if paper else None,
        )
        scale = 1.0 if paper else self.scale(ctx)
        update_sq = normuon_apply_(param, ortho, ctx.lr, ctx.weight_decay, scale, factor, row_ms)
        empty = row_scale.numel() == 0
        none = row_scale.new_tensor(float("-inf"))
        return NorMuonStats(
            update_sq=update_sq,
            row_scale_max=none if empty else row_scale.max(),
            row_scale_neg_min=none if empty else -row_scale.min(),
        )

    def summarize(self, stats: list[NorMuonStats], reduce_max) -> dict[str, float]:
        if not stats:
            return {}
        maxes = reduce_max(torch.stack([s.row_scale_max for s in stats]))
        neg_mins = reduce_max(torch.stack([s.row_scale_neg_min for s in stats]))
        return {"normuon/row_scale_spread": float((maxes / -neg_mins).max())}
