"""Replay an authors' reference vector file through an optimizer: the largest parameter error."""

from __future__ import annotations

import torch


def replay_worst_error(opt: torch.optim.Optimizer, params: list[torch.Tensor], ref: dict, dtype: torch.dtype) -> float:
    """Set each recorded step's gradients, step, and compare the parameters with the recorded ones."""
    worst = 0.0
    for grads, expected in zip(ref["grads"], ref["params_after_step"]):
        for p, g in zip(params, grads):
            p.grad = torch.tensor(g, dtype=dtype)
        opt.step()
        for p, e in zip(params, expected):
            worst = max(worst, (p.detach() - torch.tensor(e, dtype=dtype)).abs().max().item())
    return worst
