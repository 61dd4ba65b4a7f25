"""FSDP2 + sharded Newton-Schulz computes what one process computes (real gloo processes).

For every optimizer of the registry and every named variant, N steps on W ranks (each rank its rows
of the global batch, parameters and optimizer state row-sharded by FSDP2, NS of each matrix on its
owner) give the parameters of one process on the whole batch, to 1e-5 relative (fp32; only the
summation order differs). The models, the cases and the one spawn per world size are in
tests/rank_equality.py; this file asserts.
"""

from __future__ import annotations

import pytest
import torch

from optim.orthogonalize.exchange import assign_owners, flops_per_rank
from optim.registry import OPTIMIZERS as REGISTRY
from tests.rank_equality import (ALL_OPTIMIZERS_W2, BF16_COMM, CASES_BY_WORLD_SIZE, MATRIX_OPTIMIZERS, MODES,
                                 NAMED_VARIANTS, NO_REDUCE, W4_FAMILY, W4_ROWNORM, check_equal, moved, ranks_at,
                                 reference)


def test_registry_and_named_variants_are_all_in_the_equality_cases():
    """A new registry row is checked at W = 2 without anyone editing a list (derived from OPTIMIZERS)."""
    names = {case[1] for case in ALL_OPTIMIZERS_W2}
    assert set(REGISTRY) <= names and set(NAMED_VARIANTS) <= names
    for name in MATRIX_OPTIMIZERS:  # and every mode of the exchange at W = 2 and 4
        assert all(("gpt", name, mode) in CASES_BY_WORLD_SIZE[w] for w in (2, 4) for mode in MODES)


@pytest.mark.distributed
def test_all_optimizers_match_one_process_at_w2():
    ranks = ranks_at(2)
    for case in ALL_OPTIMIZERS_W2:
        result = reference(*case)
        assert moved(*case, result) > 1e-3, f"{case}: parameters barely moved; the test would prove nothing"
        check_equal(case, result, ranks)
        if case[1] in ("auon", "auon+paper2025"):  # linear time: no whole matrix ever crosses ranks
            assert all(r[case][1]["ns_flops"] == 0 == r[case][1]["sent_elements"] for r in ranks), case


@pytest.mark.distributed
def test_muon_and_namo_d_match_one_process_at_w4_sharded_replicated_and_hsdp():
    ranks = ranks_at(4)
    for case in W4_FAMILY:
        check_equal(case, reference(*case[:2]), ranks)
    # exchange in bf16: close to fp32 (bf16 rounding of U and O), but really rounded
    fp32 = reference("gpt", "muon")
    check_equal(BF16_COMM, fp32, ranks, tol=3e-2)
    bf16_params = ranks[0][BF16_COMM][0]
    assert any(not torch.equal(bf16_params[n], p) for n, p in fp32[0].items())
    # sharded: the ranks' NS FLOPs add up to one NS per matrix; replicated: every rank does them all
    shapes = [(45, 15), (15, 15), (60, 15), (15, 60)]
    total = sum(flops_per_rank(shapes, [0] * 4, 1))  # per step (the figures are the last step's)
    sharded = [r[("gpt", "muon", "sharded")][1]["ns_flops"] for r in ranks]
    replicated = [r[("gpt", "muon", "replicated")][1]["ns_flops"] for r in ranks]
    assert sum(sharded) == total and replicated == [total] * 4


@pytest.mark.distributed
def test_rownorm_rules_match_one_process_at_w4():
    """RowNormM on matrices (row; col: the column norms all-reduced) and as the embedding group's rule
    beside Muon (the tied head centered: its mean all-reduced), flat and HSDP meshes."""
    ranks = ranks_at(4)
    for case in W4_ROWNORM:
        check_equal(case, reference(*case[:2]), ranks)


@pytest.mark.distributed
def test_removing_a_row_spanning_reduction_breaks_the_equality():
    """The equality above is not vacuous: without the all-reduce of NAMO's norms, AuON's two scalars,
    RowNormM's column norms or the centered head's mean, two ranks compute something else."""
    ranks = ranks_at(2)
    for case in NO_REDUCE:
        with pytest.raises(AssertionError, match="differs by"):
            check_equal(case, reference(*case[:2]), ranks)


# ---- owner assignment: pure, no processes ---------------------------------------------------------
GPT2_124M = [(2304, 768), (768, 768), (3072, 768), (768, 3072)] * 12


@pytest.mark.parametrize("shapes", [GPT2_124M, [(45, 15), (15, 15), (60, 15), (15, 60)], [(7, 5), (9, 7), (5, 9)]])
@pytest.mark.parametrize("world_size", [1, 2, 3, 4, 8])
def test_owner_assignment_covers_each_matrix_once_and_is_balanced(shapes, world_size):
    owners = assign_owners(shapes, world_size)
    assert len(owners) == len(shapes) and all(0 <= o < world_size for o in owners)
    load = flops_per_rank(shapes, owners, world_size)
    costs = flops_per_rank(shapes, list(range(len(shapes))), len(shapes))
    assert sum(load) == sum(costs)  # every matrix exactly once
    assert max(load) <= sum(costs) / world_size + max(costs)  # the greedy bound
    assert owners == assign_owners(shapes, world_size)  # deterministic: every rank plans the same


@pytest.mark.parametrize("world_size", [2, 4, 8])
def test_gpt2_owner_flops_within_10_percent_of_even(world_size):
    load = flops_per_rank(GPT2_124M, assign_owners(GPT2_124M, world_size), world_size)
    assert max(load) <= 1.10 * sum(load) / world_size

