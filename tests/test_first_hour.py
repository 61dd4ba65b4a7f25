"""A newcomer's first hour (issue 25), through the real ``python train.py``: real files, real run
directories (the mistakes outside the config: tests/test_error_surface_beyond_config.py).

- model=gpt2-test runs with the defaults: seq_len from the model, warmup clipped to a short run
- $WANDB_MODE overrides logging.wandb.mode
- a finished run, resumed again, says so and exits 0; a checkpoint past a smaller max_steps is refused
- the default layout (a new runs/<name>/<stamp> per launch) resumes: resume=auto continues the newest
  earlier run of the name and says which, or says it starts fresh; ranks agree on the directory
- resuming another optimizer's or a model-only checkpoint is refused, naming trainer.init_from
"""

from __future__ import annotations

import json
import os
import shutil

import pytest

from tests.cli_launch import NAME, QUIET, SMALL, checkpoints, launch, one_line_error, snapshot

pytestmark = pytest.mark.slow  # launches training processes: the full suite runs it, the fast tier does not


# ------------------------------------------------------------------- the first run, with defaults
@pytest.fixture(scope="module")
def first(prepared_embedded, data_cache_dir, tmp_path_factory):
    """``model=gpt2-test`` with the default seq_len and warmup, in the default layout, resume=auto,
    wandb offline in the config but WANDB_MODE=disabled in the environment: a 2-step run."""
    cwd = tmp_path_factory.mktemp("first_hour")
    proc = launch(["model=gpt2-test", "trainer.max_steps=2", "trainer.resume=auto", "logging=default",
                   f"data.cache_dir={data_cache_dir}", *QUIET], cwd=cwd,
                  env={"ORTHOGPT_RUN_STAMP": "first", "WANDB_MODE": "disabled"})
    return cwd, cwd / "runs" / NAME / "first", proc


def test_small_model_runs_with_the_defaults(first):
    """seq_len follows the model's context (64, not the default 256 of old); the default warmup of 20
    is clipped to the 2-step run with a one-line notice; config.yaml records both numbers."""
    _, run, proc = first
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    notes = [line for line in proc.stdout.splitlines() if line.startswith("note: ")]
    assert notes == ["note: schedule.warmup_steps=20 is not shorter than trainer.max_steps=2: warming up over "
                     "1 step(s) instead (set schedule.warmup_steps to choose)"], proc.stdout
    import yaml

    config = yaml.safe_load((run / "config.yaml").read_text())
    assert (config["trainer"]["seq_len"], config["schedule"]["warmup_steps"]) == (64, 1)
    assert checkpoints(run) == ["step_00000002"]


def test_fresh_start_in_the_default_layout_says_so(first):
    _, _, proc = first
    assert proc.returncode == 0 and "no checkpoint found: starting fresh" in proc.stdout, proc.stdout[-3000:]


def test_wandb_mode_from_the_environment_disables_the_configured_offline_run(first):
    """logging=default is offline wandb; WANDB_MODE=disabled wins (before: an offline run was written)."""
    _, run, proc = first
    assert proc.returncode == 0 and not (run / "wandb").exists(), sorted(p.name for p in run.iterdir())


# ---------------------------------------------------------------------------- 1. a finished run
@pytest.mark.parametrize("resume", ["auto", pytest.param("true", marks=pytest.mark.slow),
                                    pytest.param("path", marks=pytest.mark.slow)])
def test_finished_run_says_so_and_exits_0(first, data_cache_dir, resume):
    """A SLURM requeue after the end, a rerun of a sweep: one line, exit 0, nothing written. In the
    default layout the new launch finds the run of its name and leaves no directory of its own."""
    cwd, run, _ = first
    before = snapshot(cwd)
    value = run / "checkpoints" / "step_00000002" if resume == "path" else resume
    proc = launch([*SMALL, "trainer.seq_len=64", "trainer.max_steps=2", f"trainer.resume={value}",
                   f"data.cache_dir={data_cache_dir}"], cwd=cwd, env={"ORTHOGPT_RUN_STAMP": "again"})
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    lines = output.strip().splitlines()
    assert len(lines) == 1 and "already finished" in lines[0] and "step 2 = trainer.max_steps" in lines[0], output
    assert snapshot(cwd) == before  # no runs/<name>/again, nothing changed in the finished run


