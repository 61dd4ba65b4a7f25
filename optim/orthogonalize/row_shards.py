"""The quintic on the shards FSDP2 already holds (``optim.orthogonalize.distributed: row_shards | auto``).

In its right form the iteration needs the whole matrix only through its Gram matrix
(optim.orthogonalize.newton_schulz): for X = [X_0; X_1; ...] row-sharded over W ranks,

    A = X^T X = sum_r X_r^T X_r            one all-reduce of a (cols x cols) stack per step
    B = b A + c A A                          rank r computes rows r of B, one all-reduce assembles it
    X_r <- a X_r + X_r B                     local

so every rank runs s (4 r k^2 + 2 k^2 k/W) FLOPs for a matrix with r local rows and k columns: the
work falls as 1/W, also once W exceeds the number of matrices. Matrices with rows >= cols iterate on
their row shards as they lie. Wide ones (rows < cols, GPT-2's mlp c_proj) would need a huge cols x cols
Gram matrix that way, so they are first re-sharded by columns (one all-to-all, the bytes the owner
scheme also moves) and iterate as their transpose, which is tall and row-sharded; a second
all-to-all returns the rows. The sums make the result equal one process's up to summation order.
"""

from __future__ import annotations

from collections import defaultdict

import torch
import torch.distributed as dist


def row_split(rows: int, world_size: int) -> list[int]:
    """Rows per rank of a dim-0 shard, as torch.chunk (and so FSDP2) splits them."""
    chunk = -(-rows // world_size)
    return [max(0, min(chunk, rows - r * chunk)) for r in range(world_size)]


def row_shard_flops(local_rows: int, cols: int, steps: int, world_size: int = 1, rank: int = 0) -> int:
    """FLOPs of one rank for one matrix: s (4 r k^2 + 2 k^2 n_r), n_r: its rows of B = b A + c A A."""
    b_rows = row_split(cols, world_size)[rank]
    return steps * (4 * local_rows * cols * cols + 2 * b_rows * cols * cols)


class RowShardCollectives:
    """``RowShards`` (optim.orthogonalize.newton_schulz) over a process group."""

    def __init__(self, group: dist.ProcessGroup | None, rank: int, world_size: int):
        self.group, self.rank, self.world_size = group, rank, world_size
        self.reduced_elements = 0

    def sum_(self, t: torch.Tensor) -> torch.Tensor:
        work = t if t.dtype == torch.float32 else t.float()  # sums in fp32 (bf16 iterations too)
        dist.all_reduce(work, op=dist.ReduceOp.SUM, group=self.group)
        self.reduced_elements += work.numel()
        return t if work is t else t.copy_(work)

    def polynomial_(self, A: torch.Tensor, b: float, c: float, out: torch.Tensor) -> torch.Tensor:
        split = row_split(A.shape[-1], self.world_size)
        start, count = sum(split[:self.rank]), split[self.rank]
        out.zero_()  # the other ranks' rows: adding zeros is exact
        if count:
            mine = A[:, start:start + count]
            out[:, start:start + count] = torch.baddbmm(mine, mine, A, beta=b, alpha=c)
        return self.sum_(out)


def transposed_column_blocks(blocks, ids, splits, full_shapes, rank, world_size, all_to_all) -> dict[int, torch.Tensor]:
    """Wide matrices ``ids``: from row blocks to this rank's column block, transposed (tall).
    ``all_to_all(send, recv_numel)`` -> flat buffers by source rank."""
    col_splits = {i: row_split(full_shapes[i][1], world_size) for i in ids}
    col_start = {i: [sum(col_splits[i][:d]) for d in range(world_size)] for i in ids}
    send = [[blocks[i][:, col_start[i][d]:col_start[i][d] + col_splits[i][d]] for i in ids] for d in range(world_size)]
    recv_numel = [sum(splits[i][s] * col_splits[i][rank] for i in ids) for s in range(world_size)]
    pieces = pieces_by_source(all_to_all(send, recv_numel), ids, lambda i, s: (splits[i][s], col_splits[i][rank]))
    return {i: torch.cat(pieces[i]).mT.contiguous() for i in ids}


def rows_from_transposed(results: dict[int, torch.Tensor], splits, full_shapes, rank, world_size, all_to_all):
    """Inverse of ``transposed_column_blocks``: each rank's rows of the wide results."""
    ids = sorted(results)
    col_splits = {i: row_split(full_shapes[i][1], world_size) for i in ids}
    row_start = {i: [sum(splits[i][:d]) for d in range(world_size)] for i in ids}
    columns = {i: results[i].mT for i in ids}  # (rows, my columns)
    send = [[columns[i][row_start[i][d]:row_start[i][d] + splits[i][d]] for i in ids] for d in range(world_size)]
    recv_numel = [sum(splits[i][rank] * col_splits[i][s] for i in ids) for s in range(world_size)]
    pieces = pieces_by_source(all_to_all(send, recv_numel), ids, lambda i, s: (splits[i][rank], col_splits[i][s]))
    return {i: torch.cat(pieces[i], dim=1) for i in ids}


def pieces_by_source(buffers: list[torch.Tensor], ids: list[int], shape_of) -> dict[int, list[torch.Tensor]]:
    """Matrix i's piece from each source rank (in rank order): views of ``shape_of(i, source)``
    cut from that source's flat buffer, in the order of ``ids``."""
    pieces: dict[int, list[torch.Tensor]] = defaultdict(list)
    for source, buf in enumerate(buffers):
        offset = 0
        for i in ids:
            rows, cols = shape_of(i, source)
            pieces[i].append(buf[offset:offset + rows * cols].view(rows, cols))
            offset += rows * cols
    return pieces
