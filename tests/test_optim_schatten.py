"""Adaptive Schatten-p (arXiv 2605.19781, a reading of the paper; no authors' code): property tests.

The coefficient solver's fit, the transform's limits (p = 1: the normalized momentum; large p: Muon),
the composed map on singular values, the criterion's argmax on constructed spectra (by hand), the
forward hooks feeding it, and sharded W = 2 / W = 4 steps equal to one process with the activation
all-reduce on (and wrong without it). fp64 where the tolerance is tight.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn as nn

from optim.config import load_optim_config
from optim.orthogonalize.newton_schulz import NS_EPS, orthogonalize
from optim.orthogonalize.schatten_power import (SchattenNewtonSchulz, composed_map, decode_grid_index, encode_grid_index_,
                                                fit_odd_quintic, per_step_exponent, schatten_coefficients)
from optim.rules.schatten import SchattenRule, criterion, input_norm_order, schatten_norm, select_exponent
from optim.orthogonalized_optimizer import OrthogonalizedOptimizer
from optim.orthogonalize.from_mesh import MatrixDistribution
from optim.orthogonalize.orthogonalizer import LocalOrthogonalizer

# max |composed map - x^(1/p)| on [0.05, 1], 5 steps (measured; below 0.05 the error grows: x -> 0 stays
# near 0 while x^(1/p) does not; the blog calls its fit "really simple")
FIT_ERROR = {1.5: 0.051, 2.0: 0.103, 4.0: 0.222, 16.0: 0.159, 64.0: 0.097}
GRID = (1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 16.0, 32.0, 64.0)
F64 = torch.float64


def matrix_with_singular_values(sigma, rows: int, cols: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    U, _ = torch.linalg.qr(torch.randn(rows, len(sigma), generator=gen, dtype=F64))
    V, _ = torch.linalg.qr(torch.randn(cols, len(sigma), generator=gen, dtype=F64))
    return (U * torch.as_tensor(sigma, dtype=F64)) @ V.T


def transform_at(M: torch.Tensor, p: float, steps: int = 5) -> torch.Tensor:
    """The transform of M with exponent p, fed as the rule feeds it (the grid index in the norm)."""
    X = encode_grid_index_(M.clone(), float(torch.linalg.matrix_norm(M)), GRID.index(p))
    return SchattenNewtonSchulz(grid=GRID, steps=steps, compute_dtype=F64)(X.unsqueeze(0))[0]


# ---- the per-step coefficients ------------------------------------------------------------------------
@pytest.mark.parametrize("p", GRID)
@pytest.mark.parametrize("steps", [1, 3, 5])
def test_each_step_is_the_constrained_least_squares_fit_of_x_to_the_e(p, steps):
    e = per_step_exponent(p, steps)
    assert e == pytest.approx((1 / p) ** (1 / steps), rel=1e-15)
    triplets = schatten_coefficients(p, steps)
    assert len(triplets) == steps and len(set(triplets)) == 1
    a, b, c = triplets[0]
    assert a + b + c == pytest.approx(1.0, abs=1e-13)  # f(1) = 1
    # stationarity of the Lagrangian: <f - x^e, x^j> is the same for j = 1, 3, 5 (= -lambda / 1)
    inner = [a / (j + 2) + b / (j + 4) + c / (j + 6) - 1 / (e + j + 1) for j in (1, 3, 5)]
    assert max(inner) - min(inner) < 1e-13
    # and a minimum: every feasible perturbation (d1 + d3 + d5 = 0) fits x^e worse on [0, 1]
    x = torch.linspace(0, 1, 20001, dtype=F64)
    def err(t):
        return torch.trapezoid((t[0] * x + t[1] * x**3 + t[2] * x**5 - x**e) ** 2, x)
    best = err((a, b, c))
    for d in [(1e-3, -1e-3, 0), (0, 1e-3, -1e-3), (1e-3, 0, -1e-3), (-2e-3, 1e-3, 1e-3)]:
        assert err((a + d[0], b + d[1], c + d[2])) > best


def test_p_one_is_the_identity_and_the_coefficients_are_cached():
    assert schatten_coefficients(1.0, 5) == ((1.0, 0.0, 0.0),) * 5
    assert schatten_coefficients(4.0, 5) is schatten_coefficients(4.0, 5)
    # the blog's system at e = 1 gives the identity too (the solver, not only the special case)
    assert fit_odd_quintic(1.0) == pytest.approx((1.0, 0.0, 0.0), abs=1e-12)
    with pytest.raises(ValueError, match="p must be"):
        schatten_coefficients(0.5, 5)


# ---- the transform ------------------------------------------------------------------------------------
def test_p_one_gives_the_normalized_momentum():
    M = torch.randn(12, 7, dtype=F64, generator=torch.Generator().manual_seed(3))
    expected = M / torch.linalg.matrix_norm(M) / (1 + NS_EPS)  # the kernel's X / (||X||_F + eps), ||X||_F = 1
    assert torch.allclose(transform_at(M, 1.0), expected, rtol=0, atol=1e-15)


@pytest.mark.parametrize("p", [1.5, 2.0, 4.0, 16.0, 64.0])
@pytest.mark.parametrize("shape", [(16, 16), (24, 10), (10, 24)])
def test_singular_values_follow_the_composed_map_and_approximate_the_power(p, shape):
    """NS acts on each singular value of X0 = M/||M||_F through the scalar map: exact in fp64. The map is
    the blog's crude per-step fit: its largest distance to x^(1/p) on [0.05, 1] is FIT_ERROR (measured)."""
    k = min(shape)
    sigma = torch.linspace(0.05, 1.0, k, dtype=F64)
    M = matrix_with_singular_values(sigma, *shape)
    # the kernel's X / (||X||_F + eps), ||X||_F = 1 + grid index
    s0 = torch.linalg.svdvals(M / torch.linalg.matrix_norm(M)) / (1 + NS_EPS / (1 + GRID.index(p)))
    out = torch.linalg.svdvals(transform_at(M, p))
    expected = composed_map(s0, schatten_coefficients(p, 5)).abs().sort(descending=True).values
    assert torch.allclose(out, expected, rtol=0, atol=1e-12)
    x = torch.linspace(0.05, 1.0, 2000, dtype=F64)
    assert (composed_map(x, schatten_coefficients(p, 5)) - x ** (1 / p)).abs().max() < 1.05 * FIT_ERROR[p]


