"""Muon: momentum orthogonalized by Newton-Schulz (Keller Jordan, 2024).

Sources: kellerjordan.github.io/posts/muon; code github.com/KellerJordan/Muon muon.py
(``muon_update``, ``SingleDeviceMuon``); torch.optim.Muon (same math, bf16-only NS).

    M = beta M + (1 - beta) G                        (beta = momentum, 0.95)
    U = lerp(G, M, beta) with Nesterov, else M
    O = NS(U)
    W *= 1 - lr * wd                                 (decoupled; lr unscaled, as in both codes)
    W -= lr * s * O                                  s = sqrt(max(1, rows/cols))  ("original")
                                                     or scale_coeff*sqrt(max(rows, cols))
State: M (param-shaped). No statistic spans rows, so ``reduce_sum`` is never called.
"""

from __future__ import annotations

import torch

from optim.rules.base import MatrixContext, MatrixRule, MatrixStats, MomentumHParams, nesterov_momentum_


def muon_apply_(param: torch.Tensor, ortho: torch.Tensor, lr: float, weight_decay: float, scale: float) -> torch.Tensor:
    """W *= 1 - lr*wd; W -= lr*scale*O. Returns the local sum of squares of the step."""
    param.mul_(1 - lr * weight_decay)
    param.add_(ortho, alpha=-lr * scale)
    return ortho.square().sum() * (lr * scale) ** 2


class MuonRule(MatrixRule[MomentumHParams, None, MatrixStats]):
    name = "muon"

    def before_orthogonalize(self, state, grad, ctx: MatrixContext) -> tuple[torch.Tensor, None]:
        return nesterov_momentum_(state["momentum_buffer"], grad, self.hp.momentum, self.hp.nesterov), None

    def after_orthogonalize(self, state, param, ortho, carry: None, ctx: MatrixContext) -> MatrixStats:
        return MatrixStats(update_sq=muon_apply_(param, ortho, ctx.lr, ctx.weight_decay, self.scale(ctx)))
