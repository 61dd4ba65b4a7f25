"""The distribution layer of the Muon family: Newton-Schulz once per matrix, on one owner rank.

Under FSDP2 every matrix parameter (and its gradient and momentum) is a DTensor sharded on dim 0:
rank r holds rows ``row_split(rows, W)[r]`` (torch.chunk semantics, FSDP2's ``Shard(0)``; trailing
ranks may hold fewer rows, or none). NS needs the whole matrix, and orthogonalizing each row shard
on its own would be a different (wrong) update. NorMuon-style sharding (Li et al. 2025,
arXiv:2510.05491, Sec. 4) instead gives every matrix one OWNER rank:

    1. assign owners once, balancing Newton-Schulz FLOPs (largest first, onto the least-loaded rank)
    2. gather:  one all_to_all; every rank sends its row block of matrix i to owner(i)
    3. the owner stacks its whole matrices by shape and runs ``orthogonalize`` (batched)
    4. return:  one all_to_all; the owner sends each rank its rows of the result

Each rank sends (W-1)/W of its M/W matrix elements in step 2 and receives as many back in step 4:
2 (W-1)/W * M/W elements per rank per step, against (W-1)/W * M for gathering every matrix
everywhere. The NS FLOPs per rank drop from F to about F/W.

Overlap (``optim.orthogonalize.bucket_elements``, ``overlap``): steps 2-4 run per bucket of about
``bucket_elements`` matrix elements (consecutive parameters, so every owner has work in most
buckets); all gathers are posted at once (async collectives: NCCL on GPU, gloo on CPU), the owner
transforms bucket b as soon as its rows are in, while later buckets still arrive and earlier results
already travel back. Each matrix's arithmetic is the same
with or without overlap, so the results are bit-identical (tested).

Row shards (``optim.orthogonalize.distributed: row_shards | auto``): the owner scheme never splits
a matrix, so once W exceeds the number of matrices the busiest rank still runs a whole one. A tall
matrix (GPT-2's c_attn, c_fc) can instead iterate on its row shards: its Gram matrix X^T X is a sum
over them (one all-reduce of a cols x cols stack per step), the update X_r <- a X_r + X_r B is local
(optim.orthogonalize.newton_schulz, ``gram_sum``). ``auto`` picks the mode per matrix with the cost
model of optim.orthogonalize.cost_model; these iterations run while the first gather is in flight.

Owner-resident state (optim.orthogonalize.owner_state): a stateful transform's whole-matrix state stays
on the owner (``state_holders``: the plan's owners; every rank when replicated) and never travels during a
step; ``owner_to_rows`` / ``rows_to_owner`` (one all_to_all each) turn it into row blocks and back for
checkpoints, as the gather and return above do for the matrices.

``ReplicatedOrthogonalizer`` is the comparison baseline (``optim.orthogonalize.distributed:
replicated``): every rank gathers every matrix and orthogonalizes all of them.

Both speak the ``Orthogonalizer`` protocol of ``optim.orthogonalize.orthogonalizer`` and ask the
transform only what ``MatrixTransform`` (optim.orthogonalize.transform) declares; the rules never see them.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import torch
import torch.distributed as dist

from optim.orthogonalize.cost_model import CPU_GLOO, CostModel, choose_modes
from optim.orthogonalize.newton_schulz import newton_schulz_flops
from optim.orthogonalize.orthogonalizer import LocalOrthogonalizer
from optim.orthogonalize.row_shards import (
    RowShardCollectives,
    pieces_by_source,
    row_shard_flops,
    row_split,
    rows_from_transposed,
    transposed_column_blocks,
)

ROW_SHARD_MODES = ("off", "all", "auto")


def assign_owners(full_shapes: list[tuple[int, int]], world_size: int, cost_fn=None) -> list[int]:
    """Owner rank of each matrix, balancing the transform's FLOPs (``cost_fn(rows, cols)``; default
    5-step Newton-Schulz): longest-processing-time-first greedy.

    Deterministic (ties go to the lower index / lower rank), so every rank computes the same plan.
    Max load <= total / W + the largest single matrix (and <= 4/3 of the optimum).
    """
    cost_fn = cost_fn or (lambda r, c: newton_schulz_flops(r, c, 5))
    cost = [cost_fn(r, c) for r, c in full_shapes]
    order = sorted(range(len(full_shapes)), key=lambda i: (-cost[i], i))
    load = [0] * world_size
    owners = [0] * len(full_shapes)
    for i in order:
        rank = min(range(world_size), key=lambda r: (load[r], r))
        owners[i] = rank
        load[rank] += cost[i]
    return owners


def flops_per_rank(full_shapes: list[tuple[int, int]], owners: list[int], world_size: int, cost_fn=None) -> list[int]:
    cost_fn = cost_fn or (lambda r, c: newton_schulz_flops(r, c, 5))
    load = [0] * world_size
    for (r, c), owner in zip(full_shapes, owners):
        load[owner] += cost_fn(r, c)
    return load


def make_buckets(ids: list[int], full_shapes, bucket_elements: int) -> list[list[int]]:
    """Consecutive matrices, up to ``bucket_elements`` each (at least one matrix; 0: one bucket)."""
    buckets: list[list[int]] = []
    size = 0
    for i in ids:
        numel = full_shapes[i][0] * full_shapes[i][1]
        if not buckets or (bucket_elements and size + numel > bucket_elements):
            buckets.append([])
            size = 0
        buckets[-1].append(i)
        size += numel
    return buckets


def _row_layout(shapes, world_size: int):
    """Per tensor: its dim-0 split over the ranks, each rank's first row, and the elements per row."""
    split = [row_split(s[0], world_size) for s in shapes]
    start = [[sum(sp[:d]) for d in range(world_size)] for sp in split]
    return split, start, [math.prod(s[1:]) for s in shapes]


