"""The study report: ``report.md`` + ``report.json`` + ``figures/*.png`` in the study directory.

Built from the runs' logs only (metrics.jsonl and config.yaml of each run, the study's
timings.jsonl for wall time), so it can be rebuilt at any time with ``orthogpt-reproduce <study>
--report-only``; numbers are those of ``scripts.study.aggregate`` (its docstring defines them).
"""

from __future__ import annotations

import json
import math
import platform
from datetime import datetime, timezone
from pathlib import Path

from scripts.study.aggregate import OptimizerResult, Setting, collect, gap, summarize_optimizers
from scripts.study.claims import judge_all
from scripts.analysis.figures import LrPoint, SeedCurves, plot_lr_sensitivity, plot_robustness, plot_seed_bands
from scripts.study.plan import DONE, PlannedRun
from scripts.study.spec import LR_KEY, Study

TIMINGS = "timings.jsonl"


def _f(value: float, spec: str = ".4f") -> str:
    return format(value, spec) if math.isfinite(value) else "nan"


def machine_line() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return f"{cpu}{gpu}; torch {torch.__version__}; {platform.system()} {platform.release()}"


def study_wall_time(study_dir: Path) -> tuple[float, int]:
    """Seconds the study command ran (sum over its invocations) and the number of invocations."""
    path = study_dir / TIMINGS
    if not path.is_file():
        return float("nan"), 0
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    invocations = [r for r in rows if r.get("kind") == "invocation"]
    return sum(r["seconds"] for r in invocations), len(invocations)


def ranking_rows(results: list[OptimizerResult]) -> list[dict]:
    rows = []
    for i, r in enumerate(results):
        b = r.best
        nxt = gap(r, results[i + 1]) if b and i + 1 < len(results) else None
        lrs = sorted({x.lr for x in r.settings})
        rows.append({
            "rank": i + 1 if b else None, "optimizer": r.optimizer,
            "best_lr_at_grid_edge": bool(b) and len(lrs) > 1 and b.lr in (lrs[0], lrs[-1]),
            "best_setting": b.label if b else None,
            "final_val_mean": b.mean() if b else None, "final_val_std": b.std() if b else None,
            "final_val_min": b.spread()[0] if b else None, "final_val_max": b.spread()[1] if b else None,
            "best_val_mean": b.mean("best_val_loss") if b else None,
            "best_val_std": b.std("best_val_loss") if b else None,
            "seeds": len(b.results) if b else 0,
            "tokens": b.results[0].summary.tokens if b else None,
            "wall_time_s_mean": b.mean("wall_time_s") if b else None,
            "gap_to_next": nxt.gap if nxt else None, "spread_to_next": nxt.spread if nxt else None,
            "gap_exceeds_spread": nxt.conclusive if nxt else None,
            "robust_lrs": r.robust_lrs, "robust_lr_ratio": r.robust_ratio if r.best else None,
            "settings": [{
                "setting": s.label, "lr": s.lr, "diverged": s.diverged,
                "final_val_losses": [x.summary.final_val_loss for x in s.results],
                "best_val_losses": [x.summary.best_val_loss for x in s.results],
                "seeds": [x.run.spec.seed for x in s.results],
                "run_dirs": [str(x.run.run_dir) for x in s.results],
            } for s in r.settings],
        })
    return rows


def _ranking_table(rows: list[dict]) -> list[str]:
    lines = ["| rank | optimizer | best setting | final val loss (mean ± std) | min – max | best val loss "
             "(mean ± std) | seeds | tokens | wall time / run (s) | gap to next | beyond seed spread? |",
             "|" + "---|" * 11]
    for row in rows:
        if row["rank"] is None:
            lines.append(f"| – | {row['optimizer']} | every setting diverged | | | | | | | | |")
            continue
        gap_cell = _f(row["gap_to_next"]) if row["gap_to_next"] is not None else "–"
        verdict = {None: "–", True: "yes", False: "**inconclusive**"}[row["gap_exceeds_spread"]]
        lines.append(
            f"| {row['rank']} | {row['optimizer']} | {row['best_setting']}{' (edge)' if row['best_lr_at_grid_edge'] else ''}"
            f" | {_f(row['final_val_mean'])} ± "
            f"{_f(row['final_val_std'])} | {_f(row['final_val_min'])} – {_f(row['final_val_max'])} | "
            f"{_f(row['best_val_mean'])} ± {_f(row['best_val_std'])} | {row['seeds']} | {row['tokens']} | "
            f"{_f(row['wall_time_s_mean'], '.0f')} | {gap_cell} | {verdict} |")
    return lines


def _settings_table(rows: list[dict]) -> list[str]:
    lines = ["| optimizer | setting | final val loss per seed | mean | diverged |", "|---|---|---|---|---|"]
    for row in sorted(rows, key=lambda r: r["optimizer"]):
        for s in row["settings"]:
            finals = s["final_val_losses"]
            mean = sum(finals) / len(finals)
            lines.append(f"| {row['optimizer']} | {s['setting']} | {', '.join(_f(v) for v in finals)} | "
                         f"{_f(mean)} | {'yes' if s['diverged'] else ''} |")
    return lines


