"""ARO's whole-matrix transform: steepest descent under a base map f in an adaptively rotated basis.

Source: Gong, Zazo, Luo, Wang, Hensman, Ma, "ARO: A New Lens On Matrix Optimization For Large
Models", arXiv 2602.09006 (Microsoft Research; no authors' code). A READING of the paper: its update
equations (transcribed identically by two third-party pages and consistent with the third-party
microsoft/dion ``dev/aro`` dion/aro.py at 9c6b30d), its abstract and contents; the body's hyper-parameter
tables could not be read here (../shared/OPTIMIZERS_FAMILY2.md §3). For the momentum M (k x l, k the
ROTATED side) and the rotation R_{t-1} (k x k, orthogonal, identity at the start):

    D~  = f(R_{t-1}^T M)                    the base map in the previous basis
    R_t = Q of QR(M D~^T)                   the norm-informed policy: argmax_R tr(R^T M D~^T) is
                                            polar(M D~^T); the paper takes QR's Q instead (robust to noise)
    O   = R_t f(R_t^T M)                    the update direction (the step is -lr O, scaled below)

f (``base_map``):
    sinkhorn   SR-Sinkhorn (SinkGD, Scetbon, Ma, Gong, Meeds, arXiv 2502.06742), L iterations of
               X <- sqrt(l) X / ||rows||;  X <- sqrt(k) X / ||columns||   (rows first; norms clamped at eps)
    row_norm   sqrt(l) X / ||rows||: then R_t is a power iteration on M M^T and O -> U V^T (ARO = Muon)
    sign       sign(X)
All three commute with a row sign flip (f(D X) = D f(X), D = diag(+-1)), so neither O nor the next R
depends on the sign convention of the QR (tests/test_optim_aro.py). The paper's stateful Adam base map
is not offered.

QR (``qr``): householder (torch.linalg.qr, LAPACK: orthogonal to rounding) or shifted_cholesky
(the paper's "comparable throughput" path, GEMMs and a small Cholesky: shifted CholeskyQR3, a shifted
pass Q = A chol(A^T A + s I)^{-1}, s = shift ||A||_F^2 per matrix (dion: 1e-7, over the whole batch),
then two plain passes; Householder where a Cholesky fails). Scaling (``normalize_rms``): O / RMS(O), the paper's RMS matching (the rule then
steps lr 0.2 O: step RMS = 0.2 lr). Orientation (``rotated_side``): residual = the paper's Design 3
(the residual-stream side rotated); for every GPT-2 hidden matrix (nn.Linear [out, in]) that is the SHORT
side: c_attn, c_fc consume the residual (its 768 columns), attn / mlp c_proj produce it (768 rows), and a
square matrix is a producer (rows). rows = dion's (always the first dim, e.g. 3072 x 3072 for c_fc).

NULL_DIRECTIONS (``null_tol``): in a pre-LN transformer every reader of the residual stream is a
LayerNorm, whose input gradient is orthogonal to the all-ones vector; so the momentum of every producer
(attn / mlp c_proj) has an exact null direction on its rotated (residual) side, and the consumers have
one at init (zero-mean LN outputs). Its row of R^T M is rounding (measured 1e-7 to 6e-6 of ||M||_F in
fp32 on the test GPT), which SR-Sinkhorn with an absolute eps blows up into a full-size row of noise
(it then differs between any two summation orders: W ranks and one process). Rows and columns of norm
<= null_tol ||X||_F are therefore left at zero, as exact arithmetic leaves a zero row; null_tol = 0 is
the plain clamp (dion's).

Computed in fp32 (fp64 for fp64 inputs) whatever optim.orthogonalize.compute_dtype says; R is kept
in fp32 on the matrix's owner (owner-resident state, optim/orthogonalize/owner_state.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from optim.orthogonalize.owner_state import OwnerStateEntry
from optim.orthogonalize.transform import MatrixTransform

BASE_MAPS = ("sinkhorn", "row_norm", "sign")
QR_METHODS = ("householder", "shifted_cholesky")
ROTATED_SIDES = ("residual", "rows")


# ---- the math: pure functions on stacks (batch, k, l), the rotated side first --------------------------
def _normalized(X: torch.Tensor, dim: int, target: float, eps: float, floor: torch.Tensor) -> torch.Tensor:
    """X with every slice along ``dim`` (a row: dim -1; a column: dim -2) scaled to norm ``target``
    (norms clamped at eps); slices of norm <= ``floor`` (per matrix) become exact zeros."""
    norms = X.norm(dim=dim, keepdim=True)
    scale = torch.where(norms > floor, target / norms.clamp(min=eps), torch.zeros((), dtype=X.dtype, device=X.device))
    return X * scale


def _floor(X: torch.Tensor, null_tol: float) -> torch.Tensor:
    """null_tol ||X||_F per matrix, shaped to broadcast against row / column norms."""
    return null_tol * X.norm(dim=(-2, -1), keepdim=True)


def sr_sinkhorn(X: torch.Tensor, iters: int, eps: float, null_tol: float = 0.0) -> torch.Tensor:
    """SR-Sinkhorn: ``iters`` x {rows to norm sqrt(l), then columns to norm sqrt(k)} (a new tensor).
    Rows and columns of norm <= null_tol ||X||_F in the first pass are null directions: left at zero
    (see NULL_DIRECTIONS). The result is diag(r) X diag(c), so only r and c are iterated: the row norms
    of diag(r) X diag(c) are r * sqrt((X o X) c^2), the column norms c * sqrt(r^2 (X o X)), one
    matrix-vector product each (13x faster than rescaling X at every half-step: 30 vs 381 ms on
    768 x 3072 in fp32, one thread; the same to 8e-15 in fp64, tests/test_optim_aro.py)."""
    k, l = X.shape[-2:]
    Y = X.square()
    r = torch.ones(*X.shape[:-1], 1, dtype=X.dtype, device=X.device)
    c = torch.ones(*X.shape[:-2], 1, l, dtype=X.dtype, device=X.device)
    zero = torch.zeros((), dtype=X.dtype, device=X.device)
    for i in range(iters):
        tol = null_tol if i == 0 else 0.0  # zeroed rows / columns stay zero after the first pass
        rows = r * (Y @ c.square().mT).sqrt()
        r = r * torch.where(rows > tol * rows.norm(dim=-2, keepdim=True), math.sqrt(l) / rows.clamp(min=eps), zero)
        cols = c * (r.square().mT @ Y).sqrt()
        c = c * torch.where(cols > tol * cols.norm(dim=-1, keepdim=True), math.sqrt(k) / cols.clamp(min=eps), zero)
    return X * r * c


def row_norm(X: torch.Tensor, eps: float, null_tol: float = 0.0) -> torch.Tensor:
    """sqrt(l) X / ||rows||: every row of norm sqrt(l) (null rows left at zero)."""
    return _normalized(X, -1, math.sqrt(X.shape[-1]), eps, _floor(X, null_tol))


def base_map(name: str, iters: int = 5, eps: float = 1e-8, null_tol: float = 0.0) -> Callable[[torch.Tensor], torch.Tensor]:
    if name == "sinkhorn":
        return lambda X: sr_sinkhorn(X, iters, eps, null_tol)
    if name == "row_norm":
        return lambda X: row_norm(X, eps, null_tol)
    if name == "sign":
        return lambda X: torch.sign(X) * (X.abs() > _floor(X, null_tol))
    raise ValueError(f"base_map must be one of {list(BASE_MAPS)}, got {name!r}")


def householder_q(A: torch.Tensor) -> torch.Tensor:
    return torch.linalg.qr(A).Q


def cholesky_qr_pass(A: torch.Tensor, shift: float) -> torch.Tensor | None:
    """A chol(A^T A + s I)^{-1} (upper factor), s = shift ||A||_F^2 per matrix; None if a Cholesky fails."""
    gram = A.mT @ A
    if shift:
        gram.diagonal(dim1=-2, dim2=-1).add_((shift * A.square().sum(dim=(-2, -1)))[..., None])
    upper, info = torch.linalg.cholesky_ex(gram, upper=True)
    if bool((info != 0).any()):
        return None
    return torch.linalg.solve_triangular(upper, A, upper=True, left=False)


def shifted_cholesky_q(A: torch.Tensor, shift: float) -> torch.Tensor:
    """Shifted CholeskyQR3 (Fukaya, Kannan, Nakatsukasa, Yamamoto, Yanagisawa, arXiv 1809.11085): one
    shifted pass, then two plain ones (CholeskyQR2), which bring the orthogonality defect to rounding.
    One pass alone (dion's) leaves ~1e-4 on a random 24 x 40 and 0.27 on a square 32 x 32 in fp32
    (measured: the Gram matrix squares the condition number). Householder for the stack if a Cholesky fails."""
    Q = cholesky_qr_pass(A, shift)
    for _ in range(2):
        Q = None if Q is None else cholesky_qr_pass(Q, 0.0)
    return householder_q(A) if Q is None else Q


def qr_q(name: str, shift: float = 1e-7) -> Callable[[torch.Tensor], torch.Tensor]:
    if name == "householder":
        return householder_q
    if name == "shifted_cholesky":
        return lambda A: shifted_cholesky_q(A, shift)
    raise ValueError(f"qr must be one of {list(QR_METHODS)}, got {name!r}")


def aro_rotation(M: torch.Tensor, R_prev: torch.Tensor, f, q) -> torch.Tensor:
    """R_t = Q of QR(M f(R_{t-1}^T M)^T)   (k x k per matrix)."""
    return q(M @ f(R_prev.mT @ M).mT)


def aro_direction(M: torch.Tensor, R: torch.Tensor, f) -> torch.Tensor:
    """O = R f(R^T M)."""
    return R @ f(R.mT @ M)


def rms_normalized(O: torch.Tensor, eps: float) -> torch.Tensor:
    """O / RMS(O) per matrix (RMS = ||O||_F / sqrt(k l), clamped at eps)."""
    rms = O.square().mean(dim=(-2, -1), keepdim=True).sqrt()
    return O / rms.clamp(min=eps)


def aro_step(M: torch.Tensor, R_prev: torch.Tensor, f, q) -> tuple[torch.Tensor, torch.Tensor]:
    """One ARO step on a stack with the rotated side first: (direction O, new rotation R_t)."""
    R = aro_rotation(M, R_prev, f, q)
    return aro_direction(M, R, f), R


def rotated_rows(rows: int, cols: int, side: str) -> bool:
    """Whether the rows (dim 0) of a rows x cols matrix are the rotated side."""
    if side == "rows":
        return True
    if side == "residual":
        return rows <= cols
    raise ValueError(f"rotated_side must be one of {list(ROTATED_SIDES)}, got {side!r}")


# ---- the transform -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RotatedTransform(MatrixTransform):
    """ARO on whole matrices, the rotation kept per matrix on its owner (``owner_state``: "rotation")."""

    base_map: str = "sinkhorn"
    sinkhorn_iters: int = 5
    eps: float = 1e-8
    null_tol: float = 0.0
    qr: str = "householder"
    qr_shift: float = 1e-7
    rotated_side: str = "residual"
    normalize_rms: bool = True

    def __post_init__(self) -> None:
        base_map(self.base_map)
        qr_q(self.qr)
        rotated_rows(1, 1, self.rotated_side)

    def rotated_size(self, rows: int, cols: int) -> int:
        return rows if rotated_rows(rows, cols, self.rotated_side) else cols

    def owner_state(self, rows: int, cols: int) -> dict[str, OwnerStateEntry]:
        k = self.rotated_size(rows, cols)
        return {"rotation": OwnerStateEntry((k, k), init="identity", dtype=torch.float32)}

    def __call__(self, stack: torch.Tensor, state: dict[str, torch.Tensor]) -> torch.Tensor:
        rows, cols = stack.shape[-2:]
        transpose = not rotated_rows(rows, cols, self.rotated_side)
        dtype = torch.promote_types(stack.dtype, torch.float32)
        M = stack.to(dtype)
        M = M.mT if transpose else M
        rotation = state["rotation"]
        O, R = aro_step(M, rotation.to(dtype), base_map(self.base_map, self.sinkhorn_iters, self.eps, self.null_tol),
                        qr_q(self.qr, self.qr_shift))
        rotation.copy_(R)
        if self.normalize_rms:
            O = rms_normalized(O, self.eps)
        return (O.mT if transpose else O).to(stack.dtype)

    def flops(self, rows: int, cols: int) -> int:
        """R^T M twice, M D^T, R f: 4 k^2 l MACs; QR of k x k: Householder ~8/3 k^3 MACs with Q formed,
        shifted CholeskyQR3 3 x 7/3 k^3 (Gram, Cholesky, triangular solve); 2 FLOPs per MAC."""
        k = self.rotated_size(rows, cols)
        l = rows * cols // k
        qr_macs = 8 * k ** 3 // 3 if self.qr == "householder" else 7 * k ** 3
        return 2 * (4 * k * k * l + qr_macs)
