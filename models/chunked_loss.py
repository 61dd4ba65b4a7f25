"""The output head and its cross-entropy, a block of rows at a time (never the full (N, V) logits).

The plain formulation (nanoGPT's) materializes logits = h W^T of shape (N, V) for N = B*T tokens, in
fp32 for the loss, then log_softmax, its gradient and the gradient of the logits: at GPT-2's V = 50,257
these are the largest tensors of the step and most of its memory traffic. Here, for each block of
``chunk_rows`` rows of h (forward, with gradients wanted):

    z   = h_c W^T                      (chunk_rows, V)  in the compute dtype, then fp32
    lse = logsumexp(z)                 fp32, padded columns (>= vocab_size) set to -inf first
    loss += sum(lse - z[target])
    P   = softmax(z) - onehot(target)  the gradient of the summed loss wrt z
    dh_c = P W;   dW += P^T h_c        (fp32 accumulation of dW)

so the three head matmuls of the plain path (forward, dh, dW) are done once each and the gradients
are ready when forward returns; backward only scales them by the incoming gradient (the loss is a
scalar at the end of the graph). Padded vocabulary rows get exactly zero gradient from the head.
Under autocast the matmuls run in the autocast dtype (bf16) and the log-sum-exp in fp32. Without
gradients (evaluation) only the loss is computed, chunk by chunk.

``reduction``: "sum" (the trainer normalizes by the global token count) or "mean".
"""

from __future__ import annotations

import torch

REDUCTIONS = ("sum", "mean")


def compute_dtype(h: torch.Tensor) -> torch.dtype:
    """The matmul dtype: autocast's where it is on for h's device, else h's own."""
    device = h.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return h.dtype


def _chunk_logits(h_c: torch.Tensor, weight: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """fp32 logits of one block of rows; padded columns at -inf (excluded from the softmax)."""
    z = (h_c @ weight.t()).float()
    if weight.shape[0] > vocab_size:
        z[:, vocab_size:] = float("-inf")
    return z


def _loss_only(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, vocab_size: int,
               chunk_rows: int) -> torch.Tensor:
    total = torch.zeros((), dtype=torch.float32, device=h.device)
    for start in range(0, h.shape[0], chunk_rows):
        z = _chunk_logits(h[start:start + chunk_rows], weight, vocab_size)
        t = targets[start:start + chunk_rows]
        total += (torch.logsumexp(z, dim=1) - z.gather(1, t[:, None]).squeeze(1)).sum()
    return total


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, weight, targets, vocab_size: int, chunk_rows: int, scale: float):
        dtype = compute_dtype(h)
        with torch.autocast(h.device.type, enabled=False):  # the dtypes below are explicit
            h_cd, w_cd = h.to(dtype), weight.to(dtype)
            grad_h = torch.empty_like(h)
            grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
            total = torch.zeros((), dtype=torch.float32, device=h.device)
            for start in range(0, h.shape[0], chunk_rows):
                h_c, t = h_cd[start:start + chunk_rows], targets[start:start + chunk_rows]
                z = _chunk_logits(h_c, w_cd, vocab_size)
                lse = torch.logsumexp(z, dim=1, keepdim=True)
                total += (lse.squeeze(1) - z.gather(1, t[:, None]).squeeze(1)).sum()
                p = z.sub_(lse).exp_()                       # softmax, in place over the logits
                p.scatter_add_(1, t[:, None], torch.full_like(lse, -1.0))
                if scale != 1.0:
                    p.mul_(scale)
                p = p.to(dtype)
                grad_h[start:start + chunk_rows] = (p @ w_cd).to(h.dtype)
                if dtype == torch.float32:
                    grad_w.addmm_(p.t(), h_c)
                else:
                    grad_w += (p.t() @ h_c).float()
        ctx.save_for_backward(grad_h, grad_w.to(weight.dtype))
        return total * scale

    @staticmethod
    def backward(ctx, grad_out):
        grad_h, grad_w = ctx.saved_tensors
        return grad_h * grad_out, grad_w * grad_out, None, None, None, None


def linear_cross_entropy(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, vocab_size: int,
                         chunk_rows: int, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of the logits h W^T (only the first ``vocab_size`` columns take part) against
    ``targets``, without materializing the logits. h: (N, C); weight: (V_padded, C); targets: (N,)."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    scale = 1.0 / h.shape[0] if reduction == "mean" else 1.0
    targets = targets.reshape(-1)
    if torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad):
        return _LinearCrossEntropy.apply(h, weight, targets, vocab_size, chunk_rows, scale)
    dtype = compute_dtype(h)
    with torch.autocast(h.device.type, enabled=False):
        return _loss_only(h.to(dtype), weight.to(dtype), targets, vocab_size, chunk_rows) * scale
