"""AuON: momentum scaled by a cosh-RMS "brake", in linear time (no Newton-Schulz in its default form).

Source: Maity, "AuON" (arXiv 2509.24320); code github.com/ryyzn9/AuON. The three published versions
disagree; each is a named ``variant`` (spec: ../shared/OPTIMIZERS_FAMILY.md §2):

    default    auon/optimizer.py ``AuON`` at bba2e82 (the current code)
                   W *= 1 - lr wd
                   M = lerp(M, G, 1-mu);  Gn = lerp(G, M, mu) (Nesterov) else M
                   n = ||Gn||_F  (nothing more if n == 0);  X = gamma Gn / (n + 1e-7)
                   r = sqrt(mean(cosh(X)^2));  W -= lr Gn / (r + 1e-8)      (raw Gn: step ∝ ||G||)
    hybrid     ``HybridAuON`` at bba2e82: Gn <- NS(Gn) first (quintic, ``optim.orthogonalize.steps``
               steps: the code's 5, the paper's 1; in the parameter dtype, no shape factor), then as default
    paper2025  the 2025 script (c87b862), as the paper prints it:
                   X = gamma Gn / (||Gn||_F + 1e-7)  (cast to optim.orthogonalize.compute_dtype first:
                   the script's bf16; gamma 1 in the script);  r as above
                   W *= 1 - lr wd;  W -= lr sqrt(max(1, rows/cols)) X / (r + 1e-8)

r - 1 <= sinh(gamma)^2 / (2N) for N entries, so the brake is ~1 at GPT-2 sizes (spec §2.4).
||Gn||_F and sum cosh(X)^2 span rows: two scalar ``reduce_sum`` calls, one after the other; no
variant but ``hybrid`` needs whole matrices, so the others never enter the exchange.
State: M (param-shaped).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from optim.hparams import check_beta, check_in, check_positive
from optim.orthogonalize.newton_schulz import NewtonSchulz
from optim.rules.base import MatrixContext, MatrixRule, MatrixStats, RuleHParams, nesterov_momentum_

VARIANTS = ("default", "hybrid", "paper2025")
NORM_EPS = 1e-7
BRAKE_EPS = 1e-8


@dataclass
class AuONHParams(RuleHParams):
    momentum: float
    nesterov: bool
    gamma: float  # scale of the normalized momentum inside cosh
    variant: str  # default | hybrid | paper2025

    def validate(self, prefix: str = "optim.matrix") -> None:
        check_beta(f"{prefix}.momentum", self.momentum)
        check_positive(f"{prefix}.gamma", self.gamma)
        check_in(f"{prefix}.variant", self.variant, VARIANTS)


def cosh_rms(x: torch.Tensor, numel: int, reduce_sum) -> torch.Tensor:
    """r = sqrt(mean over all entries of the whole matrix of cosh(x)^2)."""
    total = reduce_sum(torch.cosh(x).square().sum().to(torch.promote_types(x.dtype, torch.float32)))
    return (total / numel).sqrt()


def auon_apply_(param: torch.Tensor, update: torch.Tensor, lr: float, weight_decay: float, scale: float,
                brake: torch.Tensor) -> torch.Tensor:
    """W *= 1 - lr*wd; W -= lr*scale*update/(r + 1e-8). Returns the local step sum of squares."""
    step = (lr * scale / (brake + BRAKE_EPS)).to(param.dtype)
    if weight_decay:
        param.mul_(1 - lr * weight_decay)
    param.addcmul_(update, -step)
    return update.square().sum() * step.square()


@dataclass
class AuONStats(MatrixStats):
    brake: torch.Tensor  # r


class AuONRule(MatrixRule[AuONHParams, None, AuONStats]):
    name = "auon"

    def __init__(self, hp: AuONHParams):
        super().__init__(hp)
        self.uses_transform = hp.variant == "hybrid"
        self.cast_dtype = torch.float32

    def transform(self, newton_schulz: NewtonSchulz) -> NewtonSchulz:
        """The hybrid's Newton-Schulz; called once by the build, which also fixes the dtype that
        paper2025 casts the momentum to (the script's bf16): that Newton-Schulz's compute dtype
        (``optim.orthogonalize.compute_dtype``, resolved on the device)."""
        self.cast_dtype = newton_schulz.compute_dtype
        return newton_schulz

    def before_orthogonalize(self, state, grad, ctx: MatrixContext) -> tuple[torch.Tensor, None]:
        return nesterov_momentum_(state["momentum_buffer"], grad, self.hp.momentum, self.hp.nesterov), None

    def after_orthogonalize(self, state, param, ortho, carry: None, ctx: MatrixContext) -> AuONStats:
        """``ortho``: Gn itself (no transform), or NS(Gn) for the hybrid. A zero Gn gives a zero step
        and r = 1, which is what the code's early exit leaves too."""
        rows, cols = ctx.full_shape
        direction = ortho
        if self.hp.variant == "paper2025":
            direction = direction.to(self.cast_dtype).to(param.dtype)
        stat_dtype = torch.promote_types(direction.dtype, torch.float32)
        norm = ctx.reduce_sum(direction.square().sum().to(stat_dtype)).sqrt()
        x = direction * (self.hp.gamma / (norm + NORM_EPS)).to(direction.dtype)
        brake = cosh_rms(x, rows * cols, ctx.reduce_sum)
        if self.hp.variant == "paper2025":  # the normalized momentum, times the shape factor
            update, scale = x, math.sqrt(max(1.0, rows / cols))
        else:  # the raw (or orthogonalized) momentum
            update, scale = direction, 1.0
        return AuONStats(update_sq=auon_apply_(param, update, ctx.lr, ctx.weight_decay, scale, brake), brake=brake)

    def summarize(self, stats: list[AuONStats], reduce_max) -> dict[str, float]:
        if not stats:
            return {}
        return {"auon/brake_minus_1_max": float(torch.stack([s.brake for s in stats]).max()) - 1.0}
