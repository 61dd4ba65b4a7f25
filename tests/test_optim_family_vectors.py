"""The spectral power family and AuON against vectors produced by the authors' code.

tests/data/testvectors/{spectral,auon}_*.json (format: that folder's README) were made by running
Ocram7/BeyondMuon (56dd187) and ryyzn9/AuON (bba2e82, and the 2025 script c87b862). fp32 files: <= 1e-6
max abs on the parameters; fp64: <= 1e-10; bf16 files (the code casts to bf16): <= 2.5e-3.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from optim.build import matrix_transform
from optim.config import load_optim_config
from optim.orthogonalize.from_mesh import MatrixDistribution
from optim.orthogonalize.orthogonalizer import LocalOrthogonalizer
from optim.orthogonalized_optimizer import OrthogonalizedOptimizer
from optim.registry import OPTIMIZERS
from tests.reference_replay import replay_worst_error

VECTORS = Path(__file__).parent / "data" / "testvectors"
TOLERANCE = {"float32": 1e-6, "float64": 1e-10, "bf16": 2.5e-3}
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def spectral_case(hyper: dict, family: str) -> tuple[str, dict, int, str]:
    p = float(hyper["spectral_exponent"])
    if family == "msgd":
        rule = {"power": p, "momentum": hyper["momentum"], "nesterov": hyper["nesterov"]}
    else:
        rule = {"power": p, "beta1": hyper["betas"][0], "beta2": hyper["betas"][1], "eps": hyper["eps"]}
    return f"spectral_{family}", rule, hyper["ns_iters"], "qkv" if hyper["split_qkv_updates"] else "none"


AUON_VARIANTS = {"default": "default", "hybrid": "hybrid", "hybrid_ns1": "hybrid", "paper2025": "paper2025"}


def auon_case(hyper: dict, variant: str) -> tuple[str, dict, int, str]:
    rule = {"momentum": hyper["momentum"], "nesterov": hyper.get("nesterov", True),
            "gamma": hyper.get("gamma", 1.0), "variant": AUON_VARIANTS[variant]}
    return "auon", rule, hyper.get("ns_steps", 5), "none"


FILES = sorted(p.stem for p in VECTORS.glob("spectral_*.json")) + sorted(p.stem for p in VECTORS.glob("auon_*.json"))


def replay(stem: str) -> float:
    ref = json.loads((VECTORS / f"{stem}.json").read_text())
    h = ref["hyper"]
    dtype = DTYPES[ref["dtype"]]
    kind, rest = stem.split("_", 1)
    variant = rest.rsplit("_", 1)[0]
    if kind == "spectral":
        name, rule_values, steps, split = spectral_case(h, variant.split("_")[0])
    else:
        name, rule_values, steps, split = auon_case(h, variant)
    bf16 = ref["newton_schulz_dtype"] == "bf16"
    compute = "bfloat16" if bf16 else ref["dtype"]
    config = load_optim_config(name, [f"optim.orthogonalize.steps={steps}", f"optim.orthogonalize.compute_dtype={compute}",
                                      f"optim.orthogonalize.split={split}"])
    hparams = dataclasses.replace(config.rule, **rule_values)
    rule = OPTIMIZERS[name].rule(hparams)
    transform = matrix_transform(rule, config.orthogonalize, torch.device("cpu"))
    params = [torch.nn.Parameter(torch.tensor(x, dtype=dtype)) for x in ref["init"]]
    group = {"params": params, "param_names": [f"w{i}" for i in range(len(params))], "role": "matrix",
             "lr": h["lr"], "weight_decay": h.get("weight_decay", 0.0)}
    opt = OrthogonalizedOptimizer([group], rule, distribution=MatrixDistribution(LocalOrthogonalizer(transform=transform)))
    return replay_worst_error(opt, params, ref, dtype)


@pytest.mark.parametrize("stem", FILES)
def test_matches_authors_code(stem):
    ref = json.loads((VECTORS / f"{stem}.json").read_text())
    tolerance = TOLERANCE["bf16" if ref["newton_schulz_dtype"] == "bf16" else ref["dtype"]]
    assert replay(stem) <= tolerance
