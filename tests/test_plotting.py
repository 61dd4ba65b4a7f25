"""Loss-curve plotting (trainer/loss_curve.py, orthogpt-plot) from synthetic JSONL metrics."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from trainer.loss_curve import loss_series, plot_loss_curves
from trainer.metrics import read_metrics

REPO = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def write_run(run_dir: Path, n_steps: int = 20, eval_every: int = 5, tokens_per_step: int = 1024,
              truncated_tail: bool = False) -> list[dict]:  # fmt: skip
    """A run's metrics.jsonl: a train row per step, an eval row every ``eval_every`` steps."""
    run_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for step in range(1, n_steps + 1):
        tokens = step * tokens_per_step
        rows.append({"step": step, "tokens": tokens, "loss": 10.0 / step, "lr": 1e-3, "grad_norm": 1.0})
        if step % eval_every == 0:
            rows.append({"step": step, "tokens": tokens, "val_loss": 11.0 / step})
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if truncated_tail:
        text += '{"step": 21, "tokens": 21504, "lo'  # killed mid-write
    (run_dir / "metrics.jsonl").write_text(text)
    return rows


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert len(data) > 1000
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width > 100 and height > 100


def test_read_metrics_parses_every_row(tmp_path):
    written = write_run(tmp_path / "run")
    rows = read_metrics(tmp_path / "run")
    assert rows == written
    assert len([r for r in rows if "loss" in r]) == 20
    assert [r["step"] for r in rows if "val_loss" in r] == [5, 10, 15, 20]


def test_truncated_last_line_is_skipped(tmp_path):
    written = write_run(tmp_path / "run", truncated_tail=True)
    assert read_metrics(tmp_path / "run") == written


def test_corrupt_line_in_the_middle_is_an_error(tmp_path):
    write_run(tmp_path / "run")
    path = tmp_path / "run" / "metrics.jsonl"
    lines = path.read_text().splitlines()
    lines[3] = "{not json"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"metrics.jsonl:4: not a JSON object"):
        read_metrics(tmp_path / "run")


def test_run_without_metrics_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no metrics.jsonl in .*empty"):
        read_metrics(tmp_path / "empty")


def test_rows_superseded_by_a_resume_are_not_read(tmp_path):
    written = write_run(tmp_path / "run")
    stale = {"step": 20, "tokens": 20480, "loss": 99.0, "lr": 1e-3}  # trainer/metrics.py rewind() output
    (tmp_path / "run" / "metrics.rewound.jsonl").write_text(json.dumps(stale) + "\n")
    assert read_metrics(tmp_path / "run") == written


def test_resumed_run_keeps_the_newest_row_per_step():
    rows = [
        {"step": 1, "tokens": 10, "loss": 5.0, "lr": 1.0},
        {"step": 2, "tokens": 20, "loss": 4.0, "lr": 1.0},  # logged, then the run was killed
        {"step": 2, "tokens": 20, "loss": 3.9, "lr": 1.0},  # re-logged after resuming from step 1
        {"step": 3, "tokens": 30, "loss": 3.5, "lr": 1.0},
    ]
    assert loss_series(rows, "loss") == ([10.0, 20.0, 30.0], [5.0, 3.9, 3.5])
    assert loss_series(rows, "val_loss") == ([], [])


def test_plot_two_runs(tmp_path):
    write_run(tmp_path / "adamw")
    write_run(tmp_path / "muon", truncated_tail=True)
    out = plot_loss_curves([tmp_path / "adamw", tmp_path / "muon"], tmp_path / "plots" / "loss.png")
    assert out == tmp_path / "plots" / "loss.png"
    assert_png(out)


def test_labels_must_match_runs(tmp_path):
    write_run(tmp_path / "run")
    with pytest.raises(ValueError, match="got 2 labels for 1 run directories"):
        plot_loss_curves([tmp_path / "run"], tmp_path / "x.png", labels=["a", "b"])


