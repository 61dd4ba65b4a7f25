"""Which matrices run on their owner rank and which on their shards: a stated cost model.

Two ways to orthogonalize a matrix that FSDP2 row-shards over W ranks (optim.orthogonalize.exchange):

    owner       gather the row blocks on one owner rank, transform the whole matrix there, send the rows
                back (two all-to-alls for all such matrices together; owners balance the FLOPs)
    row_shards  every rank iterates on its shard of the long side (optim.orthogonalize.row_shards): the
                k x k Gram matrix (k: the short side) and B = b A + c A A are all-reduced each step;
                wide matrices are first re-sharded by columns (an all-to-all each way)

Per rank and step, for a matrix with long side n and short side k, s quintic steps:

    owner       FLOPs: s (4 k^2 n + 2 k^3), the whole matrix, on its owner (the LPT balance puts about
                total / W on each rank while W < #matrices; beyond that the largest matrix bounds the
                busiest rank, and adding ranks stops helping)
                bytes: 2 (W-1)/W * n k / W elements (gather + return)
    row_shards  FLOPs: s (4 ceil(n/W) k^2 + 2 ceil(k/W) k^2): falls as 1/W at any W
                bytes: (2 s + 1) all-reduces of k^2 fp32 elements (ring: 2 (W-1)/W k^2 each), plus the
                owner's bytes for a wide matrix's re-shard

``choose_modes`` starts with every matrix on an owner and moves matrices to row shards (all at once,
then whole shape groups, then single ones, largest first) while that lowers the predicted step time:
the busiest rank's FLOPs at ``flop_rate``, bytes at ``bandwidth``, plus ``latency`` per collective.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from optim.orthogonalize.row_shards import row_shard_flops

Shape = tuple[int, int]


@dataclass(frozen=True)
class CostModel:
    flop_rate: float  # FLOP/s of the transform on one rank
    bandwidth: float  # bytes/s per rank in a collective
    peer_latency: float  # s per peer of an all-to-all
    hop_latency: float  # s per hop of an all-reduce (2 log2 W hops)
    element_bytes: int  # of the exchanged dtype


# H100 SXM: bf16 NS at half of 989 TFLOP/s, NVLink 450 GB/s (one node), bf16 exchange
H100_NODE = CostModel(flop_rate=0.5 * 989e12, bandwidth=450e9, peer_latency=10e-6, hop_latency=10e-6, element_bytes=2)
# across nodes: a 400 Gb/s NIC per GPU
H100_CLUSTER = CostModel(flop_rate=0.5 * 989e12, bandwidth=50e9, peer_latency=10e-6, hop_latency=15e-6, element_bytes=2)
# this project's CPUs, gloo over loopback, one thread per rank, fp32 (measured order of magnitude)
CPU_GLOO = CostModel(flop_rate=60e9, bandwidth=2e9, peer_latency=100e-6, hop_latency=100e-6, element_bytes=4)


def default_cost_model(device_type: str, world_size: int) -> CostModel:
    if device_type == "cuda":
        return H100_NODE if world_size <= 8 else H100_CLUSTER
    return CPU_GLOO


def lpt_loads(costs: Sequence[float], world_size: int) -> list[float]:
    """Per-rank load of the longest-processing-time-first assignment (what assign_owners does)."""
    load = [0.0] * world_size
    for cost in sorted(costs, reverse=True):
        rank = min(range(world_size), key=lambda r: (load[r], r))
        load[rank] += cost
    return load


@dataclass(frozen=True)
class StepPrediction:
    seconds: float
    flops_busiest_rank: float
    bytes_per_rank: float
    collectives: int


def predict_step(
    shapes: Sequence[Shape], modes: Sequence[str], world_size: int, flops_fn: Callable[[int, int], int],
    steps: int, model: CostModel,
) -> StepPrediction:
    """Predicted orthogonalization time of one optimizer step with the given per-matrix modes."""
    W = world_size
    owner = [i for i, m in enumerate(modes) if m == "owner"]
    row = [i for i, m in enumerate(modes) if m == "row_shards"]
    owner_flops = max(lpt_loads([flops_fn(*shapes[i]) for i in owner], W)) if owner else 0.0
    long_short = [(max(shapes[i]), min(shapes[i])) for i in row]
    row_flops = sum(row_shard_flops(-(-n // W), k, steps, W) for n, k in long_short)  # rank 0: the busiest
    wide = [i for i in row if shapes[i][0] < shapes[i][1]]
    moved_elements = sum(shapes[i][0] * shapes[i][1] for i in owner + wide)
    bytes_moved = 2 * (W - 1) / W * moved_elements / W * model.element_bytes
    bytes_row = sum((2 * steps + 1) * 2 * (W - 1) / W * k * k * 4 for _, k in long_short)  # sums in fp32
    collectives_owner = 2 if owner and W > 1 else 0
    collectives_row = (2 * steps + 1) * len(set(long_short))  # batched by shape
    all_to_alls = collectives_owner + (2 if wide else 0)
    latency = all_to_alls * (W - 1) * model.peer_latency
    latency += collectives_row * 2 * math.ceil(math.log2(max(W, 2))) * model.hop_latency
    flops = owner_flops + row_flops
    nbytes = bytes_moved + bytes_row
    seconds = flops / model.flop_rate + nbytes / model.bandwidth + latency
    return StepPrediction(seconds, flops, nbytes, all_to_alls + collectives_row)


def choose_modes(
    shapes: Sequence[Shape], world_size: int, flops_fn: Callable[[int, int], int], steps: int,
    eligible: Callable[[int, int], bool], model: CostModel,
) -> list[str]:
    """Per matrix "owner" or "row_shards" (see the module docstring). Deterministic."""
    modes = ["owner"] * len(shapes)
    if world_size < 2:
        return modes
    best = predict_step(shapes, modes, world_size, flops_fn, steps, model).seconds
    eligible_ids = sorted((i for i, s in enumerate(shapes) if eligible(*s)), key=lambda i: (-flops_fn(*shapes[i]), i))
    # moves: everything at once, a (long, short) group at once (one batch, shared collectives), single
    # matrices; each kept if it lowers the prediction (greedy; the owner bound makes single moves
    # rarely pay on their own, hence the larger moves first)
    def key(i: int) -> tuple[int, int]:
        return max(shapes[i]), min(shapes[i])
    groups = [[i for i in eligible_ids if key(i) == k] for k in dict.fromkeys(key(i) for i in eligible_ids)]
    for move in [eligible_ids, *groups, *([i] for i in eligible_ids)]:
        trial = modes.copy()
        for i in move:
            trial[i] = "row_shards"
        seconds = predict_step(shapes, trial, world_size, flops_fn, steps, model).seconds
        if seconds < best:
            modes, best = trial, seconds
    return modes
