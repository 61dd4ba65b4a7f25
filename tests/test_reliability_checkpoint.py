"""Corrupt, partial and failed checkpoints, on real files written by a real run.

A truncated tensor file, a missing shard, a trainer state or manifest copied from another model's
checkpoint, a flipped byte in the DCP index: ``trainer.resume=auto`` logs an error naming the broken
checkpoint and resumes from the previous complete one (same losses as the uninterrupted run);
an explicit ``trainer.resume=<path>`` fails with a CheckpointError naming it. A write that fails
(in DCP's tensor write, or in the final rename) leaves the last good checkpoint byte-for-byte intact.
Loading never runs code from the checkpoint.
"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch

import trainer.checkpoint as ckpt
import trainer.checkpoint.store as store
from scripts.fault_injection.harness import compose_config, losses, tensor_file_crcs, train_in_process

STEPS = (3, 6, 9)


@pytest.fixture(scope="module")
def runs(prepared_embedded, data_cache_dir, tmp_path_factory):
    """A 9-step run keeping checkpoints 3, 6 and 9, and a 3-step run of a wider model (n_embd=64)."""
    root = tmp_path_factory.mktemp("reliability_checkpoint")
    train_in_process(compose_config(data_cache_dir, "trainer.keep_checkpoints=3"), root / "full")
    train_in_process(compose_config(data_cache_dir, "model.n_embd=64", max_steps=3), root / "other")
    return root


def step_dir(run: Path, step: int) -> Path:
    return run / "checkpoints" / ckpt.step_dir_name(step)


def copy_run(runs: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(runs / "full", run)
    (run / "metrics.jsonl").unlink()  # the resumed part is compared with the full run's rows
    return run


def truncate_tensor_file(run: Path, other: Path) -> None:
    data = step_dir(run, 9) / "__0_0.distcp"
    with open(data, "r+b") as f:
        f.truncate(data.stat().st_size // 2)


def delete_shard(run: Path, other: Path) -> None:
    (step_dir(run, 9) / "__0_0.distcp").unlink()


def trainer_state_from_other_model(run: Path, other: Path) -> None:
    shutil.copy(step_dir(other, 3) / ckpt.TRAINER_STATE, step_dir(run, 9) / ckpt.TRAINER_STATE)


def manifest_from_other_model(run: Path, other: Path) -> None:
    shutil.copy(step_dir(other, 3) / ckpt.MANIFEST, step_dir(run, 9) / ckpt.MANIFEST)


def flipped_byte_in_dcp_index(run: Path, other: Path) -> None:
    index = step_dir(run, 9) / ckpt.DCP_METADATA
    data = bytearray(index.read_bytes())
    data[len(data) // 2] ^= 0xFF
    index.write_bytes(bytes(data))


def same_size_trainer_state_edit(run: Path, other: Path) -> None:
    """Caught by the CRC, not the size: a trainer state claiming another step, same byte count."""
    path = step_dir(run, 9) / ckpt.TRAINER_STATE
    text = path.read_text()
    path.write_text(text.replace('"step": 9', '"step": 8'))


CORRUPTIONS = {
    "truncated tensor file": (truncate_tensor_file, "bytes, its manifest says"),
    "missing shard": (delete_shard, "missing file '__0_0.distcp'"),
    "trainer state from another model": (trainer_state_from_other_model, "trainer_state.json"),
    "manifest from another model": (manifest_from_other_model, "bytes, its manifest says"),
    "flipped byte in DCP index": (flipped_byte_in_dcp_index, "does not match the CRC32"),
    "same-size trainer state edit": (same_size_trainer_state_edit, "does not match the CRC32"),
}


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_broken_newest_checkpoint_falls_back_to_previous(runs, data_cache_dir, tmp_path, capsys, name):
    corrupt, message = CORRUPTIONS[name]
    run = copy_run(runs, tmp_path)
    corrupt(run, runs / "other")
    newest = step_dir(run, 9)

    with pytest.raises(ckpt.CheckpointError, match=message) as err:  # explicit path: refuse, name it
        train_in_process(compose_config(data_cache_dir, f"trainer.resume={newest}"), tmp_path / "explicit")
    assert str(newest) in str(err.value)

    capsys.readouterr()
    train_in_process(compose_config(data_cache_dir), run)  # trainer.resume=auto
    out = capsys.readouterr().out
    assert f"skipping checkpoint: checkpoint {newest}" in out and message in out, out
    assert f"resumed from {step_dir(run, 6)} at step 6" in out, out
    full = losses(runs / "full")
    assert losses(run) == {s: full[s] for s in (7, 8, 9)}
    assert ckpt.verify_checkpoint(newest, deep=True).step == 9  # rewritten whole
    assert tensor_file_crcs(newest) == tensor_file_crcs(step_dir(runs / "full", 9))


def test_incomplete_write_is_ignored_and_cleaned_up(runs, data_cache_dir, tmp_path, capsys):
    """A directory without a manifest (a write cut short) is not a checkpoint; the next save removes it."""
    run = copy_run(runs, tmp_path)
    shutil.rmtree(step_dir(run, 9))
    partial = run / "checkpoints" / ".tmp_step_00000009"
    shutil.copytree(step_dir(runs / "full", 9), partial)
    (partial / ckpt.MANIFEST).unlink()
    train_in_process(compose_config(data_cache_dir), run)
    assert f"resumed from {step_dir(run, 6)}" in capsys.readouterr().out
    assert not partial.exists() and ckpt.find_resumable(run / "checkpoints").path == step_dir(run, 9)


def test_all_checkpoints_broken_is_an_error_not_a_fresh_start(runs, tmp_path):
    """Starting afresh would abandon the run silently (and prune its new checkpoints first)."""
    run = copy_run(runs, tmp_path)
    for step in STEPS:
        (step_dir(run, step) / "__0_0.distcp").unlink()
    with pytest.raises(ckpt.CheckpointError, match="none of the 3 checkpoints") as err:
        ckpt.find_resumable(run / "checkpoints", log=lambda _: None)
    assert all(str(step_dir(run, s)) in str(err.value) for s in STEPS)
    assert ckpt.find_resumable(tmp_path / "no_run_yet") is None


def fail_in_tensor_write(monkeypatch):
    def save(state_dict, checkpoint_id):
        Path(checkpoint_id, "__0_0.distcp").write_bytes(b"\0" * 1000)  # a partial tensor file
        raise OSError(28, "No space left on device (injected)")

    monkeypatch.setattr(store.dcp, "save", save)


def fail_in_final_rename(monkeypatch):
    original = store.os.rename

    def rename(src, dst):
        if Path(src).name.startswith(ckpt.TMP_PREFIX):
            raise OSError(5, "Input/output error (injected)")
        return original(src, dst)

    monkeypatch.setattr(store.os, "rename", rename)


@pytest.mark.parametrize("inject", [fail_in_tensor_write, fail_in_final_rename])
@pytest.mark.parametrize("resave", [False, True], ids=["new step", "same step again"])
def test_failed_write_leaves_last_good_checkpoint_intact(runs, data_cache_dir, tmp_path, monkeypatch, inject,
                                                         resave):
    """New step: the write of step 12 fails. Same step: resumed explicitly from step 6, the re-save of
    step 9 fails while the old step 9 is in place. Either way every good checkpoint survives unchanged.
    The tensor write fails with ENOSPC: reported as a full disk, its partial write removed; the rename
    fails with EIO: raised as it is."""
    run = copy_run(runs, tmp_path)
    before = {s: tensor_file_crcs(step_dir(run, s)) for s in STEPS}
    inject(monkeypatch)
    overrides = [f"trainer.resume={step_dir(run, 6)}"] if resave else []
    cfg = compose_config(data_cache_dir, "trainer.keep_checkpoints=3", *overrides, max_steps=9 if resave else 12)
    full = inject is fail_in_tensor_write
    with pytest.raises(ckpt.CheckpointError if full else OSError,
                       match=f"no space left on {run / 'checkpoints'}" if full else "injected"):
        train_in_process(cfg, run)
    monkeypatch.undo()
    if full:
        assert not list((run / "checkpoints").glob(f"{ckpt.TMP_PREFIX}*"))
    for step in STEPS:
        assert ckpt.verify_checkpoint(step_dir(run, step), deep=True).step == step
        assert tensor_file_crcs(step_dir(run, step)) == before[step]
    assert ckpt.find_resumable(run / "checkpoints").path == step_dir(run, 9)


# ----------------------------------------------------------------------------------- security
class _TouchOnUnpickle:
    """Pickles to 'create this file': proof that unpickling ran code chosen by the checkpoint."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_dcp_index_that_would_run_code_is_refused(runs, tmp_path):
    run = copy_run(runs, tmp_path)
    path = step_dir(run, 9)
    marker = tmp_path / "code_ran"
    (path / ckpt.DCP_METADATA).write_bytes(pickle.dumps(_TouchOnUnpickle(marker)))
    manifest = json.loads((path / ckpt.MANIFEST).read_text())  # a consistent manifest, as an attacker would write
    manifest["files"][ckpt.DCP_METADATA] = {"bytes": (path / ckpt.DCP_METADATA).stat().st_size,
                                            "crc32": ckpt.file_crc32(path / ckpt.DCP_METADATA)}
    (path / ckpt.MANIFEST).write_text(json.dumps(manifest))

    from models.gpt2 import GPT, GPTConfig
    from trainer.distributed import DistContext

    model = GPT(GPTConfig(**json.loads((path / ckpt.TRAINER_STATE).read_text())["model"]))
    optimizer = torch.optim.AdamW(model.parameters())
    with pytest.raises(ckpt.CheckpointError, match="is not allowed in a checkpoint") as err:
        ckpt.load_checkpoint(ckpt.verify_checkpoint(path), model, optimizer, DistContext())
    assert str(path) in str(err.value) and not marker.exists()
    pickle.loads((path / ckpt.DCP_METADATA).read_bytes())  # the payload is live: plain pickle runs it
    assert marker.exists()


