"""Spectral powers U Σ^p Vᵀ of a matrix without an SVD: the coupled Newton iteration of BeyondMuon.

Source: "Delving into Muon and Beyond" (arXiv 2602.04669); code github.com/Ocram7/BeyondMuon at
56dd187, optimizers/spectral_ns.py (``apply_spectral_transform``). Exact per-step math, and how it
differs from the ideal power: ../shared/OPTIMIZERS_FAMILY.md §1.4. For O = U Σ Vᵀ (rows m, cols n):

    p = 1     Ψ(O) = O
    p = 0     Ψ(O) = NS_quintic(O) · sqrt(max(1, m/n))           (their Muon: ns_iters = 15 steps)
    p = 1/2   n <= m: A = OᵀO (n x n), Ψ(O) = O · A^(-1/4);   m < n: A = O Oᵀ, Ψ(O) = A^(-1/4) · O
              A^(-1/4) = S(S(A).inv_sqrt).sqrt, where S(B) is the coupled iteration on the ridged B:
                  R = B + (ridge_eps + ridge_trace · tr(B)/k) I;  s = ||R||_F;  Y = R/s;  Z = I
                  repeat `iters` times: T = (3I - Z Y)/2;  Y <- Y T;  Z <- T Z
                      (and Y, Z <- symmetric parts at i = every, 2 every, ... while i > 0)
                  symmetrize both; sqrt = sqrt(s) Y ~ R^(1/2), inv_sqrt = Z / sqrt(s) ~ R^(-1/2)
    p = 1/4   the p = 1/2 map applied twice

This is the authors' iteration, not the exact SVD power (the ridge lifts small singular values; 15
iterations do not converge the smallest ones): 0.3-9% from U Σ^p Vᵀ depending on conditioning.
``method="svd"`` gives the exact power (tests). GPT-2's packed c_attn is split into its q, k, v blocks
first, as the authors' GPT-2 runs do, by ``optim.orthogonalize.split: qkv`` (``SplitRows``, the spectral
optimizers' default), which wraps this transform like any other.
The fractional powers run in at least fp32 (the authors: the parameter dtype); p = 0 in the
orthogonalization's compute dtype, like Muon.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from optim.orthogonalize.newton_schulz import NS_COEFFICIENTS, newton_schulz_flops, orthogonalize
from optim.orthogonalize.transform import MatrixTransform

POWERS = (1.0, 0.5, 0.25, 0.0)


def coupled_sqrt_inv_sqrt(
    B: torch.Tensor, iters: int, ridge_eps: float, ridge_trace: float, symmetrize_every: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(≈ R^(1/2), ≈ R^(-1/2)) of the ridged symmetric stack B (batch, k, k), the authors' iteration."""
    k = B.shape[-1]
    eye = torch.eye(k, dtype=B.dtype, device=B.device).expand_as(B)
    trace = torch.diagonal(B, dim1=-2, dim2=-1).sum(-1)[:, None, None]
    R = B + (ridge_eps + ridge_trace * trace / k) * eye
    scale = torch.linalg.matrix_norm(R, ord="fro", keepdim=True)  # the code's torch.norm: Frobenius
    Y, Z = R / scale, eye.clone()
    three_halves = 1.5 * eye.contiguous()
    for i in range(iters):
        T = torch.baddbmm(three_halves, Z, Y, alpha=-0.5)  # (3I - Z Y) / 2 in one fused product
        Y, Z = torch.bmm(Y, T), torch.bmm(T, Z)
        if i > 0 and i % symmetrize_every == 0:
            Y, Z = 0.5 * (Y + Y.mT), 0.5 * (Z + Z.mT)
    Y, Z = 0.5 * (Y + Y.mT), 0.5 * (Z + Z.mT)
    root = scale.sqrt()
    return Y * root, Z / root


def half_power(O: torch.Tensor, iters: int, ridge_eps: float, ridge_trace: float, symmetrize_every: int) -> torch.Tensor:
    """U Σ^(1/2) Vᵀ of a stack (batch, m, n) through the smaller Gram matrix."""
    right = O.shape[-1] <= O.shape[-2]  # tall or square: A = OᵀO (n x n)
    A = O.mT @ O if right else O @ O.mT
    _, inv_sqrt = coupled_sqrt_inv_sqrt(A, iters, ridge_eps, ridge_trace, symmetrize_every)
    inv_fourth, _ = coupled_sqrt_inv_sqrt(inv_sqrt, iters, ridge_eps, ridge_trace, symmetrize_every)
    return O @ inv_fourth if right else inv_fourth @ O


def svd_power(O: torch.Tensor, power: float) -> torch.Tensor:
    """Exact U Σ^p Vᵀ in float64 (p = 0: the polar factor U Vᵀ)."""
    U, S, Vh = torch.linalg.svd(O.to(torch.float64), full_matrices=False)
    return (U * S.pow(power).unsqueeze(-2)) @ Vh


@dataclass(frozen=True)
class SpectralPower(MatrixTransform):
    """The whole-matrix transform Ψ_p of a stack of same-shape matrices (see the module docstring)."""

    power: float
    iters: int  # the authors' ns_iters: quintic steps (p = 0) and coupled iterations (p = 1/2, 1/4)
    ridge_eps: float
    ridge_trace: float
    symmetrize_every: int
    compute_dtype: torch.dtype  # p = 0 only; fractional powers run in the input's dtype (>= fp32)
    coefficients: tuple = NS_COEFFICIENTS  # p = 0: one triplet, or one per step (a schedule)
    method: str = "coupled_newton"  # or "svd" (exact, float64; tests)
    norm_scale: float = 1.0  # p = 0: the schedule's normalization safety factor

    def __call__(self, stack: torch.Tensor) -> torch.Tensor:
        rows, cols = stack.shape[-2:]
        if self.power == 1.0:
            return stack.clone()
        shape_factor = max(1.0, rows / cols) ** 0.5 if self.power == 0.0 else 1.0  # p = 0: their Muon's
        if self.method == "svd":
            return (svd_power(stack, self.power) * shape_factor).to(stack.dtype)
        if self.power == 0.0:
            out = orthogonalize(stack, self.iters, self.coefficients, self.compute_dtype, norm_scale=self.norm_scale)
            return out * shape_factor
        work = stack.to(torch.promote_types(stack.dtype, torch.float32))
        for _ in range(2 if self.power == 0.25 else 1):
            work = half_power(work, self.iters, self.ridge_eps, self.ridge_trace, self.symmetrize_every)
        return work.to(stack.dtype)

    def flops(self, rows: int, cols: int) -> int:
        """Multiply-add FLOPs (2 per MAC) of one rows x cols matrix."""
        if self.power == 1.0:
            return 0
        if self.power == 0.0:
            return newton_schulz_flops(rows, cols, self.iters)
        k, n = min(rows, cols), max(rows, cols)
        # Gram + apply: 2 k^2 n MACs; two coupled iterations of 3 k^3 MACs per step
        per_half = 2 * (2 * k * k * n + 2 * self.iters * 3 * k**3)
        return per_half * (2 if self.power == 0.25 else 1)
