"""ARO-Sinkhorn (optim/orthogonalize/rotated.py, optim/rules/aro.py) by the properties of its math:
no authors' code exists to take vectors from (arXiv 2602.09006). Dtypes pinned; fp64 where tight.

    R orthogonal to 1e-6 (fp32, the owner's dtype) after many steps
    the QR's sign convention changes neither the update nor the next rotation (up to its signs)
    with the row-norm base map the update tends to sqrt(l) U V^T as the rotation converges
    SR-Sinkhorn hits its targets; the step's RMS is 0.2 lr under the paper's scaling
    Design 3 rotates GPT-2's residual side; a wide matrix is the transpose of a tall one
"""

from __future__ import annotations

import math

import pytest
import torch

from optim.orthogonalize.orthogonalizer import LocalOrthogonalizer
from optim.orthogonalize.from_mesh import MatrixDistribution
from optim.orthogonalize.rotated import (RotatedTransform, aro_step, base_map, householder_q, row_norm,
                                         shifted_cholesky_q, sr_sinkhorn)
from optim.orthogonalized_optimizer import OrthogonalizedOptimizer
from optim.rules.aro import AROHParams, ARORule

BASE_MAPS = ("sinkhorn", "row_norm", "sign")


def hparams(**overrides) -> AROHParams:
    values = dict(momentum=0.95, nesterov=False, base_map="sinkhorn", sinkhorn_iters=5, sinkhorn_eps=1e-8,
                  null_tol=1e-4, qr="householder", qr_shift=1e-7, rotated_side="residual", scaling="rms", scale_coeff=0.2)
    return AROHParams(**{**values, **overrides})


