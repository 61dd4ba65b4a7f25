"""FISMO: Kronecker-factored Fisher whitening around an orthogonalized momentum.
A reading of the paper; no authors' code.

Source: Xu, Yan, Zhang (CUHK), "FISMO: Fisher-Structured Momentum-Orthogonalized Optimizer", arXiv
2601.21750 (ICML 2026). No code from the authors was found (code index, issues, pages). What was read,
2026-12-03, with the project's search tools (the arXiv HTML body is not stored: the paper's
experiment section, hyper-parameter tables and appendix were NOT read):
  - Algorithm 1, transcribed identically by two third-party pages: junaidaliop.github.io/zij/math/fismo
    (github junaidaliop/zij canon/math/fismo.md at 74a271e) and a nanochat research note
    "FISMO: Fisher-Structured Momentum-Orthogonalized Optimizer" (code index), which also gives the
    trust-region derivation, Theorem 1's fixed point and the experiments' outline;
  - the abstract (emergentmind, arxivlens and chatpaper listings of 2601.21750v1).
Spec and cost model: ../shared/OPTIMIZERS_FAMILY2.md §4.

Per matrix W (m x n, nn.Linear layout (out, in)), G its gradient; state P (m x m), Q (n x n), M (m x n):

    L_t = (1/n) G Q_{t-1}^{-1} G^T + mu tr(P_{t-1})/m I_m
    P~  = gamma P_{t-1} + (1 - gamma) L_t;     P_t = sym(m P~ / tr P~)       sym(A) = (A + A^T)/2
    R_t = (1/m) G^T P_t^{-1} G + mu tr(Q_{t-1})/n I_n      (Gauss-Seidel: the NEW P_t)
    Q~  = gamma Q_{t-1} + (1 - gamma) R_t;     Q_t = sym(n Q~ / tr Q~)
    G~  = P_t^{-1/2} G Q_t^{-1/2}                          (whitened gradient)
    M_t = beta M_{t-1} + (1 - beta) G~                     (momentum in whitened coordinates)
    dW  = P_t^{-1/2} Polar(M_t) Q_t^{-1/2}                 (Polar: the configured Newton-Schulz)
    W  <- W - eta dW

dW = argmin <G, dW> s.t. ||P^{1/2} dW Q^{1/2}||_2 <= 1 with the Fisher F ~ Q (x) P: in whitened
coordinates the step is a polar factor (spectral norm 1, the trust region); P = Q = I is Muon.

What the readable text leaves open, each a key of configs/optim/fismo.yaml (defaults and reasons there):
  damping_form  "algorithm": mu tr(P_{t-1})/m I as Algorithm 1 (= mu I under trace normalization);
                "fixed_point": Theorem 1's mu tr(Q_{t-1}^{-1})/n I for P and mu tr(P_t^{-1})/m I for Q
  statistic_scale  "raw": L_t as transcribed, in the gradient's units, blended with the trace-normalized
                P_{t-1} (tr = m). At language-model gradient scales (mean G^2 ~ 1e-6 on the CPU models,
                measured) P_t = I + O(1e-6): FISMO is then Muon to ~6 digits, which contradicts the
                paper's reported update condition numbers of 1e2-1e3. "trace" (default): the statistic
                brought to P_{t-1}'s scale first, (1/n) G Q^{-1} G^T * tr(P_{t-1}) / tr(that), so the EMA
                blends like with like and the whitening is invariant to the gradient's scale (Q alike)
  damping       mu: relative to P's mean eigenvalue under "trace"; in gradient units (mean G^2) under "raw"
  fisher_decay  gamma in [0, 1]; 1 freezes P = Q = I (Muon: the reduction the tests check)
  inverse roots by eigendecomposition, ONE per factor per refresh, eigenvalues floored at eig_floor
                times their mean (1, by the trace normalization); in fp32 (fp64 when NS runs in fp64)
  init          P_0 = I_m, Q_0 = I_n (the data-free point of the trace normalization), M_0 = 0
  precondition_every  K: P and Q refreshed every K steps (1 = Algorithm 1), a cost choice
  momentum, nesterov, shape_scaling, weight decay: Algorithm 1 has EMA momentum, no Nesterov, no
                shape factor and no decay; each is a key (decay decoupled, lr * wd, as Muon)

Placement: everything but W's update is whole-matrix work (G Q^{-1} G^T couples all rows, P^{-1/2}
mixes them), so it runs inside the rule's transform (``FisherWhitenedPolar``) on the matrix's owner
rank, and P, Q, M are owner-resident state (optim/orthogonalize/owner_state.py; row-sharded only in
checkpoints). The transform's input is the raw gradient G; its output is dW.

Each factor is kept as its eigendecomposition, F = U diag(exp(l)) U^T (``fisher_p_basis`` U,
``fisher_p_log_eigenvalues`` l; the contract's identity / zeros inits are then F_0 = I). Why: a refresh
needs Q_{t-1}^{-1} and Q_t^{-1/2}, P_t^{-1} and P_t^{-1/2}; each is applied from the stored pairs in
factored form (U diag(lambda^p) U^T X, no k x k product formed), so each factor costs ONE
eigendecomposition per refresh (of F_t) and none between refreshes,
at the memory of P and Q themselves (m^2 + m + n^2 + n). The eigenvalues are stored floored (F_t's
floored version is the factor the next step continues from). State per matrix: M (m n) + P and Q,
4 (1 + m/n + n/m) B/param in fp32, and a step counter.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from optim.hparams import check_in, check_int_at_least, check_nonnegative
from optim.orthogonalize.newton_schulz import NewtonSchulz
from optim.orthogonalize.owner_state import OwnerStateEntry
from optim.orthogonalize.transform import MatrixTransform
from optim.rules.base import MatrixContext, MatrixRule, MatrixStats, MomentumHParams
from optim.rules.muon import muon_apply_

DAMPING_FORMS = ("algorithm", "fixed_point")
STATISTIC_SCALES = ("trace", "raw")
EIGH_MACS = 4  # an eigendecomposition of a k x k matrix counted as ~4 k^3 multiply-adds (owner balancing)


# ---- the math: pure functions on one matrix or a stack (..., rows, cols) -------------------------
def trace(A: torch.Tensor) -> torch.Tensor:
    """tr A per matrix of a stack (shape (...,))."""
    return A.diagonal(dim1=-2, dim2=-1).sum(-1)


def sym(A: torch.Tensor) -> torch.Tensor:
    return (A + A.mT) / 2


def eye_like(A: torch.Tensor) -> torch.Tensor:
    return torch.eye(A.shape[-1], dtype=A.dtype, device=A.device).expand_as(A)


def spectral_power(basis: torch.Tensor, eigenvalues: torch.Tensor, power: float) -> torch.Tensor:
    """U diag(lambda^power) U^T: F itself (1), F^{-1} (-1), F^{-1/2} (-1/2) from F's eigenpairs."""
    return (basis * eigenvalues.pow(power).unsqueeze(-2)) @ basis.mT


