"""FISMO (optim/rules/fismo.py; a reading of arXiv 2601.21750, no authors' code) by its properties.

No reference vectors exist, so: Algorithm 1 re-written here with other primitives (inverse and square
root by scipy, polar factor by SVD) gives the same parameters; P and Q stay symmetric with traces m
and n; whitening inverts; the step meets the trust region ||P^{1/2} dW Q^{1/2}||_2 = 1; frozen factors
(fisher_decay = 1, P = Q = I) are this project's Muon; one eigendecomposition per factor per refresh;
a state_dict round trip continues the run exactly. fp64 where the tolerance is tight.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import scipy.linalg
import torch

from optim.orthogonalize.from_mesh import MatrixDistribution
from optim.orthogonalize.newton_schulz import NewtonSchulz
from optim.orthogonalize.orthogonalizer import LocalOrthogonalizer
from optim.orthogonalize.split import SplitRows
from optim.orthogonalized_optimizer import OrthogonalizedOptimizer
from optim.rules import fismo
from optim.rules.base import MomentumHParams
from optim.rules.fismo import FISMOHParams, FISMORule
from optim.rules.muon import MuonRule

F64 = torch.float64
SHAPES = [(6, 4), (3, 7)]  # tall and wide
SVD = NewtonSchulz(steps=5, coefficients=(3.4445, -4.7750, 2.0315), compute_dtype=F64, method="svd")
QUINTIC = NewtonSchulz(steps=5, coefficients=(3.4445, -4.7750, 2.0315), compute_dtype=F64)


def hparams(**changes) -> FISMOHParams:
    values = dict(momentum=0.9, nesterov=False, shape_scaling="none", scale_coeff=0.2, fisher_decay=0.8,
                  damping=1e-2, damping_form="algorithm", statistic_scale="trace", eig_floor=1e-9,
                  precondition_every=1)
    return FISMOHParams(**{**values, **changes})


def optimizer(params, rule, newton_schulz=SVD, lr=0.1, weight_decay=0.0):
    group = {"params": params, "param_names": [f"w{i}" for i in range(len(params))], "role": "matrix", "lr": lr,
             "weight_decay": weight_decay}
    local = LocalOrthogonalizer(transform=rule.transform(newton_schulz))
    return OrthogonalizedOptimizer([group], rule, distribution=MatrixDistribution(local))


def held(opt, i=0) -> dict[str, torch.Tensor]:
    """Matrix i's owner-resident state, with P and Q rebuilt from their stored eigenpairs."""
    state = dict(opt.owner_state.held[i])
    transform = opt.orthogonalizer.transform
    state["P"] = fismo.spectral_power(*transform.factor(state, "p"), 1.0)
    state["Q"] = fismo.spectral_power(*transform.factor(state, "q"), 1.0)
    return state


def gradients(shape, steps, seed=0):
    gen = torch.Generator().manual_seed(seed)
    # anisotropic: rows and columns of different scales, so the factors move away from I
    rows = torch.logspace(0, 1, shape[0], dtype=F64)[:, None]
    cols = torch.logspace(0, -1, shape[1], dtype=F64)[None, :]
    return [torch.randn(shape, generator=gen, dtype=F64) * rows * cols for _ in range(steps)]


def run(rule, shape, steps, newton_schulz=SVD, seed=0, lr=0.1, grad_scale=1.0):
    torch.manual_seed(seed)
    w = torch.nn.Parameter(torch.randn(shape, dtype=F64))
    opt = optimizer([w], rule, newton_schulz, lr=lr)
    for g in gradients(shape, steps, seed):
        w.grad = g * grad_scale
        opt.step()
    return w.detach(), held(opt), opt


# ---- Algorithm 1 written out with other primitives ---------------------------------------------------
def inv_sqrt(A: np.ndarray) -> np.ndarray:
    return np.linalg.inv(np.real(scipy.linalg.sqrtm(A)))


def polar(X: np.ndarray) -> np.ndarray:
    U, _, Vt = np.linalg.svd(X, full_matrices=False)
    return U @ Vt


