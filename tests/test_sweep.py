"""Sweeps from YAML: a real CPU multirun (2 optimizers x 2 lrs) -> compare_runs -> table equal to the
logs; bad sweeps (unknown optimizer, unknown key, invalid value, duplicate jobs) fail before any job."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import initialize_config_dir
from omegaconf import OmegaConf

from scripts.sweep_check import SweepConfigError, check_sweep, sweep_job_overrides

ROOT = Path(__file__).resolve().parents[1]
EXPECTED_LRS = {("adamw", 0): 1e-3, ("adamw", 1): 3e-3, ("muon", 0): 1e-2, ("muon", 1): 3e-2}


def multirun(sweep_dir: Path, data_cache_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "train.py"), "-m", "+sweep=cpu_smoke", "logging.wandb.mode=disabled",
           f"data.cache_dir={data_cache_dir}", f"hydra.sweep.dir={sweep_dir}", *overrides]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)


def load_compare_script():
    from scripts.analysis import compare_cli

    return compare_cli


def numbers_from_log(run_dir: Path) -> dict:
    """The table's quantities recomputed here straight from metrics.jsonl (no duplicates in a fresh run)."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if "loss" in r]
    val = [r["val_loss"] for r in rows if "val_loss" in r]
    wall = sum((b["tokens"] - a) / b["tokens_per_s"] for a, b in zip([0] + [r["tokens"] for r in train], train))
    return {"final_val_loss": val[-1], "best_val_loss": min(val), "tokens": train[-1]["tokens"],
            "wall_time_s": wall, "tokens_per_s": train[-1]["tokens"] / wall}


@pytest.mark.slow
def test_cpu_smoke_sweep_runs_and_compares(prepared_embedded, data_cache_dir, tmp_path):
    sweep = tmp_path / "multirun"
    proc = multirun(sweep, data_cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "sweep check: all 4 jobs compose and validate" in proc.stdout + proc.stderr
    runs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [p.name for p in runs] == ["0_gpt2-test-adamw-lr0.001", "1_gpt2-test-adamw-lr0.003",
                                      "2_gpt2-test-muon-lr0.01", "3_gpt2-test-muon-lr0.03"]
    for run in runs:
        cfg = OmegaConf.load(run / "config.yaml")
        assert cfg.optim.matrix.lr == EXPECTED_LRS[(cfg.optim.name, cfg.lr_sweep.index)]
        assert cfg.logging.wandb.group == "sweep-cpu_smoke" and list(cfg.logging.wandb.tags) == [cfg.optim.name]
        assert cfg.model.name == "gpt2-test" and cfg.trainer.max_steps == 6

    out = tmp_path / "compare"
    assert load_compare_script().main([str(sweep), "--out", str(out)]) == 0
    assert (out / "loss_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "lr_sensitivity.png").read_bytes()[:4] == b"\x89PNG"
    summary = {r["name"]: r for r in json.loads((out / "summary.json").read_text())}
    lines = (out / "table.md").read_text().strip().splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    table = {cells[0]: dict(zip(header, cells))
             for cells in ([c.strip() for c in line.strip("|").split("|")] for line in lines[2:])}
    assert sorted(table) == [r.name for r in runs]
    for run in runs:
        logged, row, full = numbers_from_log(run), table[run.name], summary[run.name]
        assert full["final_val_loss"] == logged["final_val_loss"] and full["best_val_loss"] == logged["best_val_loss"]
        assert full["tokens"] == logged["tokens"] == 6 * 2 * 32
        assert full["wall_time_s"] == pytest.approx(logged["wall_time_s"], rel=1e-12)
        assert row["final val loss"] == f"{logged['final_val_loss']:.4f}"
        assert row["best val loss"] == f"{logged['best_val_loss']:.4f}"
        assert row["tokens"] == str(logged["tokens"])
        assert row["wall time (s)"] == f"{logged['wall_time_s']:.1f}"
        assert row["tokens/s"] == f"{logged['tokens_per_s']:.0f}"
    for optimizer in ("adamw", "muon"):  # the marked run is the one with the lowest final val loss
        mine = {name: numbers_from_log(sweep / name)["final_val_loss"] for name in table if optimizer in name}
        assert [n for n in mine if table[n]["best"] == "**best**"] == [min(mine, key=mine.get)]


def test_unknown_optimizer_fails_before_any_job(data_cache_dir, tmp_path):
    proc = multirun(tmp_path / "multirun", data_cache_dir, "optim=adamw,nosuch")
    assert proc.returncode != 0
    assert "sweep check failed: sweep job 2 of 4 is invalid; no job was started." in proc.stderr
    assert "overrides: optim=nosuch lr_sweep.index=0" in proc.stderr and "Could not find 'optim/nosuch'" in proc.stderr
    assert not (tmp_path / "multirun").exists()  # no sweep dir, no run dir, no metrics


def test_sweep_file_with_unknown_key_fails_before_any_job(data_cache_dir, tmp_path):
    extra = tmp_path / "extra_configs" / "sweep"
    extra.mkdir(parents=True)
    (extra / "bad_key.yaml").write_text(
        "# @package _global_\nhydra:\n  sweeper:\n    params:\n      optim: adamw,muon\n      trainer.nosuch: 1,2\n"
    )
    cmd = [sys.executable, str(ROOT / "train.py"), "-m", "+sweep=bad_key", "logging.wandb.mode=disabled",
           f"hydra.searchpath=[file://{tmp_path / 'extra_configs'}]", f"hydra.sweep.dir={tmp_path / 'multirun'}",
           f"data.cache_dir={data_cache_dir}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "sweep check failed: sweep job 0 of 4 is invalid" in proc.stderr
    assert "Could not override 'trainer.nosuch'" in proc.stderr
    assert not (tmp_path / "multirun").exists()


@pytest.fixture
def master_config():
    """A multirun master config as Hydra builds it, inside an initialized Hydra (for check_sweep)."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    def make(*overrides: str):
        return GlobalHydra.instance().config_loader().load_configuration(
            "train", ["+sweep=cpu_smoke", *overrides], run_mode=RunMode.MULTIRUN
        )

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base=None):
        from trainer.run_dir import register_resolvers

        register_resolvers()
        yield make


def test_jobs_expand_as_the_basic_sweeper_does(master_config):
    jobs = sweep_job_overrides(master_config("seed=1,2"))
    assert len(jobs) == 8
    assert jobs[0] == ["optim=adamw", "lr_sweep.index=0", "+sweep=cpu_smoke", "seed=1"]
    assert jobs[-1] == ["optim=muon", "lr_sweep.index=1", "+sweep=cpu_smoke", "seed=2"]
    assert check_sweep(master_config("seed=1,2")) == 8


@pytest.mark.parametrize("override, message", [
    ("lr_sweep.grid.muon=[0.01,-1]", "sweep job 3 of 4 is invalid.*optim.matrix.lr must be > 0, got -1.0"),
    ("optim=adamw,namo", "lr_sweep.grid has no learning rates for optimizer 'namo'"),
    ("trainer.seq_len=16,128", "trainer.seq_len=128.*longer than the model's context"),
    ("optim.matrix.lr=0.1", "sweep jobs 0 and 1 compose to the same config"),
])  # fmt: skip
def test_invalid_or_duplicate_jobs_are_refused(master_config, override, message):
    with pytest.raises(SweepConfigError, match=f"(?s){message}"):
        check_sweep(master_config(override))
