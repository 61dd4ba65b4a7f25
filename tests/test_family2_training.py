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


OWNER_STATE = {"aro", "fismo"}  # rotations; factors: held by each matrix's owner rank


@pytest.mark.parametrize("name", sorted(CASES))
def test_trains_under_torchrun_and_resumes_from_its_checkpoint(tmp_path, data_cache_dir, name):
    """W = 2 trains 8 steps; its step-4 checkpoint resumes at W = 1 (and, for owner-resident state, at
    W = 4: four ranks gather the row-sharded state to their own owners) to the uninterrupted losses."""
    steps = ["trainer.max_steps=8", "trainer.checkpoint_every=4"]
    train(tmp_path / "w2", 2, data_cache_dir, *CASES[name], *steps)
    w2 = losses(tmp_path / "w2")
    assert sorted(w2) == list(range(1, 9)) and w2[8] < w2[1] - 0.1, w2
    checkpoint = tmp_path / "step_00000004"
    shutil.copytree(tmp_path / "w2" / "checkpoints" / "step_00000004", checkpoint)
    for world_size in (1, 4) if name in OWNER_STATE else (1,):
        run_dir = tmp_path / f"w{world_size}"
        proc = train(run_dir, world_size, data_cache_dir, *CASES[name], *steps, f"trainer.resume={checkpoint}")
        assert "resumed from" in proc.stdout + proc.stderr
        resumed = losses(run_dir)
        assert sorted(resumed) == [5, 6, 7, 8], world_size
        assert_close(resumed, w2, [5, 6, 7, 8])
