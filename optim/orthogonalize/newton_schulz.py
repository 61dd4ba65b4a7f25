"""Orthogonalization of matrix updates: quintic Newton-Schulz (Muon), its Gram form, and exact SVD.

Quintic Newton-Schulz as in Keller Jordan's Muon (github.com/KellerJordan/Muon, muon.py,
``zeropower_via_newtonschulz5``):

    X = X / (s ||X||_F + 1e-7)                    (per matrix: spectral norm <= 1; s = 1, or the
                                                   schedule's safety factor: Polar Express 1.01)
    for each step t (wide orientation, rows <= cols):
        A = X X^T;  B = b_t A + c_t A A;  X = a_t X + B X

with one triplet repeated (Jordan's (3.4445, -4.7750, 2.0315)) or a per-step schedule
(optim.orthogonalize.coefficients: Polar Express). Tall matrices (rows > cols) are orthogonalized
through their transpose. Instead of materializing X^T, we run the identical iteration in the "right"
form  A = X^T X;  X = a X + X B  (B is symmetric, so (a X^T + B X^T)^T = a X + X B): same math, no
transpose copies, the small Gram matrix either way. In the right form the Gram matrix is a sum over
row blocks, A = sum_r X_r^T X_r, so the iteration can also run on the row shards of a distributed
matrix: A all-reduced each step, B = b A + c A A computed a slice of rows per rank (``shards``,
a ``RowShards`` of optim.orthogonalize.transform; optim.orthogonalize.exchange). ``NewtonSchulz``
is the iteration as a ``MatrixTransform``, the one every Muon-family rule is handed.

The quintic with Jordan's coefficients does not converge to U V^T: it maps every singular value of the
normalized input into a band around 1 (measured in tests/test_newton_schulz.py), which is what Muon
uses. ``method="gram_newton_schulz"`` runs the same polynomial on the small Gram matrix
(optim.orthogonalize.gram_newton_schulz; for matrices with max/min >= 2, where it saves FLOPs,
the plain iteration otherwise); ``method="svd"`` returns the exact polar factor U V^T.

Speed on CPU: the loop reuses three preallocated buffers and calls ``baddbmm``/``bmm`` with ``out=``
(no allocation, no transposed copies), so the time is the three matmuls per step. The compute dtype
comes from ``optim.dtypes`` (``auto``: bf16 where bf16 matmul is fast, as in the published code).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from optim.orthogonalize.coefficients import JORDAN, Triplet
from optim.orthogonalize.gram_newton_schulz import gram_newton_schulz, gram_newton_schulz_flops, gram_pays_off
from optim.orthogonalize.transform import MatrixTransform, RowShards

NS_COEFFICIENTS: Triplet = JORDAN
NS_EPS = 1e-7
METHODS = ("newton_schulz", "gram_newton_schulz", "svd")


def newton_schulz_flops(rows: int, cols: int, steps: int = 5) -> int:
    """Multiply-add FLOPs (2 per MAC) of `steps` quintic iterations on one rows x cols matrix.

    With m = min(rows, cols), n = max: per step X X^T is 2 m^2 n, A A is 2 m^3, B X is 2 m^2 n.
    """
    m, n = min(rows, cols), max(rows, cols)
    return steps * (4 * m * m * n + 2 * m * m * m)


def method_flops(method: str, rows: int, cols: int, steps: int) -> int:
    """FLOPs of ``orthogonalize(method=...)`` on one matrix (svd: counted as 0, tests only)."""
    if method == "svd":
        return 0
    if method == "gram_newton_schulz" and gram_pays_off(rows, cols):
        return gram_newton_schulz_flops(rows, cols, steps)
    return newton_schulz_flops(rows, cols, steps)


def per_step_triplets(coefficients: Triplet | Sequence[Triplet], steps: int) -> tuple[Triplet, ...]:
    """One (a, b, c) repeated ``steps`` times, or a schedule of exactly ``steps`` triplets."""
    if steps < 1:
        raise ValueError(f"optim.orthogonalize.steps must be an integer >= 1, got {steps}")
    items = list(coefficients)
    if items and not isinstance(items[0], (tuple, list)):
        items = [tuple(items)] * steps
    triplets = tuple(tuple(float(c) for c in t) for t in items)
    if len(triplets) != steps or any(len(t) != 3 for t in triplets):
        raise ValueError(f"coefficients must be one [a, b, c] or {steps} of them (one per step), got {coefficients}")
    return triplets


def orthogonalize(
    X: torch.Tensor,
    steps: int = 5,
    coefficients: Triplet | Sequence[Triplet] = NS_COEFFICIENTS,
    compute_dtype: torch.dtype = torch.float32,
    method: str = "newton_schulz",
    norm_scale: float = 1.0,
) -> torch.Tensor:
    """Orthogonalize one matrix (rows, cols) or a stack (batch, rows, cols) of same-shape matrices.

    Every matrix of the stack is normalized by its own Frobenius norm (times ``norm_scale``).
    ``coefficients``: one triplet for every step, or one per step. Returns a new tensor in the dtype
    of ``X`` (the input is never modified).
    """
    if X.ndim not in (2, 3):
        raise ValueError(f"orthogonalize expects a matrix or a stack of matrices, got shape {tuple(X.shape)}")
    if method not in METHODS:
        raise ValueError(f"optim.orthogonalize.method must be one of {list(METHODS)}, got '{method}'")
    single = X.ndim == 2
    Y = X.unsqueeze(0) if single else X
    if method == "svd":
        out = _polar_factor_svd(Y)
    else:
        triplets = per_step_triplets(coefficients, steps)
        rows, cols = Y.shape[-2:]
        if method == "gram_newton_schulz" and gram_pays_off(rows, cols):
            out = gram_newton_schulz(normalized(Y, compute_dtype, norm_scale), triplets)
        else:  # the plain iteration (also the Gram method's choice for near-square matrices)
            out = newton_schulz_iterate(Y, triplets, compute_dtype, norm_scale, right_form=rows > cols)
    out = out.to(X.dtype)
    return out.squeeze(0) if single else out


def _polar_factor_svd(Y: torch.Tensor) -> torch.Tensor:
    # float64 SVD: exact reference quality; only used for tests / small problems.
    U, _, Vh = torch.linalg.svd(Y.to(torch.float64), full_matrices=False)
    return U @ Vh


def normalized(Y: torch.Tensor, compute_dtype: torch.dtype, norm_scale: float, shards: RowShards | None = None):
    """Y / (norm_scale ||Y||_F + eps) per matrix, in ``compute_dtype`` (a new tensor). With
    ``shards`` the squared norm is summed over the row shards first."""
    X = Y.to(compute_dtype)
    if shards is None:
        norm = torch.linalg.vector_norm(X, dim=(-2, -1), keepdim=True)
    else:
        norm = shards.sum_(X.float().square().sum(dim=(-2, -1), keepdim=True)).sqrt().to(compute_dtype)
    if norm_scale != 1.0:
        norm = norm.mul_(norm_scale)
    return torch.div(X, norm.add_(NS_EPS)).contiguous()


def newton_schulz_iterate(
    Y: torch.Tensor,
    triplets: Sequence[Triplet],
    compute_dtype: torch.dtype,
    norm_scale: float = 1.0,
    right_form: bool = False,
    shards: RowShards | None = None,
) -> torch.Tensor:
    """The quintic on a stack Y (batch, rows, cols), in ``compute_dtype``.

    ``right_form``: iterate as A = X^T X, X <- a X + X B (for tall matrices). ``shards`` (right form
    only): Y is a row block of a taller matrix; the (batch, cols, cols) Gram matrix and the squared
    norm are summed over the row blocks, so every block follows the whole matrix's iteration."""
    if shards is not None and not right_form:
        raise ValueError("a row-sharded Newton-Schulz needs the right form (rows >= cols)")
    rows, cols = Y.shape[-2:]
    X = normalized(Y, compute_dtype, norm_scale, shards)
    X_next = torch.empty_like(X)
    k = cols if right_form else rows  # size of the (small) Gram matrix
    A = X.new_empty(X.shape[0], k, k)
    B = torch.empty_like(A)
    for a, b, c in triplets:
        if right_form:  # A = X^T X, X <- a X + X B
            torch.bmm(X.mT, X, out=A)
            if shards is None:
                torch.baddbmm(A, A, A, beta=b, alpha=c, out=B)
            else:
                shards.polynomial_(shards.sum_(A), b, c, out=B)
            torch.baddbmm(X, X, B, beta=a, out=X_next)
        else:  # left form: A = X X^T, X <- a X + B X
            torch.bmm(X, X.mT, out=A)
            torch.baddbmm(A, A, A, beta=b, alpha=c, out=B)
            torch.baddbmm(X, B, X, beta=a, out=X_next)
        X, X_next = X_next, X
    return X


