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

``ReplicatedOrthogonalizer`` is the comparison baseline (``optim.orthogonalize.distributed:
replicated``): every rank gathers every matrix and orthogonalizes all of them.

Both speak the ``Orthogonalizer`` protocol of ``optim.orthogonalize.local``; the rules never see them.
"""

from __future__ import annotations

from collections import defaultdict

import torch
import torch.distributed as dist

from optim.orthogonalize.local import LocalOrthogonalizer
from optim.orthogonalize.newton_schulz import newton_schulz_flops


def row_split(rows: int, world_size: int) -> list[int]:
    """Rows per rank of a dim-0 shard, as torch.chunk (and so FSDP2) splits them."""
    chunk = -(-rows // world_size)
    return [max(0, min(chunk, rows - r * chunk)) for r in range(world_size)]


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


def _unpack(buf: torch.Tensor, shapes: list[tuple[int, int]]) -> list[torch.Tensor]:
    """Views of consecutive (rows, cols) blocks of a flat buffer."""
    views, offset = [], 0
    for rows, cols in shapes:
        views.append(buf[offset:offset + rows * cols].view(rows, cols))
        offset += rows * cols
    return views


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

    def _all_to_all(self, send: list[list[torch.Tensor]], recv_numel: list[int], device) -> list[torch.Tensor]:
        """send[d]: tensors for rank d (flattened, concatenated). Returns the flat buffer from each rank."""
        send_numel = [sum(t.numel() for t in parts) for parts in send]
        flat = [t.reshape(-1).to(self.comm_dtype) for parts in send for t in parts]
        send_buf = torch.cat(flat) if flat else torch.empty(0, dtype=self.comm_dtype, device=device)
        recv_buf = torch.empty(sum(recv_numel), dtype=self.comm_dtype, device=device)
        dist.all_to_all_single(recv_buf, send_buf, recv_numel, send_numel, group=self.group)
        self.sent_elements += sum(n for d, n in enumerate(send_numel) if d != self.rank)
        return list(recv_buf.split(recv_numel))

    def _gather(self, blocks, splits, cols, receives) -> dict[int, torch.Tensor]:
        """Whole matrices where they are needed: ``receives(d)`` lists the matrices rank d assembles.
        Every rank sends its row block of each of them to d; one all_to_all."""
        mine = receives(self.rank)
        send = [[blocks[i] for i in receives(d)] for d in range(self.world_size)]
        recv_numel = [sum(splits[i][s] * cols[i] for i in mine) for s in range(self.world_size)]
        recv = self._all_to_all(send, recv_numel, blocks[0].device)
        pieces: dict[int, list[torch.Tensor]] = defaultdict(list)
        for source, buf in enumerate(recv):
            for i, rows in zip(mine, _unpack(buf, [(splits[i][source], cols[i]) for i in mine])):
                pieces[i].append(rows)
        return {i: torch.cat(pieces[i]) for i in mine}

    def _orthogonalize_whole(self, matrices: dict[int, torch.Tensor], full_shapes) -> dict[int, torch.Tensor]:
        """NS of whole matrices, batched by shape (LocalOrthogonalizer does the stacking)."""
        ids = sorted(matrices)
        self.ns_flops += sum(self.local.flops(*full_shapes[i]) for i in ids)
        results = self.local.orthogonalize_all([matrices[i] for i in ids], [full_shapes[i] for i in ids])
        return dict(zip(ids, results))


class ShardedOrthogonalizer(_Exchange):
    """NS of each matrix once, on its owner rank (see the module docstring)."""

    def __init__(self, local: LocalOrthogonalizer, group=None, comm_dtype: torch.dtype = torch.float32):
        super().__init__(local, group, comm_dtype)
        self._plan_key: tuple | None = None
        self.owners: list[int] = []

    def plan(self, full_shapes: list[tuple[int, int]]) -> list[int]:
        key = tuple(map(tuple, full_shapes))
        if key != self._plan_key:  # the same matrices every step: computed once
            self.owners = assign_owners(list(key), self.world_size, self.local.flops)
            self._plan_key = key
        return self.owners

    def orthogonalize_all(self, blocks, full_shapes):
        if not blocks:
            return []
        self.sent_elements = self.ns_flops = 0
        W, me, device = self.world_size, self.rank, blocks[0].device
        splits = self._splits(blocks, full_shapes)
        owners = self.plan(full_shapes)
        owned_by = [[i for i, owner in enumerate(owners) if owner == d] for d in range(W)]
        mine = owned_by[me]
        cols = [shape[1] for shape in full_shapes]

        # gather: my row block of matrix i goes to owner(i); I assemble the matrices I own
        orthos = self._orthogonalize_whole(self._gather(blocks, splits, cols, owned_by.__getitem__), full_shapes)

        # return: rank d's rows of each of my results go back to d
        row_starts = {i: [sum(splits[i][:d]) for d in range(W)] for i in mine}
        send = [[orthos[i][row_starts[i][d]:row_starts[i][d] + splits[i][d]] for i in mine] for d in range(W)]
        recv_numel = [sum(splits[i][me] * cols[i] for i in owned_by[s]) for s in range(W)]
        recv = self._all_to_all(send, recv_numel, device)
        out: list[torch.Tensor | None] = [None] * len(blocks)
        for source, buf in enumerate(recv):
            theirs = owned_by[source]
            for i, rows in zip(theirs, _unpack(buf, [(splits[i][me], cols[i]) for i in theirs])):
                out[i] = rows.to(blocks[i].dtype)
        return out


class ReplicatedOrthogonalizer(_Exchange):
    """Every rank gathers every matrix and orthogonalizes all of them (the baseline)."""

    def orthogonalize_all(self, blocks, full_shapes):
        if not blocks:
            return []
        self.sent_elements = self.ns_flops = 0
        me = self.rank
        splits = self._splits(blocks, full_shapes)
        cols = [shape[1] for shape in full_shapes]
        everything = list(range(len(blocks)))
        orthos = self._orthogonalize_whole(self._gather(blocks, splits, cols, lambda rank: everything), full_shapes)
        start = [sum(split[:me]) for split in splits]
        return [orthos[i][start[i]:start[i] + splits[i][me]].to(blocks[i].dtype) for i in range(len(blocks))]
