"""Σ x xᵀ of the inputs of the Linear layers a rule steps, captured by forward hooks on chosen steps.

For a weight W (out, in) applied as y = W x, the layer's input activations A (in x tokens) enter the
adaptive Schatten-p criterion (optim/rules/schatten.py) through the spectrum of A Aᵀ = Σ_tokens x xᵀ
(in x in). The hooks are registered once, given the model (``MatrixRule.observe_model``, called by
optim.build.build_optimizer); the optimizer itself stays importable and buildable without a model.

    capture   only while ``capturing`` is set (the rule sets it for the steps that measure), only in
              training mode with autograd on (evaluation and sampling forwards are not the training
              batch), summed over the micro-batches of the step, in float32 (float64 for float64 inputs)
    sample    at most ``tokens`` rows per forward, every ⌈n/tokens⌉-th token (0: all): a deterministic
              stride, so a resumed run captures what the uninterrupted one did; subsampling the tokens
              scales A Aᵀ by ~tokens/n, which moves every Schatten norm of A by the same factor and so
              leaves the criterion's argmax unchanged (the sample's spectrum is noisier, not biased in scale)
    reduce    ``take`` sums the Gram over the data-parallel ranks (one all-reduce of in x in over the
              whole job: every rank, replicas of HSDP included, trains on its own tokens), so every rank
              computes the same spectrum and selects the same p

Activation checkpointing runs each forward twice: both are captured, doubling the Gram uniformly
(again no effect on the argmax).
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn as nn


class InputGrams:
    """Hooks on ``modules`` (slot -> nn.Linear); ``take(slot)`` returns that slot's all-reduced Gram."""

    def __init__(self, modules: dict[int, nn.Module], group: dist.ProcessGroup | None, tokens: int):
        self.group = group
        self.tokens = int(tokens)
        self.capturing = True  # the first step measures (the rule resets it after every step)
        self.in_features = {slot: int(m.in_features) for slot, m in modules.items()}
        self._grams: dict[int, torch.Tensor] = {}
        self._handles = [m.register_forward_hook(self._hook(slot)) for slot, m in modules.items()]

    def _hook(self, slot: int):
        def capture(module: nn.Module, args: tuple, output) -> None:
            if not (self.capturing and module.training and torch.is_grad_enabled()):
                return
            x = args[0].detach().reshape(-1, self.in_features[slot])
            if self.tokens and x.shape[0] > self.tokens:
                x = x[:: math.ceil(x.shape[0] / self.tokens)]
            x = x.to(torch.promote_types(x.dtype, torch.float32))
            gram = x.mT @ x
            if slot in self._grams:
                self._grams[slot].add_(gram)
            else:
                self._grams[slot] = gram

        return capture

    def has(self, slot: int) -> bool:
        return slot in self.in_features

    def take(self, slot: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """The slot's Gram of this step, summed over the data-parallel ranks (a collective when
        distributed: every rank calls it for the same slots in the same order); cleared."""
        n = self.in_features[slot]
        gram = self._grams.pop(slot, None)
        gram = torch.zeros(n, n, dtype=dtype, device=device) if gram is None else gram.to(dtype=dtype, device=device)
        if self.group is not None:
            dist.all_reduce(gram, group=self.group)
        return gram

    def discard(self, slot: int) -> None:
        """Drop what was captured for a step that does not measure."""
        self._grams.pop(slot, None)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


def linear_modules_of(model: nn.Module, params: list[torch.Tensor]) -> dict[int, nn.Module]:
    """slot (index in ``params``) -> the nn.Linear whose ``weight`` is that parameter (by identity);
    parameters of other modules (embeddings under optim.routing=ndim) get no slot."""
    slot_of = {id(p): i for i, p in enumerate(params)}
    found = {}
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if isinstance(module, nn.Linear) and weight is not None and id(weight) in slot_of:
            found[slot_of[id(weight)]] = module
    return found


def data_parallel_group(mesh) -> dist.ProcessGroup | None:
    """The ranks whose batches differ: the whole job when a mesh spans more than one rank (this project
    has data parallelism only), None in one process."""
    if mesh is None or mesh.size() == 1 or not dist.is_initialized():
        return None
    return dist.group.WORLD