@dataclass(frozen=True)
class NewtonSchulz(MatrixTransform):
    """Quintic Newton-Schulz (plain or Gram form, or the exact polar factor, ``method="svd"``) as a
    MatrixTransform. ``coefficients``: one triplet for every step, or one per step (a schedule of
    optim.orthogonalize.coefficients); ``norm_scale``: the schedule's normalization safety factor."""

    steps: int = field()  # required: field() keeps the dataclass from taking MatrixTransform's None as a default
    coefficients: tuple
    compute_dtype: torch.dtype
    method: str = "newton_schulz"
    norm_scale: float = 1.0

    def __call__(self, stack: torch.Tensor) -> torch.Tensor:
        return orthogonalize(stack, self.steps, self.coefficients, self.compute_dtype, self.method, self.norm_scale)

    def flops(self, rows: int, cols: int) -> int:
        return method_flops(self.method, rows, cols, self.steps)

    def supports_row_shards(self, rows: int, cols: int) -> bool:
        """Any matrix can iterate on shards of its long side (the Gram matrix is a sum over them)."""
        return self.method != "svd"

    def row_sharded(self, block: torch.Tensor, shards: RowShards) -> torch.Tensor:
        """The plain quintic on a stack of row blocks (rows >= cols overall)."""
        triplets = per_step_triplets(self.coefficients, self.steps)
        out = newton_schulz_iterate(block, triplets, self.compute_dtype, self.norm_scale, True, shards)
        return out.to(block.dtype)
