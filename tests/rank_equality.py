"""The W-ranks-equal-one-process machinery shared by tests/test_fsdp_equivalence.py and
tests/test_exchange_modes.py: the two models, the optimizer build under FSDP2, the training loop, the
comparison, and every case those tests check, run in ONE spawn of real gloo processes per world size
for the whole session (``ranks_at``) instead of one per test.

Two models: a GPT-2 with n_embd=15, n_head=3 (matrix row counts 45, 15, 60 and 15 do not all divide
W; at W=4 some ranks hold 3 rows of a 15-row matrix) and a 3-matrix MLP of shapes 7x5, 9x7, 5x9
(3 matrices do not divide W=2 or 4; at W=4 one rank owns no matrix, another holds no row of c).
Newton-Schulz and the exchange run in fp32 whatever the CPU (``optim_cfg``): the tolerance is fp32's.
"""

from __future__ import annotations

import functools

import torch
import torch.nn as nn
from omegaconf import OmegaConf

from models.gpt2 import GPT, GPTConfig
from optim.build import build_from_groups, param_groups
from optim.config import compose_optim_node, load_optim_config, optim_config
from optim.dtensor import is_dtensor
from optim.orthogonalize.cost_model import CostModel
from optim.orthogonalize.from_mesh import identity_reduce, shard_group
from optim.registry import OPTIMIZERS as REGISTRY
from tests.head_keys import HEAD
from tests.spawn_ranks import run_ranks
from trainer.parallelize import shard_units

REGISTERED = tuple(REGISTRY)

# named variants ("<name>+<variant>": the optim.matrix keys in VARIANTS below)
NAMED_VARIANTS = ("spectral_msgd+p0", "spectral_adam+p0.25", "auon+hybrid", "auon+paper2025", "rownorm+col",
                  "muon+rownorm_head", "schatten+every_step")
# every registered optimizer, plus the named variants: a new registry row is in the equality tests
OPTIMIZERS = (*REGISTERED, *NAMED_VARIANTS)
# p0: 5 quintic steps, not the authors' 15: 15 steps of the non-convergent quintic amplify rounding
# (~1e-7) to ~1e-2 after 3 steps even in ONE process when only the summation order changes
VARIANTS = {"p0": {"power": 0.0, "lr": 0.007, "orthogonalize.steps": 5}, "p0.25": {"power": 0.25, "lr": 0.02},  # the authors' lr per p
            "hybrid": {"variant": "hybrid"},
            "paper2025": {"variant": "paper2025", "gamma": 1.0},
            # RowNormM's reductions: column norms (col), the centered head's mean (the embedding role rule)
            "col": {"orientation": "col", "embedding.rownorm.orientation": "col"},
            "rownorm_head": {"embedding.rule": "rownorm", "embedding.rownorm.center_head": True, "embedding.lr": 0.05},
            # Schatten-p: spectra measured and p re-selected every step (EMA over 3 measurements), the
            # activation Grams all-reduced over the ranks; muon_frobenius: one more reduction per matrix
            "every_step": {"recompute_every": 1, "update_scale": "muon_frobenius"}}
# bias=False: the key bias of attention gets an exactly-zero gradient in exact arithmetic (softmax is
# shift invariant), so in floating point it is pure rounding noise that AdamW's g / (|g| + eps) turns
# into O(lr) steps of arbitrary sign: ill-conditioned in ANY split of the batch, not a sharding error.
ODD_GPT = GPTConfig(name="odd", vocab_size=97, block_size=16, n_layer=1, n_head=3, n_embd=15, dropout=0.0, bias=False, **HEAD)
STEPS, BATCH = 3, 4
REL_TOL = 1e-5
# p = 1/4's 15 coupled iterations amplify rounding: ONE process differs from itself by 1.35e-5 when its
# batch is split into 2 micro-batches (only the gradient's summation order changes; measured)
# ARO's rotation is the QR of M f(R^T M)^T, whose conditioning is about M's squared: on these tiny
# batches its small directions (and, for the MLP's 4-sample momentum of b, a 3-dim null space whose
# basis QR leaves to rounding) make ONE process differ from itself by up to 1.3e-4 (GPT's attn c_proj)
# and 1.4e-4 (MLP) when only the gradient's summation order changes; W = 4 ranks by up to 5.2e-4
# (measured). Exactness of its sharding is proven in fp64 (1e-7; measured <= 5e-10 on the matrices):
# tests/test_optim_aro_sharded.py
REL_TOL_BY_OPTIMIZER = {"spectral_adam+p0.25": 3e-5, "aro": 1e-3}