def test_large_p_tends_to_muon_on_a_well_conditioned_matrix():
    """Distance to U Vᵀ (exact SVD, RMS per entry) falls as p grows; at p = 64 it is closer to U Vᵀ than
    the project's Muon NS (Jordan's quintic, 5 steps, whose band around 1 is [0.68, 1.13])."""
    M = matrix_with_singular_values(torch.linspace(0.5, 1.0, 16, dtype=F64), 16, 16, seed=1)
    U, _, Vh = torch.linalg.svd(M)
    polar = U @ Vh
    dist = {p: float(torch.linalg.matrix_norm(transform_at(M, p) - polar) / 4.0) for p in (2.0, 8.0, 32.0, 64.0)}
    assert dist[2.0] > dist[8.0] > dist[32.0] > dist[64.0], dist
    muon = float(torch.linalg.matrix_norm(orthogonalize(M, 5, compute_dtype=F64) - polar) / 4.0)
    assert dist[64.0] < 0.15 and dist[64.0] < muon, (dist, muon)  # measured 0.105 and 0.205


def test_the_grid_index_rides_in_the_norm_and_survives_bf16():
    M = torch.randn(3, 20, 9, generator=torch.Generator().manual_seed(0))
    X = torch.stack([encode_grid_index_(m.clone(), float(m.norm()), i) for m, i in zip(M, (0, 7, 10))])
    assert decode_grid_index(X).tolist() == [0, 7, 10]
    assert decode_grid_index(X.bfloat16()).tolist() == [0, 7, 10]  # optim.orthogonalize.comm_dtype=bfloat16
    assert decode_grid_index(torch.zeros(1, 4, 4)).tolist() == [-1]
    with pytest.raises(ValueError, match="no grid index"):  # a split block's norm carries no index
        decode_grid_index(X[:, :7])