def floored_eigh(A: torch.Tensor, floor: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(eigenvalues, eigenvectors) of symmetric A, eigenvalues floored at ``floor`` times their mean."""
    values, vectors = torch.linalg.eigh(A)
    least = floor * values.mean(-1, keepdim=True).clamp_min(torch.finfo(A.dtype).tiny)
    return torch.maximum(values, least), vectors


def left_power(basis: torch.Tensor, eigenvalues: torch.Tensor, power: float, X: torch.Tensor) -> torch.Tensor:
    """F^power X = U diag(lambda^power) U^T X, applied in factored form (no k x k product formed)."""
    return basis @ (eigenvalues.pow(power).unsqueeze(-1) * (basis.mT @ X))


def right_power(X: torch.Tensor, basis: torch.Tensor, eigenvalues: torch.Tensor, power: float) -> torch.Tensor:
    """X F^power = X U diag(lambda^power) U^T, in factored form."""
    return ((X @ basis) * eigenvalues.pow(power).unsqueeze(-2)) @ basis.mT


def left_statistic(G: torch.Tensor, q_basis: torch.Tensor, q_values: torch.Tensor) -> torch.Tensor:
    """(1/n) G Q^{-1} G^T (m x m) = (1/n) X X^T, X = G U_Q diag(lambda_Q^{-1/2})."""
    X = (G @ q_basis) * q_values.rsqrt().unsqueeze(-2)
    return (X @ X.mT) / G.shape[-1]


def right_statistic(G: torch.Tensor, p_basis: torch.Tensor, p_values: torch.Tensor) -> torch.Tensor:
    """(1/m) G^T P^{-1} G (n x n) = (1/m) Y^T Y, Y = diag(lambda_P^{-1/2}) U_P^T G."""
    Y = (p_basis.mT @ G) * p_values.rsqrt().unsqueeze(-1)
    return (Y.mT @ Y) / G.shape[-2]


def at_scale_of(statistic: torch.Tensor, F: torch.Tensor) -> torch.Tensor:
    """``statistic`` scaled to F's trace ("trace" statistic_scale); a zero statistic stays zero."""
    scale = trace(F) / trace(statistic).clamp_min(torch.finfo(F.dtype).tiny)
    return statistic * scale[..., None, None]


def factor_update(F: torch.Tensor, statistic: torch.Tensor, damping: torch.Tensor, gamma: float) -> torch.Tensor:
    """One factor's step: F~ = gamma F + (1 - gamma)(statistic + damping I), then sym(k F~ / tr F~),
    k = F's size (the trace normalization). ``damping``: the coefficient of I, one per matrix (shape (...,))."""
    k = F.shape[-1]
    target = statistic + damping[..., None, None] * eye_like(F)
    blended = gamma * F + (1 - gamma) * target
    return sym(blended * (k / trace(blended))[..., None, None])


def whiten(G: torch.Tensor, P_inv_sqrt: torch.Tensor, Q_inv_sqrt: torch.Tensor) -> torch.Tensor:
    """P^{-1/2} G Q^{-1/2}: G in whitened coordinates (and Polar(M) back to W's: the same map)."""
    return P_inv_sqrt @ G @ Q_inv_sqrt


# ---- hyper-parameters ------------------------------------------------------------------------------
@dataclass
class FISMOHParams(MomentumHParams):
    fisher_decay: float  # gamma: EMA of P and Q; 1 freezes them at I (Muon)
    damping: float  # mu
    damping_form: str  # algorithm | fixed_point
    statistic_scale: str  # trace | raw
    eig_floor: float  # eigenvalues of P, Q floored at this times their mean
    precondition_every: int  # K: P and Q refreshed every K steps

    def validate(self, prefix: str = "optim.matrix") -> None:
        super().validate(prefix)
        if not 0.0 <= float(self.fisher_decay) <= 1.0:
            raise ValueError(f"{prefix}.fisher_decay must be in [0, 1], got {self.fisher_decay}")
        check_nonnegative(f"{prefix}.damping", self.damping)
        check_in(f"{prefix}.damping_form", self.damping_form, DAMPING_FORMS)
        check_in(f"{prefix}.statistic_scale", self.statistic_scale, STATISTIC_SCALES)
        if not 0.0 < float(self.eig_floor) < 1.0:
            raise ValueError(f"{prefix}.eig_floor must be in (0, 1), got {self.eig_floor}")
        check_int_at_least(f"{prefix}.precondition_every", self.precondition_every, 1)


# ---- the whole-matrix step: a stateful transform -------------------------------------------------------
FACTORS = ("p", "q")


@dataclass(frozen=True)
class FisherWhitenedPolar(MatrixTransform):
    """G -> dW = P^{-1/2} Polar(M) Q^{-1/2} for a stack of whole gradients, P, Q and M updated in place
    (the module docstring's lines 1-4; owner-resident state, optim/orthogonalize/owner_state.py)."""

    newton_schulz: NewtonSchulz
    hp: FISMOHParams = field(compare=False)

    @property
    def dtype(self) -> torch.dtype:
        """Of the factors and the whitened momentum: fp32, fp64 when Newton-Schulz runs in fp64."""
        return torch.promote_types(self.newton_schulz.compute_dtype, torch.float32)

    def owner_state(self, rows: int, cols: int) -> dict[str, OwnerStateEntry]:
        d = self.dtype
        return {
            "fisher_p_basis": OwnerStateEntry((rows, rows), "identity", d),
            "fisher_p_log_eigenvalues": OwnerStateEntry((rows,), "zeros", d),
            "fisher_q_basis": OwnerStateEntry((cols, cols), "identity", d),
            "fisher_q_log_eigenvalues": OwnerStateEntry((cols,), "zeros", d),
            "whitened_momentum": OwnerStateEntry((rows, cols), "zeros", d),
            "fisher_steps": OwnerStateEntry((1,), "zeros", torch.float64),  # steps taken (exact integers)
        }

    def factor(self, state: dict[str, torch.Tensor], name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(basis, eigenvalues) of factor ``name`` ("p" or "q"): F = spectral_power(basis, eigenvalues, 1)."""
        return state[f"fisher_{name}_basis"], state[f"fisher_{name}_log_eigenvalues"].exp()

    def scaled(self, statistic: torch.Tensor, F_prev: torch.Tensor) -> torch.Tensor:
        return at_scale_of(statistic, F_prev) if self.hp.statistic_scale == "trace" else statistic

    def refresh_factors_(self, G: torch.Tensor, state: dict[str, torch.Tensor]) -> None:
        """Algorithm 1's factor steps (P first, then Q from the new P), stored as floored eigenpairs."""
        hp, (m, n) = self.hp, G.shape[-2:]
        p_basis, p_values = self.factor(state, "p")
        q_basis, q_values = self.factor(state, "q")
        # Q_{t-1}^{-1} and P_t^{-1} enter through their eigenpairs (no eigh of Q_{t-1}, no inverse formed)
        fixed_point = hp.damping_form == "fixed_point"  # Theorem 1's coefficients, else Algorithm 1's
        damp_p = hp.damping * (q_values.reciprocal().sum(-1) / n if fixed_point else p_values.sum(-1) / m)
        P_prev = spectral_power(p_basis, p_values, 1.0)
        P_t = factor_update(P_prev, self.scaled(left_statistic(G, q_basis, q_values), P_prev), damp_p, hp.fisher_decay)
        p_values_t, p_basis_t = floored_eigh(P_t, hp.eig_floor)
        damp_q = hp.damping * (p_values_t.reciprocal().sum(-1) / m if fixed_point else q_values.sum(-1) / n)
        Q_prev = spectral_power(q_basis, q_values, 1.0)
        Q_t = factor_update(Q_prev, self.scaled(right_statistic(G, p_basis_t, p_values_t), Q_prev), damp_q,
                            hp.fisher_decay)
        q_values_t, q_basis_t = floored_eigh(Q_t, hp.eig_floor)
        for name, values, basis in (("p", p_values_t, p_basis_t), ("q", q_values_t, q_basis_t)):
            state[f"fisher_{name}_log_eigenvalues"].copy_(values.log())
            state[f"fisher_{name}_basis"].copy_(basis)

    def __call__(self, stack: torch.Tensor, state: dict[str, torch.Tensor]) -> torch.Tensor:
        hp, G = self.hp, stack.to(self.dtype)
        steps = state["fisher_steps"]  # every matrix of a stack has taken the same steps
        if hp.fisher_decay < 1.0 and int(steps.reshape(-1)[0]) % hp.precondition_every == 0:
            self.refresh_factors_(G, state)
        p, q = self.factor(state, "p"), self.factor(state, "q")

        def whitened(X: torch.Tensor) -> torch.Tensor:  # P^{-1/2} X Q^{-1/2}, factored
            return right_power(left_power(*p, -0.5, X), *q, -0.5)

        G_white = whitened(G)
        M = state["whitened_momentum"]
        M.lerp_(G_white, 1 - hp.momentum)
        polar = self.newton_schulz(G_white.lerp(M, hp.momentum) if hp.nesterov else M)
        steps.add_(1)
        return whitened(polar.to(self.dtype)).to(stack.dtype)

    def flops(self, rows: int, cols: int) -> int:
        """Newton-Schulz + per refresh: F_{t-1} rebuilt from its pairs (k^3 per factor), the statistics
        (2 (m^2 n + m n^2)), one eigh per factor; whitening and back in factored form (4 (m^2 n + m n^2))."""
        m, n = rows, cols
        macs = (1 + EIGH_MACS) * (m ** 3 + n ** 3) + 6 * (m * m * n + m * n * n)
        return self.newton_schulz.flops(rows, cols) + 2 * macs


# ---- the rule ------------------------------------------------------------------------------------------
class FISMORule(MatrixRule[FISMOHParams, None, MatrixStats]):
    """The gradient goes to the owner whole (no shard-local state); ``FisherWhitenedPolar`` returns dW;
    phase 2 applies W *= 1 - lr wd; W -= lr scale dW (Muon's decoupled decay; scale: shape_scaling)."""

    name = "fismo"
    supports_ndim_routing = False  # wte's P would be 50304 x 50304 (10 GB in fp32): embeddings stay on AdamW

    def init_state(self, param: torch.Tensor) -> dict[str, torch.Tensor]:
        return {}  # all of FISMO's state is owner-resident (the transform's)

    def transform(self, newton_schulz: NewtonSchulz) -> FisherWhitenedPolar:
        return FisherWhitenedPolar(newton_schulz, self.hp)

    def before_orthogonalize(self, state, grad, ctx: MatrixContext) -> tuple[torch.Tensor, None]:
        return grad, None

    def after_orthogonalize(self, state, param, ortho, carry: None, ctx: MatrixContext) -> MatrixStats:
        return MatrixStats(update_sq=muon_apply_(param, ortho, ctx.lr, ctx.weight_decay, self.scale(ctx)))
