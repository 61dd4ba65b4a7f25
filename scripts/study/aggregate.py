"""A study's numbers, from its runs' logs only: settings over seeds, best setting, ranking, robustness.

Definitions (the report states them too):
- a run's final / best val loss, tokens and wall time are ``scripts.analysis.compare.summarize_run``'s;
- a run diverged when its final val loss is not finite or not below its val loss at step 0;
- a setting (optimizer + one value of each swept key) is summarized over its seeds: mean and sample
  standard deviation (ddof 1; 0 with one seed) of the final val loss, and its min and max;
  a setting with a diverged seed counts as diverged;
- an optimizer's best setting: the smallest mean final val loss among its settings that did not
  diverge (chosen on the mean over seeds, never on one lucky seed);
- a gap between two optimizers (their best settings) exceeds the seed spread when
  |mean_a - mean_b| > std_a + std_b, i.e. the mean +- std intervals do not overlap; otherwise the
  comparison is inconclusive (always so with one seed);
- robustness: the learning rates whose setting (other swept keys at the best setting's values) has
  a mean final val loss within ``robust_window`` nats of the best; reported as the ratio of the
  largest to the smallest such lr (1 = only the best lr) and the count of such grid points.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

from scripts.analysis.compare import RunSummary, summarize_run
from scripts.study.plan import PlannedRun
from scripts.study.spec import LR_KEY, setting_label


@dataclass
class RunResult:
    run: PlannedRun
    summary: RunSummary
    initial_val_loss: float

    @property
    def diverged(self) -> bool:
        final = self.summary.final_val_loss
        return not math.isfinite(final) or not final < self.initial_val_loss


@dataclass
class Setting:
    optimizer: str
    values: tuple[tuple[str, object], ...]
    results: list[RunResult] = field(default_factory=list)

    @property
    def lr(self) -> float:
        return float(dict(self.values)[LR_KEY])

    @property
    def label(self) -> str:
        return setting_label(self.values, ", ", "=")

    @property
    def diverged(self) -> bool:
        return any(r.diverged for r in self.results)

    def _stat(self, attr: str) -> list[float]:
        return [getattr(r.summary, attr) for r in self.results]

    def mean(self, attr: str = "final_val_loss") -> float:
        return statistics.fmean(self._stat(attr))

    def std(self, attr: str = "final_val_loss") -> float:
        values = self._stat(attr)
        return statistics.stdev(values) if len(values) > 1 else 0.0

    def spread(self) -> tuple[float, float]:
        values = self._stat("final_val_loss")
        return min(values), max(values)


@dataclass
class OptimizerResult:
    optimizer: str
    settings: list[Setting]
    best: Setting | None                 # None when every setting diverged
    robust_lrs: list[float]

    @property
    def robust_ratio(self) -> float:
        return max(self.robust_lrs) / min(self.robust_lrs) if self.robust_lrs else float("nan")


@dataclass
class Gap:
    better: str
    worse: str
    gap: float                 # mean_worse - mean_better >= 0
    spread: float              # std_better + std_worse
    seeds: int

    @property
    def conclusive(self) -> bool:
        return self.seeds > 1 and self.gap > self.spread


def initial_val_loss(summary: RunSummary) -> float:
    """The val loss at step 0 (the trainer evaluates before the first step); NaN if it is missing."""
    if summary.val_tokens and summary.val_tokens[0] == 0:
        return summary.val_losses[0]
    return float("nan")


def collect(runs: list[PlannedRun]) -> list[RunResult]:
    results = []
    for run in runs:
        summary = summarize_run(run.run_dir)
        results.append(RunResult(run, summary, initial_val_loss(summary)))
    return results


def group_settings(results: list[RunResult]) -> dict[str, list[Setting]]:
    by_optimizer: dict[str, dict[tuple, Setting]] = {}
    for result in results:
        spec = result.run.spec
        settings = by_optimizer.setdefault(spec.optimizer, {})
        settings.setdefault(spec.setting, Setting(spec.optimizer, spec.setting)).results.append(result)
    return {name: list(settings.values()) for name, settings in by_optimizer.items()}


def robust_lrs(settings: list[Setting], best: Setting, window: float) -> list[float]:
    """Learning rates (other swept keys as in ``best``) within ``window`` nats of the best mean."""
    others = {k: v for k, v in best.values if k != LR_KEY}
    lrs = []
    for setting in settings:
        same_rest = all(dict(setting.values).get(k) == v for k, v in others.items())
        if same_rest and not setting.diverged and setting.mean() <= best.mean() + window:
            lrs.append(setting.lr)
    return sorted(lrs)


def summarize_optimizers(results: list[RunResult], window: float) -> list[OptimizerResult]:
    """Per optimizer: its settings, best setting and robust lrs, ranked by the best mean (diverged last)."""
    out = []
    for optimizer, settings in group_settings(results).items():
        stable = [s for s in settings if not s.diverged]
        best = min(stable, key=lambda s: s.mean()) if stable else None
        out.append(OptimizerResult(optimizer, sorted(settings, key=lambda s: s.values), best,
                                   robust_lrs(settings, best, window) if best else []))
    return sorted(out, key=lambda o: o.best.mean() if o.best else math.inf)


def gap(a: OptimizerResult, b: OptimizerResult) -> Gap | None:
    """The comparison of two optimizers' best settings (None if either has none)."""
    if a.best is None or b.best is None:
        return None
    better, worse = (a, b) if a.best.mean() <= b.best.mean() else (b, a)
    seeds = min(len(a.best.results), len(b.best.results))
    return Gap(better.optimizer, worse.optimizer, worse.best.mean() - better.best.mean(),
               better.best.std() + worse.best.std(), seeds)