def test_a_split_is_refused_by_the_config_and_the_build():
    from optim.build import matrix_transform

    with pytest.raises(ValueError, match="split=qkv does not apply to 'schatten'"):
        load_optim_config("schatten", ["optim.orthogonalize.split=qkv"])
    rule = SchattenRule(load_optim_config("schatten").rule)
    cfg = dataclasses.replace(load_optim_config("schatten").orthogonalize, split="heads")
    with pytest.raises(ValueError, match="split=heads does not apply to 'schatten'"):
        matrix_transform(rule, cfg, torch.device("cpu"), n_head=2)


# ---- the criterion ------------------------------------------------------------------------------------
def by_hand(sigma_g: list[float], sigma_a: list[float], grid) -> float:
    """J(p) = ||G||_{1+1/p} / ||A||_{2(p+1)/(p-1)} in plain Python floats, argmax over the grid."""
    def norm(s, q):
        return max(s) if math.isinf(q) else sum(v**q for v in s) ** (1 / q)
    scores = [norm(sigma_g, 1 + 1 / p) / norm(sigma_a, math.inf if p == 1 else 2 * (p + 1) / (p - 1)) for p in grid]
    return grid[scores.index(max(scores))]


def test_norm_orders_at_the_ends():
    s = torch.tensor([3.0, 4.0], dtype=F64)
    assert input_norm_order(1.0) == math.inf and input_norm_order(3.0) == 4.0
    assert float(schatten_norm(s, math.inf)) == 4.0 and float(schatten_norm(s, 2.0)) == pytest.approx(5.0)
    assert float(schatten_norm(s * 1e30, 40.0)) == pytest.approx(1e30 * (3**40 + 4**40) ** (1 / 40))  # no overflow


@pytest.mark.parametrize("sigma_g, sigma_a, expected", [
    ([1.0] + [0.0] * 15, [1.0] * 16, 1.0),     # rank-1 gradient, isotropic inputs: SGD's geometry
    ([1.0] * 16, [1.0] + [0.0] * 15, 64.0),    # flat gradient spectrum, rank-1 inputs: Muon's
    ([5.0, 3.0, 2.0, 1.0, 0.5, 0.2], [4.0, 2.0, 1.0, 1.0, 0.3, 0.1], None),   # in between: by hand
    ([2.0, 1.9, 1.8, 0.1], [9.0, 0.5, 0.4, 0.3], None),
])
def test_selected_p_is_the_argmax_of_the_criterion(sigma_g, sigma_a, expected):
    hand = by_hand(sigma_g, sigma_a, GRID)
    if expected is not None:
        assert hand == expected
    got = select_exponent(torch.tensor(sigma_g, dtype=F64), torch.tensor(sigma_a, dtype=F64), GRID)
    assert got == hand
    assert criterion(torch.tensor(sigma_g), torch.tensor(sigma_a), got) >= max(
        criterion(torch.tensor(sigma_g), torch.tensor(sigma_a), p) for p in GRID) - 1e-12


def test_the_rule_selects_p_from_the_hooked_inputs_and_the_gradient():
    """A Linear layer fed constructed inputs X (tokens x in) under loss <W X, Y>: G = Yᵀ X. The p the
    optimizer stores is the argmax of the criterion on svd(G), svd(X) by hand; the state survives a
    state_dict round trip; an evaluation forward is not captured."""
    torch.manual_seed(0)
    layer = nn.Linear(8, 6, bias=False).double()
    model = nn.Sequential(layer)
    hp = load_optim_config("schatten", ["optim.matrix.recompute_every=2"]).rule
    rule = SchattenRule(hp)
    group = {"params": [layer.weight], "param_names": ["0.weight"], "role": "matrix", "lr": 0.02, "weight_decay": 0.0}
    transform = rule.transform(SimpleNS(steps=5, compute_dtype=F64))
    opt = OrthogonalizedOptimizer([group], rule, distribution=MatrixDistribution(LocalOrthogonalizer(transform=transform)))
    rule.observe_model(model)
    gen = torch.Generator().manual_seed(5)
    X = matrix_with_singular_values([6.0, 3.0, 1.0, 1.0, 0.5, 0.2, 0.1, 0.05], 40, 8, seed=2)
    Y = torch.randn(40, 6, generator=gen, dtype=F64)
    model.eval()
    model(torch.randn(40, 8, dtype=F64))  # evaluation: not the training batch
    model.train()
    (model(X) * Y).sum().backward()
    G = layer.weight.grad.clone()
    opt.step()
    state = opt.state[layer.weight]
    hand = by_hand(torch.linalg.svdvals(G).tolist(), torch.linalg.svdvals(X).tolist(), GRID)
    assert float(state["schatten_p"]) == hand
    assert torch.allclose(state["input_spectrum"][:8], torch.linalg.svdvals(X), rtol=1e-10)
    assert int(state["spectrum_count"]) == 1


