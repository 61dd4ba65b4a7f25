"""Every distribution mode of the Muon family equals one process (real gloo ranks, fp32), and the
overlapped exchange is bit-identical to the blocking one (optim/orthogonalize/exchange.py).

Modes: owners in one bucket (sharded), replicated, row shards (tall matrices iterate on their row
blocks, the Gram matrix all-reduced), auto (the cost model's per-matrix choice; auto_rows: a cost
model under which row shards win, so the mix really runs), buckets with and without overlap,
split-QKV and per-head transforms (c_attn of the odd GPT: 45 x 15, 3 heads of 5 rows; at W = 4 the
row shards 12/12/12/9 cut through heads), the Polar Express schedule and Gram Newton-Schulz.
The models, the cases, the W = 1 reference and the one spawn per world size are in tests/rank_equality.py.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from optim.orthogonalize.cost_model import CPU_GLOO, H100_CLUSTER, H100_NODE, choose_modes, predict_step
from optim.orthogonalize.newton_schulz import newton_schulz_flops
from tests.rank_equality import SPLIT_VARIANTS, check_equal, mode_cases, ranks_at, reference
from tests.test_fsdp_equivalence import GPT2_124M


@pytest.mark.distributed
@pytest.mark.parametrize("world_size", [2, 4])
def test_every_mode_and_matrix_optimizer_equals_one_process(world_size):
    ranks = ranks_at(world_size)
    for case in mode_cases():
        check_equal(case, reference(case[0], case[1]), ranks)
    if world_size == 4:
        check_overlap_bit_identical(ranks)
    # on row shards the ranks' NS FLOPs add up to exactly one whole iteration per matrix (B = b A + c A A
    # is split by rows too: no replicated work), and each rank's share is about 1/W
    per_rank = [r[("gpt", "muon", "row_shards")][1]["ns_flops"] for r in ranks]
    whole = sum(newton_schulz_flops(*s) for s in [(45, 15), (15, 15), (60, 15), (15, 60)])
    assert sum(per_rank) == whole and max(per_rank) <= 1.1 * whole / world_size
    # the modes really differ: every Newton-Schulz matrix ran on its shards (the wide 15 x 60 through
    # the column re-shard); the spectral powers cannot (their transform needs whole matrices)
    assert set(ranks[0][("gpt", "muon", "row_shards")][1]["modes"]) == {"row_shards"}
    assert set(ranks[0][("gpt", "spectral_adam", "row_shards")][1]["modes"]) == {"owner"}
    assert set(ranks[0][("gpt", "root", "row_shards")][1]["modes"]) == {"owner"}  # its quantile: whole matrices
    assert "row_shards" in ranks[0][("gpt", "muon", "auto_rows")][1]["modes"]
    assert set(ranks[0][("gpt", "muon", "auto")][1]["modes"]) == {"owner"}  # tiny matrices: latency wins


def check_overlap_bit_identical(ranks):
    """Buckets of ~700 elements, async (overlap) or blocking (serial), and one bucket: the same bits."""
    for name in ("muon", "normuon"):
        assert ranks[0][("gpt", name, "overlap")][1]["buckets"] > 1  # really bucketed
        for rank in ranks:
            overlap, serial, one = (rank[("gpt", name, v)][0] for v in ("overlap", "serial", "sharded"))
            for key in overlap:
                assert torch.equal(overlap[key], serial[key]), (name, key)
                assert torch.equal(overlap[key], one[key]), (name, key)


@pytest.mark.distributed
def test_split_schedule_and_gram_variants_equal_one_process_at_w4():
    ranks = ranks_at(4)
    for case in SPLIT_VARIANTS:
        check_equal(case, reference(*case), ranks)
    # the split changed the update (the test is not vacuous)
    plain = reference("gpt", "muon")[0]
    assert any(not torch.allclose(reference("gpt", "muon", "heads")[0][k], v, atol=1e-6) for k, v in plain.items())


# ---- the cost model: pure ----------------------------------------------------------------------------
GPT2_XL = [(4800, 1600), (1600, 1600), (6400, 1600), (1600, 6400)] * 48


def test_cost_model_keeps_owners_for_gpt2_on_h100s_and_picks_shards_when_flops_dominate():
    """Row shards carry (2 s + 1) k x k all-reduces per matrix and step whatever W is, the owner
    exchange 2 n k / W elements: on H100 links the Gram traffic outweighs the FLOPs they save for
    GPT-2 124M and 1.5B at W = 8, 64, 512 (BENCHMARKS.md), while with free links row shards cut the
    busiest rank's FLOPs ~W-fold beyond the number of matrices and win."""
    def anything(r, c):
        return True
    for shapes in (GPT2_124M, GPT2_XL):
        for W in (8, 64, 512):
            model = H100_NODE if W <= 8 else H100_CLUSTER
            assert set(choose_modes(shapes, W, newton_schulz_flops, 5, anything, model)) == {"owner"}
    free = dataclasses.replace(H100_CLUSTER, bandwidth=1e18, peer_latency=0.0, hop_latency=0.0)
    modes = choose_modes(GPT2_124M, 512, newton_schulz_flops, 5, anything, free)
    assert set(modes) == {"row_shards"}
    owner = predict_step(GPT2_124M, ["owner"] * 48, 512, newton_schulz_flops, 5, free)
    rows = predict_step(GPT2_124M, modes, 512, newton_schulz_flops, 5, free)
    assert owner.flops_busiest_rank == newton_schulz_flops(3072, 768)  # one whole c_fc bounds it
    total = sum(newton_schulz_flops(*s) for s in GPT2_124M)
    assert rows.flops_busiest_rank <= 1.1 * total / 512 + 48 * 5 * 2 * 768 * 768 * 2  # + rounding of k / W
    assert set(choose_modes(GPT2_124M, 2, newton_schulz_flops, 5, anything, CPU_GLOO)) == {"owner"}
