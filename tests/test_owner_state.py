"""Owner-resident whole-matrix state (optim/orthogonalize/owner_state.py), with a toy stateful transform.

``GramMemory`` keeps, per matrix, S <- S / 2 + X^T X / ||X||^2 (a cols x cols whole-matrix statistic,
identity at the start) and returns X S: every update depends on the state's whole history, so a lost,
stale or misplaced state changes the parameters. Checked: one process round-trips it through
state_dict; W = 2 and W = 4 (owners, replicated) equal one process with the state held by the owner
alone; a DCP checkpoint (trainer/checkpoint/store.py, unchanged) written at W = 2 resumes at W = 1,
2 and 4 to the parameters of the uninterrupted run, and one written in one process resumes at W = 2.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

from optim.config import optim_config
from optim.dtensor import is_dtensor
from optim.orthogonalize.from_mesh import build_distribution
from optim.orthogonalize.owner_state import OwnerStateEntry
from optim.orthogonalize.split import SplitRows
from optim.orthogonalize.transform import MatrixTransform
from optim.orthogonalized_optimizer import OrthogonalizedOptimizer
from optim.rules.muon import MuonRule
from tests.rank_equality import optim_cfg
from tests.spawn_ranks import run_ranks

STEPS, MORE, BATCH = 3, 2, 8
REL_TOL = 1e-5


class GramMemory(MatrixTransform):
    def owner_state(self, rows, cols):
        return {"memory": OwnerStateEntry((cols, cols), init="identity")}

    def __call__(self, stack, state):
        memory = state["memory"]
        gram = (stack.mT @ stack).to(memory.dtype) / stack.square().sum(dim=(-2, -1), keepdim=True).to(memory.dtype)
        memory.mul_(0.5).add_(gram)
        return stack @ memory.to(stack.dtype)

    def flops(self, rows, cols):
        return 4 * rows * cols * cols


class ThreeMatrices(nn.Module):
    """7x5, 9x7, 5x9: at W = 4 one rank owns no matrix, and some hold no row of a state."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = (nn.Linear(5, 7, bias=False), nn.Linear(7, 9, bias=False), nn.Linear(9, 5, bias=False))

    def forward(self, x):
        return self.c(torch.tanh(self.b(torch.tanh(self.a(x)))))


def build(mesh=None, mode: str = "sharded"):
    torch.manual_seed(0)
    model = ThreeMatrices()
    if mesh is not None:
        from trainer.parallelize import shard_units

        shard_units([model.a, model.b, model.c], model, mesh)
    cfg = optim_config(optim_cfg("muon", mode))
    names = ("a.weight", "b.weight", "c.weight")
    named = dict(model.named_parameters())
    groups = [{"params": [named[n] for n in names], "param_names": list(names), "role": "matrix", "lr": 0.02,
               "weight_decay": 0.1}]
    distribution = build_distribution(cfg.orthogonalize, torch.device("cpu"), GramMemory(), mesh)
    return model, OrthogonalizedOptimizer(groups, MuonRule(cfg.rule), distribution=distribution)


def run(model, opt, steps, start=0, rank=0, world_size=1):
    for s in range(start, start + steps):
        gen = torch.Generator().manual_seed(100 + s)
        x, y = torch.randn(BATCH, 5, generator=gen), torch.randn(BATCH, 5, generator=gen)
        xs, ys = x.chunk(world_size)[rank], y.chunk(world_size)[rank]
        ((model(xs) - ys).square().sum() / y.numel()).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)


def weights(model):
    return {n: (p.full_tensor() if is_dtensor(p) else p).detach().clone() for n, p in model.named_parameters()}


def assert_close(a, b, what):
    for n in b:
        rel = ((a[n] - b[n]).abs().max() / b[n].abs().max()).item()
        assert rel <= REL_TOL, f"{what}: {n} differs by {rel:.2e}"


def reference(steps):
    model, opt = build()
    run(model, opt, steps)
    return weights(model)


# ---- one process -------------------------------------------------------------------------------------
def test_entries_initialize_and_split_gives_each_block_its_own_state():
    assert torch.equal(OwnerStateEntry((2, 3, 3), init="identity").new("cpu"), torch.eye(3).expand(2, 3, 3))
    with pytest.raises(ValueError, match="square"):
        OwnerStateEntry((3, 4), init="identity")
    split = SplitRows(GramMemory(), "qkv")
    assert split.owner_state(12, 4)["memory"].shape == (3, 4, 4) and split.owner_state(4, 4)["memory"].shape == (4, 4)
    stack, state = torch.randn(2, 12, 4, dtype=torch.float64), {"memory": torch.eye(4, dtype=torch.float64).repeat(2, 3, 1, 1)}
    out = split(stack, state)
    for b in range(2):
        for piece in range(3):
            alone = {"memory": torch.eye(4, dtype=torch.float64)[None].clone()}
            block = GramMemory()(stack[b:b + 1, 4 * piece:4 * piece + 4], alone)
            assert torch.allclose(out[b, 4 * piece:4 * piece + 4], block[0]) and torch.allclose(state["memory"][b, piece], alone["memory"][0])


