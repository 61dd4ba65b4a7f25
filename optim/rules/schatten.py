"""Adaptive Schatten-p geometry: W -= lr U Σ^{1/p} Vᵀ of the momentum, p chosen per layer from data.

READING OF THE PAPER; NO AUTHORS' CODE. Massena, Friedrich, Serrurier, "From SGD to Muon: Adaptive
Optimization via Schatten-p Norms", arXiv 2605.19781. The paper body could not be read here and the
authors' repository (github massena-t/adaptive-ns) is not reachable: the equations are the first author's
blog (massena-t.github.io _posts/2026-02-19-schatten-muon.md @ 4ada3c5), spec
../shared/OPTIMIZERS_FAMILY2.md §5. Every choice the blog leaves open is a key (configs/optim/schatten.yaml)
and is listed in README.md as unverified.

    M = beta M + (1 - beta) G;  U = lerp(G, M, beta) (Nesterov)      Muon's momentum (open: the blog says
                                                                     only "the update after momentum")
    O = U (Σ_U / ||U||_F)^{1/p} Vᵀ    quintic NS with per-step coefficients (optim/orthogonalize/schatten_power.py)
    D = O                                 update_scale=normalized (default): what Muon's Newton-Schulz
                                          returns with the changed coefficients (the blog: "simply changing
                                          Newton-Schulz's coefficients suffices"); muon_frobenius:
                                          D = O sqrt(min(m, n)) / ||O||_F, U Vᵀ's norm at every p;
                                          raw: D = ||U||_F^{1/p} O = U Σ_U^{1/p} Vᵀ (the blog's formula;
                                          the lr-p coupling is open in the blog)
    W *= 1 - lr wd;  W -= lr s D          s: Muon's shape scaling (original: sqrt(max(1, m/n)))

p = 1 is (normalized) SGD with momentum, p -> ∞ tends to Muon. The geometry (blog: Hölder's inequality
||ΔW A||_F <= ||ΔW||_{S_{p+1}} ||A||_{S_k}, 1/2 = 1/(p+1) + 1/k, in the random-feature regression
surrogate of Davis & Drusvyatskiy 2025):

    p* = argmax_{p in grid} ||G||_{S_{1+1/p}} / ||A||_{S_{2(p+1)/(p-1)}}        (p = 1: ||A||_2; p -> ∞: ||A||_F)

G the raw gradient, A the layer's input activations (in x tokens). Spectra: σ(G) from the eigenvalues of
GᵀG (cols x cols, summed over the row shards: ``reduce_sum``), σ(A) from A Aᵀ = Σ x xᵀ summed over the
data-parallel ranks (optim/input_grams.py). Each is averaged over measurements (EMA ``spectrum_ema``
of the sorted singular values, the blog's "spectral momentum"; the first measurement is taken as is)
and p re-selected every ``recompute_every`` steps (steps 1, K+1, 2K+1, ...). Open in the blog and here:
exact Gram spectra instead of its power iteration + sampled submatrices scaled by d/m'; a grid
(``p_grid``) instead of a line search; synchronous instead of asynchronous; per matrix, not per chunk of
layers. Without activations (no model observed: hand-built groups; embeddings under
optim.routing=ndim) a matrix keeps ``p_init``.

State per matrix: M (param-shaped, 4 B/param) and replicated scalars and vectors (p, the two spectra of
length cols, the measurement count, the matrix's hook slot): (2 cols + 3) x 4 B, i.e. 8/rows B/param.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from optim.hparams import check_beta, check_in, check_int_at_least
from optim.input_grams import InputGrams, data_parallel_group, linear_modules_of
from optim.orthogonalize.newton_schulz import NewtonSchulz
from optim.orthogonalize.schatten_power import MAX_GRID, SchattenNewtonSchulz, encode_grid_index_
from optim.rules.base import MatrixContext, MatrixRule, MatrixStats, MomentumHParams, nesterov_momentum_, statistic_dtype
from optim.rules.muon import muon_apply_

UPDATE_SCALES = ("muon_frobenius", "normalized", "raw")
TINY = torch.finfo(torch.float32).tiny


@dataclass
class SchattenHParams(MomentumHParams):
    p_grid: tuple[float, ...]  # candidate exponents, ascending, each >= 1 (finite)
    p_init: float  # before the first measurement, and for matrices without activations (on the grid)
    recompute_every: int  # K: spectra measured and p re-selected at steps 1, K+1, 2K+1, ...
    spectrum_ema: float  # EMA of the sorted singular values across measurements (0: the latest only)
    activation_tokens: int  # rows of each forward's input sampled for A Aᵀ (0: all)
    update_scale: str  # muon_frobenius | normalized | raw (see the module docstring)

    def validate(self, prefix: str = "optim.matrix") -> None:
        super().validate(prefix)
        grid = [float(p) for p in self.p_grid]
        if not 1 <= len(grid) <= MAX_GRID or any(not (1.0 <= p < math.inf) for p in grid) or grid != sorted(set(grid)):
            raise ValueError(f"{prefix}.p_grid must be 1 to {MAX_GRID} distinct ascending finite values >= 1, "
                             f"got {list(self.p_grid)}")
        if float(self.p_init) not in grid:
            raise ValueError(f"{prefix}.p_init must be one of {prefix}.p_grid {grid}, got {self.p_init}")
        check_int_at_least(f"{prefix}.recompute_every", self.recompute_every, 1)
        check_beta(f"{prefix}.spectrum_ema", self.spectrum_ema)
        check_int_at_least(f"{prefix}.activation_tokens", self.activation_tokens, 0)
        check_in(f"{prefix}.update_scale", self.update_scale, UPDATE_SCALES)


# ---- the criterion: pure functions of two spectra ----------------------------------------------------
def schatten_norm(sigma: torch.Tensor, q: float) -> torch.Tensor:
    """||σ||_q = (Σ σ_i^q)^{1/q} (q = inf: max σ), in float64, scaled by max σ so large q cannot overflow."""
    sigma = sigma.double().abs()
    top = sigma.max()
    if math.isinf(q) or top == 0:
        return top
    return top * (sigma / top).pow(q).sum().pow(1.0 / q)


def input_norm_order(p: float) -> float:
    """k(p) = 2(p+1)/(p-1), from 1/2 = 1/(p+1) + 1/k (p = 1: inf, the spectral norm)."""
    return math.inf if p == 1.0 else 2.0 * (p + 1.0) / (p - 1.0)


def criterion(sigma_grad: torch.Tensor, sigma_input: torch.Tensor, p: float) -> float:
    """J(p) = ||G||_{S_{1+1/p}} / ||A||_{S_{k(p)}} from the singular values of G and of A."""
    return float(schatten_norm(sigma_grad, 1.0 + 1.0 / p) / schatten_norm(sigma_input, input_norm_order(p)))


def select_exponent(sigma_grad: torch.Tensor, sigma_input: torch.Tensor, grid: tuple[float, ...]) -> float:
    """p* = argmax_{p in grid} J(p) (ties: the smallest p)."""
    scores = [criterion(sigma_grad, sigma_input, float(p)) for p in grid]
    return float(grid[max(range(len(grid)), key=lambda i: (scores[i], -i))])


def gram_spectrum(gram: torch.Tensor) -> torch.Tensor:
    """Singular values (descending) of X from its Gram matrix XᵀX (negative rounding clamped to 0)."""
    return torch.linalg.eigvalsh(gram).clamp_(min=0).sqrt_().flip(0)


def ema_spectrum_(ema: torch.Tensor, count: torch.Tensor, spectrum: torch.Tensor, beta: float) -> torch.Tensor:
    """ema <- spectrum on the first measurement, else beta ema + (1 - beta) spectrum; count += 1."""
    if float(count) == 0:
        ema.copy_(spectrum)
    else:
        ema.lerp_(spectrum.to(ema.dtype), 1.0 - beta)
    count.add_(1)
    return ema


# ---- the rule -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SchattenCarry:
    p: float
    input_norm: torch.Tensor  # ||U||_F (update_scale=raw)


@dataclass
class SchattenStats(MatrixStats):
    p: float


class SchattenRule(MatrixRule[SchattenHParams, SchattenCarry, SchattenStats]):
    name = "schatten"
    supports_split = False  # p's grid index rides in the whole matrix's norm (optim/orthogonalize/schatten_power.py)

    def __init__(self, hp: SchattenHParams):
        super().__init__(hp)
        self.grid = tuple(float(p) for p in hp.p_grid)
        self.matrices: list[torch.Tensor] = []  # in init_state order: the hook slot of each matrix
        self.inputs: InputGrams | None = None

    def init_state(self, param):
        state = super().init_state(param)
        dtype, cols = statistic_dtype(param), param.shape[1]
        state["schatten_p"] = torch.tensor(float(self.hp.p_init), dtype=dtype)
        state["grad_spectrum"] = torch.zeros(cols, dtype=dtype, device=param.device)
        state["input_spectrum"] = torch.zeros(cols, dtype=dtype, device=param.device)
        state["spectrum_count"] = torch.tensor(0.0, dtype=dtype)
        state["input_slot"] = torch.tensor(float(len(self.matrices)), dtype=dtype)
        self.matrices.append(param)
        return state

    def observe_model(self, model, mesh=None) -> None:
        """Forward hooks on the Linear layers of this rule's matrices (their inputs' Grams)."""
        if self.inputs is not None:
            self.inputs.remove()
        modules = linear_modules_of(model, self.matrices)
        self.inputs = InputGrams(modules, data_parallel_group(mesh), self.hp.activation_tokens) if modules else None

    def grid_index(self, p: float) -> int:
        """The grid entry nearest ``p`` (the state holds p in the parameters' dtype after a load)."""
        return min(range(len(self.grid)), key=lambda i: abs(self.grid[i] - p))

    def transform(self, newton_schulz: NewtonSchulz) -> SchattenNewtonSchulz:
        """The per-step-coefficient quintic; the configured steps and compute dtype (its coefficients
        and schedule do not apply)."""
        return SchattenNewtonSchulz(grid=self.grid, steps=newton_schulz.steps, compute_dtype=newton_schulz.compute_dtype)

    def _measure_(self, state, grad: torch.Tensor, ctx: MatrixContext) -> None:
        """On measuring steps: both spectra into their EMAs, p re-selected (collectives: every rank)."""
        slot = int(state["input_slot"])
        measuring = (ctx.step - 1) % self.hp.recompute_every == 0
        self.inputs.capturing = ctx.step % self.hp.recompute_every == 0  # the next step measures
        if not measuring:
            self.inputs.discard(slot)
            return
        dtype = statistic_dtype(grad)
        g = grad.to(dtype)
        grad_gram = ctx.reduce_sum(g.mT @ g)
        input_gram = self.inputs.take(slot, dtype, grad.device)
        if not bool(input_gram.abs().sum() > 0):  # nothing captured on any rank: keep p
            return
        count = state["spectrum_count"]
        ema_spectrum_(state["grad_spectrum"], count.clone(), gram_spectrum(grad_gram), self.hp.spectrum_ema)
        ema_spectrum_(state["input_spectrum"], count, gram_spectrum(input_gram), self.hp.spectrum_ema)
        state["schatten_p"].fill_(select_exponent(state["grad_spectrum"], state["input_spectrum"], self.grid))

    def before_orthogonalize(self, state, grad, ctx: MatrixContext) -> tuple[torch.Tensor, SchattenCarry]:
        if self.inputs is not None and self.inputs.has(int(state["input_slot"])):
            self._measure_(state, grad, ctx)
        U = nesterov_momentum_(state["momentum_buffer"], grad, self.hp.momentum, self.hp.nesterov)
        index = self.grid_index(float(state["schatten_p"]))
        p = self.grid[index]
        norm = ctx.reduce_sum(torch.linalg.vector_norm(U, dtype=statistic_dtype(U)).square()).sqrt()  # no squared copy
        X = U if self.hp.nesterov else U.clone()  # Nesterov's U is a fresh tensor; M is the state
        return encode_grid_index_(X, norm, index), SchattenCarry(p=p, input_norm=norm)

    def after_orthogonalize(self, state, param, ortho, carry: SchattenCarry, ctx: MatrixContext) -> SchattenStats:
        if self.hp.update_scale == "muon_frobenius":  # (tensor factors: no host sync per matrix)
            norm = ctx.reduce_sum(ortho.float().square().sum()).sqrt()
            ortho.mul_(torch.where(norm > 0, math.sqrt(min(ctx.full_shape)) / norm.clamp(min=TINY), 0.0).to(ortho.dtype))
        elif self.hp.update_scale == "raw":
            ortho.mul_(carry.input_norm.pow(1.0 / carry.p).to(ortho.dtype))
        update_sq = muon_apply_(param, ortho, ctx.lr, ctx.weight_decay, self.scale(ctx))
        return SchattenStats(update_sq=update_sq, p=carry.p)

    def summarize(self, stats, reduce_max) -> dict[str, float]:
        """p is replicated: every rank holds every matrix's, no reduction needed."""
        ps = [s.p for s in stats]
        return {"schatten/p_mean": sum(ps) / len(ps), "schatten/p_min": min(ps), "schatten/p_max": max(ps)} if ps else {}