def test_non_tensor_values_load_with_weights_only(tmp_path):
    import io

    marker = tmp_path / "code_ran"
    buffer = io.BytesIO()
    torch.save({"lr": _TouchOnUnpickle(marker)}, buffer)
    buffer.seek(0)
    planner = ckpt.SafeLoadPlanner()
    with pytest.raises(pickle.UnpicklingError):
        planner.load_bytes(None, buffer)
    assert not marker.exists()


def test_later_checkpoints_of_a_left_timeline_are_set_aside_not_resumed(runs, data_cache_dir, tmp_path):
    """A fresh run (another seed) in the directory of an old one: its saves are not pruned in favour of
    the old run's later checkpoints, which are kept as abandoned_step_* and never resumed."""
    run = copy_run(runs, tmp_path)
    old = {s: tensor_file_crcs(step_dir(run, s)) for s in STEPS}
    train_in_process(compose_config(data_cache_dir, "trainer.resume=false", "seed=7", max_steps=6), run)
    assert [p.name for p in ckpt.list_complete(run / "checkpoints")] == ["step_00000003", "step_00000006"]
    assert tensor_file_crcs(step_dir(run, 6)) != old[6]  # the new run's, not the old one's
    for step in (6, 9):
        assert tensor_file_crcs(run / "checkpoints" / f"abandoned_step_{step:08d}") == old[step]
    assert ckpt.find_resumable(run / "checkpoints").path == step_dir(run, 6)
