"""Gram Newton-Schulz: the quintic iteration run on the small Gram matrix, applied to X once.

Every step of the quintic is X_{t+1} = p_t(G_t) X_t with G_t = X_t X_t^T (wide orientation;
tall matrices use X^T X and multiply from the right) and p_t(G) = a_t I + b_t G + c_t G^2. All the
p_t(G_t) are polynomials in G_0, so they commute, and

    X_t = R_t X_0,   R_{t+1} = p_t(G_t) R_t,   G_{t+1} = p_t(G_t) G_t p_t(G_t)

needs only k x k products (k = min(rows, cols)): per step G^2, R P and (G P) P, 8 k^3 FLOPs,
against 4 k^2 n + 2 k^3 for the plain step. The n-sized work is G_0 = X_0 X_0^T and R X_0 at the
end (2 k^2 n each), and each restart (below) 4 k^2 n. For c_fc-shaped matrices (n = 4k) and 5
steps with the default restart that is 60 k^3 against 90 k^3: -33% (no restart: -44%); for square matrices it costs more, so ``orthogonalize(method="gram_newton_schulz")``
runs the plain iteration there (``gram_pays_off``).

Stability: G squares the condition number, so the rounding error of G_t reaches small singular
values sooner than in the plain iteration. Like the Dao AI Lab "Gram Newton-Schulz" write-up, we
restart: at the steps in ``restart_at`` X is formed (X = R X_0), G recomputed from it and R reset to
I. The deviation from the plain iteration with the default restart is measured in
tests/test_newton_schulz_schedules.py and BENCHMARKS.md.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from optim.orthogonalize.coefficients import Triplet

RESTART_AT: tuple[int, ...] = (3,)  # re-form X before step 3 (0-based): segments of 3 and 2 steps


def gram_pays_off(rows: int, cols: int) -> bool:
    """Fewer FLOPs than the plain iteration for 5 steps once max/min >= 2 (see gram_newton_schulz_flops)."""
    return max(rows, cols) >= 2 * min(rows, cols)


def gram_newton_schulz_flops(rows: int, cols: int, steps: int = 5, restart_at: Sequence[int] = RESTART_AT) -> int:
    """Multiply-add FLOPs (2 per MAC), counted as ``gram_newton_schulz`` runs them."""
    k, n = min(rows, cols), max(rows, cols)
    restarts = sorted(r for r in set(restart_at) if 0 < r < steps)
    flops = 2 * k * k * n  # G_0
    for t in range(steps):
        segment_start = t == 0 or t in restarts
        if t in restarts:
            flops += 4 * k * k * n  # X = R X0, G = X X^T
        flops += 2 * k**3  # G^2
        if not segment_start:
            flops += 2 * k**3  # R P
        if t + 1 < steps and (t + 1) not in restarts:
            flops += 4 * k**3  # (G P) P
    return flops + 2 * k * k * n  # R X0


def gram_newton_schulz(
    X0: torch.Tensor, triplets: Sequence[Triplet], restart_at: Sequence[int] = RESTART_AT
) -> torch.Tensor:
    """The quintic of ``triplets`` on a normalized stack X0 (batch, rows, cols), through its Gram
    matrix; returns R X0 (X0 R for tall matrices) in X0's dtype."""
    rows, cols = X0.shape[-2:]
    right = rows > cols  # tall: G = X^T X, X_t = X_0 R_t

    def gram(X: torch.Tensor) -> torch.Tensor:
        return torch.bmm(X.mT, X) if right else torch.bmm(X, X.mT)

    def apply(X: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
        return torch.bmm(X, R) if right else torch.bmm(R, X)

    k = min(rows, cols)
    eye = torch.eye(k, dtype=X0.dtype, device=X0.device)
    X, G, R = X0, gram(X0), None
    steps = len(triplets)
    for t, (a, b, c) in enumerate(triplets):
        if t in restart_at and R is not None:
            X = apply(X, R)
            G, R = gram(X), None
        P = torch.bmm(G, G).mul_(c).add_(G, alpha=b).add_(eye, alpha=a)  # p(G) = a I + b G + c G^2
        R = P if R is None else torch.bmm(R, P)
        if t + 1 < steps and (t + 1) not in restart_at:
            G = torch.bmm(torch.bmm(G, P), P)
    return apply(X, R)
