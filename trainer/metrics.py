"""Metrics sinks (rank 0 only): a JSONL file in the run directory, the progress bar or lines
(trainer/progress.py), and wandb; the
``logging`` keys of the config (``LoggingConfig``, ``WandbConfig``) live here, beside their consumer.

wandb's API key comes only from the environment (WANDB_API_KEY); it is never part of the config, so
it never reaches the logged config or the run directory. Mode ``offline`` (default) writes a local run
that ``wandb sync`` can upload later; ``disabled`` writes nothing.

``metrics.jsonl`` is append-only and survives crashes: a line cut short by a kill is dropped when the
file is reopened (so the next row does not fuse with it), and ``rewind(step)`` on resume moves rows past
the resumed step (written by the lost part of the run, and about to be written again) to
``metrics.rewound.jsonl``, so each step appears once in ``metrics.jsonl``. ``read_metrics`` and
``last_row_per_step`` are the one reader of that file (plots, compare, studies, fault injection).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from dataclasses import dataclass
from typing import Any

from optim.hparams import check_in
from trainer.progress import Console, Progress

WANDB_MODES = ("online", "offline", "disabled")
METRICS_FILE = "metrics.jsonl"


@dataclass(frozen=True)
class WandbConfig:
    mode: str
    project: str
    entity: str | None
    group: str | None
    tags: tuple[str, ...]
    name: str | None
    run_id: str | None

    def __post_init__(self) -> None:
        check_in("logging.wandb.mode", self.mode, WANDB_MODES)


@dataclass(frozen=True)
class LoggingConfig:
    progress_bar: bool
    wandb: WandbConfig


def wandb_key_found() -> bool:
    """Whether wandb can log in without asking: WANDB_API_KEY (or WANDB_IDENTITY_TOKEN_FILE), or an
    entry for the W&B host ($WANDB_BASE_URL) in the netrc file that ``wandb login`` writes ($NETRC,
    else ~/.netrc)."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    import netrc
    from urllib.parse import urlsplit

    host = urlsplit(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").netloc
    path = Path(os.environ.get("NETRC") or "~/.netrc").expanduser()
    try:
        return path.is_file() and netrc.netrc(str(path)).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


class MetricsLogger:
    def __init__(self, run_dir: Path, logging_cfg: LoggingConfig, config_dict: dict, total_steps: int,
                 start_step: int, enabled: bool = True, console: Console | None = None) -> None:
        self.enabled = enabled
        self.path = Path(run_dir) / METRICS_FILE
        self.wandb_run = None
        self.console = console if console is not None else Console(enabled)
        self.progress = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.console.open(self.path.parent)  # no-op for the trainer's console, opened already
        drop_partial_last_line(self.path)
        self.file = open(self.path, "a")
        self.progress = Progress(self.console, total_steps, start_step, bar=logging_cfg.progress_bar)
        mode = logging_cfg.wandb.mode  # $WANDB_MODE already applied (trainer.config.check_wandb_environment)
        if mode != "disabled":
            import wandb

            if os.environ.get("WANDB_MODE") == "":  # empty counts as unset (wandb would reject it)
                del os.environ["WANDB_MODE"]
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
        self.progress.report(row)

    def log_text(self, step: int, key: str, text: str) -> None:
        """A text (a generated sample) in wandb, preformatted, at ``step``; the console has it already."""
        if self.wandb_run is not None:
            import html

            import wandb

            self.wandb_run.log({key: wandb.Html(f"<pre>{html.escape(text)}</pre>")}, step=step)

    def rewind(self, step: int) -> int:
        """Keep only rows with ``step <= step`` (call after resuming from that step); the rows removed
        are appended to ``metrics.rewound.jsonl``. Returns how many rows were removed."""
        if not self.enabled:
            return 0
        self.file.close()
        removed = rewind_metrics(self.path, step)
        self.file = open(self.path, "a")
        return removed

    def start_at(self, step: int) -> None:
        """Progress counts from ``step`` (the step resumed from)."""
        if self.progress is not None:
            self.progress.start_at(step)

    def advance(self, n: int = 1) -> None:
        if self.progress is not None:
            self.progress.advance(n)

    def write(self, message: str) -> None:
        self.console.write(message)

    def close(self) -> None:
        if not self.enabled:
            return
        self.progress.close()
        self.file.close()
        if self.wandb_run is not None:
            self.wandb_run.finish()


def drop_partial_last_line(path: Path) -> None:
    """Cut a trailing line that a kill left without its newline (it is never a whole row)."""
    if not path.is_file():
        return
    with open(path, "rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)


def rewind_metrics(path: Path, step: int) -> int:
    """Rewrite ``path`` atomically without rows whose step is past ``step``; append those rows to
    ``<stem>.rewound.jsonl``. Lines that do not parse are dropped with them."""
    path = Path(path)
    if not path.is_file():
        return 0
    kept, removed = [], []
    for line in path.read_text().splitlines(keepends=True):
        try:
            keep = int(json.loads(line)["step"]) <= step
        except (ValueError, KeyError, TypeError):
            keep = False
        (kept if keep else removed).append(line if line.endswith("\n") else line + "\n")
    if not removed:
        return 0
    with open(path.with_name(f"{path.stem}.rewound.jsonl"), "a") as f:
        f.writelines(removed)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        f.writelines(kept)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return len(removed)


def read_metrics(run_dir: str | Path) -> list[dict]:
    """All rows of a run's metrics.jsonl, in the order they were written. A last line cut short by a
    kill is skipped; a corrupt line anywhere else is an error naming the file and line."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist")
    path = run_dir / METRICS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no {METRICS_FILE} in {run_dir}; pass a run directory written by train.py "
                                f"(the one holding the resolved config and checkpoints/)")
    rows: list[dict] = []
    lines = path.read_text().splitlines()
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            if lineno == len(lines):
                break  # a run killed while writing its last row: the rows before it are good
            raise ValueError(f"{path}:{lineno}: not a JSON object ({e}); the metrics file is corrupt") from e
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
        rows.append(row)
    return rows


def last_row_per_step(rows: list[dict], key: str) -> list[dict]:
    """Rows that carry ``key`` (even as null), one per step, by step: a resumed run re-logs the steps
    after its checkpoint, and the row written last wins."""
    by_step: dict[int, dict] = {}
    for row in rows:
        if key in row:
            if "step" not in row or "tokens" not in row:
                raise ValueError(f"metrics row with {key!r} has no 'step' or 'tokens': {row}")
            by_step[int(row["step"])] = row
    return [by_step[s] for s in sorted(by_step)]
