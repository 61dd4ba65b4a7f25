"""The chunked linear + cross-entropy (models/chunked_loss.py) and the padded vocabulary against the
plain path (materialized logits + F.cross_entropy): loss and every gradient, in one process and
under FSDP2 at W = 2; padding that changes nothing; sampling that never emits a padded id."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F

from models.chunked_loss import linear_cross_entropy
from models.generate import generate
from models.gpt2 import GPT, GPTConfig
from tests.head_keys import HEAD
from tests.spawn_ranks import run_ranks

# vocab 97 (prime): padded to 128 with vocab_pad_to=64; 2 x 11 tokens per batch
SMALL = GPTConfig(name="chunk", vocab_size=97, block_size=16, n_layer=2, n_head=2, n_embd=16, dropout=0.0,
                  bias=True, **HEAD)


def model_with(**changes) -> GPT:
    torch.manual_seed(0)
    return GPT(dataclasses.replace(SMALL, **changes))


def batch(seed=1, B=2, T=11, V=97):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, V, (B, T), generator=g), torch.randint(0, V, (B, T), generator=g)


def loss_and_grads(model: GPT, batches, reduction="sum"):
    model.zero_grad(set_to_none=True)
    total = 0.0
    for x, y in batches:  # grad accumulation: backward per micro-batch
        _, loss = model(x, y, reduction=reduction)
        loss.backward()
        total += loss.item()
    return total, {n: p.grad.clone() for n, p in model.named_parameters()}


def assert_grads_close(a: dict, b: dict, rtol=1e-5):
    """Each gradient within rtol of the reference, relative to the reference's largest entry."""
    assert a.keys() == b.keys()
    for name in a:
        scale = b[name].abs().max().clamp(min=1e-30)
        assert ((a[name] - b[name]).abs().max() / scale).item() <= rtol, name


def test_function_matches_plain_cross_entropy_for_every_chunk_size():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(22, 16, generator=g, requires_grad=True)
    w = torch.randn(128, 16, generator=g, requires_grad=True)  # 97 real rows + 31 padded
    t = torch.randint(0, 97, (22,), generator=g)
    for reduction in ("sum", "mean"):
        ref = F.cross_entropy((h @ w[:97].t()), t, reduction=reduction)
        ref_h, ref_w = torch.autograd.grad(ref, (h, w))
        for rows in (1, 5, 11, 22, 64):  # 5 leaves a ragged last block; 64 > N
            loss = linear_cross_entropy(h, w, t, 97, rows, reduction)
            gh, gw = torch.autograd.grad(loss * 3.0, (h, w))  # a non-unit incoming gradient
            torch.testing.assert_close(loss, ref, rtol=1e-6, atol=0)
            assert_grads_close({"h": gh, "w": gw}, {"h": 3.0 * ref_h, "w": 3.0 * ref_w})
            assert gw[97:].abs().max() == 0  # padded rows: exactly no gradient
        with torch.no_grad():  # evaluation: the loss only
            torch.testing.assert_close(linear_cross_entropy(h, w, t, 97, 7, reduction), ref, rtol=1e-6, atol=0)


def test_extreme_logits_stay_exact_where_the_target_probability_underflows():
    """Logits ~ +-1e3: softmax(z)[target] is 0 in fp32 for most rows, so the loss must come from the
    log-sum-exp (m + log s - z[target]), not from log(p[target]); P stays finite."""
    g = torch.Generator().manual_seed(0)
    h = (torch.randn(12, 16, generator=g) * 100).requires_grad_()
    w = torch.randn(128, 16, generator=g, requires_grad=True)
    t = torch.randint(0, 97, (12,), generator=g)
    ref = F.cross_entropy(h @ w[:97].t(), t, reduction="sum")
    ref_h, ref_w = torch.autograd.grad(ref, (h, w))
    assert ref.item() > 1e3  # the regime under test: most targets' probabilities are below fp32's range
    loss = linear_cross_entropy(h, w, t, 97, 5, "sum")
    gh, gw = torch.autograd.grad(loss, (h, w))
    torch.testing.assert_close(loss, ref, rtol=1e-6, atol=0)
    assert_grads_close({"h": gh, "w": gw}, {"h": ref_h, "w": ref_w})


@pytest.mark.parametrize("pad", [1, 64])
@pytest.mark.parametrize("rows", [4, 11, "auto"])
def test_model_chunked_equals_plain_with_grad_accumulation(pad, rows):
    batches = [batch(1), batch(2)]
    plain = loss_and_grads(model_with(vocab_pad_to=pad, loss_impl="plain"), batches)
    chunked = loss_and_grads(model_with(vocab_pad_to=pad, loss_impl="chunked", loss_chunk_rows=rows), batches)
    assert chunked[0] == pytest.approx(plain[0], rel=1e-6)
    assert_grads_close(chunked[1], plain[1])


def test_activation_checkpointing_and_mean_reduction():
    a, b = model_with(loss_impl="plain"), model_with(loss_impl="chunked", loss_chunk_rows=3)
    b.activation_checkpointing = True
    plain, chunked = loss_and_grads(a, [batch()], "mean"), loss_and_grads(b, [batch()], "mean")
    assert chunked[0] == pytest.approx(plain[0], rel=1e-6)
    assert_grads_close(chunked[1], plain[1])