class _Pending:
    """An all-to-all in flight (or done, when not overlapping): its buffers and handle."""

    def __init__(self, work, send_buf: torch.Tensor, recv_buf: torch.Tensor, recv_numel: list[int]):
        self.work, self.send_buf, self.recv_buf, self.recv_numel = work, send_buf, recv_buf, recv_numel

    def result(self) -> list[torch.Tensor]:
        if self.work is not None:
            self.work.wait()
            self.work = None
        return list(self.recv_buf.split(self.recv_numel))


class _Exchange:
    """Shared by both distributed orthogonalizers: group, rank, split checks, one all_to_all."""

    def __init__(self, local: LocalOrthogonalizer, group: dist.ProcessGroup | None, comm_dtype: torch.dtype):
        self.local = local  # the transform itself (Newton-Schulz, a spectral power, ...)
        self.group = group
        self.world_size = dist.get_world_size(group)
        self.rank = dist.get_rank(group)
        self.comm_dtype = comm_dtype
        self.sent_elements = 0  # to other ranks, in the last step (benchmarks read these)
        self.ns_flops = 0

    def _splits(self, blocks, full_shapes) -> list[list[int]]:
        splits = []
        for i, (block, (rows, cols)) in enumerate(zip(blocks, full_shapes)):
            split = row_split(rows, self.world_size)
            if tuple(block.shape) != (split[self.rank], cols):
                raise ValueError(
                    f"matrix {i} of shape {(rows, cols)}: rank {self.rank} holds a block of "
                    f"{tuple(block.shape)}, expected ({split[self.rank]}, {cols}) from a dim-0 shard over "
                    f"{self.world_size} ranks; parameters must be FSDP2-sharded on the optimizer's mesh"
                )
            splits.append(split)
        return splits

    def _start(self, send: list[list[torch.Tensor]], recv_numel: list[int], device, async_op: bool = False,
               dtype: torch.dtype | None = None) -> _Pending:
        """One all_to_all: send[d] (tensors, flattened and concatenated) goes to rank d, in ``dtype``
        (default: the exchange's comm dtype)."""
        dtype = dtype or self.comm_dtype
        send_numel = [sum(t.numel() for t in parts) for parts in send]
        flat = [t.reshape(-1).to(dtype) for parts in send for t in parts]
        send_buf = torch.cat(flat) if flat else torch.empty(0, dtype=dtype, device=device)
        recv_buf = torch.empty(sum(recv_numel), dtype=dtype, device=device)
        work = dist.all_to_all_single(recv_buf, send_buf, recv_numel, send_numel, group=self.group, async_op=async_op)
        self.sent_elements += sum(n for d, n in enumerate(send_numel) if d != self.rank)
        return _Pending(work, send_buf, recv_buf, recv_numel)

    def _start_gather(self, blocks, splits, cols, receives, async_op: bool = False) -> _Pending:
        """Whole matrices where they are needed: ``receives(d)`` lists the matrices rank d assembles.
        Every rank sends its row block of each of them to d; one all_to_all."""
        mine = receives(self.rank)
        send = [[blocks[i] for i in receives(d)] for d in range(self.world_size)]
        recv_numel = [sum(splits[i][s] * cols[i] for i in mine) for s in range(self.world_size)]
        return self._start(send, recv_numel, blocks[0].device, async_op)

    @staticmethod
    def _assemble(recv: list[torch.Tensor], mine: list[int], splits, cols) -> dict[int, torch.Tensor]:
        """The matrices ``mine`` from the row blocks received from every rank (in rank order)."""
        pieces = pieces_by_source(recv, mine, lambda i, source: (splits[i][source], cols[i]))
        return {i: torch.cat(pieces[i]) for i in mine}

    def _orthogonalize_whole(self, matrices: dict[int, torch.Tensor], full_shapes, states=None) -> dict[int, torch.Tensor]:
        """NS of whole matrices, batched by shape (LocalOrthogonalizer does the stacking); ``states``:
        every matrix's owner-resident state (optim.orthogonalize.owner_state), held here for these."""
        ids = sorted(matrices)
        self.ns_flops += sum(self.local.flops(*full_shapes[i]) for i in ids)
        results = self.local.orthogonalize_all([matrices[i] for i in ids], [full_shapes[i] for i in ids],
                                               None if states is None else [states[i] for i in ids])
        return dict(zip(ids, results))

    # ---- owner-resident state (optim.orthogonalize.owner_state): whole on its holder <-> row blocks ----
    def owner_to_rows(self, holders, wholes, shapes, dtypes, device) -> list[torch.Tensor]:
        """Collective. Item j (a tensor of ``shapes[j]``, whole on rank ``holders[j]``; -1: on every rank)
        -> this rank's dim-0 block of it (``row_split``: FSDP2's Shard(0)); one all_to_all per dtype."""
        W, me = self.world_size, self.rank
        split, start, width = _row_layout(shapes, W)
        out: list[torch.Tensor | None] = [None] * len(shapes)
        for j, holder in enumerate(holders):
            if holder == -1:
                out[j] = wholes[j][start[j][me]:start[j][me] + split[j][me]].clone()
        for dtype in dict.fromkeys(dtypes):
            moving = [j for j, h in enumerate(holders) if h >= 0 and dtypes[j] == dtype]
            send = [[wholes[j][start[j][d]:start[j][d] + split[j][d]] for j in moving if holders[j] == me]
                    for d in range(W)]
            recv_numel = [sum(split[j][me] * width[j] for j in moving if holders[j] == s) for s in range(W)]
            for source, buf in enumerate(self._start(send, recv_numel, device, dtype=dtype).result()):
                theirs = [j for j in moving if holders[j] == source]
                pieces = pieces_by_source([buf], theirs, lambda j, _: (split[j][me], width[j]))
                for j in theirs:
                    out[j] = pieces[j][0].reshape(split[j][me], *shapes[j][1:]).clone()
        return out

    def rows_to_owner(self, holders, blocks, shapes, dtypes, device) -> list[torch.Tensor | None]:
        """Collective, the inverse of ``owner_to_rows``: each rank's dim-0 blocks -> the whole tensor on
        its holder (on every rank for -1; None elsewhere)."""
        W, me = self.world_size, self.rank
        split, _, width = _row_layout(shapes, W)
        out: list[torch.Tensor | None] = [None] * len(shapes)
        for dtype in dict.fromkeys(dtypes):
            items = [j for j in range(len(shapes)) if dtypes[j] == dtype]
            send = [[blocks[j] for j in items if holders[j] in (-1, d)] for d in range(W)]
            mine = [j for j in items if holders[j] in (-1, me)]
            recv_numel = [sum(split[j][s] * width[j] for j in mine) for s in range(W)]
            recv = self._start(send, recv_numel, device, dtype=dtype).result()
            pieces = pieces_by_source(recv, mine, lambda j, source: (split[j][source], width[j]))
            for j in mine:
                out[j] = torch.cat(pieces[j]).reshape(shapes[j])
        return out


