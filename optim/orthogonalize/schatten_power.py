"""U Σ^{1/p} Vᵀ by a quintic Newton-Schulz whose coefficients change every step (adaptive Schatten-p).

Reading of arXiv 2605.19781 (Massena, Friedrich, Serrurier, "From SGD to Muon: Adaptive Optimization via
Schatten-p Norms"; no authors' code reachable, the paper body not readable here): the equations are the
author's blog (massena-t.github.io, _posts/2026-02-19-schatten-muon.md @ 4ada3c5), spec
../shared/OPTIMIZERS_FAMILY2.md §5.1. For p in [1, ∞) and N iteration steps:

    e = (1/p)^(1/N)                       each step fits x ↦ x^e, so N steps compose to x ↦ x^(1/p)
    (α, β, γ) = argmin ∫_0^1 (α x + β x³ + γ x⁵ - x^e)² dx   s.t.  α + β + γ = 1   (f(1) = 1)
    normal equations with a Lagrange multiplier λ (⟨x^a, x^b⟩ = 1/(a+b+1)):
        [1/3 1/5 1/7  1] [α]   [1/(e+2)]
        [1/5 1/7 1/9  1] [β] = [1/(e+4)]      (the blog's right-hand side writes "p": it is the
        [1/7 1/9 1/11 1] [γ]   [1/(e+6)]       per-step exponent e, as the least-squares fit requires)
        [1   1   1    0] [λ]   [1      ]
    X_0 = M / ||M||_F;   X_{t+1} = α_t X_t + β_t X_t X_tᵀ X_t + γ_t (X_t X_tᵀ)² X_t
    so X_N ≈ U (Σ / ||M||_F)^{1/p} Vᵀ.   p = 1: (α, β, γ) = (1, 0, 0), X_N = M / ||M||_F exactly.

The fit is the blog's "really simple" one: with N = 5 the composed map is within 0.05 (p = 1.5), 0.10
(p = 2), 0.22 (p = 4), 0.16 (p = 16), 0.10 (p = 64) of x^(1/p) on [0.05, 1] and worse below, where
x^(1/p) rises steeply and the odd polynomials stay near 0 (tests/test_optim_schatten.py FIT_ERROR). With
the ||M||_F normalization a d x d matrix's singular values sit near 1/sqrt(d), so large p acts less
sharply than U Vᵀ on ill-conditioned momenta; the paper may fit differently (unverified).

The kernel is the project's quintic (optim.orthogonalize.newton_schulz, ``newton_schulz_iterate``) with
one triplet per step (its (a, b, c) are (α, β, γ)); the coefficients are solved once per (p, N), in
float64, and cached.

Per-matrix exponents through the shared exchange: the transform contract maps a stack with no
per-matrix arguments, and the exchange moves only row blocks. The rule sends the normalized input scaled
by its exponent's grid index, X = (1 + i) M / ||M||_F (i = index of p in ``grid``), a scale the
normalization X / ||X||_F throws away anyway. The transform reads i back from ||X||_F (rounded: exact in
fp32 and bf16 exchanges for any grid under 100 entries), so the rule's p reaches the owner rank with the
rows and nothing in the distribution layer changes. A split (optim.orthogonalize.split) would give each
block its own norm; the config refuses it for this rule (``SchattenRule.supports_split`` False).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import torch

from optim.orthogonalize.coefficients import Triplet
from optim.orthogonalize.newton_schulz import newton_schulz_flops, newton_schulz_iterate
from optim.orthogonalize.transform import MatrixTransform

MAX_GRID = 100  # grid indices ride in the Frobenius norm (1 + i): rounding stays exact well below this


def per_step_exponent(p: float, steps: int) -> float:
    """e = (1/p)^(1/N): the exponent each of the N steps approximates."""
    if not p >= 1.0 or math.isinf(p):
        raise ValueError(f"the Schatten exponent p must be a finite number >= 1, got {p}")
    return (1.0 / p) ** (1.0 / steps)


def fit_odd_quintic(e: float) -> Triplet:
    """(α, β, γ) minimizing ∫_0^1 (α x + β x³ + γ x⁵ - x^e)² dx under α + β + γ = 1 (float64)."""
    system = torch.tensor([[1 / 3, 1 / 5, 1 / 7, 1.0], [1 / 5, 1 / 7, 1 / 9, 1.0], [1 / 7, 1 / 9, 1 / 11, 1.0],
                           [1.0, 1.0, 1.0, 0.0]], dtype=torch.float64)
    rhs = torch.tensor([1 / (e + 2), 1 / (e + 4), 1 / (e + 6), 1.0], dtype=torch.float64)
    alpha, beta, gamma, _ = torch.linalg.solve(system, rhs).tolist()
    return (alpha, beta, gamma)


@functools.lru_cache(maxsize=None)
def schatten_coefficients(p: float, steps: int) -> tuple[Triplet, ...]:
    """The N per-step triplets for U Σ^{1/p} Vᵀ (all steps fit the same e; p = 1 is exactly (1, 0, 0))."""
    if steps < 1:
        raise ValueError(f"optim.orthogonalize.steps must be an integer >= 1, got {steps}")
    e = per_step_exponent(float(p), steps)
    triplet = (1.0, 0.0, 0.0) if e == 1.0 else fit_odd_quintic(e)
    return (triplet,) * steps


def composed_map(x: torch.Tensor, triplets: tuple[Triplet, ...]) -> torch.Tensor:
    """The scalar map the iteration applies to each normalized singular value (for tests and plots)."""
    for a, b, c in triplets:
        x = a * x + b * x**3 + c * x**5
    return x


def encode_grid_index_(matrix: torch.Tensor, frobenius_norm: torch.Tensor | float, index: int) -> torch.Tensor:
    """The transform input of a matrix whose exponent is grid[index], in place: (1 + index) M / ||M||_F
    (a zero matrix stays zero; a tensor norm is read without a host sync)."""
    dtype = torch.promote_types(matrix.dtype, torch.float32)
    norm = torch.as_tensor(frobenius_norm, dtype=dtype, device=matrix.device)
    scale = torch.where(norm > 0, (1.0 + index) / norm.clamp(min=torch.finfo(torch.float32).tiny), 0.0)
    return matrix.mul_(scale.to(matrix.dtype))


def decode_grid_index(stack: torch.Tensor) -> torch.Tensor:
    """Per matrix of ``stack`` (batch, rows, cols): the grid index its Frobenius norm carries, -1 for
    a zero matrix. Raises if a norm is not 1 + an integer (a split block, or a wrong input)."""
    norm = torch.linalg.vector_norm(stack.float(), dim=(-2, -1)).double()
    index = torch.round(norm - 1.0)
    index = torch.where(norm < 0.5, torch.full_like(index, -1.0), index)
    off = ((norm - 1.0 - index).abs() > 0.25) & (norm >= 0.5)
    if bool(off.any()):
        raise ValueError("the Schatten-p transform got a matrix whose norm carries no grid index (a block of "
                         "optim.orthogonalize.split, which must be none for optim=schatten, or ranks that "
                         "disagree on p)")
    return index.long()


@dataclass(frozen=True)
class SchattenNewtonSchulz(MatrixTransform):
    """U (Σ/||M||_F)^{1/p} Vᵀ of each matrix of a stack, p = grid[i] read from the input's norm (see
    the module docstring). ``steps``: N; ``compute_dtype``: as the configured Newton-Schulz."""

    grid: tuple[float, ...]
    steps: int = field()  # required: field() keeps MatrixTransform's None from becoming a default
    compute_dtype: torch.dtype

    def __post_init__(self) -> None:
        if not 1 <= len(self.grid) <= MAX_GRID:
            raise ValueError(f"optim.matrix.p_grid must hold 1 to {MAX_GRID} values, got {len(self.grid)}")
        for p in self.grid:
            schatten_coefficients(float(p), self.steps)  # validates p and N, fills the cache

    def __call__(self, stack: torch.Tensor) -> torch.Tensor:
        index = decode_grid_index(stack)
        present = index.unique().tolist()
        if len(present) == 1 and present[0] >= 0:  # one exponent for the whole stack: no gather / scatter
            return self._iterate(stack, present[0]).to(stack.dtype)
        out = torch.zeros_like(stack)  # zero matrices (index -1) stay zero
        for i in present:
            if i < 0:
                continue
            mask = index == i
            out[mask] = self._iterate(stack[mask], i).to(stack.dtype)
        return out

    def _iterate(self, stack: torch.Tensor, i: int) -> torch.Tensor:
        if i >= len(self.grid):
            raise ValueError(f"grid index {i} outside optim.matrix.p_grid ({len(self.grid)} values)")
        rows, cols = stack.shape[-2:]
        triplets = schatten_coefficients(float(self.grid[i]), self.steps)
        return newton_schulz_iterate(stack, triplets, self.compute_dtype, right_form=rows > cols)

    def flops(self, rows: int, cols: int) -> int:
        return newton_schulz_flops(rows, cols, self.steps)
