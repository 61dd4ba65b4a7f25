"""ROOT and RowNormM against vectors produced by the authors' code, and ROOT's transform pieces.

tests/data/testvectors/{root,sym_rownorm}_*.json (format: that folder's README) were made by running
huawei-noah/noah-research ROOT/examples/example_train.py (aea3c60) and timlautk/equivariant_optimizers
optim/rownorm.py (a773b3f). Tolerances: fp64 files <= 1e-12, fp32 <= 1e-7 max abs on the parameters.
The 1-D parameter of root_default_* goes to the class's internal AdamW: ``optim.adamw.impl=namo_repo``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import pytest
import torch

from optim.adamw import AdamWHParams
from optim.build import matrix_transform
from optim.config import load_optim_config
from optim.orthogonalize.coefficients import JORDAN
from optim.orthogonalize.from_mesh import MatrixDistribution
from optim.orthogonalize.newton_schulz import NewtonSchulz, orthogonalize
from optim.orthogonalize.orthogonalizer import LocalOrthogonalizer
from optim.orthogonalized_optimizer import OrthogonalizedOptimizer
from optim.registry import OPTIMIZERS
from optim.rules.base import MatrixContext
from optim.rules.root import AUTHORS_TABLE, QuantileClippedNewtonSchulz, quantile_clip, quantile_threshold
from tests.reference_replay import replay_worst_error

VECTORS = Path(__file__).parent / "data" / "testvectors"
TOLERANCE = {"float32": 1e-7, "float64": 1e-12}
DTYPES = {"float32": torch.float32, "float64": torch.float64}
ROOT_FILES = sorted(p.stem for p in VECTORS.glob("root_*_fp*.json") if "coefficients" not in p.stem)
ROWNORM_FILES = sorted(p.stem for p in VECTORS.glob("sym_rownorm*.json"))


def rule_case(stem: str, h: dict) -> tuple[str, dict, float, float]:
    """(registry name, optim.matrix rule keys, lr, weight decay) of a vector file."""
    if stem.startswith("root"):
        return "root", {"momentum": h["momentum"], "nesterov": h["nesterov"]}, h["lr"], h["wd"]
    return ("rownorm", {"momentum": h["beta"], "orientation": h["orientation"], "center": h["center_rows"]},
            h["lr"], h["weight_decay"])


def replay(stem: str) -> float:
    """The authors' three steps through OrthogonalizedOptimizer; the worst parameter difference."""
    ref = json.loads((VECTORS / f"{stem}.json").read_text())
    dtype = DTYPES[ref["dtype"]]
    name, keys, lr, wd = rule_case(stem, ref["hyper"])
    config = load_optim_config(name, [f"optim.orthogonalize.compute_dtype={ref['dtype']}"])  # theirs: param dtype
    rule = OPTIMIZERS[name].rule(dataclasses.replace(config.rule, **keys))
    params = [torch.nn.Parameter(torch.tensor(x, dtype=dtype)) for x in ref["init"]]
    groups = [{"params": [p for p in params if p.ndim == 2], "role": "matrix", "lr": lr, "weight_decay": wd}]
    vectors = [p for p in params if p.ndim != 2]
    adamw = None
    if vectors:  # ROOT's internal AdamW: same lr and decay
        groups.append({"params": vectors, "role": "vector", "lr": lr, "weight_decay": wd})
        adamw = AdamWHParams(tuple(ref["hyper"]["adamw_betas"]), ref["hyper"]["adamw_eps"], "namo_repo")
    transform = matrix_transform(rule, config.orthogonalize, torch.device("cpu"))
    opt = OrthogonalizedOptimizer(groups, rule, adamw=adamw,
                                  distribution=MatrixDistribution(LocalOrthogonalizer(transform=transform)))
    return replay_worst_error(opt, params, ref, dtype)


@pytest.mark.parametrize("stem", ROOT_FILES + ROWNORM_FILES)
def test_matches_authors_code(stem):
    ref = json.loads((VECTORS / f"{stem}.json").read_text())
    assert replay(stem) <= TOLERANCE[ref["dtype"]]


def test_all_family2_files_are_replayed():
    assert len(ROOT_FILES) == 4 and len(ROWNORM_FILES) == 6


# ---- ROOT's transform ------------------------------------------------------------------------------
COEFFICIENTS = json.loads((VECTORS / "root_coefficients_fp32.json").read_text())


def test_coefficient_table_is_the_authors_keyed_on_min_max_with_muons_fallback():
    table = {tuple(int(x) for x in key.split("x")): tuple(v) for key, v in COEFFICIENTS["coefficients"].items()}
    assert AUTHORS_TABLE == table
    assert tuple(COEFFICIENTS["fallback"]) == JORDAN == tuple(load_optim_config("root").orthogonalize.coefficients)
    t = QuantileClippedNewtonSchulz(NewtonSchulz(steps=5, coefficients=JORDAN, compute_dtype=torch.float32), 0.9, 1e-9,
                                    AUTHORS_TABLE)
    assert t.coefficients_for(3072, 2048) == t.coefficients_for(2048, 3072) == table[(2048, 3072)]  # tall: (min, max)
    assert t.coefficients_for(768, 2304) is None  # every GPT-2 shape falls back


