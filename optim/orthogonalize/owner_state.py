"""Owner-resident per-matrix state: whole-matrix state a transform keeps from one step to the next,
held by the rank that transforms the matrix (its owner) and never moved during a step.

Some rules need state that is a function of the WHOLE matrix and cannot be row-sharded like the
momentum: ARO's k x k rotation R (optim/rules/aro.py), FISMO's Kronecker factors P, Q and its
whitened momentum. The contract (a stateful ``MatrixTransform``, optim/orthogonalize/transform.py):

    transform.owner_state(rows, cols) -> {name: OwnerStateEntry(shape, init, dtype)}
        the entries of ONE rows x cols matrix (its full shape; empty: a stateless transform)
    transform(stack, state) -> stack
        ``state[name]`` is a (batch, *shape) tensor, row b the entry of matrix b of the stack; the
        transform reads it and updates it IN PLACE (the caller copies it back to each matrix's store)

Where the state lives (``OwnerStateStore``, built by ``OrthogonalizedOptimizer``):
    one process                      here, for every matrix
    sharded exchange (owners)        on the owner rank of the matrix only (the plan of
                                     optim.orthogonalize.exchange over ALL the matrix parameters, so
                                     every matrix must have a gradient at every step: checked)
    replicated exchange              on every rank (each transforms every matrix; identical copies)
A stateful transform needs whole matrices: ``supports_row_shards`` must stay False (checked).

Checkpoints: the optimizer's ``state_dict()`` adds each entry under its name to its parameter's
state, ROW-SHARDED: a DTensor on the parameter's own mesh and placements (Shard(0) on ``dp_shard``;
FSDP2's torch.chunk row split, HSDP replicas alike) whose local rows the owner scatters with one
all_to_all; a plain tensor in a process without DTensors. ``load_state_dict()`` gathers the rows back
to the owner with one all_to_all. So DCP (trainer/checkpoint/store.py, get_state_dict/set_state_dict,
unchanged) saves and reshards it like any sharded state, and a checkpoint written at W = 2 resumes at
W = 1 or 4. Both are collectives: every rank calls them (get_state_dict / set_state_dict do).
Cost: no communication per step; at a save / load one all_to_all of the state's bytes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from optim.dtensor import DTensor, is_dtensor, local

INITS = ("zeros", "identity")


@dataclass(frozen=True)
class OwnerStateEntry:
    """One whole-matrix state entry: its shape, its initial value (``zeros``; ``identity``: every
    trailing square matrix is I) and dtype (fp32 by default: a rotation is not kept in bf16)."""

    shape: tuple[int, ...]
    init: str = "zeros"
    dtype: torch.dtype = torch.float32

    def __post_init__(self) -> None:
        if self.init not in INITS:
            raise ValueError(f"OwnerStateEntry.init must be one of {INITS}, got {self.init!r}")
        if self.init == "identity" and (len(self.shape) < 2 or self.shape[-1] != self.shape[-2]):
            raise ValueError(f"an identity entry needs trailing square matrices, got shape {self.shape}")

    def new(self, device: torch.device | str) -> torch.Tensor:
        t = torch.zeros(self.shape, dtype=self.dtype, device=device)
        if self.init == "identity":
            torch.diagonal(t, dim1=-2, dim2=-1).fill_(1)
        return t


def stack_state(stores: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The entries of same-shape matrices stacked (batch, *shape), as a stateful transform takes them."""
    return {name: torch.stack([s[name] for s in stores]) for name in stores[0]} if stores else {}


def unstack_state_(stores: list[dict[str, torch.Tensor]], stacked: dict[str, torch.Tensor]) -> None:
    """Copy the (updated) stacked entries back into each matrix's own tensors."""
    for name, values in stacked.items():
        for store, value in zip(stores, values.unbind(0)):
            store[name].copy_(value)


