"""The paper-exact variants, each against a float64 reference written from its formula.

- AdaGO ``shape_scaling: none``: the paper's update, no shape factor (tall matrices included);
- NorMuon ``rescale: paper``: eta^ = 0.2 lr sqrt(mn) / ||O^||_F with O^ the row-normalized O;
- NAMO-D ``clamp_c: null``: the authors' "no clamp";
- ``optim.adamw.impl: namo_repo``: the NAMO repo's auxiliary AdamW (eps on the uncorrected sqrt(v)),
  in the AdamW groups of an orthogonalized optimizer and as ``optim=adamw``.
The orthogonalization is the exact polar factor (method svd) so the references need no NS.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from optim.adamw import NAMORepoAdamW
from optim.adamw import AdamWHParams
from optim.config import load_optim_config
from optim.orthogonalize.from_mesh import MatrixDistribution
from optim.orthogonalize.orthogonalizer import LocalOrthogonalizer
from optim.orthogonalized_optimizer import OrthogonalizedOptimizer
from optim.registry import registry_entry


def polar(X: torch.Tensor) -> torch.Tensor:
    U, _, Vh = torch.linalg.svd(X, full_matrices=False)
    return U @ Vh


def nesterov(m, g, mu):
    m = mu * m + (1 - mu) * g
    return m, (1 - mu) * g + mu * m


def make(name, params, lr, wd=0.0, adamw=None, extra_groups=(), **hp):
    rule = registry_entry(name).rule(dataclasses.replace(load_optim_config(name).rule, **hp))
    groups = [{"params": params, "param_names": [f"w{i}" for i in range(len(params))], "role": "matrix",
               "lr": lr, "weight_decay": wd}, *extra_groups]
    return OrthogonalizedOptimizer(groups, rule, adamw=adamw,
                                   distribution=MatrixDistribution(LocalOrthogonalizer(method="svd")))


def run(opt, p, grads):
    for g in grads:
        p.grad = g.clone()
        opt.step()
    return p.detach()


def data(shape, steps=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    W0 = torch.randn(*shape, dtype=torch.float64, generator=gen)
    return W0, [torch.randn(*shape, dtype=torch.float64, generator=gen) * s for s in (0.5, 1.0, 2.0, 0.3)[:steps]]


@pytest.mark.parametrize("shape", [(24, 8), (8, 24)])
def test_adago_paper_update_has_no_shape_factor(shape):
    W0, grads = data(shape)
    lr, mu, gamma, eps, v0 = 0.05, 0.95, 10.0, 1e-6, 0.5
    W, m, v2 = W0.clone(), torch.zeros_like(W0), v0**2
    for g in grads:
        m, u = nesterov(m, g, mu)
        clipped = min(g.norm().item(), gamma)
        v2 += clipped**2
        W = W - max(eps, lr * clipped / math.sqrt(v2)) * polar(u)      # the paper: no factor at all
    p = torch.nn.Parameter(W0.clone())
    got = run(make("adago", [p], lr, shape_scaling="none", momentum=mu, gamma=gamma, eps=eps, v0=v0), p, grads)
    torch.testing.assert_close(got, W, rtol=1e-12, atol=1e-12)
    if shape[0] > shape[1]:  # the default ("original") differs exactly there: x sqrt(rows/cols) on tall ones
        q = torch.nn.Parameter(W0.clone())
        other = run(make("adago", [q], lr, shape_scaling="original", momentum=mu, gamma=gamma, eps=eps, v0=v0),
                    q, grads)
        assert (other - W).abs().max() > 1e-3


@pytest.mark.parametrize("shape", [(24, 8), (8, 24)])
def test_normuon_paper_rescale(shape):
    W0, grads = data(shape)
    lr, mu, beta2, wd = 0.02, 0.95, 0.95, 0.1
    rows, cols = shape
    W, m, V = W0.clone(), torch.zeros_like(W0), torch.zeros(rows, 1, dtype=torch.float64)
    for g in grads:
        m, u = nesterov(m, g, mu)
        O = polar(u)
        V = beta2 * V + (1 - beta2) * O.square().mean(1, keepdim=True)
        O_hat = O / (V.sqrt() + 1e-10)
        eta_hat = 0.2 * lr * math.sqrt(rows * cols) / O_hat.norm()
        W = W * (1 - lr * wd) - eta_hat * O_hat
    p = torch.nn.Parameter(W0.clone())
    got = run(make("normuon", [p], lr, wd, rescale="paper", momentum=mu, beta2=beta2, scale_coeff=0.2), p, grads)
    torch.testing.assert_close(got, W, rtol=1e-10, atol=1e-10)
    # the update RMS is 0.2 lr by construction (AdamW-like), whatever the shape
    q = torch.nn.Parameter(W0.clone())
    opt = make("normuon", [q], lr, 0.0, rescale="paper", momentum=mu, beta2=beta2, scale_coeff=0.2)
    q.grad = grads[0].clone()
    opt.step()
    assert (q.detach() - W0).square().mean().sqrt().item() == pytest.approx(0.2 * lr, rel=1e-9)


def test_namo_d_without_clamp():
    W0, grads = data((16, 12))
    lr, mu, mu2, eps, wd, coeff = 0.01, 0.95, 0.99, 1e-8, 0.1, 0.2
    rows, cols = W0.shape
    W, m, V = W0.clone(), torch.zeros_like(W0), torch.zeros(cols, dtype=torch.float64)
    for t, g in enumerate(grads, start=1):
        V = mu2 * V + (1 - mu2) * g.square().sum(0)
        m, u = nesterov(m, g, mu)
        s = u.norm(dim=0) / (V.sqrt() + eps)                        # no clamp toward the mean
        base = lr * math.sqrt(1 - mu2**t) / (1 - mu**t + 1e-12)
        W = W * (1 - wd * (s * base).clamp(max=1)).clamp(min=0)
        W = W - (s * base * coeff * math.sqrt(max(rows, cols))).clamp(max=1) * polar(u)
    p = torch.nn.Parameter(W0.clone())
    opt = make("namo_d", [p], lr, wd, clamp_c=None, momentum=mu, mu2=mu2, eps=eps, scale_coeff=coeff)
    torch.testing.assert_close(run(opt, p, grads), W, rtol=1e-12, atol=1e-12)
    assert opt.diagnostics()["namo_d/clamp_hit_fraction"] == 0.0
    q = torch.nn.Parameter(W0.clone())  # and a tight clamp really changes the result
    tight = make("namo_d", [q], lr, wd, clamp_c=0.99, momentum=mu, mu2=mu2, eps=eps, scale_coeff=coeff)
    assert (run(tight, q, grads) - W).abs().max() > 1e-6
    assert tight.diagnostics()["namo_d/clamp_hit_fraction"] > 0.5


def namo_repo_adamw_reference(W0, grads, lr, betas, eps, wd):
    W, m, v = W0.clone(), torch.zeros_like(W0), torch.zeros_like(W0)
    for t, g in enumerate(grads, start=1):
        m = betas[0] * m + (1 - betas[0]) * g
        v = betas[1] * v + (1 - betas[1]) * g * g
        W = W * (1 - lr * wd) - lr * math.sqrt(1 - betas[1]**t) / (1 - betas[0]**t) * m / (v.sqrt() + eps)
    return W


@pytest.mark.parametrize("where", ["orthogonalized_groups", "optim_adamw"])
def test_namo_repo_adamw(where):
    W0, grads = data((10, 6))
    lr, betas, eps, wd = 3e-3, (0.9, 0.95), 1e-3, 0.1   # a large eps: the two conventions differ visibly
    expected = namo_repo_adamw_reference(W0, grads, lr, betas, eps, wd)
    emb = torch.nn.Parameter(W0.clone())
    group = {"params": [emb], "param_names": ["wte"], "role": "embedding", "lr": lr, "weight_decay": wd}
    if where == "optim_adamw":
        opt = NAMORepoAdamW([group], betas, eps)
    else:
        matrix = torch.nn.Parameter(torch.randn(6, 6, dtype=torch.float64))
        opt = make("namo", [matrix], 0.01, adamw=AdamWHParams(betas, eps, "namo_repo"), extra_groups=[group])
    torch.testing.assert_close(run(opt, emb, grads), expected, rtol=1e-12, atol=1e-12)
    torch_way = torch.nn.Parameter(W0.clone())
    torch_opt = torch.optim.AdamW([torch_way], lr=lr, betas=betas, eps=eps, weight_decay=wd)
    assert (run(torch_opt, torch_way, grads) - expected).abs().max() > 1e-6


def test_bad_variant_values_are_named():
    with pytest.raises(ValueError, match="optim.matrix.rescale"):
        make("normuon", [torch.nn.Parameter(torch.zeros(4, 4))], 0.02, rescale="papr")
    with pytest.raises(ValueError, match="optim.matrix.clamp_c"):
        make("namo_d", [torch.nn.Parameter(torch.zeros(4, 4))], 0.01, clamp_c=0.0)
    with pytest.raises(ValueError, match="optim.matrix.shape_scaling"):
        make("adago", [torch.nn.Parameter(torch.zeros(4, 4))], 0.01, shape_scaling="nothing")
    with pytest.raises(ValueError, match="optim.adamw.impl"):
        AdamWHParams((0.9, 0.95), 1e-8, "namo")
