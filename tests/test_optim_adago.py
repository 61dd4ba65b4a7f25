"""AdaGO against a float64 reference written from the paper's formula, and its invariants."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from optim.config import load_optim_config
from optim.rules.adago import AdaGORule
from optim.orthogonalized_optimizer import OrthogonalizedOptimizer
from optim.orthogonalize.from_mesh import MatrixDistribution
from optim.orthogonalize.orthogonalizer import LocalOrthogonalizer


def polar(X: torch.Tensor) -> torch.Tensor:
    U, _, Vh = torch.linalg.svd(X, full_matrices=False)
    return U @ Vh


def adago_reference(W, grads, lr, mu, gamma, eps, v0, nesterov, wd):
    """arXiv 2509.02981: m = mu m + (1-mu) g; v^2 += min(||g||, gamma)^2;
    alpha = max(eps, lr min(||g||, gamma) / v); W -= alpha sqrt(max(1, r/c)) Orth(u); decay W *= 1 - wd alpha."""
    W = W.clone()
    m = torch.zeros_like(W)
    v2 = v0**2
    rows, cols = W.shape
    for g in grads:
        m = mu * m + (1 - mu) * g
        u = (1 - mu) * g + mu * m if nesterov else m  # lerp(g, m, mu)
        clipped = min(g.norm().item(), gamma)
        v2 += clipped**2
        alpha = max(eps, lr * clipped / math.sqrt(v2))
        W = W * (1 - wd * alpha) - alpha * math.sqrt(max(1.0, rows / cols)) * polar(u)
    return W


def make(params, lr=0.05, wd=0.0, **hp):
    rule = AdaGORule(dataclasses.replace(load_optim_config("adago").rule, **hp))
    group = {"params": params, "param_names": [f"w{i}" for i in range(len(params))], "role": "matrix",
             "lr": lr, "weight_decay": wd}
    return OrthogonalizedOptimizer([group], rule, distribution=MatrixDistribution(LocalOrthogonalizer(method="svd")))


@pytest.mark.parametrize("nesterov", [True, False])
@pytest.mark.parametrize("shape", [(12, 20), (20, 12)])
def test_matches_float64_reference(shape, nesterov):
    g = torch.Generator().manual_seed(0)
    W0 = torch.randn(*shape, dtype=torch.float64, generator=g)
    # norms ~15 exceed gamma=10 on the scaled steps: the clip is exercised
    grads = [torch.randn(*shape, dtype=torch.float64, generator=g) * s for s in (0.5, 1.0, 2.0, 0.1, 1.0)]
    hp = dict(momentum=0.9, gamma=10.0, eps=1e-6, v0=0.5, nesterov=nesterov)
    p = torch.nn.Parameter(W0.clone())
    opt = make([p], lr=0.05, wd=0.1, **hp)
    for gr in grads:
        p.grad = gr.clone()
        opt.step()
    expected = adago_reference(W0, grads, 0.05, 0.9, 10.0, 1e-6, 0.5, nesterov, 0.1)
    torch.testing.assert_close(p.detach(), expected, atol=1e-12, rtol=0)


def test_invariants_floor_monotone_accumulator_and_clip():
    g = torch.Generator().manual_seed(1)
    p = torch.nn.Parameter(torch.randn(8, 16, dtype=torch.float64, generator=g))
    gamma, floor = 2.0, 1e-3
    opt = make([p], lr=1e-2, gamma=gamma, eps=floor, v0=1.0)
    previous = opt.state[p]["accumulator"].item()
    assert previous == 1.0  # v0^2
    for scale in (100.0, 0.01, 5.0, 1e-4, 50.0, 1.0):
        grad = torch.randn(8, 16, dtype=torch.float64, generator=g) * scale
        p.grad = grad
        opt.step()
        acc = opt.state[p]["accumulator"].item()
        increment = acc - previous
        assert increment >= 0  # monotone
        assert increment <= gamma**2 + 1e-12  # clip respected
        assert increment == pytest.approx(min(grad.norm().item(), gamma) ** 2, rel=1e-12)
        alpha = opt.diagnostics()["adago/alpha_mean"]
        assert alpha >= floor  # never below the floor
        previous = acc
    # tiny gradients: the floor is the step
    p.grad = torch.full_like(p, 1e-12)
    opt.step()
    assert opt.diagnostics()["adago/alpha_mean"] == pytest.approx(floor)
