"""Hugging Face interop (models/hf.py): export gives HF logits equal to ours, import round-trips every
weight exactly, and anything that is not a GPT-2 is refused. Offline: local directories only."""

from __future__ import annotations

import os

# Before transformers / huggingface_hub read them (they may already be imported by other test modules;
# the autouse fixture below covers that case).
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

from pathlib import Path

import pytest
import torch

from tests.head_keys import HEAD
from transformers import GPT2LMHeadModel

from models.gpt2 import GPT, GPTConfig
from models.model_config import load_model_config
from models.hf import (
    NotGPT2Error,
    from_hf,
    load_hf,
    save_hf,
    to_hf,
    to_hf_state_dict,
)



@pytest.fixture(autouse=True)
def hub_offline(monkeypatch):
    import huggingface_hub.constants as hub_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="module")
def model() -> GPT:
    """gpt2-test with every tensor perturbed, so biases and LayerNorms are not their 0/1 init and a
    mix-up of any two tensors (or a missed transpose) shows in the logits."""
    cfg = load_model_config("gpt2-test")
    torch.manual_seed(0)
    m = GPT(cfg)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        m.transformer.wte.weight[cfg.vocab_size:].zero_()  # padded rows are zero in every model (init, never trained)
    return m.eval()


@pytest.fixture(scope="module")
def export_dir(model, tmp_path_factory) -> Path:
    return save_hf(model, tmp_path_factory.mktemp("hf_export"))


def test_export_writes_safetensors(export_dir):
    names = {p.name for p in export_dir.iterdir()}
    assert {"config.json", "model.safetensors"} <= names
    assert not any(n.endswith(".bin") for n in names)


def test_exported_model_gives_our_logits(model, export_dir):
    hf_model = GPT2LMHeadModel.from_pretrained(export_dir, local_files_only=True, dtype=torch.float32)
    hf_model.eval()
    assert hf_model.config.n_positions == model.config.block_size
    assert hf_model.config.activation_function == "gelu_new"
    g = torch.Generator().manual_seed(1)
    idx = torch.randint(0, model.config.vocab_size, (2, model.config.block_size), generator=g)
    with torch.no_grad():
        ours, _ = model(idx)
        theirs = hf_model(idx).logits
    assert theirs.dtype == torch.float32 and theirs.shape == ours.shape
    assert (ours - theirs).abs().max().item() <= 1e-5


def test_import_round_trips_every_weight_exactly(model, export_dir):
    back = load_hf(export_dir)
    assert back.config.block_size == model.config.block_size
    assert (back.config.n_layer, back.config.n_head, back.config.n_embd) == (2, 2, 32)
    ours, theirs = model.state_dict(), back.state_dict()
    assert ours.keys() == theirs.keys()
    for k in ours:
        assert torch.equal(ours[k], theirs[k]), k
    assert back.lm_head.weight is back.transformer.wte.weight


def test_in_memory_round_trip_and_conv1d_layout(model):
    hf_sd = to_hf_state_dict(model)
    # Conv1D stores (in, out): the transpose of nn.Linear's (out, in).
    w = model.transformer.h[0].attn.c_attn.weight
    assert torch.equal(hf_sd["transformer.h.0.attn.c_attn.weight"], w.t())
    assert hf_sd["transformer.h.0.mlp.c_fc.weight"].shape == (32, 128)
    back = from_hf(to_hf(model))
    for k, v in model.state_dict().items():
        assert torch.equal(v, back.state_dict()[k]), k


def test_wrapper_prefixes_are_ignored(model):
    compiled_style = {f"_orig_mod.{k}": v for k, v in model.state_dict().items()}
    plain = to_hf_state_dict(model)
    wrapped = to_hf_state_dict(compiled_style, vocab_size=model.config.vocab_size)
    assert plain.keys() == wrapped.keys()
    assert all(torch.equal(plain[k], wrapped[k]) for k in plain)


def test_non_gpt2_state_dict_is_refused(model):
    llama_like = {
        "model.embed_tokens.weight": torch.zeros(10, 4),
        "model.layers.0.self_attn.q_proj.weight": torch.zeros(4, 4),
    }
    with pytest.raises(NotGPT2Error, match="not a GPT-2 state dict.*transformer.wte.weight"):
        to_hf_state_dict(llama_like)

    wide_mlp = dict(model.state_dict())
    wide_mlp["transformer.h.1.mlp.c_fc.weight"] = torch.zeros(3 * 32, 32)
    with pytest.raises(NotGPT2Error, match=r"h\.1\.mlp\.c_fc\.weight has shape \(96, 32\)"):
        to_hf_state_dict(wide_mlp)

    extra = dict(model.state_dict())
    extra["transformer.h.0.attn.rotary.inv_freq"] = torch.zeros(8)
    with pytest.raises(NotGPT2Error, match="unexpected transformer.h.0.attn.rotary.inv_freq"):
        to_hf_state_dict(extra)

    untied = dict(model.state_dict())
    untied["lm_head.weight"] = untied["lm_head.weight"] + 1
    with pytest.raises(NotGPT2Error, match="lm_head.weight differs"):
        to_hf_state_dict(untied)


def test_bias_free_model_exports_as_gpt2_with_zero_biases():
    """model.bias=false (the NAMO recipes) is the GPT-2 whose biases are zero: same logits in HF."""
    torch.manual_seed(0)
    m = GPT(GPTConfig(name="nobias", vocab_size=100, block_size=8, n_layer=2, n_head=2, n_embd=8, dropout=0.0, bias=False, **HEAD)).eval()
    hf_model = to_hf(m).eval()
    biases = {k: v for k, v in hf_model.state_dict().items() if k.endswith(("ln_1.bias", "ln_f.bias", "c_attn.bias", "c_proj.bias", "c_fc.bias"))}
    assert biases and all(torch.count_nonzero(v) == 0 for v in biases.values())
    idx = torch.randint(0, 100, (2, 8))
    with torch.no_grad():
        assert (hf_model(idx).logits - m(idx)[0]).abs().max() <= 1e-5


def test_non_gpt2_hf_config_is_refused(model):
    hf_model = to_hf(model)
    hf_model.config.activation_function = "relu"
    hf_model.config.scale_attn_by_inverse_layer_idx = True
    with pytest.raises(NotGPT2Error, match="activation_function='relu'.*scale_attn_by_inverse_layer_idx"):
        from_hf(hf_model)


def test_load_hf_reads_local_directories_only(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a local Hugging Face model directory"):
        load_hf(tmp_path / "gpt2")  # a hub name would be "gpt2"; never fetched
