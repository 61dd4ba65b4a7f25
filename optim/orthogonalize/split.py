"""Split-QKV / per-head orthogonalization (``optim.orthogonalize.split``): a whole-matrix transform
applied to equal row blocks of GPT-2's attention input projection.

    none    every matrix whole (the published Muon / NAMO code)
    qkv     c_attn (3d, d) as three (d, d) matrices: q, k and v (modded-nanogpt practice, and the
            BeyondMuon code's split for the spectral powers)
    heads   c_attn as 3 n_head matrices of (d / n_head, d): each head's q, k and v rows

c_attn is the only matrix of GPT-2 with rows = 3 cols (nn.Linear layout (out, in)), so the split is
chosen by shape. It happens where the whole matrix is: on the owner rank of the sharded exchange
(or in the one process), after the row shards are gathered. So it works at any world size and with
any row split of FSDP2 (12 heads on 8 ranks, shards that cut through a head), through the same
exchange, and gives what one process gives. The owner balancing counts the split transform's FLOPs.
``SplitRows`` wraps any MatrixTransform (Newton-Schulz, a spectral power); the build wraps the rule's.
A stateful inner transform (optim.orthogonalize.owner_state) keeps one state per block: each entry of
a split matrix gets a leading ``pieces`` dimension.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from optim.orthogonalize.transform import MatrixTransform, RowShards

SPLITS = ("none", "qkv", "heads")


def row_pieces(rows: int, cols: int, split: str, n_head: int | None) -> int:
    """Into how many equal row blocks a rows x cols matrix is transformed (1: whole)."""
    if split == "none" or rows != 3 * cols:
        return 1
    if split == "qkv":
        return 3
    if not n_head or cols % n_head:
        raise ValueError(f"optim.orthogonalize.split=heads needs model.n_head dividing {cols}, got {n_head}")
    return 3 * n_head


def transform_row_blocks(stack: torch.Tensor, pieces: int, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``fn`` on the ``pieces`` equal row blocks of every matrix of ``stack`` (batch, rows, cols),
    as one batch of (batch * pieces) matrices; reassembled in place of the rows they came from."""
    if pieces == 1:
        return fn(stack)
    batch, rows, cols = stack.shape
    return fn(stack.reshape(batch * pieces, rows // pieces, cols)).reshape(batch, rows, cols)


@dataclass(frozen=True)
class SplitRows(MatrixTransform):
    """``inner`` on the row blocks that ``split`` selects (see the module docstring)."""

    inner: MatrixTransform
    split: str
    n_head: int | None = None

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"optim.orthogonalize.split must be one of {list(SPLITS)}, got '{self.split}'")
        if self.split == "heads" and (not isinstance(self.n_head, int) or self.n_head < 1):
            raise ValueError("optim.orthogonalize.split=heads needs the model's n_head (build_optimizer passes it)")

    @property
    def steps(self) -> int | None:
        return self.inner.steps

    def pieces(self, rows: int, cols: int) -> int:
        return row_pieces(rows, cols, self.split, self.n_head)

    def owner_state(self, rows: int, cols: int) -> dict:
        pieces = self.pieces(rows, cols)
        entries = self.inner.owner_state(rows // pieces, cols)
        return entries if pieces == 1 else {n: replace(e, shape=(pieces, *e.shape)) for n, e in entries.items()}

    def __call__(self, stack: torch.Tensor, state: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        pieces = self.pieces(*stack.shape[-2:])
        if state is None:
            return transform_row_blocks(stack, pieces, self.inner)
        # (batch, pieces, *shape) -> (batch * pieces, *shape): views, so the inner updates write through
        flat = {n: t.view(t.shape[0] * t.shape[1], *t.shape[2:]) if pieces > 1 else t for n, t in state.items()}
        return transform_row_blocks(stack, pieces, lambda blocks: self.inner(blocks, flat))

    def flops(self, rows: int, cols: int) -> int:
        pieces = self.pieces(rows, cols)
        return pieces * self.inner.flops(rows // pieces, cols)

    def supports_row_shards(self, rows: int, cols: int) -> bool:
        """Unsplit matrices only: the row shards of FSDP2 do not follow the blocks of a split one."""
        return self.pieces(rows, cols) == 1 and self.inner.supports_row_shards(rows, cols)

    def row_sharded(self, block: torch.Tensor, shards: RowShards) -> torch.Tensor:
        return self.inner.row_sharded(block, shards)
