"""Own Muon equals torch.optim.Muon with the same settings on random problems."""

from __future__ import annotations

import pytest
import torch
import torch.optim._muon as torch_muon

from optim.orthogonalized_optimizer import OrthogonalizedOptimizer
from optim.rules.base import MomentumHParams
from optim.rules.muon import MuonRule
from optim.orthogonalize.from_mesh import MatrixDistribution
from optim.orthogonalize.orthogonalizer import LocalOrthogonalizer

SHAPES = [(16, 40), (40, 16), (24, 24)]


def torch_ns_fp32(grad, ns_coefficients, ns_steps, eps):
    """torch's _zeropower_via_newtonschulz with its bf16 cast replaced by fp32 (nothing else changed)."""
    a, b, c = ns_coefficients
    X = grad.float()
    if grad.size(0) > grad.size(1):
        X = X.T
    X = X.div(X.norm().clamp(min=eps))
    for _ in range(ns_steps):
        gram = X @ X.T
        X = torch.addmm(X, torch.addmm(gram, gram, gram, beta=b, alpha=c), X, beta=a)
    return X.T if grad.size(0) > grad.size(1) else X


def run_both(adjust, nesterov, weight_decay, compute_dtype, steps=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    init = [torch.randn(*s, generator=g) for s in SHAPES]
    grads = [[torch.randn(*s, generator=g) for s in SHAPES] for _ in range(steps)]
    ours = [torch.nn.Parameter(x.clone()) for x in init]
    theirs = [torch.nn.Parameter(x.clone()) for x in init]
    lr, momentum = 0.02, 0.9
    rule = MuonRule(MomentumHParams(momentum=momentum, nesterov=nesterov, shape_scaling=adjust, scale_coeff=0.2))
    group = {"params": ours, "param_names": ["a", "b", "c"], "role": "matrix", "lr": lr, "weight_decay": weight_decay}
    opt = OrthogonalizedOptimizer([group], rule, distribution=MatrixDistribution(LocalOrthogonalizer(compute_dtype=compute_dtype)))
    ref = torch.optim.Muon(theirs, lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov, adjust_lr_fn=adjust)
    for step_grads in grads:
        for p, q, gr in zip(ours, theirs, step_grads):
            p.grad, q.grad = gr.clone(), gr.clone()
        opt.step()
        ref.step()
    return init, ours, theirs


@pytest.mark.parametrize("adjust", ["original", "match_rms_adamw"])
@pytest.mark.parametrize("nesterov", [True, False])
def test_equals_torch_muon_fp32(monkeypatch, adjust, nesterov):
    monkeypatch.setattr(torch_muon, "_zeropower_via_newtonschulz", torch_ns_fp32)
    _, ours, theirs = run_both(adjust, nesterov, weight_decay=0.1, compute_dtype=torch.float32)
    for p, q in zip(ours, theirs):
        torch.testing.assert_close(p, q, atol=2e-6, rtol=0)


def test_equals_torch_muon_bf16_unpatched():
    # torch's own bf16 Newton-Schulz vs ours in bf16: equal up to bf16 rounding of the step.
    init, ours, theirs = run_both("original", True, weight_decay=0.1, compute_dtype=torch.bfloat16)
    for x, p, q in zip(init, ours, theirs):
        step_ours, step_theirs = p.detach() - x, q.detach() - x
        assert (step_ours - step_theirs).norm() / step_theirs.norm() < 2e-2
