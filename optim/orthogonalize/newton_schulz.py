"""Orthogonalization of matrix updates: quintic Newton-Schulz (Muon) and an exact-SVD mode.

Quintic Newton-Schulz as in Keller Jordan's Muon (github.com/KellerJordan/Muon, muon.py,
``zeropower_via_newtonschulz5``):

    X = X / (||X||_F + 1e-7)                      (per matrix: spectral norm <= 1)
    repeat `steps` times (wide orientation, rows <= cols):
        A = X X^T;  B = b A + c A A;  X = a X + B X       (a, b, c) = (3.4445, -4.7750, 2.0315)

Tall matrices (rows > cols) are orthogonalized through their transpose. Instead of materializing
X^T, we run the identical iteration in the "right" form  A = X^T X;  X = a X + X B  (B is symmetric,
so (a X^T + B X^T)^T = a X + X B): same math, no transpose copies, the small Gram matrix either way.

The quintic with these coefficients does not converge to U V^T: it maps every singular value of the
normalized input into a band around 1 (measured in tests/test_newton_schulz.py), which is what Muon
uses. ``method="svd"`` returns the exact polar factor U V^T (tests, NAMO's ``use_exact_svd``).

Speed on CPU: the loop reuses three preallocated buffers and calls ``baddbmm``/``bmm`` with ``out=``
(no allocation, no transposed copies), so the time is the three matmuls per step; the default is fp32 on
CPUs (exact against the reference vectors; bf16 is faster only on CPUs with AMX, see BENCHMARKS.md)
and bf16 on GPUs as in the published code (``optim.dtypes.resolve_dtype``).
"""

from __future__ import annotations

import torch

NS_COEFFICIENTS: tuple[float, float, float] = (3.4445, -4.7750, 2.0315)
NS_EPS = 1e-7
METHODS = ("newton_schulz", "svd")


def newton_schulz_flops(rows: int, cols: int, steps: int = 5) -> int:
    """Multiply-add FLOPs (2 per MAC) of `steps` quintic iterations on one rows x cols matrix.

    With m = min(rows, cols), n = max: per step X X^T is 2 m^2 n, A A is 2 m^3, B X is 2 m^2 n.
    """
    m, n = min(rows, cols), max(rows, cols)
    return steps * (4 * m * m * n + 2 * m * m * m)


def orthogonalize(
    X: torch.Tensor,
    steps: int = 5,
    coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
    compute_dtype: torch.dtype = torch.float32,
    method: str = "newton_schulz",
) -> torch.Tensor:
    """Orthogonalize one matrix (rows, cols) or a stack (batch, rows, cols) of same-shape matrices.

    Every matrix of the stack is normalized by its own Frobenius norm. Returns a new tensor in the
    dtype of ``X`` (the input is never modified).
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
        if steps < 1:
            raise ValueError(f"optim.orthogonalize.steps must be an integer >= 1, got {steps}")
        out = _newton_schulz(Y, steps, coefficients, compute_dtype)
    out = out.to(X.dtype)
    return out.squeeze(0) if single else out


def _polar_factor_svd(Y: torch.Tensor) -> torch.Tensor:
    # float64 SVD: exact reference quality; only used for tests / small problems.
    U, _, Vh = torch.linalg.svd(Y.to(torch.float64), full_matrices=False)
    return U @ Vh


def _newton_schulz(
    Y: torch.Tensor, steps: int, coefficients: tuple[float, float, float], compute_dtype: torch.dtype
) -> torch.Tensor:
    a, b, c = coefficients
    rows, cols = Y.shape[-2:]
    tall = rows > cols
    # Normalize in the compute dtype; `torch.div` allocates the working copy (input untouched).
    X = Y.to(compute_dtype)
    norm = torch.linalg.vector_norm(X, dim=(-2, -1), keepdim=True)
    X = torch.div(X, norm.add_(NS_EPS)).contiguous()
    X_next = torch.empty_like(X)
    k = cols if tall else rows  # size of the (small) Gram matrix
    A = X.new_empty(X.shape[0], k, k)
    B = torch.empty_like(A)
    for _ in range(steps):
        if tall:  # right form on X (rows > cols): A = X^T X, X <- a X + X B
            torch.bmm(X.mT, X, out=A)
            torch.baddbmm(A, A, A, beta=b, alpha=c, out=B)
            torch.baddbmm(X, X, B, beta=a, out=X_next)
        else:  # left form: A = X X^T, X <- a X + B X
            torch.bmm(X, X.mT, out=A)
            torch.baddbmm(A, A, A, beta=b, alpha=c, out=B)
            torch.baddbmm(X, B, X, beta=a, out=X_next)
        X, X_next = X_next, X
    return X