def algorithm_1(W, grads, lr, beta, gamma, mu, form, scale):
    """The module docstring's lines, statistic_scale "trace" bringing each statistic to the old factor's trace."""
    m, n = W.shape
    P, Q, M = np.eye(m), np.eye(n), np.zeros((m, n))

    def scaled(S, F):
        return S * np.trace(F) / np.trace(S) if scale == "trace" else S

    for G in grads:
        Q_inv = np.linalg.inv(Q)
        damp = mu * (np.trace(Q_inv) / n if form == "fixed_point" else np.trace(P) / m)
        L = scaled(G @ Q_inv @ G.T / n, P) + damp * np.eye(m)
        Pt = gamma * P + (1 - gamma) * L
        P_new = m * Pt / np.trace(Pt)
        P_new = (P_new + P_new.T) / 2
        P_inv = np.linalg.inv(P_new)
        damp = mu * (np.trace(P_inv) / m if form == "fixed_point" else np.trace(Q) / n)
        R = scaled(G.T @ P_inv @ G / m, Q) + damp * np.eye(n)
        Qt = gamma * Q + (1 - gamma) * R
        Q = n * Qt / np.trace(Qt)
        Q, P = (Q + Q.T) / 2, P_new
        M = beta * M + (1 - beta) * inv_sqrt(P) @ G @ inv_sqrt(Q)
        W = W - lr * inv_sqrt(P) @ polar(M) @ inv_sqrt(Q)
    return W, P, Q, M


@pytest.mark.parametrize("form, scale", [("algorithm", "trace"), ("fixed_point", "trace"), ("algorithm", "raw")])
@pytest.mark.parametrize("shape", SHAPES)
def test_steps_equal_algorithm_1_written_out(shape, form, scale):
    hp = hparams(damping_form=form, statistic_scale=scale)
    w, state, _ = run(FISMORule(hp), shape, steps=4)
    torch.manual_seed(0)
    w0 = torch.randn(shape, dtype=F64).numpy()
    ref_w, ref_p, ref_q, ref_m = algorithm_1(w0, [g.numpy() for g in gradients(shape, 4)], 0.1, hp.momentum,
                                             hp.fisher_decay, hp.damping, form, scale)
    for got, ref in ((w, ref_w), (state["P"], ref_p), (state["Q"], ref_q), (state["whitened_momentum"], ref_m)):
        np.testing.assert_allclose(got.numpy(), ref, rtol=0, atol=1e-10 * np.abs(ref).max())


@pytest.mark.parametrize("shape", SHAPES)
def test_factors_are_symmetric_positive_definite_with_traces_m_and_n(shape):
    _, state, _ = run(FISMORule(hparams(damping=0.0)), shape, steps=6)
    for key, k in (("P", shape[0]), ("Q", shape[1])):
        F = state[key]
        assert F.dtype == F64 and F.shape == (k, k)
        assert (F - F.mT).abs().max() <= 1e-14 * k, key
        assert abs(fismo.trace(F).item() - k) <= 1e-12 * k, key
        assert torch.linalg.eigvalsh(F).min() > 0, key
        assert (F - torch.eye(k, dtype=F64)).abs().max() > 0.05, f"{key} never moved from I"


def test_trace_scaled_factors_ignore_the_gradients_scale_and_raw_ones_stay_at_identity_for_small_ones():
    """statistic_scale=trace: P, Q and the step are the same for G and 1e-3 G (damping relative to P);
    raw (Algorithm 1 as transcribed): at 1e-3 G the statistic ~1e-6 barely moves P from I (why trace is the default)."""
    shape = (6, 4)
    w1, s1, _ = run(FISMORule(hparams()), shape, steps=4)
    w2, s2, _ = run(FISMORule(hparams()), shape, steps=4, grad_scale=1e-3)
    for key in ("P", "Q"):
        assert (s1[key] - s2[key]).abs().max() <= 1e-10, key
    assert (w1 - w2).abs().max() <= 1e-10
    _, raw, _ = run(FISMORule(hparams(statistic_scale="raw", damping=0.0)), shape, steps=4, grad_scale=1e-3)
    assert (raw["P"] - torch.eye(6, dtype=F64)).abs().max() <= 1e-4
    assert (s2["P"] - torch.eye(6, dtype=F64)).abs().max() >= 0.05