@pytest.mark.slow  # two 5-step Newton-Schulz runs on 2048-wide fp32 matrices (~10 s on 2 cores)
@pytest.mark.parametrize("index", [0, 1])
def test_root5_fingerprints(index):
    """The authors' root5 (5 steps, fp32, the table's triplet) on randn(2048, 2048) and the tall
    randn(3072, 2048): our Newton-Schulz with the triplet our transform picks gives their numbers."""
    fp = COEFFICIENTS["fingerprints"][index]
    x = torch.randn(*fp["shape"], generator=torch.Generator().manual_seed(fp["seed"]))
    t = QuantileClippedNewtonSchulz(NewtonSchulz(steps=5, coefficients=JORDAN, compute_dtype=torch.float32), 0.9, 1e-9,
                                    AUTHORS_TABLE)
    out = orthogonalize(x, fp["steps"], t.coefficients_for(*fp["shape"]), torch.float32)
    assert out.norm().item() == pytest.approx(fp["frobenius"], abs=1e-4)
    assert out.double().sum().item() == pytest.approx(fp["sum"], abs=2e-3)
    assert (out[:2] - torch.tensor(fp["rows_0_1"])).abs().max() <= 1e-6
    assert (out[:, 0] - torch.tensor(fp["col_0"])).abs().max() <= 1e-6


def test_table_shapes_take_the_table_triplet_and_others_warn_once(caplog):
    ns = NewtonSchulz(steps=5, coefficients=JORDAN, compute_dtype=torch.float64)
    t = QuantileClippedNewtonSchulz(ns, 0.9, 1e-9, {(4, 6): (3.0, -3.0, 1.0)})
    g = torch.Generator().manual_seed(0)
    wide, tall, square = (torch.randn(2, *s, generator=g, dtype=torch.float64) for s in ((4, 6), (6, 4), (5, 5)))
    with caplog.at_level(logging.WARNING, logger="optim.rules.root"):
        for _ in range(3):  # three steps: one warning, for the one shape outside the table
            for x in (wide, tall):  # the table's triplet, found by (min, max)
                assert torch.equal(t(x), orthogonalize(quantile_clip(x, 0.9, 1e-9), 5, (3.0, -3.0, 1.0), torch.float64))
            assert torch.equal(t(square), ns(quantile_clip(square, 0.9, 1e-9)))
    assert [r.getMessage().count("(5, 5)") for r in caplog.records] == [1]


def test_threshold_is_an_fp32_quantile_of_the_whole_matrix_and_the_clip_theirs():
    g = torch.Generator().manual_seed(1)
    u = torch.randn(3, 37, 23, generator=g, dtype=torch.float64) ** 3  # heavy tails
    ties = torch.randint(-3, 4, (2, 20, 10), generator=g).double()  # v[lower] == v[lower + 1] (tied)
    for x in (u, ties, u[:, :11, :1]):  # 11 entries: the index 9.0 is whole, one order statistic
        threshold = quantile_threshold(x, 0.9)
        assert threshold.dtype == torch.float32  # fp32 even for fp64 input, as the authors' .float()
        assert torch.allclose(threshold, torch.quantile(x.abs().flatten(1).float(), 0.9, dim=1), rtol=1e-6, atol=0)
    clipped = quantile_clip(u, 0.9, 1e-9)
    t = (quantile_threshold(u, 0.9) + 1e-9).double().view(-1, 1, 1)  # the authors add eps in fp32
    theirs = u - torch.sign(u) * torch.relu(u.abs() - t)
    assert torch.allclose(clipped, theirs, rtol=0, atol=1e-14)  # one rounding of the clipped entries
    above = (u.abs() > t).flatten(1).float().mean(1)  # 10% of the entries, per matrix
    assert torch.all((above - 0.1).abs() <= 1.5 / u[0].numel())


def test_root_runs_in_fp32_and_scales_like_moonlight():
    config = load_optim_config("root")
    assert config.orthogonalize.compute_dtype == "float32" and config.orthogonalize.comm_dtype == "float32"
    rule = OPTIMIZERS["root"].rule(config.rule)
    ctx = MatrixContext(full_shape=(2304, 768), lr=1.0, weight_decay=0.0, step=1)
    assert rule.scale(ctx) == pytest.approx(0.2 * 2304**0.5)
    transform = rule.transform(NewtonSchulz(steps=5, coefficients=JORDAN, compute_dtype=torch.float32))
    assert not transform.supports_row_shards(4096, 16)  # the quantile needs the whole matrix: never row shards
