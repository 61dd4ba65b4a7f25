"""The study report: ``report.md`` + ``report.json`` + ``figures/*.png`` in the study directory.

Built from the runs' files only (metrics.jsonl, summary.json and config.yaml of each run, the
study's timings.jsonl for wall time), so ``orthogpt-reproduce <study> --report-only`` rebuilds it at
any time without composing a config. The numbers are defined in scripts/study/outcomes.py (a run),
tuning.py (stage 1), paired_stats.py and claims.py (the verdicts), token_equivalence.py (tokens).
"""

from __future__ import annotations

import json
import math
import platform
from datetime import datetime, timezone
from pathlib import Path

from scripts.analysis.figures import LrPoint, SeedCurves, plot_lr_sensitivity, plot_seed_bands
from scripts.study.claims import ArmSummary, Verdict, judge_claims, study_claims, summary_row
from scripts.study.outcomes import RunOutcome, read_outcome
from scripts.study.plan import DONE, PlannedRun
from scripts.study.spec import Study, setting_label
from scripts.study.stages import CONFIRM, TOKENS, StudyPlan
from scripts.study.token_equivalence import TokenCurve, arm_equivalent
from scripts.study.report_text import claims_section, ranking_section, tokens_section, tuning_section

TIMINGS = "timings.jsonl"


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


def arm_summaries(study: Study, staged: StudyPlan, outcomes: dict[str, RunOutcome]) -> dict[str, ArmSummary]:
    """Per arm: confirmation losses by seed (counted: initial loss if diverged) and its tuning line."""
    arms = {}
    for name, choice in staged.choices.items():
        losses = {s.seed: outcomes[s.run_id].counted_loss for s in staged.specs
                  if s.stage == CONFIRM and s.arm == name and s.run_id in outcomes}
        tuning: dict[float, list[float]] = {}
        diverged = set()
        line = choice.setting[1:] if choice.setting else None
        for spec, outcome in choice.tuning:
            if line is None or spec.setting[1:] == line:
                tuning.setdefault(spec.lr, []).append(outcome.final_val_loss)
                if outcome.diverged:
                    diverged.add(spec.lr)
        arms[name] = ArmSummary(name, losses, choice.lr is not None and choice.lr.diverged_everywhere,
                                choice.bracketed, tuning, frozenset(diverged))
    return arms


def token_curve(study: Study, staged: StudyPlan, outcomes: dict[str, RunOutcome]) -> TokenCurve | None:
    """The reference's final losses at T0 (its confirmation runs) and at each longer budget, by seed,
    on the seeds where every budget finished."""
    if study.tokens is None:
        return None
    ref = study.tokens.reference
    budgets: dict[int | None, dict[int, RunOutcome]] = {}
    for spec in staged.specs:
        if spec.arm == ref and spec.stage in (CONFIRM, TOKENS) and spec.run_id in outcomes:
            budgets.setdefault(spec.max_steps, {})[spec.seed] = outcomes[spec.run_id]
    if None not in budgets or len(budgets) < 2:
        return None
    order = [None, *sorted(k for k in budgets if k is not None)]
    seeds = sorted(set.intersection(*(set(budgets[b]) for b in order)))
    if len(seeds) < 2:
        return None
    tokens = tuple(float(budgets[b][seeds[0]].tokens) for b in order)
    return TokenCurve(tokens, {s: tuple(budgets[b][s].counted_loss for b in order) for s in seeds})


def write_figures(study: Study, staged: StudyPlan, outcomes: dict[str, RunOutcome], figures: Path) -> list[str]:
    curves, points = [], []
    for name, choice in staged.choices.items():
        runs = [outcomes[s.run_id] for s in staged.specs if s.stage == CONFIRM and s.arm == name and s.run_id in outcomes]
        if runs:
            curves.append(SeedCurves(name, setting_label(choice.setting, ", ", "="),
                                     tuple(dict(zip(o.val_tokens, o.val_losses)) for o in runs)))
        line = choice.setting[1:] if choice.setting else None
        by_lr: dict[float, list[RunOutcome]] = {}
        for spec, outcome in choice.tuning:
            if line is None or spec.setting[1:] == line:
                by_lr.setdefault(spec.lr, []).append(outcome)
        points += [LrPoint(name, lr, tuple(o.final_val_loss for o in runs), any(o.diverged for o in runs))
                   for lr, runs in sorted(by_lr.items())]
    written = []
    if curves:
        plot_seed_bands(curves, figures / "confirmation_curves.png",
                        f"{study.name}: val loss on the confirmation seeds (chosen settings)")
        written.append("confirmation_curves.png")
    if points:
        plot_lr_sensitivity(points, figures / "tuning.png", f"{study.name}: stage 1, final val loss by lr")
        written.append("tuning.png")
    return written


