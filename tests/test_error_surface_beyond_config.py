"""Mistakes outside the config (issue 25), through the real command lines: one ``error:`` line
naming what is wrong and the fix, exit status 2, no traceback, nothing half-written.

- a run directory that cannot be created or written: blocked by a file, read-only, no permission
- a data cache folder that is a file; local data with no text; device=cuda without CUDA
- wandb online without an API key (from the config or $WANDB_MODE)
- a disk that fills up during a checkpoint: "no space left on <folder>", the previous one kept
- every error of ``python -m data.prepare`` (orthogpt-prepare), and its --help
- a corrupted token shard: named with the fix, by its CRC32 in meta.json when the data is opened, or
  (a cache prepared before CRCs) by the first batch that holds an id past the vocabulary
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from tests.cli_launch import SMALL, checkpoints, error_line, launch, one_line_error

pytestmark = pytest.mark.slow  # launches training processes: the full suite runs it, the fast tier does not


# ---------------------------------------------------- 5. mistakes outside the config: one line
@contextmanager
def mounted_tmpfs(path: Path, options: str):
    """A tmpfs at ``path`` (root with mount rights only: the test skips elsewhere)."""
    path.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None or subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                                                       capture_output=True).returncode != 0:
        pytest.skip("needs permission to mount a tmpfs (root in a container with CAP_SYS_ADMIN)")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def run_dir_cases(tmp_path: Path) -> dict[str, Path]:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    return {"is a file": blocker, "under a file": blocker / "run"}


@pytest.mark.parametrize("case", ["is a file", "under a file"])
def test_run_dir_blocked_by_a_file(data_cache_dir, tmp_path, case):
    path = run_dir_cases(tmp_path)[case]
    proc = launch([*SMALL, "trainer.max_steps=1", f"data.cache_dir={data_cache_dir}", f"hydra.run.dir={path}"])
    one_line_error(proc, f"the run directory {path} cannot be created or written ({tmp_path / 'a_file'} is a file)",
                   "hydra.run.dir=")
    assert (tmp_path / "a_file").read_text() == "not a directory"


@pytest.mark.parametrize("inside", [False, True], ids=["the read-only folder itself", "a new folder in it"])
def test_read_only_run_dir(data_cache_dir, tmp_path, inside):
    with mounted_tmpfs(tmp_path / "ro", "ro,size=1m") as ro:
        path = ro / "run" if inside else ro
        proc = launch([*SMALL, "trainer.max_steps=1", f"data.cache_dir={data_cache_dir}", f"hydra.run.dir={path}"])
        one_line_error(proc, f"the run directory {path} cannot be created or written (read-only file system)")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a folder without write permission")
def test_run_dir_without_write_permission(data_cache_dir, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    run = locked / "run"
    proc = launch([*SMALL, "trainer.max_steps=1", f"data.cache_dir={data_cache_dir}", f"hydra.run.dir={run}"])
    one_line_error(proc, f"the run directory {run} cannot be created or written (permission denied)")


def test_data_cache_dir_that_is_a_file(tmp_path):
    blocker = tmp_path / "cache"
    blocker.write_text("not a directory")
    proc = launch([*SMALL, "trainer.max_steps=1", f"data.cache_dir={blocker}", f"hydra.run.dir={tmp_path / 'run'}"])
    one_line_error(proc, f"the data cache folder {blocker} cannot be created ({blocker} is a file)", "data.cache_dir")
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


@pytest.mark.slow  # datasets' text reader: ~8 s on an idle machine
def test_empty_local_data(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    proc = launch([*SMALL, "trainer.max_steps=1", "data=local", f"data.paths=[{empty}]",
                   f"data.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / 'run'}"])
    one_line_error(proc, "data 'local': the source gave no training text", str(empty))
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())
    assert not any((tmp_path / "cache").glob("local-*"))  # no half-prepared cache entry


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_device_cuda_without_cuda(data_cache_dir, tmp_path):
    proc = launch([*SMALL, "trainer.max_steps=1", "device=cuda", f"data.cache_dir={data_cache_dir}",
                   f"hydra.run.dir={tmp_path / 'run'}"])
    one_line_error(proc, "device=cuda but", "use device=cpu")


@pytest.mark.parametrize("how", ["config", "environment"])
def test_wandb_online_without_a_key(data_cache_dir, tmp_path, how):
    """No WANDB_API_KEY, no netrc (HOME points at an empty folder): refused before any work (before: a
    wandb UsageError traceback, after the run directory was written)."""
    setting = ["logging.wandb.mode=online"] if how == "config" else []
    env = {"HOME": str(tmp_path)} | ({"WANDB_MODE": "online"} if how == "environment" else {})
    proc = launch([*SMALL, "trainer.max_steps=1", *setting, f"data.cache_dir={data_cache_dir}",
                   f"hydra.run.dir={tmp_path / 'run'}"], env=env)
    one_line_error(proc, "wandb mode online", "needs a W&B API key", "WANDB_API_KEY", "logging.wandb.mode=offline")


@pytest.mark.slow  # two checkpoints written: ~12 s on an idle machine
def test_full_disk_during_a_checkpoint(data_cache_dir, tmp_path):
    """A 40 MB tmpfs holds one 26 MB checkpoint of gpt2-test, not two: the second write fails with
    ENOSPC (torch itself says only "unexpected pos"). One line naming the folder, exit 2, the partial
    write removed, the first checkpoint intact."""
    from trainer.checkpoint import verify_checkpoint

    with mounted_tmpfs(tmp_path / "small", "size=40m") as small:
        run = small / "run"
        proc = launch([*SMALL, "trainer.seq_len=64", "trainer.max_steps=2", "trainer.checkpoint_every=1",
                       f"data.cache_dir={data_cache_dir}", f"hydra.run.dir={run}"])
        error_line(proc, f"no space left on {run / 'checkpoints'}: the checkpoint of step 2 was not written",
                   f"the previous checkpoint {run / 'checkpoints' / 'step_00000001'} is kept")
        assert checkpoints(run) == ["step_00000001"]  # no .tmp_step_00000002
        assert verify_checkpoint(run / "checkpoints" / "step_00000001", deep=True).step == 1


# --------------------------------------------------------------- 5. orthogpt-prepare's errors
PREPARE_CASES = {  # id: (arguments, text of the one line)
    "unknown data": (["data=nosuch"], "Could not find 'data/nosuch': choose data=<name> from embedded"),
    "unknown key": (["data.nosuch=1"], "Could not override 'data.nosuch'"),
    "not an override": (["embedded"], "Error parsing override 'embedded'"),
    "unknown option": (["--force"], "unknown option --force"),
    "bad value": (["data.max_tokens=-3"], "data.max_tokens=-3: expected null or a positive integer"),
    "local without paths": (["data=local"], "data.paths is empty"),
}


@pytest.mark.parametrize("case", list(PREPARE_CASES))
def test_prepare_errors_are_one_line(case):
    args, text = PREPARE_CASES[case]
    one_line_error(launch(args, module="data.prepare"), text)


@pytest.mark.slow  # datasets' text reader: ~9 s on an idle machine
def test_prepare_empty_data_and_a_cache_that_is_a_file(tmp_path):
    empty, blocker = tmp_path / "empty.txt", tmp_path / "cache_file"
    empty.write_text("")
    blocker.write_text("x")
    one_line_error(launch(["data=local", f"data.paths=[{empty}]", f"data.cache_dir={tmp_path / 'cache'}"],
                          module="data.prepare"), "the source gave no training text")
    one_line_error(launch([f"data.cache_dir={blocker}"], module="data.prepare"),
                   f"the data cache folder {blocker} cannot be created ({blocker} is a file)")


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_prepare_help(flag):
    proc = launch([flag], module="data.prepare")
    assert proc.returncode == 0 and proc.stdout.startswith("usage: python -m data.prepare"), proc.stdout + proc.stderr
    assert "data=<name>" in proc.stdout and "embedded" in proc.stdout and not proc.stderr


# ------------------------------------------------------------------- 7. a corrupted token shard
def corrupted_copy(prepared, tmp_path: Path, keep_crc: bool) -> Path:
    """A copy of the prepared embedded data whose train shard holds token id 65535 everywhere (its
    header, and so its size and recorded largest id, intact); ``keep_crc=False``: a meta.json as
    written before CRCs were recorded."""
    cache = tmp_path / "cache"
    folder = cache / prepared.dir.name
    shutil.copytree(prepared.dir, folder)
    shard = folder / prepared.train[0].name
    data = bytearray(shard.read_bytes())
    data[32:] = b"\xff" * (len(data) - 32)
    shard.write_bytes(bytes(data))
    if not keep_crc:
        meta = json.loads((folder / "meta.json").read_text())
        del meta["crc32"]
        (folder / "meta.json").write_text(json.dumps(meta))
    return shard


@pytest.mark.parametrize("keep_crc", [True, False], ids=["checksum in meta.json", "cache from before checksums"])
def test_corrupted_shard_is_named_with_the_fix(prepared_embedded, tmp_path, keep_crc):
    """Before: an IndexError from the embedding, mid-run. With the CRC the shard is refused when the
    data is opened (before the run directory is written); without, at the first batch that reads it."""
    shard = corrupted_copy(prepared_embedded, tmp_path, keep_crc)
    run = tmp_path / "run"
    proc = launch([*SMALL, "trainer.max_steps=2", f"data.cache_dir={shard.parent.parent}", f"hydra.run.dir={run}"])
    line = error_line(proc, f"token shard {shard}", f"Delete its folder ({shard.parent})",
                      "python -m data.prepare data=embedded")
    if keep_crc:
        assert "meta.json recorded" in line and "the file is corrupted" in line, line
        assert not run.exists() or not any(run.iterdir())
    else:
        assert "holds token id 65535" in line and "outside the model's vocabulary of 50257" in line, line


def test_prepared_data_records_each_shards_crc(prepared_embedded):
    from data.shards import shard_checksum

    meta = json.loads((prepared_embedded.dir / "meta.json").read_text())
    assert meta["crc32"] == {p.name: shard_checksum(p) for p in [*prepared_embedded.train, *prepared_embedded.val]}