@dataclass(frozen=True)
class ExchangePlan:
    """Per matrix: its mode ("owner" | "row_shards") and owner rank (-1 on row shards); the
    owner-mode matrices in buckets (lists of matrix indices, in parameter order)."""

    modes: tuple[str, ...]
    owners: tuple[int, ...]
    buckets: tuple[tuple[int, ...], ...]


class ShardedOrthogonalizer(_Exchange):
    """Each matrix transformed once: on its owner rank, or on its row shards (see the module docstring).

    ``bucket_elements``: owner-mode matrices travel in buckets of about this many elements (0: one
    bucket); with ``overlap`` every gather is posted at once and asynchronously, bucket b is
    transformed once its rows are in, and its return travels while later buckets are transformed; the
    row-shard iterations run while the gathers are in flight. ``row_shards``: "off" (every matrix on
    an owner), "all" (every matrix the transform can run on shards), "auto"
    (``cost_model.choose_modes`` decides per matrix).
    """

    def __init__(self, local: LocalOrthogonalizer, group=None, comm_dtype: torch.dtype = torch.float32,
                 bucket_elements: int = 0, overlap: bool = True, row_shards: str = "off",
                 cost_model: CostModel = CPU_GLOO):
        super().__init__(local, group, comm_dtype)
        if row_shards not in ROW_SHARD_MODES:
            raise ValueError(f"row_shards must be one of {ROW_SHARD_MODES}, got {row_shards!r}")
        self.bucket_elements = bucket_elements
        self.overlap = overlap
        self.row_shards = row_shards
        self.cost_model = cost_model
        self._plan_key: tuple | None = None
        self._plan: ExchangePlan | None = None
        self.reduced_elements = 0  # all-reduced by the row-shard iterations in the last step

    @property
    def owners(self) -> list[int]:
        return list(self._plan.owners) if self._plan else []

    def plan(self, full_shapes: list[tuple[int, int]]) -> ExchangePlan:
        key = tuple(map(tuple, full_shapes))
        if key != self._plan_key:  # the same matrices every step: computed once
            self._plan = self._make_plan(list(key))
            self._plan_key = key
        return self._plan

    def _make_plan(self, shapes: list[tuple[int, int]]) -> ExchangePlan:
        transform = self.local.transform
        eligible = transform.supports_row_shards
        modes = ["owner"] * len(shapes)
        if self.row_shards == "all":
            modes = ["row_shards" if eligible(*s) else "owner" for s in shapes]
        elif self.row_shards == "auto" and any(eligible(*s) for s in shapes):  # only these have ``steps``
            modes = choose_modes(shapes, self.world_size, self.local.flops, transform.steps, eligible, self.cost_model)
        owner_ids = [i for i, m in enumerate(modes) if m == "owner"]
        owner_of = assign_owners([shapes[i] for i in owner_ids], self.world_size, self.local.flops)
        owners = [-1] * len(shapes)
        for i, rank in zip(owner_ids, owner_of):
            owners[i] = rank
        buckets = make_buckets(owner_ids, shapes, self.bucket_elements)
        return ExchangePlan(tuple(modes), tuple(owners), tuple(map(tuple, buckets)))

    def state_holders(self, full_shapes) -> list[int]:
        """The rank holding each matrix's owner-resident state: its owner."""
        return list(self.plan(full_shapes).owners)

    def orthogonalize_all(self, blocks, full_shapes, states=None):
        if not blocks:
            return []
        self.sent_elements = self.ns_flops = self.reduced_elements = 0
        W, me, device = self.world_size, self.rank, blocks[0].device
        splits = self._splits(blocks, full_shapes)
        plan = self.plan(full_shapes)
        cols = [shape[1] for shape in full_shapes]
        owned = [[[i for i in bucket if plan.owners[i] == d] for d in range(W)] for bucket in plan.buckets]

        def start_gather(b: int) -> _Pending:  # my row block of matrix i goes to owner(i)
            return self._start_gather(blocks, splits, cols, owned[b].__getitem__, self.overlap)

        out: list[torch.Tensor | None] = [None] * len(blocks)
        # every gather is posted before any transform: the collectives of a group run in the order they
        # were posted, so a gather posted after the return of bucket b would wait for the slowest
        # owner of bucket b (per-bucket imbalance would serialize the pipeline)
        gathers = [start_gather(b) for b in range(len(plan.buckets))]
        self._transform_row_shards(blocks, full_shapes, plan, splits, out)  # while the gathers fly
        returns = []
        for b in range(len(plan.buckets)):
            recv = gathers[b].result()
            gathers[b] = None  # its buffers can go once assembled
            mine = owned[b][me]
            orthos = self._orthogonalize_whole(self._assemble(recv, mine, splits, cols), full_shapes, states)
            # return: rank d's rows of each of my results go back to d
            starts = {i: [sum(splits[i][:d]) for d in range(W)] for i in mine}
            send = [[orthos[i][starts[i][d]:starts[i][d] + splits[i][d]] for i in mine] for d in range(W)]
            recv_numel = [sum(splits[i][me] * cols[i] for i in owned[b][s]) for s in range(W)]
            returns.append((b, self._start(send, recv_numel, device, self.overlap)))
        for b, pending in returns:
            for source, buf in enumerate(pending.result()):
                theirs = owned[b][source]
                pieces = pieces_by_source([buf], theirs, lambda i, _: (splits[i][me], cols[i]))
                for i in theirs:
                    out[i] = pieces[i][0].to(blocks[i].dtype)
        return out

    def _transform_row_shards(self, blocks, full_shapes, plan: ExchangePlan, splits, out) -> None:
        """Row-shard matrices (optim.orthogonalize.row_shards), batched by shape: wide ones re-sharded
        by columns and transposed first, then every stack iterates with the Gram sums over the group."""
        ids = [i for i, mode in enumerate(plan.modes) if mode == "row_shards"]
        if not ids:
            return
        W, me, device = self.world_size, self.rank, blocks[0].device
        def all_to_all(send, recv_numel):
            return self._start(send, recv_numel, device).result()
        wide = [i for i in ids if full_shapes[i][0] < full_shapes[i][1]]
        local_blocks = {i: blocks[i] for i in ids if i not in wide}
        local_blocks.update(transposed_column_blocks(blocks, wide, splits, full_shapes, me, W, all_to_all) if wide else {})
        collectives = RowShardCollectives(self.group, me, W)
        transform = self.local.transform
        results: dict[int, torch.Tensor] = {}
        by_shape: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i in ids:
            by_shape[tuple(sorted(full_shapes[i], reverse=True))].append(i)  # (long side, short side)
        for (_, short), group in by_shape.items():
            stack = torch.stack([local_blocks[i] for i in group])
            result = transform.row_sharded(stack, collectives)
            self.ns_flops += len(group) * row_shard_flops(stack.shape[1], short, transform.steps, W, me)
            results.update(zip(group, result.unbind(0)))
        if wide:
            results.update(rows_from_transposed({i: results[i] for i in wide}, splits, full_shapes, me, W, all_to_all))
        for i in ids:
            out[i] = results[i].to(blocks[i].dtype)
        self.reduced_elements += collectives.reduced_elements


class ReplicatedOrthogonalizer(_Exchange):
    """Every rank gathers every matrix and orthogonalizes all of them (the baseline)."""

    def state_holders(self, full_shapes) -> list[int]:
        """Every rank transforms (and so holds the state of) every matrix."""
        return [-1] * len(full_shapes)

    def orthogonalize_all(self, blocks, full_shapes, states=None):
        if not blocks:
            return []
        self.sent_elements = self.ns_flops = 0
        me = self.rank
        splits = self._splits(blocks, full_shapes)
        cols = [shape[1] for shape in full_shapes]
        everything = list(range(len(blocks)))
        recv = self._start_gather(blocks, splits, cols, lambda rank: everything).result()
        orthos = self._orthogonalize_whole(self._assemble(recv, everything, splits, cols), full_shapes, states)
        start = [sum(split[:me]) for split in splits]
        return [orthos[i][start[i]:start[i] + splits[i][me]].to(blocks[i].dtype) for i in range(len(blocks))]
