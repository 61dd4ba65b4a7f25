"""What a run says while it trains (trainer/progress.py): the bar's postfix, a line per logged step
when the bar is off, train.log holding what stdout shows, text samples, no DCP warning at a save."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from trainer import progress
from trainer.progress import Console, Progress, format_duration, progress_line

ROOT = Path(__file__).resolve().parents[1]


def test_progress_line_has_step_loss_lr_rate_mfu_and_eta():
    row = {"step": 50, "loss": 4.12345, "lr": 3e-4, "tokens_per_s": 12345.0, "mfu": 0.041}
    assert progress_line(row, 200, 83.0) == "step  50/200 | loss 4.1235 | lr 3.00e-04 | 12.3k tok/s | mfu 4.1% | ETA 1m23s"
    assert progress_line({"step": 1, "loss": 10.0}, 9, None) == "step 1/9 | loss 10.0000"
    assert [format_duration(s) for s in (0.4, 42, 185, 3720)] == ["0s", "42s", "3m05s", "1h02m"]


def test_eta_counts_from_the_step_this_launch_started_at(monkeypatch):
    clock = iter([0.0, 100.0, 200.0])  # the constructor, start_at, then the ETA at step 13
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    p = Progress(Console(enabled=False), total_steps=20, start_step=0, bar=False)
    p.start_at(10)  # resumed at step 10: its steps were not done by this launch
    assert p.eta_s(13) == pytest.approx((20 - 13) * 100.0 / 3)


def test_bar_postfix_keeps_the_loss_and_shows_tokens_per_second(capsys):
    console = Console()
    p = Progress(console, total_steps=10, start_step=0, bar=True)
    p.report({"step": 0, "tokens": 0, "val_loss": 10.5})  # the eval at initialization comes first
    p.report({"step": 2, "tokens": 64, "loss": 9.5, "lr": 1e-3, "tokens_per_s": 2500.0})
    p.report({"step": 2, "tokens": 64, "val_loss": 9.75})  # an eval row does not hide the train loss
    assert p.bar.postfix == "loss=9.5000, lr=1.00e-03, tok/s=2.5k, val_loss=9.7500"
    p.close()
    assert capsys.readouterr().out == ""  # with the bar on, the line goes to train.log only
    (line,) = console.held
    assert line.startswith("step  2/10 | loss 9.5000 | lr 1.00e-03 | 2.5k tok/s | ETA ")


def test_console_holds_messages_until_the_run_directory_is_written(tmp_path, capsys):
    console = Console()
    console("resuming from x")
    assert not (tmp_path / "train.log").exists()
    console.open(tmp_path)
    console("step 1: val_loss 3.0")
    console.close()
    assert (tmp_path / "train.log").read_text() == "resuming from x\nstep 1: val_loss 3.0\n"
    assert capsys.readouterr().out == "resuming from x\nstep 1: val_loss 3.0\n"
    silent = Console(enabled=False)  # ranks > 0
    silent("x")
    silent.open(tmp_path / "nowhere")
    assert silent.held == [] and capsys.readouterr().out == ""


@pytest.mark.slow
def test_stdout_lines_every_log_every_and_train_log_holds_them(prepared_embedded, data_cache_dir, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "ORTHOGPT_DEBUG")}
    cmd = [sys.executable, str(ROOT / "train.py"), "model=gpt2-test", "trainer.seq_len=32", "trainer.micro_batch_size=2",
           "trainer.max_steps=4", "schedule.warmup_steps=1", "trainer.log_every=2", "trainer.eval_every=2",
           "trainer.checkpoint_every=2", "trainer.eval_batches=1", "trainer.plot=false", "trainer.sample_every=2",
           "trainer.sample_tokens=8", "trainer.sample_prompt=The function", "logging=disabled",
           "logging.progress_bar=false", "device=cpu", f"data.cache_dir={data_cache_dir}", f"hydra.run.dir={tmp_path}"]
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    out = run.stdout.splitlines()
    steps = [line for line in out if re.fullmatch(r"step [24]/4 \| loss \d+\.\d{4} \| lr \S+ \| \S+ tok/s \| "
                                                  r"mfu \d+\.\d% \| ETA \d+(m\d\d)?s", line)]
    assert [line.split(" |")[0] for line in steps] == ["step 2/4", "step 4/4"], out
    assert out.count("step 2: sample") == 1 and any(line.startswith("  | The function") for line in out)
    assert sum(line.startswith("parameters  ") for line in out) == 1  # the banner, once
    log = (tmp_path / "train.log").read_text().splitlines()
    assert [line for line in out if line not in log] == []  # train.log holds what stdout showed
    assert "UserWarning" not in run.stderr  # DCP's single-process notice at each save is filtered
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert not any("sample" in row for row in rows)  # samples are text: console, train.log, wandb


@pytest.mark.slow
def test_sampling_during_training_changes_nothing_in_the_run(prepared_embedded, data_cache_dir, tmp_path):
    """The sample uses its own generator and puts the model back in train mode: losses are bit-equal."""
    from trainer.config import build_config
    from trainer.distributed import DistContext
    from trainer.loop import Trainer

    def losses(run_dir, *extra):
        with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base=None):
            cfg = compose("train", overrides=[
                "model=gpt2-test", f"data.cache_dir={data_cache_dir}", "logging=disabled", "logging.progress_bar=false",
                "trainer.micro_batch_size=2", "trainer.seq_len=32", "trainer.max_steps=3", "trainer.log_every=1",
                "trainer.eval_every=0", "trainer.checkpoint_every=0", "trainer.eval_batches=1", "trainer.plot=false",
                "schedule.warmup_steps=1", "trainer.peak_tflops=1.0", "model.dropout=0.1", *extra])
        Trainer(build_config(cfg), DistContext(), run_dir).fit()
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        return [r["loss"] for r in rows if "loss" in r]

    plain = losses(tmp_path / "plain")
    sampled = losses(tmp_path / "sampled", "trainer.sample_every=1", "trainer.sample_tokens=4")
    assert len(plain) == 3 and sampled == plain
    log = (tmp_path / "sampled" / "train.log").read_text()
    assert log.count(": sample\n  | <|endoftext|>") == 3


def test_a_sample_goes_to_wandb_as_preformatted_text(tmp_path):
    import wandb

    from trainer.metrics import LoggingConfig, MetricsLogger, WandbConfig

    logged = []

    class Run:
        def log(self, data, step):
            logged.append((data, step))

    cfg = LoggingConfig(progress_bar=False, wandb=WandbConfig("disabled", "p", None, None, (), None, None))
    logger = MetricsLogger(tmp_path, cfg, {}, total_steps=4, start_step=0)
    logger.wandb_run = Run()
    logger.log_text(2, "sample", "a < b\nnext")
    (data, step), = logged
    assert step == 2 and isinstance(data["sample"], wandb.Html) and "<pre>a &lt; b\nnext</pre>" in data["sample"].html
    logger.wandb_run = None
    logger.close()
