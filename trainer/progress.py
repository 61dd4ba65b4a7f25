"""What rank 0 tells the person at the terminal, and the same in ``<run_dir>/train.log``.

``Console``: every message of a run (the start banner, the resume decision, evals, checkpoints, text
samples, a stop) goes to stdout above the progress bar (``tqdm.write``) and is appended to
``train.log``. The file is opened only once the start has been checked and the run directory written
(``open``); messages said before that are held and written first, so a start that is refused leaves
no log behind. Hydra's own file handler writes the records of Python's ``logging`` (data preparation,
say) to the same file (``hydra.job_logging`` in configs/train.yaml: opened lazily).

``Progress``: with ``logging.progress_bar=true`` a bar whose postfix shows the loss, tokens/s and the
lr (the val loss once there is one); without it, a line per logged step (every ``trainer.log_every``):
step, loss, lr, tokens/s, ETA. The line goes to ``train.log`` in both cases.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, TextIO

from tqdm.auto import tqdm

LOG_FILE = "train.log"


class Console:
    """Rank 0's messages: stdout (above any bar) and, once ``open``, ``<run_dir>/train.log``."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.file: TextIO | None = None
        self.held: list[str] = []

    def open(self, run_dir: Path) -> None:
        """Start appending to ``<run_dir>/train.log`` (the held messages first)."""
        if not self.enabled or self.file is not None:
            return
        self.file = open(Path(run_dir) / LOG_FILE, "a")
        for message in self.held:
            self._to_file(message)
        self.held = []

    def write(self, message: str, stdout: bool = True) -> None:
        """``message`` on stdout (unless ``stdout`` is false) and in train.log."""
        if not self.enabled:
            return
        if stdout:
            tqdm.write(message, file=sys.stdout)
        if self.file is None:
            self.held.append(message)
        else:
            self._to_file(message)

    __call__ = write

    def _to_file(self, message: str) -> None:
        self.file.write(message + "\n")
        self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def format_duration(seconds: float) -> str:
    """``1h02m``, ``3m05s``, ``42s``."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def format_rate(tokens_per_s: float) -> str:
    """``812 tok/s``, ``12.3k tok/s``, ``1.05M tok/s``."""
    if tokens_per_s >= 1e6:
        return f"{tokens_per_s / 1e6:.3g}M tok/s"
    if tokens_per_s >= 1e3:
        return f"{tokens_per_s / 1e3:.3g}k tok/s"
    return f"{tokens_per_s:.0f} tok/s"


def progress_line(row: dict[str, Any], total_steps: int, eta_s: float | None) -> str:
    """``step 50/200 | loss 4.1234 | lr 3.00e-04 | 12.3k tok/s | mfu 4.1% | ETA 1m23s``."""
    width = len(str(total_steps))
    parts = [f"step {row['step']:>{width}}/{total_steps}", f"loss {row['loss']:.4f}"]
    if "lr" in row:
        parts.append(f"lr {row['lr']:.2e}")
    if "tokens_per_s" in row:
        parts.append(format_rate(row["tokens_per_s"]))
    if row.get("mfu") is not None:
        parts.append(f"mfu {100 * row['mfu']:.1f}%")
    if eta_s is not None:
        parts.append(f"ETA {format_duration(eta_s)}")
    return " | ".join(parts)


class Progress:
    """The bar, or a line per logged step, for the steps ``start_step + 1 .. total_steps``."""

    def __init__(self, console: Console, total_steps: int, start_step: int, bar: bool) -> None:
        self.console, self.total_steps = console, total_steps
        self.start_step = self.step = start_step
        self.started = time.perf_counter()
        self.postfix: dict[str, str] = {}
        self.bar = None
        if console.enabled and bar:
            self.bar = self._new_bar(start_step)

    def _new_bar(self, initial: int) -> tqdm:
        return tqdm(total=self.total_steps, initial=initial, desc="train", dynamic_ncols=True)

    def start_at(self, step: int) -> None:
        """The launch starts at ``step`` (a resume): the pace and the ETA count from here."""
        self.start_step = self.step = step
        self.started = time.perf_counter()
        if self.bar is not None:  # a new bar: tqdm's rate would count the resumed steps as done now
            self.bar.close()
            self.bar = self._new_bar(step)

    def advance(self, n: int = 1) -> None:
        self.step += n
        if self.bar is not None:
            self.bar.update(n)

    def eta_s(self, step: int) -> float | None:
        """Seconds to the last step at this launch's pace so far (evals and checkpoints included)."""
        done = step - self.start_step
        if done <= 0:
            return None
        return (self.total_steps - step) * (time.perf_counter() - self.started) / done

    def report(self, row: dict[str, Any]) -> None:
        """Show a metrics row: the bar's postfix keeps the latest of each value."""
        if not self.console.enabled:
            return
        for key, shown in (("loss", "{:.4f}"), ("val_loss", "{:.4f}"), ("lr", "{:.2e}")):
            if row.get(key) is not None:
                self.postfix[key] = shown.format(row[key])
        if row.get("tokens_per_s") is not None:
            self.postfix["tok/s"] = format_rate(row["tokens_per_s"]).removesuffix(" tok/s")
        if self.bar is not None:  # in a fixed order: the train values first, whichever row came first
            order = ("loss", "lr", "tok/s", "val_loss")
            self.bar.set_postfix({k: self.postfix[k] for k in order if k in self.postfix}, refresh=False)
        if row.get("loss") is not None:  # a train row (eval rows are said by the loop)
            line = progress_line(row, self.total_steps, self.eta_s(int(row["step"])))
            self.console.write(line, stdout=self.bar is None)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
