"""Learning-rate schedules as a pure function of the step.

The schedule multiplies each param group's base lr (``group["initial_lr"]``), so matrices,
embeddings and vectors keep their own ratios. Because the factor depends only on the step, a
resumed run needs nothing but the step to continue the schedule exactly.

  cosine  linear warmup, then cosine decay to min_lr_ratio at max_steps
  linear  linear warmup, then linear decay to min_lr_ratio at max_steps
  wsd     warmup-stable-decay (trapezoidal): warmup, constant, then a decay over the last
          decay_fraction of the run (linear or cosine shape) to min_lr_ratio
  constant  warmup, then constant
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SCHEDULES = ("cosine", "linear", "wsd", "constant")


@dataclass(frozen=True)
class Schedule:
    """The ``schedule`` config node plus ``trainer.max_steps`` (defaults: configs/train.yaml)."""

    name: str
    max_steps: int
    warmup_steps: int
    min_lr_ratio: float
    decay_fraction: float
    decay_shape: str

    def __post_init__(self) -> None:
        if self.name not in SCHEDULES:
            raise ValueError(f"schedule.name must be one of {list(SCHEDULES)}, got '{self.name}'")
        if not 0 <= self.warmup_steps < self.max_steps:
            raise ValueError(
                f"schedule.warmup_steps ({self.warmup_steps}) must be in [0, trainer.max_steps="
                f"{self.max_steps})"
            )
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"schedule.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if not 0.0 <= self.decay_fraction <= 1.0:
            raise ValueError(f"schedule.decay_fraction must be in [0, 1], got {self.decay_fraction}")
        if self.decay_shape not in ("linear", "cosine"):
            raise ValueError(f"schedule.decay_shape must be 'linear' or 'cosine', got '{self.decay_shape}'")

    def factor(self, step: int) -> float:
        """LR multiplier for the optimizer step with index ``step`` (0-based)."""
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.name == "constant":
            return 1.0
        if self.name == "wsd":
            decay_steps = round(self.decay_fraction * self.max_steps)
            decay_start = self.max_steps - decay_steps
            if decay_steps == 0 or step < decay_start:
                return 1.0
            progress = (step - decay_start) / decay_steps
            shape = self.decay_shape
        else:
            progress = (step - self.warmup_steps) / max(1, self.max_steps - self.warmup_steps)
            shape = "cosine" if self.name == "cosine" else "linear"
        progress = min(max(progress, 0.0), 1.0)
        decay = 0.5 * (1.0 + math.cos(math.pi * progress)) if shape == "cosine" else 1.0 - progress
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * decay


def apply_lr(optimizer, schedule: Schedule, step: int) -> float:
    """Set every group's lr to initial_lr * factor(step); returns the factor."""
    factor = schedule.factor(step)
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
        group["lr"] = group["initial_lr"] * factor
    return factor
