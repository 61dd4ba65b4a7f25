"""GPT-2 (Radford et al. 2019), as in OpenAI's release and nanoGPT.

Learned position embeddings, pre-LayerNorm blocks, fused qkv projection, causal attention through
``scaled_dot_product_attention``, a 4x GELU MLP, dropout, and a token embedding tied to the output
head. Weights use the (out_features, in_features) layout of ``nn.Linear``; Hugging Face's GPT-2 stores
Conv1D weights transposed, which ``models.hf`` handles.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from models.chunked_loss import linear_cross_entropy


@dataclass
class GPTConfig:
    """The ``model`` config node; the sizes live in configs/model/*.yaml (no defaults here)."""

    name: str
    vocab_size: int
    block_size: int
    n_layer: int
    n_head: int
    n_embd: int
    dropout: float
    bias: bool
    vocab_pad_to: int           # embedding/head rows padded to a multiple of this (1: none); loss unchanged
    loss_impl: str              # chunked (models/chunked_loss.py) | plain (materialized logits, nanoGPT's)
    loss_chunk_rows: int | str  # rows of logits per block of the chunked loss; auto: per device (AUTO_CHUNK_ROWS)

    @property
    def padded_vocab_size(self) -> int:
        return -(-self.vocab_size // self.vocab_pad_to) * self.vocab_pad_to

    def chunk_rows(self, device: torch.device) -> int:
        if self.loss_chunk_rows == "auto":
            return AUTO_CHUNK_ROWS.get(device.type, AUTO_CHUNK_ROWS["cpu"])
        return int(self.loss_chunk_rows)

    def __post_init__(self) -> None:
        for key in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            if int(getattr(self, key)) < 1:
                raise ValueError(f"model.{key} must be >= 1, got {getattr(self, key)}")
        if self.n_embd % self.n_head != 0:
            raise ValueError(
                f"model.n_embd ({self.n_embd}) must be divisible by model.n_head ({self.n_head}); "
                f"pick a head count that divides the width"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if isinstance(self.vocab_pad_to, bool) or not isinstance(self.vocab_pad_to, int) or not (
            1 <= self.vocab_pad_to <= 4096
        ):
            raise ValueError(f"model.vocab_pad_to must be an integer in [1, 4096] (64 is GPU-friendly; 1: no "
                             f"padding), got {self.vocab_pad_to!r}")
        if self.loss_impl not in LOSS_IMPLS:
            raise ValueError(f"model.loss_impl must be one of {list(LOSS_IMPLS)}, got {self.loss_impl!r}")
        rows = self.loss_chunk_rows
        if rows != "auto" and (isinstance(rows, bool) or not isinstance(rows, int) or rows < 1):
            raise ValueError(f"model.loss_chunk_rows must be 'auto' or an integer >= 1, got {rows!r}")


LOSS_IMPLS = ("chunked", "plain")
# Rows per block of the chunked loss when model.loss_chunk_rows=auto (BENCHMARKS.md, "chunked loss"):
# on CPU the fastest for the default model (1024 rows: at most 8% faster on gpt2-mini, more memory);
# on GPU large blocks keep the matmuls efficient.
AUTO_CHUNK_ROWS = {"cpu": 512, "cuda": 8192}
GPT_CONFIG_KEYS = tuple(f.name for f in fields(GPTConfig))
# What fixes the tensors' shapes: a checkpoint loads into a model only if these agree.
SHAPE_KEYS = ("vocab_size", "vocab_pad_to", "block_size", "n_layer", "n_head", "n_embd", "bias")
# Module names that wrappers insert into parameter names: torch.compile ("_orig_mod", also per
# block), activation checkpointing and FSDP1 wrappers, DDP ("module").
WRAPPER_COMPONENTS = ("_orig_mod", "_checkpoint_wrapped_module", "_fsdp_wrapped_module", "module")


def canonical_param_name(name: str) -> str:
    """A parameter's name in this file's model, with wrapper components removed."""
    return ".".join(part for part in name.split(".") if part not in WRAPPER_COMPONENTS)


# The optimizer role of every parameter, by canonical name (optim.routing claims each with exactly
# one rule): hidden matrices take the orthogonalized rule; embeddings are 2-D too but take AdamW.
PARAM_ROLES: tuple[tuple[str, str], ...] = (
    (r"transformer\.h\.\d+\.attn\.(c_attn|c_proj)\.weight", "matrix"),
    (r"transformer\.h\.\d+\.mlp\.(c_fc|c_proj)\.weight", "matrix"),
    (r"transformer\.(wte|wpe)\.weight", "embedding"),
    (r"lm_head\.weight", "embedding"),  # tied to wte, so named_parameters() normally yields wte only
    (r".*\.bias", "vector"),
    (r"(transformer\.h\.\d+\.ln_[12]|transformer\.ln_f)\.weight", "vector"),
)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.dropout = config.dropout
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        # (B, T, C) -> (B, n_head, T, head_dim)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0
        )
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # GPT-2 uses the tanh approximation of GELU ("gelu_new" in transformers).
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class Block(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.padded_vocab_size, config.n_embd),
                wpe=nn.Embedding(config.block_size, config.n_embd),
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList(Block(config) for _ in range(config.n_layer)),
                ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.padded_vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # tied, as in GPT-2
        self.activation_checkpointing = False  # recompute each block in backward (trainer sets it)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """GPT-2 init: N(0, 0.02), zero biases, residual projections scaled by 1/sqrt(2 * n_layer)."""
        residual_std = 0.02 / math.sqrt(2 * self.config.n_layer)
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                std = residual_std if name.endswith("c_proj") else 0.02
                nn.init.normal_(module.weight, mean=0.0, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        with torch.no_grad():  # padded vocabulary rows: zero, and they stay zero (no token, no gradient)
            self.transformer.wte.weight[self.config.vocab_size:].zero_()


    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None, reduction: str = "mean"
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return (logits, loss). ``reduction="sum"`` lets the trainer normalise by global tokens.

        Logits have ``vocab_size`` columns (padded rows of the head are not tokens). With targets and
        ``loss_impl=chunked`` the logits are never formed and None is returned in their place."""
        _, T = idx.shape
        if T > self.config.block_size:
            raise ValueError(
                f"sequence length {T} exceeds the model's context (model.block_size="
                f"{self.config.block_size}); lower trainer.seq_len or raise model.block_size"
            )
        pos = torch.arange(T, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for block in self.transformer.h:
            if self.activation_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        x = self.transformer.ln_f(x)
        V = self.config.vocab_size
        if targets is not None and self.config.loss_impl == "chunked":
            rows = self.config.chunk_rows(x.device)
            h = x.reshape(-1, x.size(-1))
            return None, linear_cross_entropy(h, self.lm_head.weight, targets, V, rows, reduction)
        logits = self.lm_head(x)[..., :V]  # padded columns are not tokens: out of softmax and sampling
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().reshape(-1, V), targets.reshape(-1), reduction=reduction)
        return logits, loss

    def param_roles(self) -> tuple[tuple[tuple[str, str], ...], Callable[[str], str]]:
        """(rules, canonical_name): the parameter table optim.routing applies to this model."""
        return PARAM_ROLES, canonical_param_name

    def num_parameters(self, non_embedding: bool = False) -> int:
        """Unique parameters (the tied head counts once, padded vocabulary rows not at all: they are
        never a token); optionally without wte/wpe."""
        n = sum(p.numel() for p in self.parameters())
        n -= (self.config.padded_vocab_size - self.config.vocab_size) * self.config.n_embd
        if non_embedding:
            n -= (self.config.vocab_size + self.config.block_size) * self.config.n_embd
        return n


def flops_per_token(config: GPTConfig, seq_len: int, n_params: int | None = None) -> float:
    """Training FLOPs per token: 6N for the matmuls with the weights (forward 2N, backward 4N)
    plus the attention scores and values, 6 * 2 * n_layer * seq_len * n_embd (PaLM appendix B).

    N counts the non-embedding parameters plus the output head (the head is a real matmul even
    when tied; the wpe/wte lookups are not).
    """
    if n_params is None:
        C, L, V = config.n_embd, config.n_layer, config.padded_vocab_size
        per_block = 12 * C * C + (13 * C if config.bias else 2 * C)  # weights + biases + LayerNorms
        ln_f = 2 * C if config.bias else C
        n_params = L * per_block + ln_f + V * C
    attention = 12 * config.n_layer * seq_len * config.n_embd
    return 6.0 * n_params + attention
