"""NAMO: Adam-type scalar step-size adaptation of the orthogonalized momentum.

Sources: arXiv 2602.17080 (NAMO / NAMO-D); authors' code github.com/minxin-zhg/namo src/namo.py,
class ``NAMO`` (the reference vectors in tests/data/testvectors come from it).

    v = mu2 v + (1 - mu2) ||G||_F^2                       (raw gradient; mu2 0.99)
    M = mu M + (1 - mu) G;  U = lerp(G, M, mu) (Nesterov) else M;  O = NS(U)
    bc1 = 1 - mu^t,  bc2 = 1 - mu2^t
    alpha = lr * sqrt(bc2) / (bc1 + 1e-12) * ||U||_F / (sqrt(v) + eps)          (eps 1e-8)
    W *= 1 - wd * min(alpha, 1)
    W -= min(alpha * s, 1) * O          s = scale_coeff * sqrt(max(rows, cols)) ("match_rms_adamw",
                                        the code's, scale_coeff 0.2) or sqrt(max(1, rows/cols))
||G||_F^2 and ||U||_F^2 span rows: one ``reduce_sum`` of a 2-vector per matrix.
State: M (param-shaped) and the scalar v.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from optim.hparams import check_beta, check_positive
from optim.rules.base import (
    MatrixContext,
    MatrixRule,
    MomentumHParams,
    nesterov_momentum_,
    StepSizeStats,
    statistic_dtype,
    stats_mean,
)


@dataclass
class NAMOHParams(MomentumHParams):
    mu2: float  # EMA of ||G||_F^2
    eps: float  # adamnorm_eps

    def validate(self, prefix: str = "optim.matrix") -> None:
        super().validate(prefix)
        check_beta(f"{prefix}.mu2", self.mu2)
        check_positive(f"{prefix}.eps", self.eps)


def bias_corrected_lr(lr: float, momentum: float, mu2: float, step: int) -> float:
    """lr * sqrt(1 - mu2^t) / (1 - mu^t + 1e-12): the base step of NAMO and NAMO-D."""
    return lr * math.sqrt(1 - mu2**step) / (1 - momentum**step + 1e-12)


def namo_step_size_(
    second_moment: torch.Tensor, grad_sq: torch.Tensor, u_sq: torch.Tensor, base: float, mu2: float, eps: float
) -> torch.Tensor:
    """Update the scalar v in place; return alpha = base * ||U|| / (sqrt(v) + eps) (0-d tensor)."""
    second_moment.mul_(mu2).add_(grad_sq, alpha=1 - mu2)
    return base * u_sq.sqrt() / (second_moment.sqrt() + eps)


def namo_apply_(param: torch.Tensor, ortho: torch.Tensor, alpha: torch.Tensor, weight_decay: float, scale: float):
    """W *= 1 - wd*min(alpha,1); W -= min(alpha*scale,1) * O. Returns the local step sum of squares."""
    param.mul_(1 - weight_decay * alpha.clamp(max=1.0))
    step = (alpha * scale).clamp_(max=1.0)
    param.addcmul_(ortho, -step.to(param.dtype))
    return ortho.square().sum() * step.square()


class NAMORule(MatrixRule[NAMOHParams, torch.Tensor, StepSizeStats]):
    """Carry: the step size alpha (0-d tensor), computed before NS from the reduced norms."""

    name = "namo"

    def init_state(self, param):
        state = super().init_state(param)
        state["second_moment"] = torch.zeros((), dtype=statistic_dtype(param), device=param.device)  # scalar v
        return state

    def before_orthogonalize(self, state, grad, ctx: MatrixContext) -> tuple[torch.Tensor, torch.Tensor]:
        grad_sq = grad.square().sum()
        update = nesterov_momentum_(state["momentum_buffer"], grad, self.hp.momentum, self.hp.nesterov)
        sums = torch.stack([grad_sq, update.square().sum()]).to(state["second_moment"].dtype)
        grad_sq, u_sq = ctx.reduce_sum(sums).unbind()
        base = bias_corrected_lr(ctx.lr, self.hp.momentum, self.hp.mu2, ctx.step)
        alpha = namo_step_size_(state["second_moment"], grad_sq, u_sq, base, self.hp.mu2, self.hp.eps)
        return update, alpha

    def after_orthogonalize(self, state, param, ortho, alpha: torch.Tensor, ctx: MatrixContext) -> StepSizeStats:
        return StepSizeStats(update_sq=namo_apply_(param, ortho, alpha, ctx.weight_decay, self.scale(ctx)), alpha=alpha)

    def summarize(self, stats: list[StepSizeStats], reduce_max) -> dict[str, float]:
        return {"namo/alpha_mean": stats_mean(stats, "alpha")} if stats else {}