@pytest.mark.slow  # a process that imports matplotlib and torch
def test_cli(tmp_path):
    write_run(tmp_path / "a")
    write_run(tmp_path / "b", tokens_per_step=2048)
    out = tmp_path / "cmp.png"
    result = subprocess.run(
        [sys.executable, "-m", "scripts.analysis.plot_cli", str(tmp_path / "a"), str(tmp_path / "b"),
         "-o", str(out)],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert_png(out)

    missing = subprocess.run(
        [sys.executable, "-m", "scripts.analysis.plot_cli", str(tmp_path / "nope"), "-o", str(out)],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_legend_names_each_run_by_its_run_name_at_150_dpi_with_val_points_marked(tmp_path, monkeypatch):
    """Run directories are timestamps; the legend shows config.yaml's run_name (the directory's name
    is added only when two runs share a name), val points carry markers, and the PNG is 150 dpi."""
    from PIL import Image

    from trainer import loss_curve

    dirs = [tmp_path / "adamw" / "2026-01-01_10-00-00", tmp_path / "muon" / "2026-01-01_11-00-00",
            tmp_path / "muon" / "2026-01-02_09-00-00"]
    for d, name in zip(dirs, ["gpt2-test-adamw", "gpt2-test-muon", "gpt2-test-muon"]):
        write_run(d)
        (d / "config.yaml").write_text(f"seed: 1\nrun_name: {name}\n")
    drawn = {}
    save = loss_curve.save_figure
    monkeypatch.setattr(loss_curve, "save_figure", lambda fig, ax, out, **kw: (drawn.update(ax=ax), save(fig, ax, out, **kw))[1])
    out = plot_loss_curves(dirs, tmp_path / "loss.png")
    lines, labels = drawn["ax"].get_legend_handles_labels()
    assert labels == ["gpt2-test-adamw train", "gpt2-test-adamw val",
                      "gpt2-test-muon (2026-01-01_11-00-00) train", "gpt2-test-muon (2026-01-01_11-00-00) val",
                      "gpt2-test-muon (2026-01-02_09-00-00) train", "gpt2-test-muon (2026-01-02_09-00-00) val"]
    assert [line.get_marker() for line in lines] == ["None", "o"] * 3
    dpi = Image.open(out).info["dpi"]
    assert round(dpi[0]) == round(dpi[1]) == 150
    (dirs[0] / "config.yaml").unlink()  # a run without its config: the directory's name
    assert loss_curve.run_labels(dirs[:2]) == ["2026-01-01_10-00-00", "gpt2-test-muon"]


def test_seed_band_limits_hold_every_late_band_and_study_figures_are_150_dpi(tmp_path):
    from PIL import Image

    from scripts.analysis.figures import SeedCurves, plot_seed_bands, seed_band_limits

    steps = range(0, 11)
    # two optimizers end 0.02 apart, but one seed of the second ends 0.5 lower: a wide late band
    a = SeedCurves("adamw", "lr 1e-3", tuple({s * 100: 10.0 - 0.7 * s + d for s in steps} for d in (0.0, 0.01)))
    b = SeedCurves("muon", "lr 2e-2", ({s * 100: 10.0 - 0.7 * s + 0.02 for s in steps},
                                       {s * 100: 10.0 - 0.7 * s - (0.05 * s if s > 5 else 0.0) for s in steps}))
    lo, hi = seed_band_limits([a, b])
    for curve in (a, b):
        tokens, _, low, high = curve.band()
        late = tokens >= 500
        assert lo < low[late].min() and high[late].max() < hi  # nothing of the second half clipped
    assert lo < 2.5 < 3.1 < hi and hi < 10.0  # the low seed (2.5) in view; the start (10) off the top
    assert seed_band_limits([]) is None
    out = plot_seed_bands([a, b], tmp_path / "bands.png", "val loss")
    assert round(Image.open(out).info["dpi"][0]) == 150
