"""Hugging Face interop: this project's GPT-2 <-> ``transformers.GPT2LMHeadModel``.

The two models compute the same function; only the weight layout differs. HF GPT-2 stores its four
projections (attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj) as ``Conv1D`` with weights of shape
(in_features, out_features), the transpose of ``nn.Linear``. Everything else (embeddings, LayerNorms,
biases, the tied head) has the same names and shapes.

Everything here is offline: ``load_hf`` reads a local directory only and never contacts the hub.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from models.gpt2 import GPT, GPTConfig, canonical_param_name
from optim.dtensor import full

# Projections whose weights HF keeps as Conv1D (in, out) instead of nn.Linear's (out, in).
CONV1D_WEIGHTS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# Both are the tanh approximation of GELU that GPT-2 (and models.gpt2.MLP) uses.
TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh")
LAYER_NORM_EPS = 1e-5  # nn.LayerNorm's default, used by models.gpt2


class NotGPT2Error(ValueError):
    """The weights or config do not describe a GPT-2 that both implementations compute identically."""


def _expected_shapes(n_layer: int, n_embd: int, vocab: int, block: int) -> dict[str, tuple[int, ...]]:
    """Every tensor of a bias=True GPT-2 in models.gpt2 (nn.Linear layout)."""
    C = n_embd
    shapes = {
        "transformer.wte.weight": (vocab, C),
        "transformer.wpe.weight": (block, C),
        "transformer.ln_f.weight": (C,),
        "transformer.ln_f.bias": (C,),
    }
    per_block = {
        "ln_1.weight": (C,), "ln_1.bias": (C,), "ln_2.weight": (C,), "ln_2.bias": (C,),
        "attn.c_attn.weight": (3 * C, C), "attn.c_attn.bias": (3 * C,),
        "attn.c_proj.weight": (C, C), "attn.c_proj.bias": (C,),
        "mlp.c_fc.weight": (4 * C, C), "mlp.c_fc.bias": (4 * C,),
        "mlp.c_proj.weight": (C, 4 * C), "mlp.c_proj.bias": (C,),
    }  # fmt: skip
    for i in range(n_layer):
        shapes.update({f"transformer.h.{i}.{k}": v for k, v in per_block.items()})
    return shapes


def check_gpt2_state_dict(sd: Mapping[str, torch.Tensor]) -> None:
    """Raise NotGPT2Error unless ``sd`` (models.gpt2 names and layout) is exactly a GPT-2 (with all its
    biases, or with none: a bias-free model is the GPT-2 whose biases are zero)."""
    sd = _with_zero_biases(dict(sd))
    for key in ("transformer.wte.weight", "transformer.wpe.weight"):
        if key not in sd or sd[key].dim() != 2:
            raise NotGPT2Error(
                f"not a GPT-2 state dict: no 2-D {key!r} (found keys like {sorted(sd)[:4]}); "
                f"export expects the weights of models.gpt2.GPT"
            )
    vocab, C = sd["transformer.wte.weight"].shape
    block = sd["transformer.wpe.weight"].shape[0]
    layers = {int(m.group(1)) for k in sd if (m := re.match(r"transformer\.h\.(\d+)\.", k))}
    n_layer = max(layers) + 1 if layers else 0
    expected = _expected_shapes(n_layer, C, vocab, block)
    problems = [f"missing {k}" for k in expected if k not in sd]
    problems += [f"unexpected {k}" for k in sd if k not in expected and k != "lm_head.weight"]
    problems += [
        f"{k} has shape {tuple(sd[k].shape)}, GPT-2 needs {shape}"
        for k, shape in expected.items()
        if k in sd and tuple(sd[k].shape) != shape
    ]
    if "lm_head.weight" in sd and not torch.equal(sd["lm_head.weight"], sd["transformer.wte.weight"]):
        problems.append("lm_head.weight differs from transformer.wte.weight (GPT-2 ties them)")
    if n_layer == 0:
        problems.append("no transformer blocks (transformer.h.<i>.*)")
    if problems:
        shown = "; ".join(problems[:6]) + (f"; ... {len(problems) - 6} more" if len(problems) > 6 else "")
        raise NotGPT2Error(
            f"the weights are not a GPT-2 (n_layer={n_layer}, n_embd={C}, vocab_size={vocab}, "
            f"block_size={block}): {shown}"
        )


def to_hf_state_dict(model_or_sd: GPT | Mapping[str, torch.Tensor], vocab_size: int | None = None) -> dict[str, torch.Tensor]:
    """HF GPT2LMHeadModel state dict (CPU, contiguous, Conv1D weights transposed) from our model or
    its state dict. Wrapper prefixes (``_orig_mod.``, ``module.``) are ignored; the shape is checked.
    A padded vocabulary (model.vocab_pad_to) is cut back to ``vocab_size`` rows (the model's own when
    a model is given): the padded rows are not tokens, so the exported model computes the same logits."""
    if isinstance(model_or_sd, torch.nn.Module):
        raw, vocab_size = model_or_sd.state_dict(), model_or_sd.config.vocab_size
    else:
        raw = model_or_sd
    # wrapper components out of the names (models.gpt2, as the routing reads them); FSDP2 shards gathered
    sd = {canonical_param_name(k): full(v).detach().cpu() for k, v in raw.items()}
    if vocab_size is not None:
        sd = {k: v[:vocab_size] if k in ("transformer.wte.weight", "lm_head.weight") else v for k, v in sd.items()}
    sd = _with_zero_biases(sd)
    check_gpt2_state_dict(sd)
    out = {}
    for k, v in sd.items():
        out[k] = (v.t() if k.endswith(CONV1D_WEIGHTS) else v).contiguous().clone()
    out["lm_head.weight"] = out["transformer.wte.weight"]  # tied: one tensor under both names
    return out


def _with_zero_biases(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A bias-free model (model.bias=false, as in the NAMO recipes) is the GPT-2 whose biases are all
    zero: the same function. HF GPT-2 always has biases, so they are added as zeros; nothing else is."""
    if any(k.endswith(".bias") for k in sd) or not {"transformer.wte.weight", "transformer.wpe.weight"} <= set(sd):
        return sd  # has biases, or is not a GPT-2 at all (check_gpt2_state_dict says why)
    layers = {int(m.group(1)) for k in sd if (m := re.match(r"transformer\.h\.(\d+)\.", k))}
    (vocab, C), block = sd["transformer.wte.weight"].shape, sd["transformer.wpe.weight"].shape[0]
    expected = _expected_shapes(max(layers) + 1 if layers else 0, C, vocab, block)
    dtype = sd["transformer.wte.weight"].dtype
    return {**sd, **{k: torch.zeros(shape, dtype=dtype) for k, shape in expected.items() if k.endswith(".bias")}}


