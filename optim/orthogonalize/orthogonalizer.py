"""Orthogonalizers: run the whole-matrix transform on every matrix of a step at once, between the
rules' two phases.

The transform (a ``MatrixTransform`` of optim.orthogonalize.transform) maps a stack of same-shape
matrices: Newton-Schulz (the Muon family) or a spectral power. Protocol of an orthogonalizer (the
optimizer depends on nothing else):

    orthogonalize_all(blocks: list[Tensor], full_shapes: list[tuple[int, int]]) -> list[Tensor]
        blocks[i] is the local row block of matrix i (the whole matrix in one process) and
        full_shapes[i] its full (rows, cols); returns transform(full matrix i) restricted to the same
        rows as blocks[i], in blocks[i]'s dtype. Inputs are not modified. A transform with
        owner-resident state (optim.orthogonalize.owner_state) is also given ``states``: matrix i's
        entries (name -> tensor, updated in place), empty where another rank holds them.

``LocalOrthogonalizer`` is the single-process one: it stacks same-shape matrices and calls the
transform once per shape. Under FSDP2, ``optim.orthogonalize.exchange`` moves row blocks to
an owner rank, runs a LocalOrthogonalizer there and sends the rows back; ``optim.orthogonalize.from_mesh``
chooses between them from the device mesh.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Protocol

import torch

from optim.hparams import check_in, check_int_at_least
from optim.orthogonalize.newton_schulz import METHODS, NS_COEFFICIENTS, NewtonSchulz
from optim.orthogonalize.owner_state import stack_state, unstack_state_
from optim.orthogonalize.transform import MatrixTransform


class Orthogonalizer(Protocol):
    def orthogonalize_all(
        self, blocks: list[torch.Tensor], full_shapes: list[tuple[int, int]],
        states: list[dict[str, torch.Tensor]] | None = None,
    ) -> list[torch.Tensor]: ...


class LocalOrthogonalizer:
    """All matrices are whole and local: one batched transform call per distinct shape.

    ``transform`` defaults to Newton-Schulz with the given steps, coefficients, dtype and method."""

    def __init__(
        self,
        steps: int = 5,
        coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
        compute_dtype: torch.dtype = torch.float32,
        method: str = "newton_schulz",
        transform: MatrixTransform | None = None,
    ):
        if transform is None:
            coefficients = tuple(float(c) for c in coefficients)
            if len(coefficients) != 3:
                raise ValueError(f"optim.orthogonalize.coefficients must be [a, b, c], got {list(coefficients)}")
            transform = NewtonSchulz(
                steps=check_int_at_least("optim.orthogonalize.steps", steps, 1), coefficients=coefficients,
                compute_dtype=compute_dtype, method=check_in("optim.orthogonalize.method", method, METHODS),
            )
        self.transform: MatrixTransform = transform

    def flops(self, rows: int, cols: int) -> int:
        return self.transform.flops(rows, cols)

    def orthogonalize_all(self, blocks, full_shapes, states=None):
        by_shape: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, (block, shape) in enumerate(zip(blocks, full_shapes)):
            if tuple(block.shape) != tuple(shape):
                raise ValueError(
                    f"LocalOrthogonalizer got a row block {tuple(block.shape)} of a {tuple(shape)} matrix; "
                    "sharded parameters need the sharded orthogonalizer (optim.orthogonalize.distributed)"
                )
            by_shape[tuple(shape)].append(i)
        out: list[torch.Tensor | None] = [None] * len(blocks)
        for indices in by_shape.values():
            stack = torch.stack([blocks[i] for i in indices]) if len(indices) > 1 else blocks[indices[0]].unsqueeze(0)
            if states is None:
                result = self.transform(stack)
            else:  # the state of these matrices, stacked, updated by the transform, copied back
                stores = [states[i] for i in indices]
                stacked = stack_state(stores)
                result = self.transform(stack, stacked)
                unstack_state_(stores, stacked)
            for i, matrix in zip(indices, result.unbind(0)):
                out[i] = matrix
        return out