def test_the_state_changes_the_updates_and_round_trips_through_state_dict():
    model, opt = build()
    run(model, opt, STEPS)
    held = opt.owner_state.held
    assert len(held) == 3 and not torch.equal(held[0]["memory"], torch.eye(5))
    saved = copy.deepcopy(opt.state_dict())
    assert all(torch.equal(saved["state"][i]["memory"], held[i]["memory"]) for i in range(3))
    assert "memory" not in opt.state[model.a.weight]  # resident, not per-parameter state

    resumed_model, resumed = build()
    resumed_model.load_state_dict(model.state_dict())
    resumed.load_state_dict(saved)
    forgetful_model, forgetful = build()  # the same, but the resident state reset to its initial value
    forgetful_model.load_state_dict(model.state_dict())
    forgetful.load_state_dict({**saved, "state": {i: {k: torch.eye(v.shape[0]) if k == "memory" else v for k, v in st.items()}
                                                  for i, st in saved["state"].items()}})
    for m, o in ((model, opt), (resumed_model, resumed), (forgetful_model, forgetful)):
        run(m, o, MORE, start=STEPS)
    a, b, c = weights(model), weights(resumed_model), weights(forgetful_model)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert max((a[n] - c[n]).abs().max().item() for n in a) > 1e-4  # so the state does matter


# ---- real processes ----------------------------------------------------------------------------------
def _mesh(world_size):
    from torch.distributed.device_mesh import init_device_mesh

    return init_device_mesh("cpu", (world_size,), mesh_dim_names=("dp_shard",))


def _ctx(rank, world_size, mesh):
    from trainer.distributed import DistContext

    return DistContext(rank=rank, world_size=world_size, mesh=mesh)


def train_and_save(rank, world_size, root, mode):
    """STEPS steps, a checkpoint, MORE steps: (weights after STEPS + MORE, held matrices, the rows' layout)."""
    from trainer.checkpoint import save_checkpoint

    mesh = _mesh(world_size)
    model, opt = build(mesh, mode)
    run(model, opt, STEPS, 0, rank, world_size)
    after = weights(model)
    rows = {i: {n: (type(t).__name__, tuple(t.to_local().shape), t.placements) for n, t in e.items()}
            for i, e in opt.owner_state.row_sharded().items()}
    if root is not None:
        save_checkpoint(root, STEPS, model, opt, {"note": "test"}, _ctx(rank, world_size, mesh))
    run(model, opt, MORE, STEPS, rank, world_size)
    return after, weights(model), sorted(opt.owner_state.held), rows


def resume(rank, world_size, checkpoint):
    from trainer.checkpoint import load_checkpoint, verify_checkpoint

    mesh = _mesh(world_size) if world_size > 1 else None
    model, opt = build(mesh)
    load_checkpoint(verify_checkpoint(checkpoint), model, opt, _ctx(rank, world_size, mesh))
    run(model, opt, MORE, STEPS, rank, world_size)
    return weights(model)


@pytest.mark.distributed
@pytest.mark.parametrize("world_size, mode", [(2, "sharded"), (4, "sharded"), (2, "replicated")])
def test_sharded_runs_equal_one_process_with_the_state_on_its_owner_only(world_size, mode):
    ranks = run_ranks(train_and_save, world_size, None, mode)
    expected = reference(STEPS + MORE)
    held = [r[2] for r in ranks]
    if mode == "replicated":
        assert all(h == [0, 1, 2] for h in held)
    else:  # each matrix's state on exactly one rank
        assert sorted(i for h in held for i in h) == [0, 1, 2]
    for rank, result in enumerate(ranks):
        assert_close(result[1], expected, f"W={world_size} {mode} rank {rank}")
    for i, cols in enumerate((5, 7, 9)):  # in state_dict: a DTensor whose rows are spread like FSDP2's
        layouts = [r[3][i]["memory"] for r in ranks]
        assert all(kind == "DTensor" and shape[1] == cols for kind, shape, _ in layouts)
        assert [shape[0] for _, shape, _ in layouts] == [len(c) for c in torch.arange(cols).chunk(world_size)] + \
            [0] * (world_size - len(torch.arange(cols).chunk(world_size)))


@pytest.mark.distributed
def test_a_checkpoint_written_at_w2_resumes_at_w1_w2_and_w4_to_the_uninterrupted_run(tmp_path):
    ranks = run_ranks(train_and_save, 2, tmp_path, "sharded")
    uninterrupted = ranks[0][1]
    assert_close(uninterrupted, reference(STEPS + MORE), "uninterrupted W=2")
    checkpoint = tmp_path / "step_00000003"
    assert_close(resume(0, 1, checkpoint), uninterrupted, "resumed at W=1")
    for world_size in (2, 4):
        for rank, result in enumerate(run_ranks(resume, world_size, checkpoint)):
            assert_close(result, uninterrupted, f"resumed at W={world_size}, rank {rank}")
    # the state is really needed: resuming without it (a fresh identity) gives other parameters
    model, opt = build()
    model.load_state_dict(ranks[0][0])
    run(model, opt, MORE, STEPS)
    assert max(((weights(model)[n] - uninterrupted[n]).abs().max()).item() for n in uninterrupted) > 1e-4


@pytest.mark.distributed
def test_a_checkpoint_written_in_one_process_resumes_at_w2(tmp_path):
    """The other direction: the whole (plain tensor) state of one process, row-sharded on load."""
    from trainer.checkpoint import save_checkpoint

    model, opt = build()
    run(model, opt, STEPS)
    save_checkpoint(tmp_path, STEPS, model, opt, {"note": "test"}, _ctx(0, 1, None))
    run(model, opt, MORE, STEPS)
    for rank, result in enumerate(run_ranks(resume, 2, tmp_path / "step_00000003")):
        assert_close(result, weights(model), f"W=1 -> W=2, rank {rank}")