def hf_config_from_gpt(config: GPTConfig) -> GPT2Config:
    """Bias-free models export as GPT-2 with zero biases (``to_hf_state_dict``), the same function."""
    return GPT2Config(
        vocab_size=config.vocab_size,
        n_positions=config.block_size,
        n_embd=config.n_embd,
        n_layer=config.n_layer,
        n_head=config.n_head,
        n_inner=None,  # 4 * n_embd, as in models.gpt2.MLP
        activation_function="gelu_new",
        layer_norm_epsilon=LAYER_NORM_EPS,
        resid_pdrop=config.dropout,
        embd_pdrop=config.dropout,
        attn_pdrop=config.dropout,
        tie_word_embeddings=True,
        scale_attn_weights=True,
        scale_attn_by_inverse_layer_idx=False,
        reorder_and_upcast_attn=False,
    )


def gpt_config_from_hf(hf_config: GPT2Config, name: str = "gpt2-hf", vocab_pad_to: int = 64) -> GPTConfig:
    """Our GPTConfig for an HF GPT-2 config; NotGPT2Error if the HF model computes something else."""
    c = hf_config
    checks = [
        (getattr(c, "model_type", None) == "gpt2", f"model_type is {getattr(c, 'model_type', None)!r}, not 'gpt2'"),
        (c.activation_function in TANH_GELUS, f"activation_function={c.activation_function!r} (need gelu_new)"),
        (c.n_inner in (None, 4 * c.n_embd), f"n_inner={c.n_inner} (need 4 * n_embd = {4 * c.n_embd})"),
        (c.layer_norm_epsilon == LAYER_NORM_EPS, f"layer_norm_epsilon={c.layer_norm_epsilon} (need 1e-5)"),
        (c.scale_attn_weights, "scale_attn_weights=False (need True)"),
        (not c.scale_attn_by_inverse_layer_idx, "scale_attn_by_inverse_layer_idx=True (need False)"),
        (not c.add_cross_attention, "add_cross_attention=True (need False)"),
        (c.tie_word_embeddings, "tie_word_embeddings=False (GPT-2 ties its head to wte)"),
    ]  # fmt: skip
    problems = [msg for ok, msg in checks if not ok]
    if problems:
        raise NotGPT2Error("the Hugging Face model is not a plain GPT-2: " + "; ".join(problems))
    dropouts = {c.resid_pdrop, c.embd_pdrop, c.attn_pdrop}
    if len(dropouts) != 1:
        raise NotGPT2Error(
            f"models.gpt2 has one dropout rate; this HF config has resid_pdrop={c.resid_pdrop}, "
            f"embd_pdrop={c.embd_pdrop}, attn_pdrop={c.attn_pdrop}. Set them equal on "
            f"hf_model.config before importing (dropout does not affect eval-mode outputs)"
        )
    return GPTConfig(
        name=name,
        vocab_size=c.vocab_size,
        block_size=c.n_positions,
        n_layer=c.n_layer,
        n_head=c.n_head,
        n_embd=c.n_embd,
        dropout=dropouts.pop(),
        bias=True,
        vocab_pad_to=vocab_pad_to,
        loss_impl="chunked",
        loss_chunk_rows="auto",
    )


