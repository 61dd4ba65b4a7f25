"""AdamW (Loshchilov & Hutter, arXiv 1711.05101) with GPT-2 practice, in two conventions.

``torch`` (default): torch.optim.AdamW itself (foreach on CPU, fused on CUDA)

    m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;  m^ = m/(1-b1^t);  v^ = v/(1-b2^t)
    W *= 1 - lr * wd      (decoupled)
    W -= lr * m^ / (sqrt(v^) + eps)

``namo_repo``: the auxiliary AdamW of the NAMO authors' optimizers (github.com/minxin-zhg/namo
src/namo.py, the "AdamW backup" of NAMO / NAMO_D): eps is added to the UNcorrected sqrt(v), and the
bias corrections then scale the step:

    W *= 1 - lr * wd
    W -= lr * sqrt(1-b2^t)/(1-b1^t) * m / (sqrt(v) + eps)

(equal to torch's with eps replaced by eps * sqrt(1-b2^t): a larger effective eps early on).

Routed groups: matrices take ``optim.matrix.weight_decay`` (0.1 for GPT-2); embeddings (wte, wpe,
tied head) and vectors (biases, LayerNorm) take their own lr and, by default, no decay. Both work
unchanged on FSDP2 DTensors (elementwise ops only). The state keys are torch's (step, exp_avg,
exp_avg_sq) in both conventions, so checkpoints and diagnostics read them alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.optim.adamw import adamw as functional_adamw

from optim.hparams import check_betas, check_in, check_positive

ADAMW_IMPLS = ("torch", "namo_repo")


@dataclass(frozen=True)
class AdamWHParams:
    """``optim.adamw``: for every group AdamW steps (defaults: configs/optim/shared/adamw_groups.yaml)."""

    betas: tuple[float, float]
    eps: float
    impl: str  # torch | namo_repo (the module docstring)

    def __post_init__(self) -> None:
        check_betas("optim.adamw.betas", self.betas)
        check_positive("optim.adamw.eps", self.eps)
        check_in("optim.adamw.impl", self.impl, ADAMW_IMPLS)


@torch.no_grad()
def namo_repo_adamw_(params, grads, exp_avgs, exp_avg_sqs, steps, *, beta1: float, beta2: float, lr: float,
                     weight_decay: float, eps: float) -> None:
    """One step of the NAMO repo's auxiliary AdamW on each parameter, in place (``steps`` are 0-d
    tensors, incremented here)."""
    for param, grad, m, v, step in zip(params, grads, exp_avgs, exp_avg_sqs, steps):
        step += 1
        t = float(step)
        m.lerp_(grad, 1 - beta1)
        v.lerp_(grad.square(), 1 - beta2)
        direction = m / (v.sqrt() + eps)
        param.mul_(1 - lr * weight_decay)
        param.add_(direction, alpha=-lr * (1 - beta2**t) ** 0.5 / (1 - beta1**t))


def adamw_step_(impl: str, params, grads, states, *, beta1: float, beta2: float, lr: float, weight_decay: float,
                eps: float) -> None:
    """One AdamW step of a group in the ``impl`` convention; ``states`` hold step/exp_avg/exp_avg_sq."""
    moments = ([s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states], [s["step"] for s in states])
    if impl == "namo_repo":
        namo_repo_adamw_(params, grads, *moments, beta1=beta1, beta2=beta2, lr=lr, weight_decay=weight_decay, eps=eps)
        return
    on_cuda = params[0].is_cuda
    exp_avgs, exp_avg_sqs, steps = moments
    functional_adamw(params, grads, exp_avgs, exp_avg_sqs, [], steps, foreach=None if on_cuda else True,
                     fused=True if on_cuda else None, amsgrad=False, beta1=beta1, beta2=beta2, lr=lr,
                     weight_decay=weight_decay, eps=eps, maximize=False)


def adamw_direction(impl: str, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor, t: float, beta1: float,
                    beta2: float, eps: float) -> torch.Tensor:
    """The step per unit lr (without decay) the moments give at step t: for the update-RMS diagnostic."""
    if impl == "namo_repo":
        return exp_avg / (exp_avg_sq.sqrt() + eps) * ((1 - beta2**t) ** 0.5 / (1 - beta1**t))
    return (exp_avg / (1 - beta1**t)) / ((exp_avg_sq / (1 - beta2**t)).sqrt() + eps)


class NAMORepoAdamW(torch.optim.Optimizer):
    """``optim=adamw`` with ``optim.adamw.impl=namo_repo``: the same step for every group."""

    def __init__(self, groups: list[dict[str, Any]], betas: tuple[float, float], eps: float):
        super().__init__(groups, dict(betas=betas, eps=eps, weight_decay=0.0))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            for p in params:
                if not self.state[p]:
                    self.state[p].update(step=torch.zeros((), dtype=torch.float32),
                                         exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
            beta1, beta2 = group["betas"]
            namo_repo_adamw_(params, [p.grad for p in params], [self.state[p]["exp_avg"] for p in params],
                             [self.state[p]["exp_avg_sq"] for p in params], [self.state[p]["step"] for p in params],
                             beta1=beta1, beta2=beta2, lr=float(group["lr"]),
                             weight_decay=float(group["weight_decay"]), eps=group["eps"])
        return None


def build_adamw(groups: list[dict[str, Any]], hparams: AdamWHParams) -> torch.optim.Optimizer:
    if hparams.impl == "namo_repo":
        return NAMORepoAdamW(groups, hparams.betas, hparams.eps)
    on_cuda = groups[0]["params"][0].is_cuda
    return torch.optim.AdamW(
        groups, betas=hparams.betas, eps=hparams.eps, fused=True if on_cuda else None,
        foreach=None if on_cuda else True,
    )