def test_whitening_inverts_and_the_step_meets_the_trust_region():
    shape = (6, 4)
    _, state, opt = run(FISMORule(hparams()), shape, steps=3)
    transform = opt.orthogonalizer.transform
    P_half, Q_half = (np.real(scipy.linalg.sqrtm(state[k].numpy())) for k in ("P", "Q"))
    G = gradients(shape, 4)[3]
    P_inv_sqrt, Q_inv_sqrt = (fismo.spectral_power(*transform.factor(state, f), -0.5) for f in ("p", "q"))
    white = fismo.whiten(G, P_inv_sqrt, Q_inv_sqrt).numpy()
    np.testing.assert_allclose(P_half @ white @ Q_half, G.numpy(), rtol=0, atol=1e-11 * G.abs().max().item())
    # the next step, through the transform: dW in whitened coordinates is a polar factor (SVD: exactly;
    # the quintic: its singular values in the band of Jordan's map, tests/test_newton_schulz.py)
    for newton_schulz, band in ((SVD, (1 - 1e-10, 1 + 1e-10)), (QUINTIC, (0.6818, 1.1344))):
        step_transform = FISMORule(hparams()).transform(newton_schulz)
        copy = {k: v.clone().unsqueeze(0) for k, v in opt.owner_state.held[0].items()}
        dW = step_transform(G.unsqueeze(0), copy)[0]
        after = {k: v[0] for k, v in copy.items()}
        P, Q = (fismo.spectral_power(*step_transform.factor(after, f), 1.0).numpy() for f in ("p", "q"))
        sigma = np.linalg.svd(np.real(scipy.linalg.sqrtm(P)) @ dW.numpy() @ np.real(scipy.linalg.sqrtm(Q)), compute_uv=False)
        assert band[0] <= sigma.min() and sigma.max() <= band[1], (newton_schulz.method, sigma)


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("shape", SHAPES)
def test_frozen_factors_are_this_projects_muon(shape, nesterov):
    """fisher_decay = 1: P = Q = I for ever, so the whitened momentum is Muon's momentum and the step
    Muon's step (same Newton-Schulz, same scaling, same decoupled decay)."""
    common = dict(momentum=0.95, nesterov=nesterov, shape_scaling="original", scale_coeff=0.2)
    out = {}
    for name, rule in {"fismo": FISMORule(hparams(**common, fisher_decay=1.0)), "muon": MuonRule(MomentumHParams(**common))}.items():
        torch.manual_seed(0)
        w = torch.nn.Parameter(torch.randn(shape, dtype=F64))
        opt = optimizer([w], rule, QUINTIC, lr=0.02, weight_decay=0.1)
        for g in gradients(shape, 5):
            w.grad = g.clone()
            opt.step()
        momentum = opt.owner_state.held[0]["whitened_momentum"] if name == "fismo" else opt.state[w]["momentum_buffer"]
        out[name] = (w.detach().clone(), momentum)
    assert torch.equal(out["fismo"][1], out["muon"][1])
    assert (out["fismo"][0] - out["muon"][0]).abs().max() <= 1e-15


def test_one_eigendecomposition_per_factor_per_refresh_and_none_between(monkeypatch):
    calls = []
    original = torch.linalg.eigh

    def counted(A, *args, **kwargs):
        calls.append(A.shape[-1])
        return original(A, *args, **kwargs)

    monkeypatch.setattr(torch.linalg, "eigh", counted)
    shape = (6, 4)
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(shape, dtype=F64))
    opt = optimizer([w], FISMORule(hparams(precondition_every=3)))
    seen = []
    for step, g in enumerate(gradients(shape, 7), start=1):
        before = held(opt)["P"]
        calls.clear()
        w.grad = g
        opt.step()
        seen.append((step, sorted(calls), not torch.equal(before, held(opt)["P"])))
    assert seen == [(1, [4, 6], True), (2, [], False), (3, [], False), (4, [4, 6], True),
                    (5, [], False), (6, [], False), (7, [4, 6], True)]


