"""The whole-matrix transform contract: everything an orthogonalizer, the exchange or the splitter asks.

A ``MatrixTransform`` maps a stack (batch, rows, cols) of same-shape matrices to a stack of the same
shape (Newton-Schulz, a spectral power, a split of either) and counts its FLOPs, by which the owner
ranks are balanced:

    __call__(stack) -> stack            the transform of every matrix of the stack
    flops(rows, cols) -> int            multiply-add FLOPs (2 per MAC) of one rows x cols matrix

Unless it declares row shards, a transform sees whole matrices: in one process, or on the owner rank
that gathered them. Work that needs the whole matrix and is no sum over row blocks (an order statistic:
ROOT's quantile clip; a choice keyed on the full shape: ROOT's coefficient table, optim/rules/root.py)
belongs inside the transform, where ``stack.shape[-2:]`` is the full shape (a split's block under
``optim.orthogonalize.split``). Such a transform keeps ``supports_row_shards`` False.

A transform may keep WHOLE-MATRIX STATE from step to step (ARO's rotation, FISMO's factors): it
declares its entries per full shape and is then called with them, held on the matrix's owner rank and
row-sharded only in checkpoints (the contract in full: optim/orthogonalize/owner_state.py):

    owner_state(rows, cols) -> {name: OwnerStateEntry}   default {}: stateless
    __call__(stack, state) -> stack     ``state[name]``: (batch, *shape), updated in place

A transform may run on the row shards FSDP2 holds (optim.orthogonalize.row_shards). That ability is
declared here with the answer of a transform that lacks it, so callers ask every transform alike:

    supports_row_shards(rows, cols)     False: the matrix goes to an owner rank whole
    row_sharded(block, shards)          the transform of a stack of row blocks (``shards``: RowShards)
    steps                               the iteration count the row-shard FLOP count and cost model use
                                        (None for a transform that cannot run on shards)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Protocol

import torch


class RowShards(Protocol):
    """The collectives of an iteration on row shards (one process needs none of them)."""

    def sum_(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` summed over the row shards, in place."""
        ...

    def polynomial_(self, A: torch.Tensor, b: float, c: float, out: torch.Tensor) -> torch.Tensor:
        """out = b A + c A A for the replicated Gram stack A (its rows may be split over ranks)."""
        ...


class MatrixTransform(ABC):
    """Base of the whole-matrix transforms (see the module docstring)."""

    steps: int | None = None

    @abstractmethod
    def __call__(self, stack: torch.Tensor) -> torch.Tensor:
        """The transform of every matrix of ``stack`` (batch, rows, cols); a new tensor."""

    @abstractmethod
    def flops(self, rows: int, cols: int) -> int:
        """Multiply-add FLOPs (2 per MAC) of one rows x cols matrix."""

    def owner_state(self, rows: int, cols: int) -> dict:
        """The whole-matrix state entries of one rows x cols matrix (name -> OwnerStateEntry of
        optim.orthogonalize.owner_state); non-empty: ``__call__`` takes them as its second argument."""
        return {}

    def supports_row_shards(self, rows: int, cols: int) -> bool:
        """Whether a rows x cols matrix can be transformed on its row shards."""
        return False

    def row_sharded(self, block: torch.Tensor, shards: RowShards) -> torch.Tensor:
        """The transform of a stack of row blocks, the rest of each matrix reached through ``shards``."""
        raise NotImplementedError(f"{type(self).__name__} needs whole matrices (supports_row_shards is False)")
