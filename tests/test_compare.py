"""Run comparison (scripts/analysis/compare.py, orthogpt-compare) on synthetic run directories whose
numbers are known, including a resumed run (duplicate steps) and a diverged one (null val loss)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from scripts.analysis.compare import expand_run_dirs, mark_best, summarize_run
from trainer.metrics import last_row_per_step

ROOT = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TOKENS_PER_STEP = 1000


def load_compare_script():
    from scripts.analysis import compare_cli

    return compare_cli


def write_run(run_dir: Path, optimizer: str, lr: float, val_losses: list[float | None], tokens_per_s: float = 500.0,
              extra_rows: list[dict] = ()) -> None:  # fmt: skip
    """A run with a train row every step (steps 1..2n) and an eval row every 2 steps."""
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(f"optim:\n  name: {optimizer}\n  matrix:\n    lr: {lr}\n")
    rows = list(extra_rows)
    for i, val in enumerate(val_losses):
        for step in (2 * i + 1, 2 * i + 2):
            rows.append({"step": step, "tokens": step * TOKENS_PER_STEP, "loss": 10.0 - step, "lr": lr,
                         "tokens_per_s": tokens_per_s})
        rows.append({"step": 2 * i + 2, "tokens": (2 * i + 2) * TOKENS_PER_STEP, "val_loss": val})
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture
def sweep(tmp_path) -> Path:
    """A multirun directory: adamw x 2 lrs, muon x 3 lrs (one diverged, one resumed)."""
    root = tmp_path / "multirun" / "2026-01-01_00-00-00"
    write_run(root / "0_adamw", "adamw", 1e-3, [6.0, 5.0, 4.5])
    write_run(root / "1_adamw", "adamw", 3e-3, [5.8, 4.9, 4.6], tokens_per_s=250.0)
    write_run(root / "2_muon", "muon", 0.01, [5.5, 4.4, 4.25])
    write_run(root / "3_muon", "muon", 0.04, [5.0, 7.0, None])  # diverged: its last eval was NaN
    # Resumed from step 2: steps 3-4 logged twice; the first (killed) attempt had other numbers.
    stale = [{"step": s, "tokens": s * TOKENS_PER_STEP, "loss": 99.0, "tokens_per_s": 1.0} for s in (3, 4)]
    stale.append({"step": 4, "tokens": 4 * TOKENS_PER_STEP, "val_loss": 99.0})
    write_run(root / "4_muon", "muon", 0.02, [5.2, 4.3, 4.1], extra_rows=stale)
    (root / "multirun.yaml").write_text("hydra: {}\n")
    (root / "0_adamw" / ".hydra").mkdir()
    return root


def test_sweep_dir_expands_to_its_runs(sweep):
    runs = expand_run_dirs([sweep])
    assert [r.name for r in runs] == ["0_adamw", "1_adamw", "2_muon", "3_muon", "4_muon"]
    assert expand_run_dirs([sweep / "2_muon", sweep]) == [sweep.resolve() / "2_muon", *[r for r in runs if r.name != "2_muon"]]


def test_summary_numbers(sweep):
    s = summarize_run(sweep / "1_adamw")
    assert (s.optimizer, s.lr) == ("adamw", 3e-3)
    assert s.final_val_loss == 4.6 and s.best_val_loss == 4.6
    assert s.tokens == 6 * TOKENS_PER_STEP
    assert s.wall_time_s == pytest.approx(6 * TOKENS_PER_STEP / 250.0) and s.tokens_per_s == pytest.approx(250.0)
    assert s.val_tokens == [2000.0, 4000.0, 6000.0] and s.val_losses == [5.8, 4.9, 4.6]


def test_resumed_run_keeps_the_last_row_per_step(sweep):
    s = summarize_run(sweep / "4_muon")
    assert s.val_losses == [5.2, 4.3, 4.1]  # the stale 99.0 at step 4 was superseded
    assert s.wall_time_s == pytest.approx(6 * TOKENS_PER_STEP / 500.0)  # stale tokens_per_s=1 ignored
    rows = [{"step": 1, "tokens": 1, "loss": 3.0}, {"step": 1, "tokens": 1, "loss": 2.0}]
    assert last_row_per_step(rows, "loss") == [rows[1]]


def test_diverged_run_has_nan_final_loss_and_is_never_best(sweep):
    runs = [summarize_run(d) for d in expand_run_dirs([sweep])]
    diverged = next(r for r in runs if r.name == "3_muon")
    assert math.isnan(diverged.final_val_loss) and diverged.best_val_loss == 5.0
    best = mark_best(runs)
    assert {k: v.name for k, v in best.items()} == {"adamw": "0_adamw", "muon": "4_muon"}
    assert [r.name for r in runs if r.best] == ["0_adamw", "4_muon"]


def parse_table(text: str) -> dict[str, dict[str, str]]:
    lines = [line.strip().strip("|").split("|") for line in text.strip().splitlines()]
    header = [c.strip() for c in lines[0]]
    return {cells[0].strip(): dict(zip(header, (c.strip() for c in cells))) for cells in lines[2:]}


def test_cli_writes_pngs_and_a_table_equal_to_the_logs(sweep, tmp_path):
    out = tmp_path / "out"
    assert load_compare_script().main([str(sweep), "--out", str(out)]) == 0
    for png in ("loss_curves.png", "lr_sensitivity.png"):
        data = (out / png).read_bytes()
        assert data[:8] == PNG_SIGNATURE and len(data) > 5000
    table = parse_table((out / "table.md").read_text())
    assert list(table) == ["0_adamw", "1_adamw", "2_muon", "4_muon", "3_muon"]  # by optimizer, then lr
    assert table["0_adamw"] == {
        "run": "0_adamw", "optimizer": "adamw", "lr": "0.001", "final val loss": "4.5000",
        "best val loss": "4.5000", "tokens": "6000", "wall time (s)": "12.0", "tokens/s": "500", "best": "**best**",
    }
    assert table["3_muon"]["final val loss"] == "nan" and table["3_muon"]["best"] == ""
    assert table["4_muon"]["final val loss"] == "4.1000" and table["4_muon"]["best"] == "**best**"
    summary = {r["name"]: r for r in json.loads((out / "summary.json").read_text())}
    assert summary["3_muon"]["final_val_loss"] is None and summary["2_muon"]["final_val_loss"] == 4.25


def test_clear_errors_for_directories_without_metrics(tmp_path, capsys):
    script = load_compare_script()
    (tmp_path / "empty").mkdir()
    assert script.main([str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert "no metrics.jsonl in" in capsys.readouterr().err
    failed = tmp_path / "sweep" / "0_muon"
    failed.mkdir(parents=True)
    (failed / "config.yaml").write_text("optim: {name: muon}\n")
    assert script.main([str(tmp_path / "sweep"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "0_muon has a config.yaml but no metrics.jsonl" in err
    assert script.main([str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