class SimpleNS:
    """What ``rule.transform`` reads of the configured Newton-Schulz."""

    def __init__(self, steps, compute_dtype):
        self.steps, self.compute_dtype = steps, compute_dtype


# ---- sharded equals one process (real gloo ranks; the registry-derived lists of tests/rank_equality.py
# run the default at W = 2 and 4 too; these add the every-step measurement, HSDP and the mutation) ------
SHARDED = [(kind, "schatten+every_step", mode) for kind in ("gpt", "mlp") for mode in ("sharded", "replicated")]
W4 = [*SHARDED, ("gpt", "schatten+every_step", "hsdp")]
NO_INPUT_REDUCE = ("gpt", "schatten+every_step", "no_input_reduce")


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("world_size", [2, 4])
def test_sharded_steps_with_activation_all_reduce_equal_one_process(world_size):
    from tests.rank_equality import check_equal, distributed_worker, moved, reference
    from tests.spawn_ranks import run_ranks

    cases = W4 if world_size == 4 else SHARDED
    ranks = run_ranks(distributed_worker, world_size, cases)
    for case in cases:
        result = reference(*case[:2])
        assert moved(*case[:2], result) > 1e-3
        check_equal(case, result, ranks)


@pytest.mark.slow
@pytest.mark.distributed
def test_without_the_activation_all_reduce_the_ranks_disagree_and_the_owner_says_so():
    """Each rank's own tokens give each rank its own p: the rows of one matrix reach the owner with
    different grid indices in their scales, and the transform refuses the matrix instead of mixing them."""
    from tests.rank_equality import distributed_worker
    from tests.spawn_ranks import run_ranks

    with pytest.raises(RuntimeError, match="carries no grid index"):
        run_ranks(distributed_worker, 2, [NO_INPUT_REDUCE])


def test_dcp_resume_restores_p_and_the_spectra_and_continues_exactly(tmp_path):
    """p, the two spectrum EMAs and the measurement count go through torch.distributed.checkpoint (the
    trainer's format) and the resumed run's next measurement (step 7, K = 3) and steps are the same."""
    import warnings

    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict

    from tests.test_optim_training import build_optimizer, optim_cfg, tiny_model, train

    def build(seed):
        model = tiny_model(seed)
        return model, build_optimizer(model, optim_cfg("schatten", recompute_every=3))

    model, opt = build(0)
    train(model, opt, 4)  # measures at steps 1 and 4
    matrices = [p for g in opt.param_groups if g["role"] == "matrix" for p in g["params"]]
    assert any(float(opt.state[p]["schatten_p"]) != 64.0 for p in matrices)  # the restore has something to do
    assert all(float(opt.state[p]["spectrum_count"]) == 2 for p in matrices)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # DCP's single-process notice
        dcp.save({"model": model.state_dict(), "optim": get_optimizer_state_dict(model, opt)}, checkpoint_id=tmp_path)
        resumed, resumed_opt = build(1)
        target = {"model": resumed.state_dict(), "optim": get_optimizer_state_dict(resumed, resumed_opt)}
        dcp.load(target, checkpoint_id=tmp_path)
    resumed.load_state_dict(target["model"])
    set_optimizer_state_dict(resumed, resumed_opt, target["optim"])
    names = ("schatten_p", "grad_spectrum", "input_spectrum", "spectrum_count", "input_slot")
    for p, q in zip(matrices, (p for g in resumed_opt.param_groups if g["role"] == "matrix" for p in g["params"])):
        assert all(torch.equal(opt.state[p][k], resumed_opt.state[q][k]) for k in names)
    assert train(model, opt, 4, start=4) == train(resumed, resumed_opt, 4, start=4)
    for (n, a), (_, b) in zip(model.named_parameters(), resumed.named_parameters()):
        assert torch.equal(a, b), n
