"""A user's mistake, through the real command line: a short message naming the key and the fix, a
non-zero exit status, no Python traceback, and nothing changed in an existing run directory.

One process (``python train.py``) for every case; torchrun with 2 ranks for a few: the message
appears once (rank 0) and no worker prints a traceback (torchrun's own ChildFailedError report
remains: it is torchrun's, printed for any failed worker).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BASE = ["model=gpt2-test", "trainer.seq_len=32", "trainer.max_steps=2", "schedule.warmup_steps=0",
        "trainer.eval_batches=1", "trainer.micro_batch_size=2", "trainer.plot=false", "logging=disabled",
        "logging.progress_bar=false", "device=cpu"]

CASES = [  # (id, overrides, environment, text the message must contain)
    ("unknown optimizer", ["optim=nosuch"], {}, "Could not find 'optim/nosuch'"),
    ("unknown model", ["model=nosuch"], {}, "Could not find 'model/nosuch'"),
    ("unknown data", ["data=nosuch"], {}, "Could not find 'data/nosuch'"),
    ("unknown key", ["+trainer.foo=1"], {}, "trainer.foo is not a known key"),
    ("unknown key of the rule", ["optim=muon", "+optim.matrix.beta2=0.9"], {}, "optim.matrix.beta2 is not a known key"),
    ("out-of-range lr", ["optim=muon", "optim.matrix.lr=-1"], {}, "optim.matrix.lr must be > 0, got -1.0"),
    ("mistyped value", ["optim.matrix.lr=fast"], {}, "optim.matrix.lr must be a number, got 'fast'"),
    ("split for a whole-matrix rule", ["optim=schatten", "optim.orthogonalize.split=qkv"], {},
     "optim.orthogonalize.split=qkv does not apply to 'schatten'"),
    ("bad batch split", ["trainer.global_batch_size=3"], {}, "trainer.global_batch_size=3 cannot be split"),
    ("seq_len beyond block_size", ["trainer.seq_len=128"], {}, "trainer.seq_len (128) is longer than the model's context"),
    ("negative warmup", ["schedule.warmup_steps=-1"], {}, "schedule.warmup_steps (-1) must be in [0, trainer.max_steps=2)"),
    ("local data without paths", ["data=local"], {}, "data.paths is empty"),
    ("local data, missing file", ["data=local", "data.paths=[/nonexistent/a.txt]"], {}, "/nonexistent/a.txt does not exist"),
    ("resume path that does not exist", ["trainer.resume=/nonexistent/step_00000002"], {},
     "/nonexistent/step_00000002 does not exist"),
    ("invalid WANDB_MODE", [], {"WANDB_MODE": "sometimes"}, "WANDB_MODE='sometimes' is not a wandb mode"),
    ("invalid ORTHOGPT_CPU_BF16", [], {"ORTHOGPT_CPU_BF16": "yes"}, "ORTHOGPT_CPU_BF16 must be 0 (force the fp32 path) or 1"),
    ("checkpoint from another model", ["model.n_embd=64", "trainer.resume=true"], {},
     "was written for another model shape (n_embd: checkpoint 32 vs config 64)"),
]


def launch(run_dir: Path, data_cache_dir: Path, overrides: list[str], env: dict, nproc: int = 1):
    launcher = [sys.executable] if nproc == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                    f"--nproc_per_node={nproc}"]
    cmd = [*launcher, str(ROOT / "train.py"), *BASE, f"data.cache_dir={data_cache_dir}", f"hydra.run.dir={run_dir}",
           *overrides]
    environment = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "ORTHOGPT_DEBUG", "WANDB_MODE")}
    return subprocess.run(cmd, cwd=ROOT, env={**environment, **env}, capture_output=True, text=True, timeout=300)


def snapshot(run_dir: Path) -> dict[str, str]:
    return {str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run_dir.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def run_dir(prepared_embedded, data_cache_dir, tmp_path_factory):
    """A finished run (checkpoint at step 2) that every failed start below points at."""
    path = tmp_path_factory.mktemp("error_surface") / "run"
    done = launch(path, data_cache_dir, [], {})
    assert done.returncode == 0, done.stderr[-2000:]
    return path


@pytest.mark.parametrize("overrides,env,message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_one_process(run_dir, data_cache_dir, overrides, env, message):
    before = snapshot(run_dir)
    proc = launch(run_dir, data_cache_dir, overrides, env)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output[-2000:]
    assert message in output, output[-2000:]
    assert "Traceback" not in output, output[-2000:]
    hydra_listing = "Could not find" in message  # Hydra's own message lists the valid options
    assert len(output.strip().splitlines()) <= (30 if hydra_listing else 1), output  # a message, not a log
    assert snapshot(run_dir) == before  # nothing in the existing run directory changed


TORCHRUN_CASES = ["unknown optimizer", "out-of-range lr", "checkpoint from another model"]


@pytest.mark.distributed
@pytest.mark.parametrize("name", TORCHRUN_CASES)
def test_torchrun_two_ranks(run_dir, data_cache_dir, name):
    overrides, env, message = next(c[1:] for c in CASES if c[0] == name)
    before = snapshot(run_dir)
    proc = launch(run_dir, data_cache_dir, overrides, env, nproc=2)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert output.count(message) == 1, output[-3000:]  # rank 0 only
    ours = [line for line in output.splitlines() if line.strip().startswith("File ") and str(ROOT) in line]
    assert not ours, ours  # no worker traceback (torchrun's own report names only torch's files)
    assert snapshot(run_dir) == before