def _contiguous_stride(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(math.prod(shape[i + 1:]) for i in range(len(shape)))


class OwnerStateStore:
    """The owner-resident entries of an optimizer's matrix parameters (see the module docstring).

    ``params``: every matrix parameter, in the order the optimizer walks them; ``orthogonalizer``:
    the optimizer's (it names the transform's entries, who holds each matrix, and moves rows)."""

    def __init__(self, params: list[torch.Tensor], orthogonalizer):
        self.params = list(params)
        self.shapes = [(int(p.shape[0]), int(p.shape[1])) for p in self.params]
        transform = orthogonalizer_transform(orthogonalizer)
        owner_state = getattr(transform, "owner_state", None)
        self.entries = [dict(owner_state(*s)) if owner_state else {} for s in self.shapes]
        self.stateful = any(self.entries)
        self.orthogonalizer = orthogonalizer
        self.world_size = int(getattr(orthogonalizer, "world_size", 1))
        self.rank = int(getattr(orthogonalizer, "rank", 0))
        self.held: dict[int, dict[str, torch.Tensor]] = {}
        if not self.stateful:
            self.holders = [-1] * len(self.params)
            return
        for s in self.shapes:
            if transform.supports_row_shards(*s):
                raise ValueError(f"{type(transform).__name__} keeps whole-matrix state: supports_row_shards must be False")
        self.holders = list(orthogonalizer.state_holders(self.shapes)) if self.world_size > 1 else [-1] * len(self.params)
        for i, p in enumerate(self.params):
            if self.holds(i):
                self.held[i] = {name: entry.new(local(p).device) for name, entry in self.entries[i].items()}

    def holds(self, i: int) -> bool:
        return self.holders[i] in (-1, self.rank)

    def for_step(self, params: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """The state of each matrix of this step (empty where another rank holds it)."""
        if len(params) != len(self.params) or any(a is not b for a, b in zip(params, self.params)):
            raise RuntimeError("a transform with owner-resident state needs a gradient for every matrix parameter at "
                               "every step (the owners are planned over all of them)")
        return [self.held.get(i, {}) for i in range(len(self.params))]

    # ---- checkpoints: whole on the holder <-> row blocks (collectives) ---------------------------------
    def _items(self) -> list[tuple[int, str, tuple[int, ...], torch.dtype]]:
        return [(i, name, e.shape, e.dtype) for i in range(len(self.params)) for name, e in self.entries[i].items()]

    def row_sharded(self) -> dict[int, dict[str, torch.Tensor]]:
        """Matrix index -> entry name -> its row-sharded form (a DTensor like the parameter, or the whole
        tensor in a process without DTensors). A collective."""
        items = self._items()
        wholes = [self.held[i][name] if self.holds(i) else None for i, name, _, _ in items]
        rows = self._owner_to_rows(items, wholes)
        out: dict[int, dict[str, torch.Tensor]] = {}
        for (i, name, shape, _), block in zip(items, rows):
            p = self.params[i]
            if is_dtensor(p):
                block = DTensor.from_local(block, p.device_mesh, p.placements, run_check=False, shape=shape,
                                           stride=_contiguous_stride(shape))
            out.setdefault(i, {})[name] = block
        return out

    def load_row_sharded(self, values: dict[int, dict[str, torch.Tensor]]) -> None:
        """The inverse of ``row_sharded``: each entry's rows (as loaded) gathered to its holder. A collective."""
        items = self._items()
        missing = [f"matrix {i} '{name}'" for i, name, _, _ in items if name not in values.get(i, {})]
        if missing:
            raise KeyError(f"the optimizer state lacks the owner-resident entries {missing[:3]}")
        blocks = [local(values[i][name]) for i, name, _, _ in items]
        wholes = self._rows_to_owner(items, blocks)
        for (i, name, shape, dtype), whole in zip(items, wholes):
            if whole is not None:
                self.held[i][name].copy_(whole.reshape(shape).to(dtype))

    def _owner_to_rows(self, items, wholes) -> list[torch.Tensor]:
        if self.world_size == 1:
            return [w.detach().clone() for w in wholes]
        holders = [self.holders[i] for i, *_ in items]
        return self.orthogonalizer.owner_to_rows(holders, wholes, [s for _, _, s, _ in items],
                                                 [d for *_, d in items], self._device())

    def _rows_to_owner(self, items, blocks) -> list[torch.Tensor | None]:
        if self.world_size == 1:
            return list(blocks)
        holders = [self.holders[i] for i, *_ in items]
        return self.orthogonalizer.rows_to_owner(holders, blocks, [s for _, _, s, _ in items],
                                                 [d for *_, d in items], self._device())

    def _device(self) -> torch.device:
        return local(self.params[0]).device


def orthogonalizer_transform(orthogonalizer):
    """The whole-matrix transform an orthogonalizer runs (its own, or its local one's)."""
    transform = getattr(orthogonalizer, "transform", None)
    if transform is None and hasattr(orthogonalizer, "local"):
        transform = getattr(orthogonalizer.local, "transform", None)
    return transform
