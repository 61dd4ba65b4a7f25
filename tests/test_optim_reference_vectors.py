"""Muon, NorMuon, NAMO, NAMO-D against vectors produced by the authors' code (tests/data/testvectors)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from optim.orthogonalized_optimizer import OrthogonalizedOptimizer
from optim.config import load_optim_config
from optim.orthogonalize.from_mesh import MatrixDistribution
from optim.registry import OPTIMIZERS
from optim.orthogonalize.orthogonalizer import LocalOrthogonalizer

VECTORS = Path(__file__).parent / "data" / "testvectors"

CASES = [  # (file stem, optimizer, rule hyper-parameters beyond the defaults)
    ("muon", "muon", {}),
    ("normuon", "normuon", {"beta2": 0.95}),
    ("namo", "namo", {"mu2": 0.99, "eps": 1e-8, "scale_coeff": 0.2}),
    ("namo_d_c0.75", "namo_d", {"clamp_c": 0.75, "mu2": 0.99, "eps": 1e-8, "scale_coeff": 0.2}),
    ("namo_d_c0.01", "namo_d", {"clamp_c": 0.01, "mu2": 0.99, "eps": 1e-8, "scale_coeff": 0.2}),
]
# fp32 files: our fp32 NS vs theirs, ~4e-8 measured. bf16 files: the published code rounds to bf16
# after every separate op, ours fuses into baddbmm (one rounding): measured 1.0e-3 .. 1.7e-3, the
# same size as the authors' own bf16-vs-fp32 spread (0.9e-3 .. 1.5e-3).
TOLERANCE = {"fp32": 1e-6, "bf16": 2.5e-3}


def replay(stem: str, dtype: str, name: str, hp: dict) -> float:
    ref = json.loads((VECTORS / f"{stem}_{dtype}.json").read_text())
    h = ref["hyper"]
    params = [torch.nn.Parameter(torch.tensor(x, dtype=torch.float32)) for x in ref["init"]]
    groups = [{
        "params": params, "param_names": [f"w{i}" for i in range(len(params))], "role": "matrix",
        "lr": h["lr"], "weight_decay": h.get("weight_decay", h.get("wd")),
    }]
    # the YAML's (authors') values for every key the case does not set
    hparams = dataclasses.replace(load_optim_config(name).rule, momentum=h["momentum"], **hp)
    compute = torch.bfloat16 if dtype == "bf16" else torch.float32
    opt = OrthogonalizedOptimizer(
        groups, OPTIMIZERS[name].rule(hparams), distribution=MatrixDistribution(LocalOrthogonalizer(compute_dtype=compute))
    )
    worst = 0.0
    for grads, expected in zip(ref["grads"], ref["params_after_step"]):
        for p, g in zip(params, grads):
            p.grad = torch.tensor(g, dtype=torch.float32)
        opt.step()
        for p, e in zip(params, expected):
            worst = max(worst, (p.detach() - torch.tensor(e)).abs().max().item())
    return worst


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("stem,name,hp", CASES, ids=[c[0] for c in CASES])
def test_matches_authors_code(stem, name, hp, dtype):
    assert replay(stem, dtype, name, hp) <= TOLERANCE[dtype]


def test_clamp_constant_matters():
    # The fp32 check distinguishes c=0.75 from c=0.01: replaying one file with the other constant fails.
    assert replay("namo_d_c0.01", "fp32", "namo_d", {"clamp_c": 0.75}) > 1e-4