class ThreeMatrices(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(5, 7), nn.Linear(7, 9), nn.Linear(9, 5, bias=False)

    def forward(self, x):
        return self.c(torch.tanh(self.b(torch.tanh(self.a(x)))))


# variants: optim.orthogonalize overrides. sharded (default: owners, one bucket), replicated, bf16_comm
# (sharded, exchange in bf16), row_shards / auto (tall matrices iterate on their row shards; auto_rows:
# the cost model made to prefer them), overlap / serial (buckets of ~700 elements, async or blocking),
# qkv / heads (split c_attn), polar_express, gram; hsdp (2 x W/2 mesh); no_reduce (a mutation:
# statistics that span rows are not reduced; must break the equality)
EXCHANGE_VARIANTS = {
    "sharded": {"bucket_elements": 0}, "replicated": {"distributed": "replicated"}, "bf16_comm": {"comm_dtype": "bfloat16"},
    "row_shards": {"distributed": "row_shards"}, "auto": {"distributed": "auto"}, "auto_rows": {"distributed": "auto"},
    "overlap": {"bucket_elements": 700, "overlap": True}, "serial": {"bucket_elements": 700, "overlap": False},
    "qkv": {"split": "qkv"}, "heads": {"split": "heads"}, "polar_express": {"schedule": "polar_express"},
    "gram": {"method": "gram_newton_schulz"},
}
FREE_LINKS = CostModel(flop_rate=1e9, bandwidth=1e15, peer_latency=0.0, hop_latency=0.0, element_bytes=4)


def optim_cfg(name: str, variant: str = "sharded"):
    name, _, rule_variant = name.partition("+")
    cfg = compose_optim_node(name)
    for key, value in VARIANTS.get(rule_variant, {}).items():
        OmegaConf.update(cfg, key if "." in key else f"matrix.{key}", value)
    if name != "adamw":
        cfg.matrix.weight_decay = 0.1  # exercise decoupled weight decay on shards too
        cfg.orthogonalize.comm_dtype = "float32"
        cfg.orthogonalize.compute_dtype = "float32"  # exactness: auto is bf16 on AMX / AVX512-BF16 CPUs
        for key, value in EXCHANGE_VARIANTS.get(variant, {}).items():
            cfg.orthogonalize[key] = value
    return cfg


def build(kind: str, name: str, mesh, variant: str = "sharded"):
    torch.manual_seed(0)
    model = GPT(ODD_GPT) if kind == "gpt" else ThreeMatrices()
    if mesh is not None:  # the trainer's FSDP2 wrapping, on either model
        shard_units(list(model.transformer.h) if kind == "gpt" else [model.a, model.b, model.c], model, mesh)
    cfg = optim_cfg(name, variant)
    if kind == "gpt":
        groups = param_groups(model, optim_config(cfg))
    else:
        named = dict(model.named_parameters())
        matrix_role = "vector" if name == "adamw" else "matrix"
        groups = [
            {"params": [named[n] for n in ("a.weight", "b.weight", "c.weight")], "param_names": ["a.weight", "b.weight", "c.weight"],
             "role": matrix_role, "lr": float(cfg[matrix_role].lr), "weight_decay": float(cfg[matrix_role].weight_decay)},
            {"params": [named["a.bias"], named["b.bias"]], "param_names": ["a.bias", "b.bias"], "role": "vector",
             "lr": float(cfg.vector.lr), "weight_decay": float(cfg.vector.weight_decay)},
        ]
    optimizer = build_from_groups(groups, optim_config(cfg), mesh, n_head=ODD_GPT.n_head if kind == "gpt" else None)
    if hasattr(optimizer, "rule"):
        optimizer.rule.observe_model(model, mesh)  # as build_optimizer does (Schatten-p's activation hooks)
    if variant == "no_input_reduce":  # a mutation: each rank's activation Gram alone
        optimizer.rule.inputs.group = None
    if variant == "no_reduce":
        optimizer.reduce_sum = identity_reduce
    if variant == "auto_rows" and mesh is not None:
        optimizer.orthogonalizer.cost_model = FREE_LINKS  # planned at the first step
    return model, optimizer


def batches(kind: str):
    gen = torch.Generator().manual_seed(1)
    for _ in range(STEPS):
        if kind == "gpt":
            x = torch.randint(0, ODD_GPT.vocab_size, (BATCH, ODD_GPT.block_size), generator=gen)
            yield x, torch.randint(0, ODD_GPT.vocab_size, x.shape, generator=gen)
        else:
            yield torch.randn(BATCH, 5, generator=gen), torch.randn(BATCH, 5, generator=gen)


def reference(kind: str, name: str, variant: str = "sharded"):
    """``train`` in this one process (W = 1), computed once per session (callers only read it)."""
    return _reference(kind, name, variant)


@functools.lru_cache(maxsize=None)
def _reference(kind: str, name: str, variant: str):
    return train(kind, name, variant=variant)


def train(kind: str, name: str, rank: int = 0, world_size: int = 1, mesh=None, variant: str = "sharded"):
    """STEPS optimizer steps; returns (full parameters by name, exchange figures, state layout ok)."""
    model, opt = build(kind, name, mesh, variant)
    for x, y in batches(kind):
        xs, ys = x.chunk(world_size)[rank], y.chunk(world_size)[rank]
        if kind == "gpt":
            _, loss = model(xs, ys, reduction="sum")
        else:
            loss = (model(xs) - ys).square().sum()
        (loss / y.numel()).backward()  # global normalisation; FSDP sums the rank gradients
        opt.step()
        opt.zero_grad(set_to_none=True)
    params = {n: (p.full_tensor() if is_dtensor(p) else p).detach().clone() for n, p in model.named_parameters()}
    layout_ok = all(  # param-shaped state is sharded exactly like its parameter
        (not is_dtensor(p)) or all(v.placements == p.placements for v in opt.state[p].values() if v.shape == p.shape)
        for p in model.parameters()
    )
    ortho = getattr(opt, "orthogonalizer", None)
    figures = {"ns_flops": getattr(ortho, "ns_flops", 0), "sent_elements": getattr(ortho, "sent_elements", 0)}
    plan = getattr(ortho, "_plan", None)
    if plan is not None:
        figures["modes"], figures["buckets"] = plan.modes, len(plan.buckets)
    return params, figures, layout_ok


def distributed_worker(rank: int, world_size: int, cases):
    from torch.distributed.device_mesh import init_device_mesh

    flat = init_device_mesh("cpu", (world_size,), mesh_dim_names=("dp_shard",))
    results = {}
    for case in cases:
        mesh = flat
        if case[2:] == ("hsdp",):  # replicate over 2 groups, shard within each
            mesh = init_device_mesh("cpu", (2, world_size // 2), mesh_dim_names=("dp_replicate", "dp_shard"))
        assert shard_group(mesh) is not None
        results[case] = train(*case[:2], rank, world_size, mesh, *case[2:])
    return results


def check_equal(case, reference, ranks, tol: float | None = None):
    """Every rank's parameters equal one process's (``reference``: train() at W=1, same variant)."""
    ref_params = reference[0]
    tol = tol if tol is not None else REL_TOL_BY_OPTIMIZER.get(case[1], REL_TOL)
    for rank, results in enumerate(ranks):
        params, _, layout_ok = results[case]
        assert layout_ok, f"{case}: optimizer state not sharded like its parameter on rank {rank}"
        for n, ref in ref_params.items():
            rel = ((params[n] - ref).abs().max() / ref.abs().max()).item()
            assert rel <= tol, f"{case} rank {rank}: {n} differs by {rel:.2e} (relative) from one process"


def moved(kind: str, name: str, result) -> float:
    init = dict(build(kind, name, None)[0].named_parameters())
    return max((result[0][n] - p).abs().max().item() for n, p in init.items())


# ---- the cases, by world size; each test asserts on its own ------------------------------------------
def uses_transform(name: str) -> bool:
    """Whether the optimizer (or named variant) does whole-matrix work, by its rule's own declaration."""
    base, _, variant = name.partition("+")
    entry = REGISTRY[base]
    if entry.rule is None:
        return False
    overrides = [f"optim.{k if '.' in k else 'matrix.' + k}={v}" for k, v in VARIANTS.get(variant, {}).items()]
    return entry.rule(load_optim_config(base, overrides).rule).uses_transform


# optimizers whose transform the exchange distributes: each registered one that has a transform, and
# each named variant that turns one on (auon+hybrid; AuON's default has none)
MATRIX_OPTIMIZERS = (*(n for n in REGISTERED if uses_transform(n)),
                     *(v for v in NAMED_VARIANTS if uses_transform(v) and not uses_transform(v.partition("+")[0])))
MODES = ("sharded", "replicated", "row_shards", "auto_rows")  # auto on these tiny matrices = sharded (asserted)
ALL_OPTIMIZERS_W2 = [(kind, name) for name in OPTIMIZERS for kind in ("gpt", "mlp")]
NO_REDUCE = [("gpt", name, "no_reduce") for name in ("namo", "auon", "auon+hybrid", "rownorm+col", "muon+rownorm_head")]
W4_FAMILY = [(kind, name, mode) for name in ("muon", "namo_d", "spectral_adam", "auon+hybrid") for kind in ("gpt", "mlp")
             for mode in ("sharded", "replicated", "hsdp")]
BF16_COMM = ("gpt", "muon", "bf16_comm")
SPLIT_VARIANTS = [("gpt", name, variant) for name in ("muon", "namo_d", "spectral_msgd+p0")
                  for variant in ("qkv", "heads", "polar_express", "gram")]
OVERLAP = [("gpt", name, v) for name in ("muon", "normuon") for v in ("overlap", "serial")]
# the rules without a transform whose reductions matter (RowNormM's), at W = 4 (some ranks hold 3 rows)
W4_ROWNORM = [("gpt", name, mode) for name in ("rownorm", "rownorm+col", "muon+rownorm_head") for mode in ("sharded", "hsdp")]


def mode_cases() -> list[tuple]:
    cases = [("gpt", name, mode) for name in MATRIX_OPTIMIZERS for mode in MODES]
    return cases + [("mlp", "muon", mode) for mode in MODES] + [("gpt", "muon", "auto")]


CASES_BY_WORLD_SIZE = {
    2: [*ALL_OPTIMIZERS_W2, *NO_REDUCE, *mode_cases()],
    4: [*W4_FAMILY, BF16_COMM, *mode_cases(), *OVERLAP, *SPLIT_VARIANTS, *W4_ROWNORM],
}


@functools.lru_cache(maxsize=None)
def ranks_at(world_size: int) -> list[dict]:
    """Every case of CASES_BY_WORLD_SIZE[world_size] on W real gloo ranks, one spawn per session:
    a list (rank order) of {case: train()'s result on that rank}."""
    cases = list(dict.fromkeys(CASES_BY_WORLD_SIZE[world_size]))  # a case shared by two tests runs once
    return run_ranks(distributed_worker, world_size, cases)