@pytest.mark.slow  # builds the model and evaluates: ~10 s
def test_finished_run_that_lost_its_summary_is_summarized(first, data_cache_dir, tmp_path):
    """Killed between its last checkpoint and summary.json: the next launch trains nothing, evaluates
    the checkpoint and writes the summary (a study counts the run as done by it)."""
    shutil.copytree(first[0] / "runs", tmp_path / "runs")
    run = tmp_path / "runs" / NAME / "first"
    (run / "summary.json").unlink()
    proc = launch([*SMALL, "trainer.seq_len=64", "trainer.max_steps=2", "trainer.resume=auto",
                   f"data.cache_dir={data_cache_dir}"], cwd=tmp_path, env={"ORTHOGPT_RUN_STAMP": "again"})
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["step"] == 2 and summary["val_loss"] > 0 and checkpoints(run) == ["step_00000002"]


def test_checkpoint_past_a_smaller_max_steps_is_refused_with_both_numbers(first, data_cache_dir):
    cwd, _, _ = first
    before = snapshot(cwd)
    proc = launch([*SMALL, "trainer.seq_len=64", "trainer.max_steps=1", "trainer.resume=auto",
                   f"data.cache_dir={data_cache_dir}"], cwd=cwd, env={"ORTHOGPT_RUN_STAMP": "smaller"})
    one_line_error(proc, "is at step 2, past trainer.max_steps=1", "trainer.max_steps >= 2")
    assert snapshot(cwd) == before


# --------------------------------------------------------------------- 2. resume, default layout
STUB_WANDB = '''import json, os


class Run:
    def log(self, *args, **kwargs):
        pass

    def finish(self):
        pass


def init(**kwargs):  # records how the trainer called it
    with open(os.environ["STUB_WANDB_CALLS"], "a") as f:
        f.write(json.dumps({"mode": kwargs.get("mode")}) + "\\n")
    return Run()
'''


@pytest.fixture(scope="module")
def continued(first, data_cache_dir, tmp_path_factory):
    """A copy of the first run's folder, then ``trainer.max_steps=3 trainer.resume=auto`` in a new
    launch (stamp "later"), with logging=disabled but WANDB_MODE=offline (a stand-in wandb module
    records the mode it is given)."""
    cwd = tmp_path_factory.mktemp("continued")
    shutil.copytree(first[0] / "runs", cwd / "runs")
    stub = cwd / "stub"
    (stub / "wandb").mkdir(parents=True)
    (stub / "wandb" / "__init__.py").write_text(STUB_WANDB)
    calls = cwd / "wandb_calls.jsonl"
    proc = launch([*SMALL, "trainer.seq_len=64", "trainer.max_steps=3", "trainer.resume=auto",
                   f"data.cache_dir={data_cache_dir}"], cwd=cwd,
                  env={"ORTHOGPT_RUN_STAMP": "later", "WANDB_MODE": "offline", "STUB_WANDB_CALLS": str(calls),
                       "PYTHONPATH": str(stub)})
    return cwd, proc, calls


def test_resume_auto_continues_the_newest_earlier_run_of_the_name(continued):
    """Before: the new launch started at step 0 in runs/<name>/later, silently."""
    cwd, proc, _ = continued
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    run = cwd / "runs" / NAME / "first"
    ckpt = run / "checkpoints" / "step_00000002"
    assert f"resuming from {ckpt} at step 2 (the newest earlier run named {NAME}; this launch continues in {run})" \
        in proc.stdout, proc.stdout[-3000:]
    assert checkpoints(run) == ["step_00000002", "step_00000003"]
    assert sorted(p.name for p in (cwd / "runs" / NAME).iterdir()) == ["first"]  # no empty "later"
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps[0] == 0 and steps[-1] == 3  # one curve: the first launch's rows, then this one's