def write_report(study: Study, study_dir: Path, runs: list[PlannedRun], staged: StudyPlan) -> Path:
    """Write the report of the study's finished runs; raises FileNotFoundError if none is finished."""

    done = [run for run in runs if run.state == DONE]
    if not done:
        raise FileNotFoundError(f"no finished run in {study_dir / 'runs'}; run the study first")
    outcomes = {run.spec.run_id: read_outcome(run.run_dir) for run in done}
    arms = arm_summaries(study, staged, outcomes)
    verdicts: list[Verdict] = judge_claims(study_claims(study), arms, study)
    curve = token_curve(study, staged, outcomes)
    reference = arms.get(study.tokens.reference) if study.tokens is not None else None
    equivalents = {name: arm_equivalent(curve, arm.losses, reference.losses) for name, arm in arms.items()
                   if curve is not None and reference is not None and len(arm.losses) >= 2}
    figures = study_dir / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    written = write_figures(study, staged, outcomes, figures)
    wall, invocations = study_wall_time(study_dir)
    missing = [run.spec.run_id for run in runs if run.state != DONE]
    md = [f"# Study `{study.name}`", "", study.description.strip(), "",
          f"- machine: {machine_line()}",
          f"- report written {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC from {len(done)} finished runs"
          + (f"; **not finished: {len(missing)}** ({', '.join(missing[:6])}{' ...' if len(missing) > 6 else ''})"
             if missing else "") + ("; **still to plan: " + "; ".join(staged.waiting) + "**" if staged.waiting else ""),
          f"- study wall time: {wall / 60:.1f} min over {invocations} invocation(s) of the study command"
          if math.isfinite(wall) else "- study wall time: not recorded",
          f"- every run: `{' '.join(study.overrides)}`",
          f"- tuning seed(s) {list(study.tune.seeds)}; confirmation seeds {list(study.confirm.seeds)} (fresh, "
          f"shared by every arm: seed s is the same init and data order everywhere)",
          f"- regenerate: `orthogpt-reproduce {study.name}` (runs what is missing, then writes this report)", "",
          *ranking_section(study, staged, arms), *claims_section(study, verdicts),
          *tokens_section(study, curve, equivalents), *tuning_section(study, staged),
          "## Figures", "", *(f"![{name}](figures/{name})\n" for name in written)]
    (study_dir / "report.md").write_text("\n".join(md))
    payload = {
        "study": study.name, "machine": machine_line(), "wall_time_s": wall, "runs_done": len(done),
        "runs_planned": len(runs), "missing": missing, "waiting": staged.waiting,
        "alpha": study.alpha, "margin": study.margin,
        "arms": {name: {"setting": dict(c.setting) if c.setting else None, "bracketed": c.bracketed,
                        "lr_choice": None if c.lr is None else {"best_lr": c.lr.best_lr, "vertex_log2": c.lr.vertex_log2,
                                                                "extensions": c.lr.extensions},
                        "confirmation": {str(k): v for k, v in arms[name].losses.items()},
                        "tokens_equivalent": None if name not in equivalents else
                        {"ratio": equivalents[name].ratio, "interval": list(equivalents[name].interval),
                         "extrapolated": equivalents[name].extrapolated}}
                 for name, c in staged.choices.items()},
        "runs": {run_id: {"final_val_loss": o.final_val_loss, "best_val_loss": o.best_val_loss,
                          "initial_val_loss": o.initial_val_loss, "skipped_steps": o.skipped_steps,
                          "diverged": o.divergence, "counted_loss": o.counted_loss, "tokens": o.tokens,
                          "wall_time_s": o.wall_time_s, "run_dir": f"runs/{run_id}"} for run_id, o in outcomes.items()},
        "claims": [{"id": v.claim.id, "source": v.claim.source, "claim": v.claim.text, "verdict": v.verdict,
                    "paper": v.claim.paper, "evidence": v.evidence,
                    "comparisons": [summary_row(c) for c in v.comparisons]} for v in verdicts],
        "token_curve": None if curve is None else {"tokens": list(curve.tokens),
                                                   "losses": {str(s): list(v) for s, v in curve.losses.items()}},
    }
    (study_dir / "report.json").write_text(json.dumps(payload, indent=2, allow_nan=True))
    return study_dir / "report.md"