def write_figures(study: Study, results: list[OptimizerResult], figures: Path) -> None:
    """The three figures of the report, from the aggregated results (scripts/analysis/figures.py draws)."""
    curves = [SeedCurves(r.optimizer, r.best.label, tuple(dict(zip(x.summary.val_tokens, x.summary.val_losses))
                                                           for x in r.best.results))
              for r in results if r.best is not None]
    plot_seed_bands(curves, figures / "val_loss_curves.png", f"{study.name}: val loss at each optimizer's best lr")
    points = [LrPoint(r.optimizer, s.lr, tuple(x.summary.final_val_loss for x in s.results), s.diverged)
              for r in results for s in best_line(r)]
    plot_lr_sensitivity(points, figures / "lr_sensitivity.png", f"{study.name}: lr sensitivity")
    ratios = {r.optimizer: (r.robust_ratio if r.best else 0.0) for r in results}
    plot_robustness(ratios, figures / "robustness.png", study.robust_window)


def best_line(r: OptimizerResult) -> list[Setting]:
    """The settings that differ from the best one only in lr (the lr-sensitivity line), by lr."""
    others = {k: v for k, v in r.best.values if k != LR_KEY} if r.best else {}
    return sorted((s for s in r.settings if all(dict(s.values).get(k) == v for k, v in others.items())),
                  key=lambda s: s.lr)


def write_report(study: Study, study_dir: Path, runs: list[PlannedRun]) -> Path:
    """Write the report of the study's done runs; raises if none is done."""
    done = [run for run in runs if run.state == DONE]
    if not done:
        raise FileNotFoundError(f"no finished run in {study_dir / 'runs'}; run the study first")
    results = summarize_optimizers(collect(done), study.robust_window)
    rows, verdicts = ranking_rows(results), judge_all(results, study.grids)
    figures = study_dir / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    write_figures(study, results, figures)
    wall, invocations = study_wall_time(study_dir)
    missing = [run.spec.run_id for run in runs if run.state != DONE]
    ranked = [r["optimizer"] for r in rows if r["rank"] is not None]
    chain = ranked[:1]
    for row, name in zip(rows, ranked[1:]):
        chain.append((" < " if row["gap_exceeds_spread"] else " ≈ ") + name)

    md = [f"# Study `{study.name}`", "", study.description.strip(), "",
          f"- machine: {machine_line()}",
          f"- report written {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC from {len(done)} of {len(runs)} runs"
          + (f" (**missing: {', '.join(missing)}**)" if missing else ""),
          f"- study wall time: {_f(wall / 60, '.1f')} min over {invocations} invocation(s) of the study command",
          f"- every run: `{' '.join(study.overrides)}`; seeds 0..{study.seeds - 1}",
          f"- regenerate: `orthogpt-reproduce {study.name}` (runs what is missing, then writes this report)",
          "", "## Ranking at each optimizer's best setting", "",
          "Best setting: smallest mean final val loss over seeds among settings where no seed diverged. "
          "A gap is beyond the seed spread when it exceeds the sum of the two standard deviations.", "",
          *_ranking_table(rows), "",
          "(edge): the best lr is the smallest or largest of the optimizer's grid, so its optimum may lie "
          "outside the grid and its loss here is an upper bound at this scale.", "",
          f"Order (lower val loss first; `<` beyond the seed spread, `≈` inconclusive): {''.join(chain)}", "",
          "## The papers' claims at this scale", "",
          "| source | claim | measured | verdict |", "|---|---|---|---|",
          *(f"| {v.claim.source} | {v.claim.text} | {v.evidence} | **{v.verdict}** |" for v in verdicts), "",
          "## Figures", "",
          "![val loss curves](figures/val_loss_curves.png)", "",
          "![lr sensitivity](figures/lr_sensitivity.png)", "",
          "![robustness](figures/robustness.png)", "",
          f"Robust lr range: the lrs within {study.robust_window:g} nats of the optimizer's best mean "
          f"(other swept keys fixed at the best setting).", "",
          "## Every setting", "", *_settings_table(rows), "",
          "Diverged: a seed's final val loss is not finite or not below its val loss at step 0.", ""]
    (study_dir / "report.md").write_text("\n".join(md))
    payload = {"study": study.name, "runs_done": len(done), "runs_total": len(runs), "missing": missing,
               "wall_time_s": wall, "machine": machine_line(), "ranking": rows,
               "claims": [{"source": v.claim.source, "claim": v.claim.text, "verdict": v.verdict,
                           "evidence": v.evidence} for v in verdicts]}
    (study_dir / "report.json").write_text(json.dumps(payload, indent=2, allow_nan=True))
    return study_dir / "report.md"