def momentum(rows, cols, dtype=torch.float64, seed=0, batch=2):
    return torch.randn(batch, rows, cols, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def optimizer(param: torch.nn.Parameter, lr=0.01, weight_decay=0.0, **overrides):
    rule = ARORule(hparams(**overrides))
    distribution = MatrixDistribution(LocalOrthogonalizer(transform=rule.transform(None)))
    group = {"params": [param], "param_names": ["w"], "role": "matrix", "lr": lr, "weight_decay": weight_decay}
    return OrthogonalizedOptimizer([group], rule, distribution=distribution)


# shifted_cholesky is CholeskyQR3: ONE shifted pass in fp32 squares the condition number of M D^T and
# leaves 1.1e-4 (24 x 40) and 0.27 (32 x 32) here (measured), the two plain passes after it bring it to rounding
@pytest.mark.parametrize("qr, tol", [("householder", 1e-6), ("shifted_cholesky", 1e-6)])
@pytest.mark.parametrize("shape", [(24, 40), (40, 24), (32, 32)])
def test_rotation_stays_orthogonal_in_fp32(shape, qr, tol):
    transform = RotatedTransform(qr=qr)
    k = transform.rotated_size(*shape)
    state = {"rotation": torch.eye(k).repeat(2, 1, 1)}
    M = momentum(*shape, dtype=torch.float32)
    for step in range(30):  # a slowly drifting momentum, as in training
        M = 0.95 * M + 0.05 * momentum(*shape, dtype=torch.float32, seed=step + 1)
        transform(M, state)
    R = state["rotation"]
    assert R.dtype == torch.float32 and R.shape == (2, k, k)
    defect = (R.mT @ R - torch.eye(k)).abs().max().item()
    assert defect <= tol, f"{qr}: R^T R - I = {defect:.1e}"


def flipped(q, signs):
    """The QR with another sign convention: Q D (D = diag(signs) per matrix)."""
    return lambda A: q(A) * signs[:, None, :]


@pytest.mark.parametrize("name", BASE_MAPS)
def test_the_qr_sign_convention_changes_neither_the_update_nor_the_next_rotation(name):
    M1, M2 = momentum(12, 20, seed=1), momentum(12, 20, seed=2)
    f = base_map(name)
    signs = torch.tensor([1.0, -1.0], dtype=torch.float64).repeat(2, 6)[:, :12]
    R0 = torch.eye(12, dtype=torch.float64).repeat(2, 1, 1)
    O1, R1 = aro_step(M1, R0, f, householder_q)
    O1_flip, R1_flip = aro_step(M1, R0, f, flipped(householder_q, signs))
    assert torch.allclose(R1_flip, R1 * signs[:, None, :], atol=1e-12)  # really another convention
    assert (O1_flip - O1).abs().max().item() <= 1e-12
    O2, R2 = aro_step(M2, R1, f, householder_q)  # the next step from either rotation
    O2_flip, R2_flip = aro_step(M2, R1_flip, f, householder_q)
    assert (O2_flip - O2).abs().max().item() <= 1e-12
    # the next rotation: the same up to the signs of its columns
    assert ((R2_flip.mT @ R2).abs() - torch.eye(12, dtype=torch.float64)).abs().max().item() <= 1e-12


def test_with_the_row_norm_map_the_update_tends_to_the_polar_factor():
    """R_t is then an orthogonal iteration on M M^T: it converges to M's left singular vectors and
    O = R f(R^T M) to sqrt(l) U V^T (Muon's direction, exact)."""
    k, l = 10, 16
    gen = torch.Generator().manual_seed(3)
    U = torch.linalg.qr(torch.randn(k, k, generator=gen, dtype=torch.float64)).Q
    V = torch.linalg.qr(torch.randn(l, k, generator=gen, dtype=torch.float64)).Q
    M = (U * 1.3 ** -torch.arange(k, dtype=torch.float64)) @ V.mT  # singular values 1.3^-i: gaps of 1.69 per step
    polar = math.sqrt(l) * U @ V.mT
    f = lambda X: row_norm(X, 1e-30)  # noqa: E731
    R = torch.eye(k, dtype=torch.float64)[None]
    errors = []
    for _ in range(80):
        O, R = aro_step(M[None], R, f, householder_q)
        errors.append((O[0] - polar).abs().max().item() / math.sqrt(l))
    assert errors[0] > 1e-2  # the first step is not yet the polar factor
    assert errors[-1] <= 1e-9 and errors[40] < errors[10] < errors[0]


def sinkhorn_by_rescaling(X, iters, eps, null_tol):
    """SR-Sinkhorn as written: X rescaled at every half-step (rows, then columns), null rows and
    columns of the first pass (norm <= null_tol ||X||_F) set to zero."""
    k, l = X.shape[-2:]
    for i in range(iters):
        for dim, target in ((-1, math.sqrt(l)), (-2, math.sqrt(k))):
            norms = X.norm(dim=dim, keepdim=True)
            floor = (null_tol if i == 0 else 0.0) * X.norm(dim=(-2, -1), keepdim=True)
            X = X * torch.where(norms > floor, target / norms.clamp(min=eps), torch.zeros((), dtype=X.dtype))
    return X


@pytest.mark.parametrize("null_tol", [0.0, 1e-4])
def test_sr_sinkhorn_by_its_scalings_equals_rescaling_at_every_half_step(null_tol):
    X = momentum(24, 40, batch=3) * 1e-3
    X[0, 5] *= 1e-9  # a null row
    X[1, :, 7] = 0.0  # a zero column
    assert (sr_sinkhorn(X, 5, 1e-8, null_tol) - sinkhorn_by_rescaling(X, 5, 1e-8, null_tol)).abs().max().item() <= 1e-12


def test_sr_sinkhorn_meets_its_targets():
    X = sr_sinkhorn(momentum(12, 30, batch=1)[0], iters=50, eps=1e-30)
    assert torch.allclose(X.norm(dim=0), torch.full((30,), math.sqrt(12), dtype=torch.float64), atol=1e-12)
    assert torch.allclose(X.norm(dim=1), torch.full((12,), math.sqrt(30), dtype=torch.float64), atol=1e-6)
    X5 = sr_sinkhorn(momentum(12, 30, batch=1)[0], iters=5, eps=1e-8)  # the last half-step is the columns'
    assert X5.square().mean().item() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("shape", [(24, 40), (40, 24)])
def test_the_step_rms_is_0_2_lr_under_the_paper_scaling_and_dions_factor_otherwise(shape):
    for scaling, expected in (("rms", 0.2 * 0.01), ("match_rms_adamw", 0.2 * 0.01 * math.sqrt(max(shape)))):
        torch.manual_seed(0)
        param = torch.nn.Parameter(torch.randn(*shape, dtype=torch.float64))
        opt = optimizer(param, lr=0.01, scaling=scaling)
        for _ in range(3):
            before = param.detach().clone()
            param.grad = torch.randn_like(param)
            opt.step()
            rms = (param.detach() - before).square().mean().sqrt().item()
            assert rms == pytest.approx(expected, rel=1e-9), scaling


def test_design_3_rotates_the_residual_side_and_a_wide_matrix_is_a_transposed_tall_one():
    residual, rows = RotatedTransform(), RotatedTransform(rotated_side="rows")
    for shape in ((2304, 768), (768, 768), (3072, 768), (768, 3072)):  # GPT-2 124M: always the 768 side
        assert residual.owner_state(*shape)["rotation"].shape == (768, 768)
    assert rows.owner_state(3072, 768)["rotation"].shape == (3072, 3072)
    M = momentum(20, 12)
    state_tall, state_wide = {"rotation": torch.eye(12).repeat(2, 1, 1)}, {"rotation": torch.eye(12).repeat(2, 1, 1)}
    tall = residual(M, state_tall)  # rotates its 12 columns
    wide = rows(M.mT.contiguous(), state_wide)  # the same matrix as its transpose, rows rotated
    assert torch.allclose(tall, wide.mT, atol=1e-12) and torch.equal(state_tall["rotation"], state_wide["rotation"])


def test_the_first_step_from_identity_is_the_base_map_of_the_rotated_momentum():
    """A hand-checkable case: from R = I the rule steps -lr 0.2 Q f(Q^T M) / RMS, Q = QR(M f(M)^T)."""
    torch.manual_seed(1)
    param = torch.nn.Parameter(torch.randn(12, 20, dtype=torch.float64))
    G = torch.randn(12, 20, dtype=torch.float64)
    opt = optimizer(param, lr=0.1, weight_decay=0.5)
    start = param.detach().clone()
    param.grad = G.clone()
    opt.step()
    M = 0.05 * G  # EMA from zero
    f = base_map("sinkhorn")
    Q = torch.linalg.qr(M @ f(M).mT).Q
    O = Q @ f(Q.mT @ M)
    expected = start * (1 - 0.1 * 0.5) - 0.1 * 0.2 * O / O.square().mean().sqrt()
    assert (param.detach() - expected).abs().max().item() <= 1e-12
    R = opt.owner_state.held[0]["rotation"]
    assert (R.double() - Q).abs().max().item() <= 1e-6  # kept in fp32 on the owner


def test_shifted_cholesky_q_equals_householder_up_to_signs_on_a_well_conditioned_matrix():
    A = momentum(16, 16, batch=3) + 4 * torch.eye(16, dtype=torch.float64)
    Q1, Q2 = householder_q(A), shifted_cholesky_q(A, 1e-15)
    assert ((Q1.mT @ Q2).abs() - torch.eye(16, dtype=torch.float64)).abs().max().item() <= 1e-9


def test_a_null_direction_of_the_momentum_gets_no_update_and_no_rounding_noise():
    """Pre-LN GPT-2: 1^T M = 0 on every producer's rotated side (rotated.py NULL_DIRECTIONS). With
    null_tol its row of R^T M stays zero (the update has no component along 1, as in exact arithmetic)
    and a rounding-size perturbation of M moves the update by rounding; with the plain clamp (dion's)
    fp32 rounding in that row is blown up into noise along 1."""
    gen = torch.Generator().manual_seed(5)
    M = torch.randn(2, 16, 40, generator=gen) * 1e-3
    M = M - M.mean(dim=1, keepdim=True)  # mean-free columns: 1^T M = 0
    noise = torch.randn(M.shape, generator=gen) * 1e-7 * M.abs().max()
    ones = torch.ones(16) / 4.0
    for null_tol, clean in ((1e-4, True), (0.0, False)):
        transform = RotatedTransform(null_tol=null_tol)
        out = []
        for m in (M, M + noise):
            state = {"rotation": torch.eye(16).repeat(2, 1, 1)}
            for _ in range(3):
                O = transform(m, state)
            out.append(O)
        along_ones = (ones @ out[0]).norm() / out[0].norm()
        moved = (out[1] - out[0]).abs().max().item()
        if clean:
            assert along_ones <= 1e-5 and moved <= 1e-3, (along_ones, moved)
        else:
            assert along_ones > 1e-2 and moved > 1e-2, (along_ones, moved)
