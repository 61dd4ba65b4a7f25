"""NAMO-D: column-wise (right-diagonal) Adam-type adaptation of the orthogonalized momentum.

Sources: arXiv 2602.17080; authors' code github.com/minxin-zhg/namo src/namo.py, class ``NAMO_D``
(``col_state_clamp_c``: class default 0.75, the repo's GPT-2 small config 0.01).

    V_j = mu2 V_j + (1 - mu2) ||G[:, j]||^2                  one entry per column
    M, U as in Muon (Nesterov);  O = NS(U)
    s_j = ||U[:, j]|| / (sqrt(V_j) + eps);  s_j <- clamp(s_j, c * mean(s), mean(s) / c),  0 < c <= 1
                                                             (c = null: no clamp, the code's c outside (0, 1])
    base = lr * sqrt(1 - mu2^t) / (1 - mu^t + 1e-12)
    W[:, j] *= max(1 - wd * min(s_j base, 1), 0)
    W[:, j] -= min(s_j base s, 1) * O[:, j]      s = 0.2 sqrt(max(rows, cols)) ("match_rms_adamw")
c = 1 gives NAMO-like uniform scaling; small c gives the full diagonal adaptation.
Column sums ||G[:, j]||^2, ||U[:, j]||^2 span rows: one ``reduce_sum`` of a (2, cols) tensor.
State: M (param-shaped) and V (cols, replicated: identical on every rank after the reduction).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from optim.rules.base import MatrixContext, MatrixRule, MatrixStats, nesterov_momentum_, statistic_dtype
from optim.rules.namo import NAMOHParams, bias_corrected_lr


@dataclass
class NAMODHParams(NAMOHParams):
    """NAMO's hyper-parameters plus the column-scale clamp constant c."""

    clamp_c: float | None  # None: no clamp (the authors' code skips it for c outside (0, 1])

    def validate(self, prefix: str = "optim.matrix") -> None:
        super().validate(prefix)
        if self.clamp_c is not None and not 0.0 < float(self.clamp_c) <= 1.0:
            raise ValueError(f"{prefix}.clamp_c must be in (0, 1], or null for no clamp; got {self.clamp_c}")


def namo_d_column_scales_(
    col_moment: torch.Tensor, grad_col_sq: torch.Tensor, u_col_sq: torch.Tensor, mu2: float, eps: float,
    c: float | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Update V in place; return (clamped s, number of clamped columns); c None: no clamp."""
    col_moment.mul_(mu2).add_(grad_col_sq, alpha=1 - mu2)
    s = u_col_sq.sqrt() / (col_moment.sqrt() + eps)
    if c is None:
        return s, s.new_zeros((), dtype=torch.int64)
    mean = s.mean()
    clamped = torch.minimum(torch.maximum(s, c * mean), mean / c)
    return clamped, (clamped != s).sum()


def namo_d_apply_(param: torch.Tensor, ortho: torch.Tensor, col_step: torch.Tensor, weight_decay: float, scale: float):
    """Column-wise decay and update with col_step = s_j * base. Returns the local step sum of squares."""
    param.mul_((1 - weight_decay * col_step.clamp(max=1.0)).clamp_(min=0.0).to(param.dtype))
    step = (col_step * scale).clamp_(max=1.0)
    param.addcmul_(ortho, -step.to(param.dtype))
    return (ortho.square().sum(0) * step.square()).sum()


@dataclass(frozen=True)
class NAMODCarry:
    col_step: torch.Tensor  # s_j * base, one per column
    clamp_hits: torch.Tensor  # columns whose scale the clamp changed (diagnostic)


@dataclass
class NAMODStats(MatrixStats):
    clamp_hits: torch.Tensor
    cols: int


class NAMODRule(MatrixRule[NAMODHParams, NAMODCarry, NAMODStats]):
    name = "namo_d"

    def init_state(self, param):
        state = super().init_state(param)
        state["col_second_moment"] = torch.zeros(param.shape[1], dtype=statistic_dtype(param), device=param.device)
        return state

    def before_orthogonalize(self, state, grad, ctx: MatrixContext) -> tuple[torch.Tensor, NAMODCarry]:
        grad_col_sq = grad.square().sum(0)
        update = nesterov_momentum_(state["momentum_buffer"], grad, self.hp.momentum, self.hp.nesterov)
        sums = torch.stack([grad_col_sq, update.square().sum(0)]).to(state["col_second_moment"].dtype)
        sums = ctx.reduce_sum(sums)
        s, hits = namo_d_column_scales_(
            state["col_second_moment"], sums[0], sums[1], self.hp.mu2, self.hp.eps, self.hp.clamp_c
        )
        base = bias_corrected_lr(ctx.lr, self.hp.momentum, self.hp.mu2, ctx.step)
        return update, NAMODCarry(col_step=s * base, clamp_hits=hits)

    def after_orthogonalize(self, state, param, ortho, carry: NAMODCarry, ctx: MatrixContext) -> NAMODStats:
        update_sq = namo_d_apply_(param, ortho, carry.col_step, ctx.weight_decay, self.scale(ctx))
        return NAMODStats(update_sq=update_sq, clamp_hits=carry.clamp_hits, cols=ctx.full_shape[1])

    def summarize(self, stats: list[NAMODStats], reduce_max) -> dict[str, float]:
        if not stats:
            return {}
        hits = sum(float(s.clamp_hits) for s in stats)
        return {"namo_d/clamp_hit_fraction": hits / sum(s.cols for s in stats)}
