"""metrics.jsonl across crashes: a line cut short by a kill never fuses with the next row, and a
resume moves the rows past its checkpoint out of the way so each step is logged once."""

from __future__ import annotations

import json

from omegaconf import OmegaConf

from trainer.metrics import MetricsLogger

LOGGING = OmegaConf.create({"progress_bar": False, "wandb": {"mode": "disabled"}})


def rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def write_run(path, steps, val_every=4):
    with open(path, "w") as f:
        for step in steps:
            f.write(json.dumps({"step": step, "loss": 10.0 - step / 10}) + "\n")
            if step % val_every == 0:
                f.write(json.dumps({"step": step, "val_loss": 9.0}) + "\n")


def test_line_cut_by_a_kill_is_dropped_on_reopen(tmp_path):
    path = tmp_path / "metrics.jsonl"
    write_run(path, range(1, 4))
    with open(path, "a") as f:
        f.write('{"step": 4, "lo')  # the process died in the middle of this write
    logger = MetricsLogger(tmp_path, LOGGING, {}, total_steps=10, start_step=0)
    logger.log({"step": 4, "loss": 9.6})
    logger.close()
    assert [(r["step"], r["loss"]) for r in rows(path)] == [(1, 9.9), (2, 9.8), (3, 9.7), (4, 9.6)]


def test_rewind_keeps_rows_up_to_the_resumed_step_and_sets_the_rest_aside(tmp_path):
    path = tmp_path / "metrics.jsonl"
    write_run(path, range(1, 11))
    with open(path, "a") as f:
        f.write('{"step": 11, "lo')
    logger = MetricsLogger(tmp_path, LOGGING, {}, total_steps=12, start_step=0)
    assert logger.rewind(8) == 2  # steps 9 and 10 (the cut line of step 11 went on reopen)
    logger.log({"step": 9, "loss": 9.1})
    logger.close()
    kept = rows(path)
    assert [r["step"] for r in kept] == [1, 2, 3, 4, 4, 5, 6, 7, 8, 8, 9]
    assert kept[-1] == {"step": 9, "loss": 9.1}
    assert [r["step"] for r in rows(tmp_path / "metrics.rewound.jsonl")] == [9, 10]


def test_rewind_to_zero_and_without_a_file(tmp_path):
    logger = MetricsLogger(tmp_path, LOGGING, {}, total_steps=5, start_step=0)
    assert logger.rewind(0) == 0  # a fresh run: nothing to move
    logger.log({"step": 1, "loss": 1.0})
    assert logger.rewind(0) == 1
    logger.close()
    assert (tmp_path / "metrics.jsonl").read_text() == ""


def test_disabled_logger_on_other_ranks_touches_nothing(tmp_path):
    write_run(tmp_path / "metrics.jsonl", range(1, 5))
    before = (tmp_path / "metrics.jsonl").read_text()
    logger = MetricsLogger(tmp_path, LOGGING, {}, total_steps=5, start_step=0, enabled=False)
    assert logger.rewind(1) == 0
    assert (tmp_path / "metrics.jsonl").read_text() == before