def test_padding_leaves_the_loss_exactly_unchanged():
    unpadded, padded = model_with(vocab_pad_to=1, loss_impl="plain"), model_with(vocab_pad_to=64, loss_impl="plain")
    padded.load_state_dict({k: torch.cat([v, padded.state_dict()[k][97:]]) if v.shape[0] == 97 else v
                            for k, v in unpadded.state_dict().items()})
    assert padded.transformer.wte.weight.shape[0] == 128 and padded.transformer.wte.weight[97:].abs().max() == 0
    x, y = batch()
    with torch.no_grad():
        assert torch.equal(unpadded(x, y)[1], padded(x, y)[1])          # fp32, bit for bit
        assert torch.equal(unpadded(x)[0], padded(x)[0])                # logits: vocab_size columns
        padded.config = dataclasses.replace(padded.config, loss_impl="chunked")
        assert padded(x, y)[1].item() == pytest.approx(unpadded(x, y)[1].item(), rel=1e-6)


def test_generation_never_emits_a_padded_id():
    model = model_with(vocab_pad_to=64)
    with torch.no_grad():  # make every padded row the most likely "token" if it were one
        model.transformer.wte.weight[97:] = model.transformer.ln_f.weight.sign() * 10.0
    out = generate(model, torch.zeros(4, 1, dtype=torch.long), 20, temperature=1.0, generator=torch.Generator().manual_seed(0))
    assert out.max().item() < 97
    assert generate(model, torch.zeros(1, 1, dtype=torch.long), 5, temperature=0).max().item() < 97


def test_bf16_autocast_is_close_to_plain_under_autocast():
    a, b = model_with(loss_impl="plain"), model_with(loss_impl="chunked", loss_chunk_rows=5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain, chunked = loss_and_grads(a, [batch()]), loss_and_grads(b, [batch()])
    assert chunked[0] == pytest.approx(plain[0], rel=1e-2)
    assert_grads_close(chunked[1], plain[1], rtol=5e-2)


def test_compiles_through_dynamo():
    a, b = model_with(loss_impl="plain"), model_with(loss_impl="chunked", loss_chunk_rows=8)
    compiled = torch.compile(b, backend="aot_eager", fullgraph=False)
    x, y = batch()
    _, loss = compiled(x, y, reduction="sum")
    loss.backward()
    plain = loss_and_grads(a, [(x, y)])
    assert loss.item() == pytest.approx(plain[0], rel=1e-6)
    assert_grads_close({n: p.grad for n, p in b.named_parameters()}, plain[1])


@pytest.mark.parametrize("changes, key", [({"loss_chunk_rows": 0}, "model.loss_chunk_rows"),
                                          ({"vocab_pad_to": 0}, "model.vocab_pad_to"),
                                          ({"vocab_pad_to": 100000}, "model.vocab_pad_to"),
                                          ({"loss_impl": "fused"}, "model.loss_impl")])
def test_bad_values_name_their_key(changes, key):
    with pytest.raises(ValueError, match=key):
        dataclasses.replace(SMALL, **changes)


def fsdp_worker(rank, world_size):
    from torch.distributed.device_mesh import init_device_mesh

    from trainer.parallelize import shard_units

    results = {}
    for impl in ("plain", "chunked"):
        model = model_with(loss_impl=impl, loss_chunk_rows=5)
        shard_units(list(model.transformer.h), model, init_device_mesh("cpu", (world_size,)))
        x, y = batch(seed=10 + rank)  # each rank its own micro-batches, accumulated twice
        for micro in range(2):
            _, loss = model(x.roll(micro, 0), y.roll(micro, 0), reduction="sum")
            loss.backward()
        results[impl] = {n: p.grad.full_tensor() for n, p in model.named_parameters()}
    return results


def test_fsdp2_two_ranks_chunked_equals_plain():
    ranks = run_ranks(fsdp_worker, 2)
    assert_grads_close(ranks[0]["chunked"], ranks[0]["plain"])
    # and both equal one process summing the two ranks' batches
    single = model_with(loss_impl="plain")
    batches = [(x.roll(m, 0), y.roll(m, 0)) for x, y in (batch(seed=10), batch(seed=11)) for m in range(2)]
    assert_grads_close(ranks[0]["chunked"], loss_and_grads(single, batches)[1])


@pytest.mark.slow
def test_train_step_benchmark_runs_and_reports_both_variants(tmp_path):
    from scripts.benchmarks.train_step import main

    out = tmp_path / "rows.json"
    assert main(["--model", "gpt2-test", "--batch-sizes", "2", "--seq-len", "16", "--steps", "1", "--rounds", "1",
                 "--warmup", "1", "--chunk-rows", "8", "--memory", "--memory-repeats", "1",
                 "--json-out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["loss_impl"], r["chunk_rows"]) for r in rows] == [("plain", "auto"), ("chunked", 8)]
    assert rows[0]["speedup_vs_plain"] == 1.0 and all(r["peak_growth_mib"] > 0 and r["mfu"] > 0 for r in rows)
