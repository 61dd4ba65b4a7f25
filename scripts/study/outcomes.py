"""What one finished run of a study says, read from its own files only.

    metrics.jsonl   the val losses (the trainer evaluates at step 0, every eval_every, and at the end)
    summary.json    written after the last step; ``skipped_steps`` counts the steps skipped for a
                    non-finite loss or gradient (trainer.on_nonfinite=skip)

A run diverged when any of these holds (``divergence``):
- it skipped a step;
- its final val loss is not finite, or not below its val loss at step 0;
- its final val loss is more than ``SPIKE_NATS`` above its best val loss (a blow-up it did not recover
  from, e.g. 5.5 -> 7.5).
A diverged confirmation run keeps its seed and counts with its initial loss (``counted_loss``):
dropping it would flatter the unstable optimizer.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from scripts.analysis.compare import summarize_run

SPIKE_NATS = 0.5
SUMMARY_FILE = "summary.json"


@dataclass(frozen=True)
class RunOutcome:
    run_dir: Path
    final_val_loss: float
    best_val_loss: float
    initial_val_loss: float
    skipped_steps: int
    tokens: int
    wall_time_s: float
    val_tokens: tuple[float, ...] = field(default=())
    val_losses: tuple[float, ...] = field(default=())

    @property
    def divergence(self) -> str | None:
        """Why the run counts as diverged, or None."""
        if self.skipped_steps > 0:
            return f"skipped {self.skipped_steps} step(s)"
        if not math.isfinite(self.final_val_loss):
            return "final val loss not finite"
        if not self.final_val_loss < self.initial_val_loss:
            return f"ended at {self.final_val_loss:.3f}, not below its initial {self.initial_val_loss:.3f}"
        if self.final_val_loss > self.best_val_loss + SPIKE_NATS:
            return f"ended {self.final_val_loss - self.best_val_loss:.2f} nats above its best"
        return None

    @property
    def diverged(self) -> bool:
        return self.divergence is not None

    @property
    def counted_loss(self) -> float:
        """The loss a paired comparison uses: the final val loss, or the initial one if it diverged."""
        return self.initial_val_loss if self.diverged else self.final_val_loss


def read_outcome(run_dir: Path) -> RunOutcome | None:
    """The outcome of a finished run (summary.json written), or None while it is not finished."""
    summary_file = run_dir / SUMMARY_FILE
    if not summary_file.is_file():
        return None
    summary = summarize_run(run_dir)
    skipped = int(json.loads(summary_file.read_text()).get("skipped_steps", 0))
    initial = summary.val_losses[0] if summary.val_tokens and summary.val_tokens[0] == 0 else float("nan")
    return RunOutcome(run_dir, summary.final_val_loss, summary.best_val_loss, initial, skipped, summary.tokens,
                      summary.wall_time_s, tuple(summary.val_tokens), tuple(summary.val_losses))
