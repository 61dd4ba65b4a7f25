"""Orthogonalizers: run the whole-matrix transform on every matrix of a step at once, between the
rules' two phases.

A whole-matrix transform (``MatrixTransform``) maps a stack (batch, rows, cols) of same-shape
matrices to a stack of the same shape and counts its FLOPs: Newton-Schulz (``NewtonSchulz``, the
Muon family) or the spectral powers (optim.orthogonalize.spectral_power). Protocol of an
orthogonalizer (the optimizer depends on nothing else):

    orthogonalize_all(blocks: list[Tensor], full_shapes: list[tuple[int, int]]) -> list[Tensor]
        blocks[i] is the local row block of matrix i (the whole matrix in one process) and
        full_shapes[i] its full (rows, cols); returns transform(full matrix i) restricted to the same
        rows as blocks[i], in blocks[i]'s dtype. Inputs are not modified.

``LocalOrthogonalizer`` is the single-process one: it stacks same-shape matrices and calls the
transform once per shape. Under FSDP2, ``optim.orthogonalize.exchange`` moves row blocks to
an owner rank, runs a LocalOrthogonalizer there and sends the rows back; ``optim.orthogonalize.from_mesh``
chooses between them from the device mesh.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Protocol

import torch

from optim.dtypes import resolve_matmul_dtype
from optim.hparams import check_in, check_int_at_least
from optim.orthogonalize.coefficients import iteration_schedule
from optim.orthogonalize.newton_schulz import (
    METHODS,
    NS_COEFFICIENTS,
    method_flops,
    newton_schulz_iterate,
    orthogonalize,
    per_step_triplets,
)


class MatrixTransform(Protocol):
    def __call__(self, stack: torch.Tensor) -> torch.Tensor: ...

    def flops(self, rows: int, cols: int) -> int: ...


@dataclass(frozen=True)
class NewtonSchulz:
    """Quintic Newton-Schulz (plain or Gram form, or the exact polar factor, ``method="svd"``) as a
    MatrixTransform. ``coefficients``: one triplet for every step, or one per step (a schedule of
    optim.orthogonalize.coefficients); ``norm_scale``: the schedule's normalization safety factor."""

    steps: int
    coefficients: tuple
    compute_dtype: torch.dtype
    method: str = "newton_schulz"
    norm_scale: float = 1.0

    def __call__(self, stack: torch.Tensor) -> torch.Tensor:
        return orthogonalize(stack, self.steps, self.coefficients, self.compute_dtype, self.method, self.norm_scale)

    def flops(self, rows: int, cols: int) -> int:
        return method_flops(self.method, rows, cols, self.steps)

    def supports_row_shards(self, rows: int, cols: int) -> bool:
        """Any matrix can iterate on shards of its long side (the Gram matrix is a sum over them)."""
        return self.method != "svd"

    def row_sharded(self, block: torch.Tensor, shards) -> torch.Tensor:
        """The plain quintic on a stack of row blocks (rows >= cols overall); ``shards``: a RowShards."""
        triplets = per_step_triplets(self.coefficients, self.steps)
        out = newton_schulz_iterate(block, triplets, self.compute_dtype, self.norm_scale, True, shards)
        return out.to(block.dtype)


class Orthogonalizer(Protocol):
    def orthogonalize_all(
        self, blocks: list[torch.Tensor], full_shapes: list[tuple[int, int]]
    ) -> list[torch.Tensor]: ...


def newton_schulz_from_config(orth, device: torch.device) -> NewtonSchulz:
    """The Newton-Schulz of ``optim.orthogonalize`` (an OrthogonalizeConfig) on ``device``."""
    schedule = iteration_schedule(orth.schedule, orth.steps, tuple(orth.coefficients))
    fixed = orth.schedule == "fixed"
    return NewtonSchulz(
        steps=orth.steps, coefficients=schedule.triplets[0] if fixed else schedule.triplets, method=orth.method,
        compute_dtype=resolve_matmul_dtype(orth.compute_dtype, device, "optim.orthogonalize.compute_dtype"),
        norm_scale=schedule.norm_scale,
    )


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
        self.transform = transform

    def flops(self, rows: int, cols: int) -> int:
        return self.transform.flops(rows, cols)

    def orthogonalize_all(self, blocks, full_shapes):
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
            result = self.transform(stack)
            for i, matrix in zip(indices, result.unbind(0)):
                out[i] = matrix
        return out