def test_a_state_dict_round_trip_continues_the_run_exactly():
    shape = (6, 4)
    uninterrupted, _, _ = run(FISMORule(hparams(precondition_every=2)), shape, steps=7)
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(shape, dtype=F64))
    opt = optimizer([w], FISMORule(hparams(precondition_every=2)))
    grads = gradients(shape, 7)
    for g in grads[:3]:  # stops between two refreshes: the step counter travels too
        w.grad = g.clone()
        opt.step()
    saved = opt.state_dict()
    assert {"fisher_p_basis", "fisher_q_log_eigenvalues", "whitened_momentum", "fisher_steps"} <= set(saved["state"][0])
    w2 = torch.nn.Parameter(w.detach().clone())
    resumed = optimizer([w2], FISMORule(hparams(precondition_every=2)))
    resumed.load_state_dict(saved)
    for g in grads[3:]:
        w2.grad = g.clone()
        resumed.step()
    assert torch.equal(w2.detach(), uninterrupted)


def test_fp32_training_state_and_a_bf16_newton_schulz_keep_fp32_factors():
    rule = FISMORule(hparams())
    transform = rule.transform(NewtonSchulz(steps=5, coefficients=(3.4445, -4.7750, 2.0315), compute_dtype=torch.bfloat16))
    entries = transform.owner_state(6, 4)
    assert {e.dtype for n, e in entries.items() if n != "fisher_steps"} == {torch.float32}
    assert entries["fisher_p_basis"].shape == (6, 6) and entries["fisher_q_basis"].shape == (4, 4)
    assert entries["whitened_momentum"].shape == (6, 4)


def test_split_qkv_gives_each_block_its_own_factors():
    """optim.orthogonalize.split=qkv: c_attn (3d x d) as q, k, v, each whitened by its own P, Q, M."""
    transform = FISMORule(hparams()).transform(SVD)
    split = SplitRows(transform, "qkv")
    entries = split.owner_state(9, 3)
    assert entries["fisher_p_basis"].shape == (3, 3, 3) and entries["whitened_momentum"].shape == (3, 3, 3)
    whole = {name: e.new("cpu").unsqueeze(0) for name, e in entries.items()}
    blocks = [{name: e.new("cpu").unsqueeze(0) for name, e in transform.owner_state(3, 3).items()} for _ in range(3)]
    for G in gradients((9, 3), 3):
        together = split(G.unsqueeze(0), whole)[0]
        apart = torch.cat([transform(block.unsqueeze(0), blocks[b])[0] for b, block in enumerate(G.split(3))])
        assert (together - apart).abs().max() <= 1e-12
    for b in range(3):  # each block's own Q (rebuilt from its eigenpairs)
        Q_whole = fismo.spectral_power(whole["fisher_q_basis"][0, b], whole["fisher_q_log_eigenvalues"][0, b].exp(), 1.0)
        Q_apart = fismo.spectral_power(*transform.factor({k: v[0] for k, v in blocks[b].items()}, "q"), 1.0)
        assert (Q_whole - Q_apart).abs().max() <= 1e-12


def test_ndim_routing_is_refused_with_one_line():
    from optim.config import compose_optim_node, optim_config

    with pytest.raises(ValueError, match=r"optim.routing=ndim puts the embeddings on 'fismo'.*use optim.routing=roles"):
        optim_config(compose_optim_node("fismo", ["optim.routing=ndim"]))


@pytest.mark.parametrize("key, value, message", [
    ("fisher_decay", 1.5, "optim.matrix.fisher_decay must be in [0, 1]"),
    ("damping", -1.0, "optim.matrix.damping must be >= 0"),
    ("damping_form", "theorem", "optim.matrix.damping_form must be one of"),
    ("statistic_scale", "none", "optim.matrix.statistic_scale must be one of"),
    ("eig_floor", 0.0, "optim.matrix.eig_floor must be in (0, 1)"),
    ("precondition_every", 0, "optim.matrix.precondition_every must be an integer >= 1"),
])
def test_bad_hyper_parameters_name_their_key(key, value, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        FISMORule(hparams(**{key: value}))