def to_hf(model: GPT) -> GPT2LMHeadModel:
    """A GPT2LMHeadModel (fp32, CPU, eval mode) computing the same function as ``model``."""
    hf_model = GPT2LMHeadModel(hf_config_from_gpt(model.config))
    hf_model.load_state_dict(to_hf_state_dict(model), strict=True)
    return hf_model.float().eval()


def from_hf_state_dict(hf_sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our state dict (nn.Linear layout) from an HF GPT-2 one; the result is shape-checked."""
    sd = {}
    for k, v in hf_sd.items():
        if k.endswith((".attn.bias", ".attn.masked_bias")):
            continue  # causal-mask buffers of older transformers versions, not weights
        v = v.detach().cpu()
        sd[k] = (v.t() if k.endswith(CONV1D_WEIGHTS) else v).contiguous()
    check_gpt2_state_dict(sd)
    return sd


def from_hf(hf_model: GPT2LMHeadModel, name: str = "gpt2-hf", vocab_pad_to: int = 64) -> GPT:
    """Our GPT (fp32, CPU, eval mode) with the weights of an HF GPT-2 (vocabulary padded again)."""
    config = gpt_config_from_hf(hf_model.config, name=name, vocab_pad_to=vocab_pad_to)
    sd = from_hf_state_dict(hf_model.state_dict())
    wte = sd["transformer.wte.weight"]
    rows = config.padded_vocab_size - wte.shape[0]
    if rows:  # pad again (model.vocab_pad_to); the rows are never tokens and never get a gradient
        wte = torch.cat([wte, wte.new_zeros(rows, wte.shape[1])])
    sd["transformer.wte.weight"] = sd["lm_head.weight"] = wte
    model = GPT(config)
    model.load_state_dict(sd, strict=True)
    return model.eval()


def save_hf(model: GPT, out_dir: str | Path) -> Path:
    """Write ``model`` as a GPT2LMHeadModel directory (config.json + model.safetensors)."""
    out_dir = Path(out_dir)
    to_hf(model).save_pretrained(out_dir)  # transformers writes safetensors
    return out_dir


def load_hf(model_dir: str | Path, name: str = "gpt2-hf") -> GPT:
    """Our GPT from a LOCAL GPT2LMHeadModel directory; never downloads."""
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(
            f"{model_dir} is not a local Hugging Face model directory (no config.json); load_hf reads "
            f"local directories only (e.g. one written by models.hf.save_hf) and never uses the hub"
        )
    hf_model = GPT2LMHeadModel.from_pretrained(model_dir, local_files_only=True, dtype=torch.float32)
    return from_hf(hf_model, name=name)


def save_hf_tokenizer(out_dir: str | Path, model_max_length: int) -> Path:
    """Write GPT-2's tokenizer next to an exported model, so ``AutoTokenizer.from_pretrained(out_dir)``
    works offline and encodes exactly as data.tokenizer.gpt2_encoding (same BPE files).

    vocab.json / merges.txt are HF's names for OpenAI's encoder.json / vocab.bpe; the copies come from
    the sha256-checked files data.tokenizer uses. transformers adds tokenizer.json and its config."""
    import shutil

    from transformers import GPT2TokenizerFast

    from data.tokenizer import bpe_data_dir, gpt2_encoding

    gpt2_encoding()  # checks both files' sha256 before they are copied anywhere
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(bpe_data_dir() / "encoder.json", out_dir / "vocab.json")
    shutil.copyfile(bpe_data_dir() / "vocab.bpe", out_dir / "merges.txt")
    tokenizer = GPT2TokenizerFast.from_pretrained(out_dir, local_files_only=True, model_max_length=model_max_length)
    tokenizer.save_pretrained(out_dir)
    return out_dir