def test_wandb_mode_from_the_environment_enables_a_disabled_config(continued):
    """logging=disabled, WANDB_MODE=offline: wandb.init runs, with mode offline (before: never)."""
    _, proc, calls = continued
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert [json.loads(line) for line in calls.read_text().splitlines()] == [{"mode": "offline"}]


def test_resume_true_without_any_run_names_where_it_looked(data_cache_dir, tmp_path):
    proc = launch([*SMALL, "trainer.max_steps=2", "trainer.resume=true", f"data.cache_dir={data_cache_dir}"],
                  cwd=tmp_path, env={"ORTHOGPT_RUN_STAMP": "x"})
    one_line_error(proc, f"{tmp_path}/runs/{NAME}/x/checkpoints holds no complete checkpoint",
                   f"nor does any earlier run in {tmp_path}/runs/{NAME}")
    assert not (tmp_path / "runs" / NAME / "x").exists()


def test_a_run_another_launch_is_training_is_not_continued(first, data_cache_dir):
    """The newest earlier run is locked by a live launch (here: this test process, as train.py does):
    resume=true does not take it over, and says why it found nothing."""
    from trainer.run_dir import hold_run

    cwd, run, _ = first
    lock = hold_run(run)
    try:
        assert lock is not None
        proc = launch([*SMALL, "trainer.seq_len=64", "trainer.max_steps=4", "trainer.resume=true",
                       f"data.cache_dir={data_cache_dir}"], cwd=cwd, env={"ORTHOGPT_RUN_STAMP": "busy"})
    finally:
        os.close(lock)
    one_line_error(proc, f"nor does any earlier run in {run.parent} ({run}: in use by another launch)")


@pytest.mark.distributed
def test_two_ranks_continue_the_same_earlier_run(first, data_cache_dir, tmp_path):
    """torchrun: both ranks resume the run rank 0 chose and write one checkpoint in it."""
    shutil.copytree(first[0] / "runs", tmp_path / "runs")
    proc = launch([*SMALL, "trainer.seq_len=64", "trainer.micro_batch_size=1", "trainer.max_steps=3",
                   "trainer.resume=auto", f"data.cache_dir={data_cache_dir}"], cwd=tmp_path, nproc=2,
                  env={"ORTHOGPT_RUN_STAMP": "ranks"})
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    run = tmp_path / "runs" / NAME / "first"
    assert checkpoints(run) == ["step_00000002", "step_00000003"]
    assert sorted(p.name for p in (tmp_path / "runs" / NAME).iterdir()) == ["first"]


# ------------------------------------------------------------------------ 6. resume mismatches
def test_resuming_with_another_optimizer_names_the_one_used_and_init_from(first, data_cache_dir):
    cwd, run, _ = first
    before = snapshot(cwd)
    proc = launch([*SMALL, "trainer.seq_len=64", "optim=muon", "trainer.max_steps=4", "trainer.resume=auto",
                   "run_name=" + NAME, f"data.cache_dir={data_cache_dir}"], cwd=cwd, env={"ORTHOGPT_RUN_STAMP": "muon"})
    ckpt = run / "checkpoints" / "step_00000002"
    one_line_error(proc, f"checkpoint {ckpt} was written by optimizer adamw, this run uses muon",
                   "optim=adamw", f"trainer.resume=false trainer.init_from={ckpt}")
    assert snapshot(cwd) == before


def test_resuming_a_model_only_checkpoint_names_init_from(first, data_cache_dir, tmp_path):
    """What orthogpt-import-hf writes (model weights, no optimizer state) cannot be resumed."""
    from trainer.checkpoint.model_io import load_gpt, write_model_checkpoint

    imported = write_model_checkpoint(tmp_path / "imported", load_gpt(first[1], log=lambda _: None))
    run = tmp_path / "run"
    proc = launch([*SMALL, "trainer.seq_len=64", "trainer.max_steps=2", f"trainer.resume={imported}",
                   f"data.cache_dir={data_cache_dir}", f"hydra.run.dir={run}"], cwd=tmp_path)
    one_line_error(proc, f"checkpoint {imported} holds model weights only", f"trainer.init_from={imported}")
    assert not run.exists() or not any(run.iterdir())  # nothing written
