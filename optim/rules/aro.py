"""ARO-Sinkhorn: Adaptively Rotated Optimization, a reading of arXiv 2602.09006 (no authors' code).

Gong, Zazo, Luo, Wang, Hensman, Ma, "ARO: A New Lens On Matrix Optimization For Large Models",
arXiv 2602.09006. Spec: ../shared/OPTIMIZERS_FAMILY2.md §3. For each hidden matrix W (G its gradient):

    M_t = beta M_{t-1} + (1 - beta) G_t                   EMA momentum, one buffer ("momentum-first")
    R_t = QR(M_t f(R_{t-1}^T M_t)^T)                      the rotation (k x k, fp32, on the owner rank)
    O_t = R_t f(R_t^T M_t)                                f = SR-Sinkhorn, L = 5 (rows, then columns)
    W  <- W (1 - lr wd) - lr 0.2 O_t / RMS(O_t)           the paper's RMS matching (step RMS = 0.2 lr)

The rotation and direction run in the owner's whole-matrix transform (optim/orthogonalize/rotated.py,
the equations and their citations), R as owner-resident state (optim/orthogonalize/owner_state.py):
no communication of R per step; under FSDP2 the momentum travels to the owner like Muon's.

Every choice the paper's readable text leaves open (OPTIMIZERS_FAMILY2.md §3.5) is a key of
configs/optim/aro.yaml, with its default and reason there:
    scaling         rms (paper: 0.2 O / RMS(O)) | match_rms_adamw (dion: lr 0.2 sqrt(max(m, n)) O) | none
    qr              householder (orthogonal to rounding) | shifted_cholesky (the paper's fast path)
    rotated_side    residual (Design 3) | rows (dion)
    sinkhorn_eps    where the norms are clamped (dion's 1e-8) ; sinkhorn_iters L (5)
    null_tol        null directions of M left at zero (pre-LN GPT-2 has one on every producer's
                    residual side: rotated.py NULL_DIRECTIONS) ; 0 = dion's plain clamp
    nesterov        off (not in the paper's equations) ; momentum beta (0.95, dion's)
    weight decay    decoupled lr wd (the group's; AdamW's practice)
Cross-check with the third-party microsoft/dion dev/aro (dion/aro.py @ 9c6b30d), its step re-implemented
outside the repo (its module imports triton): with its settings (rotated_side=rows, scaling=match_rms_adamw,
qr=householder, null_tol=0), W after 10 fp32 steps differs by 2.2e-7 (32x96) and 2.9e-4 (48x48,
an ill-conditioned QR) of the movement (rounding: our SR-Sinkhorn iterates its scalings). On 64x32 with
rows rotated, by 74%: half the rows of R^T M are null, and the plain clamp turns their rounding into 50%
of the update's energy, outside range(M) (null_tol zeroes them).
State: M (param-shaped) + R (k^2 fp32 per matrix): 8 B/param for 768 x 768, 5.3 for c_attn, 5.0 for c_fc.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from optim.hparams import check_beta, check_in, check_int_at_least, check_nonnegative, check_positive
from optim.orthogonalize.newton_schulz import NewtonSchulz
from optim.orthogonalize.rotated import BASE_MAPS, QR_METHODS, ROTATED_SIDES, RotatedTransform
from optim.rules.base import MatrixContext, MatrixRule, MatrixStats, RuleHParams, nesterov_momentum_
from optim.rules.muon import muon_apply_

SCALINGS = ("rms", "match_rms_adamw", "none")


@dataclass
class AROHParams(RuleHParams):
    momentum: float  # beta of the EMA momentum
    nesterov: bool  # transform input lerp(G, M, beta) instead of M (not in the paper)
    base_map: str  # sinkhorn | row_norm | sign
    sinkhorn_iters: int  # L
    sinkhorn_eps: float  # row / column norms clamped at this
    null_tol: float  # rows / columns of R^T M below null_tol ||M||_F are null directions, left at zero
    qr: str  # householder | shifted_cholesky
    qr_shift: float  # shifted_cholesky: s = qr_shift ||A||_F^2
    rotated_side: str  # residual (Design 3: the short side, rows when square) | rows
    scaling: str  # rms | match_rms_adamw | none
    scale_coeff: float  # the 0.2 of rms and match_rms_adamw

    def validate(self, prefix: str = "optim.matrix") -> None:
        check_beta(f"{prefix}.momentum", self.momentum)
        check_in(f"{prefix}.base_map", self.base_map, BASE_MAPS)
        check_int_at_least(f"{prefix}.sinkhorn_iters", self.sinkhorn_iters, 1)
        check_positive(f"{prefix}.sinkhorn_eps", self.sinkhorn_eps)
        check_nonnegative(f"{prefix}.null_tol", self.null_tol)
        check_in(f"{prefix}.qr", self.qr, QR_METHODS)
        check_positive(f"{prefix}.qr_shift", self.qr_shift)
        check_in(f"{prefix}.rotated_side", self.rotated_side, ROTATED_SIDES)
        check_in(f"{prefix}.scaling", self.scaling, SCALINGS)
        check_positive(f"{prefix}.scale_coeff", self.scale_coeff)


def aro_scale(full_shape: tuple[int, int], scaling: str, coeff: float) -> float:
    """The step's multiplier of lr O: rms -> coeff (O is already of unit RMS); match_rms_adamw ->
    coeff sqrt(max(m, n)) (dion's adjust_lr rms_norm, Moonlight's); none -> 1."""
    if scaling == "rms":
        return coeff
    if scaling == "match_rms_adamw":
        return coeff * math.sqrt(max(full_shape))
    return 1.0


class ARORule(MatrixRule[AROHParams, None, MatrixStats]):
    name = "aro"

    def transform(self, newton_schulz: NewtonSchulz) -> RotatedTransform:
        """ARO's own transform (the configured Newton-Schulz is not used)."""
        hp = self.hp
        return RotatedTransform(base_map=hp.base_map, sinkhorn_iters=int(hp.sinkhorn_iters), eps=float(hp.sinkhorn_eps),
                                null_tol=float(hp.null_tol),                                qr=hp.qr, qr_shift=float(hp.qr_shift), rotated_side=hp.rotated_side,
                                normalize_rms=hp.scaling == "rms")

    def before_orthogonalize(self, state, grad, ctx: MatrixContext) -> tuple[torch.Tensor, None]:
        return nesterov_momentum_(state["momentum_buffer"], grad, self.hp.momentum, self.hp.nesterov), None

    def after_orthogonalize(self, state, param, ortho, carry: None, ctx: MatrixContext) -> MatrixStats:
        scale = aro_scale(ctx.full_shape, self.hp.scaling, float(self.hp.scale_coeff))
        return MatrixStats(update_sq=muon_apply_(param, ortho, ctx.lr, ctx.weight_decay, scale))
