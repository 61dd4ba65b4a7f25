"""AdaGO: AdaGrad-norm step size on the orthogonalized momentum direction.

Source: Zhang, Liu, Schaeffer, "AdaGrad Meets Muon: Adaptive Stepsizes for Orthogonal Updates",
arXiv 2509.02981. No official code is public. Verified (search tool, public pages quoting the
paper's algorithm, e.g. junaidaliop.github.io/zij/math/adago and the arXiv abstract):

    m_t = mu m_{t-1} + (1 - mu) g_t
    v_t^2 = v_{t-1}^2 + min(||g_t||_F^2, gamma^2)         (one extra scalar per matrix)
    o_t = Orth(m_t)                                         (NS approximates U V^T)
    alpha_t = max(eps, eta * min(||g_t||_F, gamma) / v_t)   (v_t = sqrt(v_t^2), NOT v_t^2)
    theta_t = theta_{t-1} - alpha_t o_t

Not verifiable from public text: the paper's default gamma, eps, v_0 (re-implementations disagree,
see configs/optim/adago.yaml for the values chosen and why). Project conventions on top of the
paper, both switchable: Nesterov (``nesterov: true``, the shared default of this suite; ``false``
gives the paper's plain momentum), decoupled weight decay W *= 1 - wd * alpha_t (alpha_t is the
effective learning rate; default wd 0 as in the paper) and shape scaling (``original``:
W -= alpha_t sqrt(max(1, rows/cols)) o_t; the paper has none, which equals ``original`` for wide
and square matrices).

eta is the scheduled group lr: the LR schedule multiplies the adaptive step, whose own 1/sqrt(t)
decay comes from the accumulator. ||g_t||_F spans rows: one ``reduce_sum`` of a scalar.
State: M (param-shaped) and the scalar accumulator v^2 (starts at v_0^2 > 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from optim.hparams import check_positive
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
class AdaGOHParams(MomentumHParams):
    gamma: float  # gradient-norm clip
    eps: float  # floor on the step size alpha
    v0: float  # accumulator starts at v0^2

    def validate(self, prefix: str = "optim.matrix") -> None:
        super().validate(prefix)
        check_positive(f"{prefix}.gamma", self.gamma)
        check_positive(f"{prefix}.eps", self.eps)
        check_positive(f"{prefix}.v0", self.v0)


def adago_step_size_(accumulator: torch.Tensor, grad_sq: torch.Tensor, lr: float, gamma: float, eps: float):
    """v^2 += min(||g||, gamma)^2 in place; return alpha = max(eps, lr * min(||g||, gamma) / v)."""
    clipped = grad_sq.sqrt().clamp(max=gamma)
    accumulator.add_(clipped.square())
    return (lr * clipped / accumulator.sqrt()).clamp(min=eps)


def adago_apply_(param: torch.Tensor, ortho: torch.Tensor, alpha: torch.Tensor, weight_decay: float, scale: float):
    """W *= 1 - wd*alpha; W -= alpha*scale*O. Returns the local step sum of squares."""
    if weight_decay:
        param.mul_(1 - weight_decay * alpha.to(param.dtype))
    step = alpha * scale
    param.addcmul_(ortho, -step.to(param.dtype))
    return ortho.square().sum() * step.square()


class AdaGORule(MatrixRule[AdaGOHParams, torch.Tensor, StepSizeStats]):
    """Carry: the step size alpha (0-d tensor), from the gradient norm before NS."""

    name = "adago"

    def init_state(self, param):
        state = super().init_state(param)
        state["accumulator"] = torch.full((), self.hp.v0**2, dtype=statistic_dtype(param), device=param.device)
        return state

    def before_orthogonalize(self, state, grad, ctx: MatrixContext) -> tuple[torch.Tensor, torch.Tensor]:
        grad_sq = ctx.reduce_sum(grad.square().sum().to(state["accumulator"].dtype))
        alpha = adago_step_size_(state["accumulator"], grad_sq, ctx.lr, self.hp.gamma, self.hp.eps)
        return nesterov_momentum_(state["momentum_buffer"], grad, self.hp.momentum, self.hp.nesterov), alpha

    def after_orthogonalize(self, state, param, ortho, alpha: torch.Tensor, ctx: MatrixContext) -> StepSizeStats:
        return StepSizeStats(update_sq=adago_apply_(param, ortho, alpha, ctx.weight_decay, self.scale(ctx)), alpha=alpha)

    def summarize(self, stats: list[StepSizeStats], reduce_max) -> dict[str, float]:
        return {"adago/alpha_mean": stats_mean(stats, "alpha")} if stats else {}
