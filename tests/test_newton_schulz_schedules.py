"""Coefficient schedules (Polar Express), Gram Newton-Schulz, split-QKV / per-head transforms and the
compute dtype chosen by bf16 capability (optim/orthogonalize/, optim/dtypes.py)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import optim.dtypes as dtypes
from optim.config import load_optim_config
from optim.orthogonalize.coefficients import POLAR_EXPRESS, iteration_schedule
from optim.orthogonalize.gram_newton_schulz import gram_newton_schulz_flops
from optim.orthogonalize.config import newton_schulz_from_config
from optim.orthogonalize.newton_schulz import method_flops, newton_schulz_flops, orthogonalize
from optim.orthogonalize.orthogonalizer import LocalOrthogonalizer
from optim.orthogonalize.split import SplitRows
from tests.test_newton_schulz import with_singular_values


def odd_quintic_map(sigma: np.ndarray, triplets, norm_scale: float = 1.0) -> np.ndarray:
    x = sigma / (norm_scale * np.linalg.norm(sigma) + 1e-7)  # the kernel's normalization, eps included
    for a, b, c in triplets:
        x = a * x + b * x**3 + c * x**5
    return x


def test_polar_express_table_is_the_papers_with_its_safety_factor():
    # Algorithm 1 of arXiv:2505.16932: first triplet (8.287..., -23.59..., 17.30...) / (1.01, 1.01^3, 1.01^5)
    a, b, c = POLAR_EXPRESS[0]
    assert a == pytest.approx(8.28721201814563 / 1.01, rel=1e-15)
    assert b == pytest.approx(-23.595886519098837 / 1.01**3, rel=1e-15)
    assert c == pytest.approx(17.300387312530933 / 1.01**5, rel=1e-15)
    assert POLAR_EXPRESS[-1] == (1.875, -1.25, 0.375)  # the last one has no safety factor
    long = iteration_schedule("polar_express", 10)
    assert long.triplets[7:] == ((1.875, -1.25, 0.375),) * 3 and long.norm_scale == 1.01
    assert iteration_schedule("fixed", 3, (1.0, 2.0, 3.0)).triplets == ((1.0, 2.0, 3.0),) * 3


@pytest.mark.parametrize("shape", [(24, 40), (40, 24)])
def test_polar_express_singular_values_follow_its_per_step_polynomials(shape):
    k = min(shape)
    sigma = torch.logspace(0, -1.2, k, dtype=torch.float64)
    X = with_singular_values(*shape, sigma, seed=0)
    schedule = iteration_schedule("polar_express", 5)
    out = orthogonalize(X, 5, schedule.triplets, torch.float64, norm_scale=schedule.norm_scale)
    expected = np.sort(odd_quintic_map(sigma.numpy(), schedule.triplets, 1.01))[::-1]
    np.testing.assert_allclose(torch.linalg.svdvals(out).numpy(), expected, atol=1e-10)


def band(out: torch.Tensor) -> tuple[float, float]:
    s = torch.linalg.svdvals(out.double())
    return s.min().item(), s.max().item()


def test_polar_express_reaches_a_tighter_band_than_the_fixed_quintic_at_equal_steps():
    """The claim behind the schedule option: at 5 steps (equal FLOPs) Polar Express is closer to U V^T
    than Jordan's quintic; at 4 it is not (its early polynomials overshoot to ~1.56 by design), so
    fewer steps do not pay here (a spectrum 1 .. 1e-2, normalized singular values down to ~3e-3)."""
    sigma = torch.logspace(0, -2, 64, dtype=torch.float64)
    X = with_singular_values(64, 192, sigma, seed=1).float()

    def distance(steps, schedule):
        s = iteration_schedule(schedule, steps)
        lo, hi = band(orthogonalize(X, steps, s.triplets, norm_scale=s.norm_scale))
        return max(1 - lo, hi - 1)

    assert distance(5, "polar_express") < 0.5 * distance(5, "fixed")
    assert distance(4, "polar_express") > distance(5, "fixed")
    assert distance(6, "polar_express") < 0.02


@pytest.mark.parametrize("schedule", ["fixed", "polar_express"])
@pytest.mark.parametrize("shape", [(32, 96), (96, 32), (24, 80)])
def test_gram_newton_schulz_equals_the_plain_iteration_in_fp32(schedule, shape):
    """Stated bound: <= 5e-5 absolute in fp32 against the fp64 plain iteration (plain fp32: ~3e-6)."""
    sigma = torch.logspace(0, -3, min(shape), dtype=torch.float64)
    X = with_singular_values(*shape, sigma, seed=2)
    s = iteration_schedule(schedule, 5)
    reference = orthogonalize(X, 5, s.triplets, torch.float64, norm_scale=s.norm_scale)
    gram = orthogonalize(X.float(), 5, s.triplets, method="gram_newton_schulz", norm_scale=s.norm_scale)
    assert (gram.double() - reference).abs().max() <= 5e-5
    # and it really took the Gram path: it is not bit-equal to the plain fp32 iteration
    plain = orthogonalize(X.float(), 5, s.triplets, norm_scale=s.norm_scale)
    assert not torch.equal(gram, plain)


def test_gram_flops_are_fewer_for_rectangular_matrices_and_square_ones_stay_plain():
    assert gram_newton_schulz_flops(768, 3072) < 0.7 * newton_schulz_flops(768, 3072)
    assert gram_newton_schulz_flops(2304, 768) < 0.8 * newton_schulz_flops(2304, 768)
    assert method_flops("gram_newton_schulz", 768, 768, 5) == newton_schulz_flops(768, 768)
    X = torch.randn(20, 20, generator=torch.Generator().manual_seed(3))
    assert torch.equal(orthogonalize(X, method="gram_newton_schulz"), orthogonalize(X))


@pytest.mark.parametrize("split,pieces", [("qkv", 3), ("heads", 12)])
def test_split_transforms_each_row_block_as_its_own_matrix(split, pieces):
    d, n_head = 24, 4
    ns = LocalOrthogonalizer().transform
    transform = SplitRows(ns, split, n_head)
    X = torch.randn(2, 3 * d, d, generator=torch.Generator().manual_seed(4))
    out = transform(X)
    rows = 3 * d // pieces
    for m in range(2):
        for p in range(pieces):
            block = slice(p * rows, (p + 1) * rows)
            torch.testing.assert_close(out[m, block], orthogonalize(X[m, block]), atol=1e-6, rtol=0)
    other = torch.randn(1, 4 * d, d)  # c_fc shape: never split
    assert torch.equal(transform(other), ns(other))
    assert transform.flops(3 * d, d) == pieces * ns.flops(rows, d)
    assert transform.supports_row_shards(4 * d, d) and not transform.supports_row_shards(3 * d, d)
    assert transform.steps == ns.steps  # the row-shard FLOP count and cost model read it through the wrapper


def test_compute_dtype_auto_follows_bf16_matmul_capability(monkeypatch):
    monkeypatch.setattr(dtypes, "cpu_has_fast_bf16", lambda: True)
    assert dtypes.resolve_matmul_dtype("auto", "cpu", "k") == torch.bfloat16
    config = load_optim_config("muon").orthogonalize
    assert newton_schulz_from_config(config, torch.device("cpu")).compute_dtype == torch.bfloat16
    assert dtypes.resolve_dtype("auto", "cpu", "k") == torch.float32  # autocast / FSDP2 / exchange: unchanged
    monkeypatch.setattr(dtypes, "cpu_has_fast_bf16", lambda: False)
    assert newton_schulz_from_config(config, torch.device("cpu")).compute_dtype == torch.float32
    assert dtypes.resolve_matmul_dtype("auto", "cuda", "k") == torch.bfloat16
    explicit = dataclasses.replace(config, compute_dtype="float32")
    monkeypatch.setattr(dtypes, "cpu_has_fast_bf16", lambda: True)
    assert newton_schulz_from_config(explicit, torch.device("cpu")).compute_dtype == torch.float32


def test_cpu_probe_reads_torchs_cpuinfo(monkeypatch):
    monkeypatch.delenv(dtypes.CPU_BF16_ENV, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert dtypes.cpu_has_fast_bf16()
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    assert not dtypes.cpu_has_fast_bf16()
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert dtypes.cpu_has_fast_bf16()


@pytest.mark.parametrize("probe", [False, True])
def test_cpu_bf16_override_forces_either_path_whatever_the_probe(monkeypatch, probe):
    monkeypatch.setattr(dtypes, "cpu_probe_has_fast_bf16", lambda: probe)
    config = load_optim_config("muon").orthogonalize
    monkeypatch.delenv(dtypes.CPU_BF16_ENV, raising=False)
    assert dtypes.cpu_has_fast_bf16() is probe
    for value, dtype in (("0", torch.float32), ("1", torch.bfloat16)):
        monkeypatch.setenv(dtypes.CPU_BF16_ENV, value)
        assert dtypes.resolve_matmul_dtype("auto", "cpu", "k") == dtype
        assert newton_schulz_from_config(config, torch.device("cpu")).compute_dtype == dtype
        assert dtypes.resolve_dtype("auto", "cpu", "k") == torch.float32  # only the NS matmul follows it
    monkeypatch.setenv(dtypes.CPU_BF16_ENV, "")
    assert dtypes.cpu_has_fast_bf16() is probe  # empty means unset
    monkeypatch.setenv(dtypes.CPU_BF16_ENV, "yes")
    with pytest.raises(ValueError, match="ORTHOGPT_CPU_BF16 must be 0 .* or 1 .*got 'yes'"):
        dtypes.cpu_has_fast_bf16()


def test_schedule_from_config_runs_the_papers_iteration():
    config = load_optim_config("muon", ["optim.orthogonalize.schedule=polar_express", "optim.orthogonalize.steps=6",
                                        "optim.orthogonalize.compute_dtype=float32"]).orthogonalize
    ns = newton_schulz_from_config(config, torch.device("cpu"))
    assert ns.coefficients == POLAR_EXPRESS[:6] and ns.norm_scale == 1.01 and ns.steps == 6
    X = torch.randn(16, 40, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(ns(X.unsqueeze(0))[0], orthogonalize(X, 6, POLAR_EXPRESS[:6], norm_scale=1.01))


@pytest.mark.parametrize("override,key", [
    ("optim.orthogonalize.schedule=polar", "optim.orthogonalize.schedule"),
    ("optim.orthogonalize.steps=0", "optim.orthogonalize.steps"),
    ("optim.orthogonalize.bucket_elements=-1", "optim.orthogonalize.bucket_elements"),
    ("optim.orthogonalize.split=rows", "optim.orthogonalize.split"),
    ("optim.orthogonalize.distributed=ring", "optim.orthogonalize.distributed"),
    ("optim.orthogonalize.method=gram", "optim.orthogonalize.method"),
    ("optim.orthogonalize.overlap=maybe", "optim.orthogonalize.overlap"),
])
def test_bad_orthogonalize_values_name_their_key(override, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        load_optim_config("muon", [override])
