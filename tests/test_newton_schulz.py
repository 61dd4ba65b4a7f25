"""Newton-Schulz / SVD orthogonalization (optim/newton_schulz.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from optim.orthogonalize.newton_schulz import (
    NS_COEFFICIENTS,
    newton_schulz_flops,
    orthogonalize,
)
from optim.dtypes import auto_dtype, resolve_dtype


def quintic_map(x: np.ndarray, steps: int = 5) -> np.ndarray:
    a, b, c = NS_COEFFICIENTS
    for _ in range(steps):
        x = a * x + b * x**3 + c * x**5
    return x


def with_singular_values(rows: int, cols: int, sigma: torch.Tensor, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    k = min(rows, cols)
    U, _ = torch.linalg.qr(torch.randn(rows, k, generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(cols, k, generator=g, dtype=torch.float64))
    return (U * sigma) @ V.T


def muon_reference(G: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """Keller Jordan's zeropower_via_newtonschulz5, kept in fp32 (transpose form)."""
    a, b, c = NS_COEFFICIENTS
    X = G.float()
    tall = G.size(-2) > G.size(-1)
    if tall:
        X = X.mT
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + 1e-7)
    for _ in range(steps):
        A = X @ X.mT
        X = a * X + (b * A + c * A @ A) @ X
    return X.mT if tall else X


# The scalar quintic applied 5 times maps every normalized singular value in [0.01, 1] into
# [0.6818, 1.1344] (dense evaluation of the map; [0.002, 1] -> [0.6818, 1.2024]). NS acts on
# singular values only, so the output's singular values must lie in that band.
BAND = (0.6818, 1.1344)


@pytest.mark.parametrize("shape", [(24, 40), (40, 24), (32, 32)])
def test_singular_values_follow_the_quintic_map_and_stay_in_band(shape):
    k = min(shape)
    sigma = torch.logspace(0, -1.2, k, dtype=torch.float64)  # normalized values ~[0.017, 0.27]
    X = with_singular_values(*shape, sigma, seed=0)
    normalized = (sigma / sigma.norm()).numpy()
    assert normalized.min() >= 0.01
    out = orthogonalize(X.float()).double()
    s_out = torch.linalg.svdvals(out).numpy()
    expected = np.sort(quintic_map(normalized))[::-1]
    np.testing.assert_allclose(s_out, expected, atol=2e-5)
    assert BAND[0] - 1e-4 <= s_out.min() and s_out.max() <= BAND[1] + 1e-4


def test_random_gaussian_matrix_lands_in_band():
    # Gaussian 64x256: singular values of the normalized input are all far above 0.01.
    X = torch.randn(64, 256, generator=torch.Generator().manual_seed(1))
    s = torch.linalg.svdvals(orthogonalize(X))
    assert BAND[0] - 1e-4 <= s.min() and s.max() <= BAND[1] + 1e-4


@pytest.mark.parametrize("shape", [(16, 32), (32, 16), (24, 24)])
def test_matches_keller_jordan_reference(shape):
    X = torch.randn(*shape, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(orthogonalize(X), muon_reference(X), atol=2e-6, rtol=0)


@pytest.mark.parametrize("shape", [(12, 20), (20, 12)])
def test_svd_mode_is_polar_factor(shape):
    X = torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    U, _, Vh = torch.linalg.svd(X, full_matrices=False)
    out = orthogonalize(X, method="svd")
    torch.testing.assert_close(out, U @ Vh, atol=1e-12, rtol=0)
    k = min(shape)
    torch.testing.assert_close(torch.linalg.svdvals(out), torch.ones(k, dtype=torch.float64), atol=1e-12, rtol=0)


@pytest.mark.parametrize("shape", [(3, 16, 40), (3, 40, 16)])
def test_batched_equals_unbatched_with_per_matrix_norm(shape):
    X = torch.randn(*shape, generator=torch.Generator().manual_seed(4))
    X[1] *= 100.0  # each matrix normalized by its own norm
    batched = orthogonalize(X)
    for i in range(shape[0]):
        torch.testing.assert_close(batched[i], orthogonalize(X[i]), atol=1e-6, rtol=0)


def test_dtype_preserved_input_untouched_and_bf16_close():
    X = torch.randn(16, 48, generator=torch.Generator().manual_seed(5))
    before = X.clone()
    out32 = orthogonalize(X)
    assert out32.dtype == torch.float32 and torch.equal(X, before)
    out16 = orthogonalize(X, compute_dtype=torch.bfloat16)
    assert out16.dtype == torch.float32
    assert (out16 - out32).abs().max() < 0.05  # bf16 iteration: ~1e-2 absolute
    assert orthogonalize(X.double()).dtype == torch.float64


def test_default_compute_dtype_and_flops():
    assert auto_dtype("cpu") == torch.float32 == resolve_dtype("auto", "cpu", "k")
    assert auto_dtype("cuda") == torch.bfloat16 == resolve_dtype("auto", "cuda", "k")
    with pytest.raises(ValueError, match="optim.orthogonalize.compute_dtype"):
        resolve_dtype("fp8", "cpu", "optim.orthogonalize.compute_dtype")
    # m=2, n=3: per step X X^T 2*4*3, A A 2*8, B X 2*4*3 -> 64; 5 steps 320; orientation-free.
    assert newton_schulz_flops(2, 3, 5) == 320 == newton_schulz_flops(3, 2, 5)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="steps"):
        orthogonalize(torch.randn(4, 4), steps=0)
    with pytest.raises(ValueError, match="method"):
        orthogonalize(torch.randn(4, 4), method="qr")
    with pytest.raises(ValueError, match="matrix"):
        orthogonalize(torch.randn(4))
