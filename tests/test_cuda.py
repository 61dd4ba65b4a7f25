"""The CUDA path: skipped without a GPU (tests/conftest.py), run by scripts/gpu_check.sh on one.

What only a GPU can show: torch's own bf16 Newton-Schulz against ours on CUDA, the chunked loss
under CUDA bf16 autocast, a compiled bf16 trainer run, HF export logits of a CUDA model, DCP save /
load of CUDA DTensors, and (>= 2 GPUs) the sharded exchange over NCCL equal to one process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from models.gpt2 import GPT, GPTConfig
from tests.head_keys import HEAD

pytestmark = pytest.mark.cuda
ROOT = Path(__file__).resolve().parents[1]
CUDA = torch.device("cuda")
SMALL = GPTConfig(name="cuda-small", vocab_size=97, block_size=16, n_layer=2, n_head=2, n_embd=32, dropout=0.0,
                  bias=True, **HEAD)


def test_bf16_newton_schulz_matches_torch_muon_on_cuda():
    from optim.orthogonalize.from_mesh import MatrixDistribution
    from optim.orthogonalize.orthogonalizer import LocalOrthogonalizer
    from optim.orthogonalized_optimizer import OrthogonalizedOptimizer
    from optim.rules.base import MomentumHParams
    from optim.rules.muon import MuonRule

    g = torch.Generator().manual_seed(0)
    shapes = [(256, 768), (768, 256), (384, 384)]
    init = [torch.randn(*s, generator=g).to(CUDA) for s in shapes]
    grads = [[torch.randn(*s, generator=g).to(CUDA) for s in shapes] for _ in range(3)]
    ours = [torch.nn.Parameter(x.clone()) for x in init]
    theirs = [torch.nn.Parameter(x.clone()) for x in init]
    rule = MuonRule(MomentumHParams(momentum=0.95, nesterov=True, shape_scaling="original", scale_coeff=0.2))
    group = {"params": ours, "param_names": ["a", "b", "c"], "role": "matrix", "lr": 0.02, "weight_decay": 0.1}
    opt = OrthogonalizedOptimizer([group], rule, distribution=MatrixDistribution(LocalOrthogonalizer(compute_dtype=torch.bfloat16)))
    ref = torch.optim.Muon(theirs, lr=0.02, weight_decay=0.1, momentum=0.95, nesterov=True)
    for step_grads in grads:
        for p, q, gr in zip(ours, theirs, step_grads):
            p.grad, q.grad = gr.clone(), gr.clone()
        opt.step()
        ref.step()
    for x, p, q in zip(init, ours, theirs):
        step_ours, step_theirs = p.detach() - x, q.detach() - x
        assert ((step_ours - step_theirs).norm() / step_theirs.norm()).item() < 2e-2


def test_chunked_loss_on_cuda_under_bf16_autocast_matches_plain():
    import dataclasses

    results = []
    for impl in ("plain", "chunked"):
        torch.manual_seed(0)
        model = GPT(dataclasses.replace(SMALL, loss_impl=impl, loss_chunk_rows=7)).to(CUDA)
        g = torch.Generator().manual_seed(1)
        x, y = (torch.randint(0, 97, (4, 16), generator=g).to(CUDA) for _ in range(2))
        with torch.autocast("cuda", dtype=torch.bfloat16):
            _, loss = model(x, y)
        loss.backward()
        results.append((loss.item(), {n: p.grad.float().clone() for n, p in model.named_parameters()}))
    (plain_loss, plain_grads), (chunked_loss, chunked_grads) = results
    assert chunked_loss == pytest.approx(plain_loss, rel=1e-2)
    for name, ref in plain_grads.items():
        assert ((chunked_grads[name] - ref).abs().max() / ref.abs().max().clamp(min=1e-30)).item() <= 5e-2, name


def test_compiled_bf16_trainer_run_trains(tmp_path):
    cmd = [sys.executable, str(ROOT / "train.py"), "device=cuda", "model=gpt2-test", "optim=muon",
           "trainer.compile=true", "trainer.compute_dtype=bfloat16", "trainer.max_steps=20", "trainer.log_every=1",
           "trainer.eval_every=0", "trainer.checkpoint_every=0", "trainer.plot=false", "logging=disabled",
           "logging.progress_bar=false", f"data.cache_dir={tmp_path / 'data'}", f"hydra.run.dir={tmp_path / 'run'}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 20 and all(map(lambda v: v == v, losses)) and losses[-1] < losses[0] - 0.5


def test_hf_export_logits_of_a_cuda_model():
    from transformers import GPT2LMHeadModel  # noqa: F401 (the export target)

    from models.hf import to_hf

    torch.manual_seed(0)
    ours = GPT(SMALL).to(CUDA).eval()
    hf = to_hf(ours.cpu()).to(CUDA).eval()
    ours.to(CUDA)
    idx = torch.randint(0, 97, (3, 16), generator=torch.Generator().manual_seed(0)).to(CUDA)
    with torch.no_grad():
        assert (hf(idx).logits - ours(idx)[0]).abs().max().item() <= 1e-4  # TF32 matmuls allowed on GPU


def dcp_worker(rank, world_size, path):
    import torch.distributed.checkpoint as dcp
    from torch.distributed.device_mesh import init_device_mesh

    from trainer.parallelize import shard_units

    mesh = init_device_mesh("cuda", (world_size,), mesh_dim_names=("dp_shard",))
    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = GPT(SMALL).cuda()
        shard_units(list(model.transformer.h), model, mesh)
        models.append(model)
    dcp.save({"model": models[0].state_dict()}, checkpoint_id=path)
    state = {"model": models[1].state_dict()}
    dcp.load(state, checkpoint_id=path)
    models[1].load_state_dict(state["model"])
    return all(torch.equal(a.full_tensor(), b.full_tensor()) for a, b in zip(models[0].parameters(), models[1].parameters()))


def test_dcp_save_and_load_of_cuda_dtensors(tmp_path):
    from tests.spawn_ranks import run_ranks

    world = min(2, torch.cuda.device_count())
    assert all(run_ranks(dcp_worker, world, str(tmp_path / "ckpt"), backend="nccl"))


def nccl_exchange_worker(rank, world_size, variant):
    """Row blocks of the same random matrices on every rank -> the exchange over NCCL; returns the
    largest difference to the whole matrices orthogonalized in this process."""
    import torch.distributed as dist

    from optim.orthogonalize.exchange import ShardedOrthogonalizer
    from optim.orthogonalize.orthogonalizer import LocalOrthogonalizer
    from optim.orthogonalize.row_shards import row_split

    g = torch.Generator().manual_seed(0)
    shapes = [(2304, 768), (768, 768), (3072, 768), (768, 3072), (45, 15)]
    whole = [torch.randn(*s, generator=g).to(CUDA) for s in shapes]
    local = LocalOrthogonalizer(compute_dtype=torch.float32)
    kwargs = {"sharded": {}, "overlap": {"bucket_elements": 2_000_000, "overlap": True}, "row_shards": {"row_shards": "all"}}
    exchange = ShardedOrthogonalizer(local, dist.group.WORLD, torch.float32, **kwargs[variant])
    blocks = []
    for m in whole:
        split = row_split(m.shape[0], world_size)
        start = sum(split[:rank])
        blocks.append(m[start:start + split[rank]].contiguous())
    results = exchange.orthogonalize_all(blocks, shapes)
    reference = local.orthogonalize_all(whole, shapes)
    worst = 0.0
    for block, ref, shape in zip(results, reference, shapes):
        split = row_split(shape[0], world_size)
        start = sum(split[:rank])
        worst = max(worst, (block - ref[start:start + split[rank]]).abs().max().item())
    return worst


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="the NCCL exchange needs >= 2 GPUs")
@pytest.mark.parametrize("variant", ["sharded", "overlap", "row_shards"])
def test_nccl_sharded_exchange_equals_one_process(variant):
    from tests.spawn_ranks import run_ranks

    assert max(run_ranks(nccl_exchange_worker, 2, variant, backend="nccl")) <= 1e-4  # TF32 allowed
