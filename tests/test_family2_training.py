"""ROOT, RowNormM, Schatten-p, ARO and FISMO through the real train.py: two torchrun ranks train (the loss falls), and the
DCP checkpoint they write mid-run resumes in one process to the same next losses as the
uninterrupted two-rank run (optimizer state resharded from W = 2 to W = 1). ARO's rotations and
FISMO's factors are owner-resident state (optim/orthogonalize/owner_state.py): their checkpoints also
resume at W = 4.

ROOT runs with the embedding group on the centered RowNormM (a role rule beside a matrix optimizer,
its head mean all-reduced); ``optim=rownorm`` puts every 2-D parameter on RowNormM.
"""

from __future__ import annotations

import shutil

import pytest

from tests.test_fsdp_training import assert_close, losses, train

pytestmark = pytest.mark.slow  # train.py under torchrun, then alone

CASES = {
    "root": ["optim=root", "optim.embedding.rule=rownorm", "optim.embedding.rownorm.center_head=true",
             "optim.embedding.lr=0.05"],
    "rownorm": ["optim=rownorm"],
    # p measured at steps 1, 4, 7: the step-7 selection reads the spectra EMA the checkpoint restored
    "schatten": ["optim=schatten", "optim.matrix.recompute_every=3"],
    "aro": ["optim=aro", "optim.matrix.lr=3e-3"],  # the YAML's 6e-4 is AdamW's lr for GPT-2 124M
    # P, Q refreshed at steps 1, 4, 7: the step counter crosses the step-4 checkpoint with the factors
    "fismo": ["optim=fismo", "optim.matrix.precondition_every=3"],
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_trains_under_torchrun_and_resumes_at_one_rank_from_its_checkpoint(tmp_path, data_cache_dir, name):
    steps = ["trainer.max_steps=8", "trainer.checkpoint_every=4"]
    train(tmp_path / "w2", 2, data_cache_dir, *CASES[name], *steps)
    w2 = losses(tmp_path / "w2")
    assert sorted(w2) == list(range(1, 9)) and w2[8] < w2[1] - 0.1, w2
    checkpoint = tmp_path / "step_00000004"
    shutil.copytree(tmp_path / "w2" / "checkpoints" / "step_00000004", checkpoint)
    proc = train(tmp_path / "w1", 1, data_cache_dir, *CASES[name], *steps, f"trainer.resume={checkpoint}")
    assert "resumed from" in proc.stdout + proc.stderr
    resumed = losses(tmp_path / "w1")
    assert sorted(resumed) == [5, 6, 7, 8]
    assert_close(resumed, w2, [5, 6, 7, 8])


@pytest.mark.parametrize("name", ["aro", "fismo"])
def test_owner_state_checkpoint_written_at_two_ranks_resumes_at_four(tmp_path, data_cache_dir, name):
    """Each rank holds the owner-resident state (rotations; factors) of the matrices it owns; the
    checkpoint has it row-sharded, and four ranks gather it to their own owners."""
    steps = ["trainer.max_steps=6", "trainer.checkpoint_every=3"]
    train(tmp_path / "w2", 2, data_cache_dir, *CASES[name], *steps)
    w2 = losses(tmp_path / "w2")
    checkpoint = tmp_path / "step_00000003"
    shutil.copytree(tmp_path / "w2" / "checkpoints" / "step_00000003", checkpoint)
    proc = train(tmp_path / "w4", 4, data_cache_dir, *CASES[name], *steps, f"trainer.resume={checkpoint}")
    assert "resumed from" in proc.stdout + proc.stderr
    resumed = losses(tmp_path / "w4")
    assert sorted(resumed) == [4, 5, 6]
    assert_close(resumed, w2, [4, 5, 6])
