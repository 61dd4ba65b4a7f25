"""Spectral power family: W -= lr · Ψ_p(O), Ψ_p(U Σ Vᵀ) ≈ U Σ^p Vᵀ, of momentum or of Adam's update.

Source: "Delving into Muon and Beyond" (arXiv 2602.04669); code github.com/Ocram7/BeyondMuon at
56dd187: optimizers/sgdw_ns.py (``SGDW_NS``), optimizers/adamw_ns.py (``AdamW_NS``), the transform
in optimizers/spectral_ns.py (here: optim/orthogonalize/spectral_power.py). Spec:
../shared/OPTIMIZERS_FAMILY.md §1. p = 1 is the input itself, p = 0 their Muon (15 quintic steps,
times sqrt(max(1, rows/cols))), p = 1/2 and 1/4 the coupled Newton iteration.

    spectral_msgd (momentum input, torch SGD momentum: a SUM, not an average; no dampening)
        W *= 1 - lr wd
        M = mu M + G          (M = G on the first step);  O = M  (Nesterov: O = G + mu M)
        W -= lr Ψ_p(O)
    spectral_adam (Adam input: RMS-normalized, the paper's more stable family)
        W -= lr wd W
        m = b1 m + (1-b1) G;  v = b2 v + (1-b2) G^2
        O = (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
        W -= lr Ψ_p(O)

No statistic spans rows before the transform, so the rules never call ``reduce_sum``; Ψ_p needs the
whole matrix and goes through the same owner-based exchange as Newton-Schulz. The authors'
split_qkv_updates (q, k, v blocks of c_attn transformed separately) is ``optim.orthogonalize.split:
qkv``, the default of both YAMLs. State: M
(spectral_msgd: 4 B/param in fp32) or m and v (spectral_adam: 8 B/param).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from optim.hparams import check_beta, check_int_at_least, check_nonnegative, check_positive
from optim.orthogonalize.newton_schulz import NewtonSchulz
from optim.orthogonalize.spectral_power import POWERS, SpectralPower
from optim.rules.base import MatrixContext, MatrixRule, MatrixStats, RuleHParams


@dataclass
class SpectralTransformHParams(RuleHParams):
    """The transform's keys (the iteration count is ``optim.orthogonalize.steps``, the authors'
    single ns_iters knob for the quintic and the coupled iteration alike)."""

    power: float  # p: 1, 0.5, 0.25 or 0
    ridge_eps: float  # R = B + (ridge_eps + ridge_trace tr(B)/k) I
    ridge_trace: float
    symmetrize_every: int  # symmetrize Y and Z every this many coupled iterations

    def validate(self, prefix: str = "optim.matrix") -> None:
        if float(self.power) not in POWERS:
            raise ValueError(f"{prefix}.power must be one of {list(POWERS)}, got {self.power}")
        check_nonnegative(f"{prefix}.ridge_eps", self.ridge_eps)
        check_nonnegative(f"{prefix}.ridge_trace", self.ridge_trace)
        check_int_at_least(f"{prefix}.symmetrize_every", self.symmetrize_every, 1)


@dataclass
class SpectralMomentumHParams(SpectralTransformHParams):
    momentum: float  # mu of torch SGD (sum)
    nesterov: bool

    def validate(self, prefix: str = "optim.matrix") -> None:
        super().validate(prefix)
        check_beta(f"{prefix}.momentum", self.momentum)


@dataclass
class SpectralAdamHParams(SpectralTransformHParams):
    beta1: float
    beta2: float
    eps: float

    def validate(self, prefix: str = "optim.matrix") -> None:
        super().validate(prefix)
        check_beta(f"{prefix}.beta1", self.beta1)
        check_beta(f"{prefix}.beta2", self.beta2)
        check_positive(f"{prefix}.eps", self.eps)


def sgd_momentum_(momentum: torch.Tensor, grad: torch.Tensor, mu: float, nesterov: bool) -> torch.Tensor:
    """M = mu M + G in place (torch SGD, dampening 0); returns G + mu M (Nesterov) or M."""
    momentum.mul_(mu).add_(grad)
    return grad.add(momentum, alpha=mu) if nesterov else momentum


def adam_direction_(exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor, grad: torch.Tensor, beta1: float,
                    beta2: float, eps: float, step: int) -> torch.Tensor:
    """Update Adam's moments in place; return the bias-corrected m^ / (sqrt(v^) + eps)."""
    exp_avg.lerp_(grad, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    denom = (exp_avg_sq / (1 - beta2**step)).sqrt_().add_(eps)
    return (exp_avg / (1 - beta1**step)).div_(denom)


def spectral_apply_(param: torch.Tensor, update: torch.Tensor, lr: float, weight_decay: float) -> torch.Tensor:
    """W *= 1 - lr*wd; W -= lr*Ψ. Returns the local sum of squares of the step."""
    param.mul_(1 - lr * weight_decay)
    param.add_(update, alpha=-lr)
    return update.square().sum() * lr**2


class _SpectralRule(MatrixRule):
    def transform(self, newton_schulz: NewtonSchulz) -> SpectralPower:
        """Ψ_p from this rule's keys and the configured Newton-Schulz's values: its steps (the authors'
        one ns_iters), its coefficients, normalization and dtype (p = 0), svd for the exact power."""
        return SpectralPower(
            power=float(self.hp.power), iters=newton_schulz.steps, ridge_eps=self.hp.ridge_eps,
            ridge_trace=self.hp.ridge_trace, symmetrize_every=self.hp.symmetrize_every,
            coefficients=newton_schulz.coefficients, norm_scale=newton_schulz.norm_scale,
            compute_dtype=newton_schulz.compute_dtype, method="svd" if newton_schulz.method == "svd" else "coupled_newton",
        )

    def after_orthogonalize(self, state, param, ortho, carry: None, ctx: MatrixContext) -> MatrixStats:
        return MatrixStats(update_sq=spectral_apply_(param, ortho, ctx.lr, ctx.weight_decay))


class SpectralMomentumRule(_SpectralRule, MatrixRule[SpectralMomentumHParams, None, MatrixStats]):
    name = "spectral_msgd"

    def before_orthogonalize(self, state, grad, ctx: MatrixContext) -> tuple[torch.Tensor, None]:
        return sgd_momentum_(state["momentum_buffer"], grad, self.hp.momentum, self.hp.nesterov), None


class SpectralAdamRule(_SpectralRule, MatrixRule[SpectralAdamHParams, None, MatrixStats]):
    name = "spectral_adam"

    def init_state(self, param):
        return {"exp_avg": torch.zeros_like(param, memory_format=torch.preserve_format),
                "exp_avg_sq": torch.zeros_like(param, memory_format=torch.preserve_format)}

    def before_orthogonalize(self, state, grad, ctx: MatrixContext) -> tuple[torch.Tensor, None]:
        direction = adam_direction_(state["exp_avg"], state["exp_avg_sq"], grad, self.hp.beta1, self.hp.beta2,
                                    self.hp.eps, ctx.step)
        return direction, None
