"""DTensor parameters (FSDP2 layout, dim-0 shards) go through the same math: one-rank mesh here.

The multi-rank exchange is the FSDP2 layer's (issue 4); this checks the optimizer's DTensor handling:
rules see local shards, param-shaped state is a DTensor sharded like the parameter, per-row state
(NorMuon) too, per-column / scalar state are plain tensors, and results equal plain tensors.
"""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor, Shard, distribute_tensor

from optim.orthogonalized_optimizer import OrthogonalizedOptimizer
from optim.build import matrix_transform
from optim.config import load_optim_config
from optim.orthogonalize.from_mesh import MatrixDistribution
from optim.orthogonalize.orthogonalizer import LocalOrthogonalizer
from optim.registry import OPTIMIZERS

RULES = sorted(n for n, entry in OPTIMIZERS.items() if entry.rule is not None)

SHAPES = [(16, 40), (40, 16)]


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    if dist.is_initialized():
        pytest.skip("a process group already exists in this test process")
    store = dist.FileStore(str(tmp_path_factory.mktemp("pg") / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    yield init_device_mesh("cpu", (1,))
    dist.destroy_process_group()


@pytest.mark.parametrize("name", RULES)
def test_dtensor_params_equal_plain_params(mesh, name):
    g = torch.Generator().manual_seed(0)
    init = [torch.randn(*s, generator=g) for s in SHAPES]
    grads = [[torch.randn(*s, generator=g) for s in SHAPES] for _ in range(3)]
    plain = [torch.nn.Parameter(x.clone()) for x in init]
    sharded = [torch.nn.Parameter(distribute_tensor(x.clone(), mesh, [Shard(0)])) for x in init]
    config = load_optim_config(name)
    rule_cls, hparams = OPTIMIZERS[name].rule, config.rule
    opts = []
    for params in (plain, sharded):
        group = {"params": params, "param_names": ["a", "b"], "role": "matrix", "lr": 0.02, "weight_decay": 0.1}
        rule = rule_cls(hparams)
        local = LocalOrthogonalizer(transform=matrix_transform(rule, config.orthogonalize, torch.device("cpu")))
        opts.append(OrthogonalizedOptimizer([group], rule, distribution=MatrixDistribution(local)))
    state = opts[1].state[sharded[0]]
    param_shaped = [v for k, v in state.items() if k != "step" and v.shape == sharded[0].shape]
    assert all(isinstance(v, DTensor) and v.placements == (Shard(0),) for v in param_shaped)
    assert param_shaped or opts[1].owner_state.stateful  # FISMO: all of its state is owner-resident
    if name == "normuon":
        assert isinstance(state["second_moment"], DTensor) and state["second_moment"].shape == (16, 1)
    for step_grads in grads:
        for p, q, gr in zip(plain, sharded, step_grads):
            p.grad = gr.clone()
            q.grad = distribute_tensor(gr.clone(), mesh, [Shard(0)])
        for opt in opts:
            opt.step()
    for p, q in zip(plain, sharded):
        assert torch.equal(p.detach(), q.detach().full_tensor())
    assert opts[0].diagnostics() == opts[1].diagnostics()
