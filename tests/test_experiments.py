"""Paper recipes (configs/experiment) and their sweeps: every recipe composes and validates with every
optimizer, the published numbers arrive in the config, and the CPU-sized recipes train."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.types import RunMode
from omegaconf import OmegaConf

from optim.registry import OPTIMIZERS, known_optimizers
from trainer.config import build_config
from scripts.sweep_check import SweepConfigError, check_sweep, sweep_job_overrides

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(p.stem for p in (ROOT / "configs" / "experiment").glob("*.yaml"))
CPU_EXPERIMENTS = [e for e in EXPERIMENTS if e.endswith("_cpu")]
OPTIMIZERS = tuple(known_optimizers())  # every registered optimizer has a row in every recipe


@pytest.fixture
def hydra_ctx():
    from trainer.run_dir import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base=None):
        yield


def make(*overrides: str):
    return compose("train", overrides=list(overrides))


def test_every_full_recipe_has_a_cpu_version():
    assert len(EXPERIMENTS) >= 6
    assert sorted(e for e in EXPERIMENTS if not e.endswith("_cpu")) == sorted(e[:-4] for e in CPU_EXPERIMENTS)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_recipe_composes_and_validates_with_every_optimizer(hydra_ctx, experiment):
    for optimizer in OPTIMIZERS:
        cfg = make(f"+experiment={experiment}", f"optim={optimizer}")
        build_config(cfg, 1)
        resolved = OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
        assert resolved["optim"]["name"] == optimizer and resolved["trainer"]["global_batch_size"] is not None
        assert optimizer in resolved["logging"]["wandb"]["tags"] and resolved["run_name"].endswith(optimizer)


# (optimizer) -> (matrix lr, matrix wd, shape scaling, lr of the AdamW-handled groups), from the NAMO
# repo's src/hydra_configs/optim/*.yaml and src/muon.py (see configs/experiment/base/namo_gpt2.yaml).
NAMO_SMALL = {
    "adamw": (1.3e-3, 0.1, None, 1.3e-3),
    "muon": (1.3e-3, 0.1, "match_rms_adamw", 1.3e-3),
    "namo": (0.012, 0.1, "match_rms_adamw", 0.012),
    "namo_d": (0.009, 0.1, "match_rms_adamw", 0.009),
}


@pytest.mark.parametrize("optimizer", NAMO_SMALL)
def test_namo_gpt2_124m_has_the_published_settings(hydra_ctx, optimizer):
    cfg = make("+experiment=namo_gpt2_124m", f"optim={optimizer}")
    m, t, s = cfg.optim.matrix, cfg.trainer, cfg.schedule
    assert (m.lr, m.weight_decay, m.get("shape_scaling"), cfg.optim.embedding.lr) == NAMO_SMALL[optimizer]
    assert cfg.optim.vector.lr == cfg.optim.embedding.lr and cfg.optim.embedding.weight_decay == 0.0
    assert (cfg.model.n_layer, cfg.model.n_head, cfg.model.n_embd, cfg.model.bias, cfg.model.dropout) == (12, 12, 768, False, 0.0)
    assert cfg.data.name == "openwebtext" and t.seq_len == cfg.model.block_size == 1024
    assert t.global_batch_size * t.seq_len == 491_520  # 60 x 8 sequences of 1024 tokens per step
    assert (t.max_steps, t.grad_clip, s.name, s.warmup_steps, s.decay_fraction, s.min_lr_ratio) == (10000, 1.0, "wsd", 2000, 0.4, 0.1)
    if optimizer == "namo_d":
        assert m.clamp_c == 0.01 and m.mu2 == 0.99
    if optimizer != "adamw":
        assert m.momentum == 0.95 and m.nesterov is True


def test_namo_gpt2_355m_is_gpt2_medium_with_decay_zero(hydra_ctx):
    cfg = make("+experiment=namo_gpt2_355m", "optim=namo")
    assert (cfg.model.n_layer, cfg.model.n_head, cfg.model.n_embd) == (24, 16, 1024)
    assert cfg.trainer.global_batch_size == 40 * 12 and cfg.schedule.decay_fraction == 0.0
    assert cfg.optim.matrix.lr == 9e-3 and cfg.optim.embedding.lr == 9e-3


def test_reference_recipe_uses_reference_code_defaults(hydra_ctx):
    normuon = make("+experiment=reference_gpt2_124m", "optim=normuon").optim
    assert (normuon.matrix.lr, normuon.matrix.weight_decay, normuon.matrix.beta2) == (0.02, 0.0, 0.95)
    assert (normuon.embedding.lr, normuon.adamw.eps) == (3e-4, 1e-10)  # SingleDeviceNorMuonWithAuxAdam
    muon = make("+experiment=reference_gpt2_124m", "optim=muon").optim
    assert (muon.matrix.lr, muon.matrix.weight_decay, muon.matrix.shape_scaling) == (0.02, 0.01, "original")
    assert (muon.embedding.lr, muon.embedding.weight_decay) == (3e-4, 0.01)  # Muon README example


def multirun_config(*overrides: str):
    return GlobalHydra.instance().config_loader().load_configuration("train", list(overrides), run_mode=RunMode.MULTIRUN)


@pytest.mark.parametrize("experiment, sweep, n_jobs, first", [
    ("namo_gpt2_124m", "namo_gpt2_124m_lr", 40, ["optim=adamw", "optim.matrix.lr=0.0005"]),
    ("namo_gpt2_355m", "namo_gpt2_355m_lr", 20, ["optim=adamw", "lr_sweep.index=0"]),
    ("namo_gpt2_355m", "namo_d_clamp_gpt2_355m", 20, ["optim.matrix.lr=0.005", "optim.matrix.clamp_c=0.12"]),
    ("namo_gpt2_124m_cpu", "optimizers", 4 * len(OPTIMIZERS), ["optim=adamw", "lr_sweep.index=0"]),  # 4 lrs each
])  # fmt: skip
def test_paper_sweeps_expand(hydra_ctx, experiment, sweep, n_jobs, first):
    jobs = sweep_job_overrides(multirun_config(f"+experiment={experiment}", f"+sweep={sweep}"))
    assert len(jobs) == n_jobs and jobs[0][: len(first)] == first


def test_paper_sweep_jobs_get_the_grid_values(hydra_ctx):
    cfg = make("+experiment=namo_gpt2_355m", "+sweep=namo_gpt2_355m_lr", "optim=namo_d", "lr_sweep.index=4")
    assert cfg.optim.matrix.lr == 1.5e-2 and cfg.optim.embedding.lr == 1.5e-2  # aux lr stays tied
    cfg = make("+experiment=namo_gpt2_355m", "+sweep=namo_d_clamp_gpt2_355m", "optim.matrix.clamp_c=0.4")
    assert cfg.optim.name == "namo_d" and cfg.optim.matrix.clamp_c == 0.4 and cfg.schedule.decay_fraction == 0.0


def test_sweep_before_experiment_is_refused(hydra_ctx):
    # The experiment's fixed lr would override the sweep's grid: every lr_sweep.index gives one run.
    with pytest.raises(SweepConfigError, match="compose to the same config"):
        check_sweep(multirun_config("+sweep=optimizers", "+experiment=namo_gpt2_124m_cpu"))


@pytest.mark.slow
def test_cpu_recipes_train_two_steps(prepared_embedded, data_cache_dir, tmp_path):
    sweep = tmp_path / "multirun"
    cmd = [sys.executable, str(ROOT / "train.py"), "-m", f"+experiment={','.join(CPU_EXPERIMENTS)}", "optim=namo_d",
           "trainer.max_steps=2", "schedule.warmup_steps=0", "trainer.eval_every=2", "trainer.eval_batches=1",
           "trainer.global_batch_size=2", "trainer.micro_batch_size=2", "trainer.seq_len=64",  # test-sized steps
           "logging=disabled", "logging.progress_bar=false", "trainer.plot=false",
           f"data.cache_dir={data_cache_dir}", f"hydra.sweep.dir={sweep}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert len(runs) == len(CPU_EXPERIMENTS)
    for run in runs:
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rows if "loss" in r] == [2]
        assert any("val_loss" in r for r in rows)
        assert (run / "checkpoints" / "step_00000002" / "MANIFEST.json").is_file()
