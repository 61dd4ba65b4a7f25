"""The spectral power transform Ψ_p (optim/orthogonalize/spectral_power.py) against the exact SVD.

The authors' coupled iteration is not the exact power (a trace-relative ridge, Frobenius scaling,
15 iterations: OPTIMIZERS_FAMILY.md §1.4): the bands below are what it reaches, measured here, on a
well-conditioned and an ill-conditioned input. p = 0 is Muon's Newton-Schulz (times the shape factor),
p = 1 the identity; q, k, v blocks are transformed separately when asked; a stack equals its members.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from optim.build import matrix_transform
from optim.config import load_optim_config
from optim.orthogonalize.from_mesh import MatrixDistribution
from optim.orthogonalize.orthogonalizer import LocalOrthogonalizer
from optim.orthogonalize.newton_schulz import orthogonalize
from optim.orthogonalize.spectral_power import SpectralPower, svd_power
from optim.orthogonalize.split import SplitRows
from optim.orthogonalized_optimizer import OrthogonalizedOptimizer
from optim.registry import OPTIMIZERS

AUTHORS = dict(iters=15, ridge_eps=1e-6, ridge_trace=1e-4, symmetrize_every=5, compute_dtype=torch.float64)


def matrix(rows: int, cols: int, decades: float, seed: int = 0) -> torch.Tensor:
    """A rows x cols float64 matrix with singular values log-spaced over ``decades`` decades."""
    g = torch.Generator().manual_seed(seed)
    U, _ = torch.linalg.qr(torch.randn(rows, min(rows, cols), generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(cols, min(rows, cols), generator=g, dtype=torch.float64))
    S = torch.logspace(0, -decades, min(rows, cols), dtype=torch.float64)
    return (U * S) @ V.T


def rel_error(power: float, X: torch.Tensor) -> float:
    got = SpectralPower(power=power, **AUTHORS)(X.unsqueeze(0))[0]
    exact = svd_power(X, power)
    return ((got - exact).norm() / exact.norm()).item()


@pytest.mark.parametrize("shape", [(96, 32), (32, 96), (64, 64)])
@pytest.mark.parametrize("power,well,ill", [(0.5, 1e-2, 0.06), (0.25, 2e-2, 0.12)])
def test_fractional_powers_are_close_to_the_svd_power(shape, power, well, ill):
    # measured: well-conditioned (1 decade) 0.1-0.6% (p=1/2), ill-conditioned (4 decades) 1-5% / 3-10%
    assert rel_error(power, matrix(*shape, decades=1)) < well
    assert rel_error(power, matrix(*shape, decades=4)) < ill
    # and it is not the exact power (the ridge lifts the small singular values)
    assert rel_error(power, matrix(*shape, decades=4)) > 1e-4


def test_singular_values_of_the_half_power():
    X = matrix(64, 32, decades=2)
    got = torch.linalg.svdvals(SpectralPower(power=0.5, **AUTHORS)(X.unsqueeze(0))[0])
    exact = torch.linalg.svdvals(X).sqrt()
    assert ((got[0] - exact[0]) / exact[0]).abs() < 5e-3  # the top singular value within 0.5%
    assert (got / exact).min() > 0.5 and (got / exact).max() < 1.05


def test_p1_is_the_identity_and_p0_is_muons_newton_schulz():
    X = matrix(48, 16, decades=1).float()
    assert torch.equal(SpectralPower(power=1.0, **AUTHORS)(X.unsqueeze(0))[0], X)
    p0 = SpectralPower(**{**AUTHORS, "power": 0.0, "iters": 5, "compute_dtype": torch.float32})
    assert torch.allclose(p0(X.unsqueeze(0))[0], orthogonalize(X, 5) * 3**0.5, atol=0, rtol=0)


def test_qkv_blocks_are_transformed_separately_and_a_stack_equals_its_members():
    X = torch.stack([matrix(48, 16, decades=1, seed=s) for s in range(3)])
    whole = SpectralPower(power=0.5, **AUTHORS)
    split = SplitRows(whole, "qkv")  # optim.orthogonalize.split=qkv, the spectral YAMLs' default
    out = split(X)
    for b in range(3):
        for block in range(3):
            rows = slice(16 * block, 16 * (block + 1))
            assert torch.allclose(out[b, rows], whole(X[b, rows].unsqueeze(0))[0], rtol=1e-12, atol=1e-14)
        assert torch.allclose(out[b], split(X[b].unsqueeze(0))[0], rtol=1e-12, atol=1e-14)
    assert split.flops(48, 16) == 3 * whole.flops(16, 16)


def test_spectral_momentum_at_p0_is_muon_without_nesterov():
    """SGD's momentum sum is (1-mu)^-1 times Muon's average; Newton-Schulz is scale-invariant."""
    g = torch.Generator().manual_seed(0)
    shapes = [(16, 32), (32, 16), (24, 24)]
    init = [torch.randn(*s, generator=g) for s in shapes]
    grads = [[torch.randn(*s, generator=g) for s in shapes] for _ in range(4)]
    finals = []
    for name, overrides in [("muon", {"nesterov": False}), ("spectral_msgd", {"power": 0.0, "momentum": 0.95})]:
        # fp32 pinned: the 2e-6 below is an fp32 tolerance, and auto is bf16 on AMX / AVX512-BF16 CPUs
        config = load_optim_config(name, ["optim.orthogonalize.steps=5", "optim.orthogonalize.compute_dtype=float32"])
        rule = OPTIMIZERS[name].rule(dataclasses.replace(config.rule, **overrides))
        params = [torch.nn.Parameter(x.clone()) for x in init]
        group = {"params": params, "param_names": ["a", "b", "c"], "role": "matrix", "lr": 0.02, "weight_decay": 0.1}
        transform = matrix_transform(rule, config.orthogonalize, torch.device("cpu"))
        opt = OrthogonalizedOptimizer([group], rule, distribution=MatrixDistribution(LocalOrthogonalizer(transform=transform)))
        for step in grads:
            for p, gr in zip(params, step):
                p.grad = gr.clone()
            opt.step()
        finals.append(params)
    for a, b in zip(*finals):
        assert (a - b).abs().max() < 2e-6


def test_exact_svd_mode_is_the_svd_power():
    X = matrix(48, 16, decades=3)
    for power, factor in ((0.5, 1.0), (0.25, 1.0), (0.0, 3**0.5)):  # p = 0 keeps its sqrt(rows/cols)
        exact = SpectralPower(**{**AUTHORS, "power": power, "method": "svd"})(X.unsqueeze(0))[0]
        assert torch.allclose(exact, svd_power(X, power) * factor, rtol=0, atol=1e-12)
    assert torch.allclose(torch.linalg.svdvals(svd_power(X, 0.5)) ** 2, torch.linalg.svdvals(X), rtol=1e-10)
