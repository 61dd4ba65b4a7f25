"""The output head and its cross-entropy, a block of rows at a time (never the full (N, V) logits).

The plain formulation (nanoGPT's) materializes logits = h W^T of shape (N, V) for N = B*T tokens, in
fp32 for the loss, then log_softmax, its gradient and the gradient of the logits: at GPT-2's V = 50,257
these are the largest tensors of the step and most of its memory traffic. Here, for each block of
``chunk_rows`` rows of h (forward, with gradients wanted):

    z   = h_c W^T                      (chunk_rows, V)  in the compute dtype, then fp32
    m   = max(z);  s = sum(exp(z - m)) fp32, padded columns (>= vocab_size) set to -inf first
    loss += sum(m + log(s) - z[target])
    P   = exp(z - m) / s - onehot(target)   the gradient of the summed loss wrt z
    dh_c = P W;   dW += P^T h_c        (fp32 accumulation of dW)

so the three head matmuls of the plain path (forward, dh, dW) are done once each and the gradients
are ready when forward returns; backward only scales them by the incoming gradient (the loss is a
scalar at the end of the graph). z, exp(z - m) and P are one preallocated fp32 block, overwritten
in place: on CPU every fresh logits-sized tensor costs its page faults again. Padded vocabulary rows
get exactly zero gradient from the head. Under autocast the matmuls run in the autocast dtype (bf16) and the log-sum-exp in fp32. Without
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


def _logits_buffer(h: torch.Tensor, weight: torch.Tensor, chunk_rows: int) -> torch.Tensor:
    """One fp32 logits block that every chunk reuses (a fresh (rows, V) tensor per chunk would be
    page-faulted in anew each time on CPU)."""
    return torch.empty(min(chunk_rows, h.shape[0]), weight.shape[0], dtype=torch.float32, device=h.device)


def _chunk_logits_into(out: torch.Tensor, h_c: torch.Tensor, weight: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """fp32 logits of one block of rows, written into ``out``; padded columns (>= vocab_size) at -inf,
    so they are excluded from the softmax."""
    if h_c.dtype == torch.float32:
        torch.mm(h_c, weight.t(), out=out)
    else:
        out.copy_(h_c @ weight.t())
    if weight.shape[0] > vocab_size:
        out[:, vocab_size:] = float("-inf")
    return out


def _loss_only(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, vocab_size: int,
               chunk_rows: int) -> torch.Tensor:
    total = torch.zeros((), dtype=torch.float32, device=h.device)
    logits = _logits_buffer(h, weight, chunk_rows)
    for start in range(0, h.shape[0], chunk_rows):
        h_c, t = h[start:start + chunk_rows], targets[start:start + chunk_rows]
        z = _chunk_logits_into(logits[:h_c.shape[0]], h_c, weight, vocab_size)
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
            logits = _logits_buffer(h, weight, chunk_rows)  # worked on in place only, chunk by chunk
            for start in range(0, h.shape[0], chunk_rows):
                rows = slice(start, start + chunk_rows)
                h_c, t = h_cd[rows], targets[rows, None]
                z = _chunk_logits_into(logits[:h_c.shape[0]], h_c, w_cd, vocab_size)
                target_logit = z.gather(1, t)
                row_max = z.amax(1, keepdim=True)
                sum_exp = z.sub_(row_max).exp_().sum(1, keepdim=True)
                total += (row_max + sum_exp.log() - target_logit).sum()   # log-sum-exp - z[target]
                p = z.mul_(scale / sum_exp)                                   # scale * softmax
                p.scatter_add_(1, t, torch.full_like(target_logit, -scale))  # scale * (softmax - onehot)
                if dtype == torch.float32 == h.dtype:
                    torch.mm(p, w_cd, out=grad_h[rows])
                    grad_w.addmm_(p.t(), h_c)
                else:
                    p = p.to(dtype)
                    grad_h[rows] = (p @ w_cd).to(h.dtype)
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
