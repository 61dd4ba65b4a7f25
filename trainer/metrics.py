"""Metrics sinks (rank 0 only): a JSONL file in the run directory, a progress bar, and wandb.

wandb's API key comes only from the environment (WANDB_API_KEY); it is never part of the config, so
it never reaches the logged config or the run directory. Mode ``offline`` (default) writes a local run
that ``wandb sync`` can upload later; ``disabled`` writes nothing.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

WANDB_MODES = ("online", "offline", "disabled")


class MetricsLogger:
    def __init__(self, run_dir: Path, logging_cfg: Any, config_dict: dict, total_steps: int,
                 start_step: int, enabled: bool = True) -> None:
        self.enabled = enabled
        self.path = Path(run_dir) / "metrics.jsonl"
        self.wandb_run = None
        self.bar = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(self.path, "a")
        self.bar = tqdm(total=total_steps, initial=start_step, desc="train", dynamic_ncols=True,
                        disable=not logging_cfg.progress_bar)
        mode = logging_cfg.wandb.mode
        if mode not in WANDB_MODES:
            raise ValueError(f"logging.wandb.mode must be one of {list(WANDB_MODES)}, got '{mode}'")
        if mode != "disabled":
            import wandb

            self.wandb_run = wandb.init(
                project=logging_cfg.wandb.project, entity=logging_cfg.wandb.entity,
                group=logging_cfg.wandb.group, tags=list(logging_cfg.wandb.tags or []),
                name=logging_cfg.wandb.name, mode=mode, dir=str(run_dir), config=config_dict,
                resume="allow", id=logging_cfg.wandb.run_id,
            )

    def log(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
        self.file.write(json.dumps(clean) + "\n")
        self.file.flush()
        if self.wandb_run is not None:
            self.wandb_run.log({k: v for k, v in row.items() if k != "step"}, step=row["step"])
        if self.bar is not None:
            shown = {k: f"{row[k]:.4g}" for k in ("loss", "val_loss", "lr") if k in row}
            self.bar.set_postfix(shown, refresh=False)

    def advance(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def write(self, message: str) -> None:
        if self.enabled:
            tqdm.write(message)

    def close(self) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.close()
        self.file.close()
        if self.wandb_run is not None:
            self.wandb_run.finish()
