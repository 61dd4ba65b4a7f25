"""The sections of report.md, as lists of Markdown lines (scripts/study/report.py assembles them)."""

from __future__ import annotations

import math
import statistics

from scripts.study.claims import ArmSummary, Verdict
from scripts.study.spec import Study, setting_label
from scripts.study.stages import StudyPlan
from scripts.study.token_equivalence import Equivalent, TokenCurve


def _tokens(value: float) -> str:
    if not math.isfinite(value):
        return "nan"
    return f"{value / 1e6:,.2f}M" if value >= 1e6 else f"{value / 1e3:,.1f}k" if value >= 1e4 else f"{value:,.0f}"


def _f(value: float, spec: str = ".4f") -> str:
    return format(value, spec) if isinstance(value, (int, float)) and math.isfinite(value) else "nan"


def ranking_section(study: Study, staged: StudyPlan, arms: dict[str, ArmSummary]) -> list[str]:
    rows = []
    for name, arm in arms.items():
        losses = list(arm.losses.values())
        mean = statistics.fmean(losses) if losses else math.inf
        se = statistics.stdev(losses) / math.sqrt(len(losses)) if len(losses) > 1 else math.nan
        rows.append((mean, name, se, len(losses)))
    lines = ["## Confirmation: each arm at its chosen setting", "",
             "Mean final val loss over the confirmation seeds (a diverged run counts with its initial loss), "
             "± its standard error. Descriptive: the verdicts below compare arms seed by seed.", "",
             "| arm | optimizer | chosen setting | lr bracketed? | final val loss (mean ± s.e.) | seeds |",
             "|---|---|---|---|---|---|"]
    for mean, name, se, k in sorted(rows):
        choice = staged.choices[name]
        setting = setting_label(choice.setting, ", ", "=") if choice.setting else (
            "every lr diverged" if choice.lr is not None and choice.lr.diverged_everywhere else "none: lr not bracketed")
        given = " (given)" if choice.lr is None else ""
        bracket = "yes" if choice.bracketed else "**no: at the grid's edge**"
        lines.append(f"| {name} | {study.arms[name].optimizer} | {setting}{given} | {bracket} | "
                     f"{_f(mean)} ± {_f(se)} | {k} |")
    return [*lines, ""]


def claims_section(study: Study, verdicts: list[Verdict]) -> list[str]:
    lines = ["## The papers' claims at this scale", "",
             f"Each comparison: d̄ = mean over seeds of (loss of the claimed worse − loss of the claimed better), "
             f"its two-sided t-interval at the comparison's Holm-adjusted one-sided level (alpha = {study.alpha:g} "
             f"over the {sum(len(v.comparisons) for v in verdicts)} comparisons of this report), the exact "
             f"one-sided sign-flip p, ρ (the correlation of the two arms across seeds) and the minimum "
             f"detectable effect (80% power). Practical margin: {study.margin:g} nats. Verdicts follow from the "
             f"interval (scripts/study/claims.py): holds (above 0, or above the margin for a 'useful amount'), "
             f"does not hold (below 0), no practical difference (inside ± margin), inconclusive otherwise.", "",
             "| claim | source | paper's own figure | ours | verdict |", "|---|---|---|---|---|"]
    for v in verdicts:
        flag = " *(an extrapolation beyond what the paper tested)*" if v.claim.extrapolation else ""
        lines.append(f"| {v.claim.text}{flag} | {v.claim.source} | {v.claim.paper or '–'} | {v.evidence} | "
                     f"**{v.verdict}** |")
    return [*lines, ""]


def tokens_section(study: Study, curve: TokenCurve | None, equivalents: dict[str, Equivalent]) -> list[str]:
    if study.tokens is None:
        return []
    ref = study.tokens.reference
    if curve is None:
        return ["## By how much, in tokens (rough)", "", f"The {ref} token curve is not finished yet.", ""]
    budgets = ", ".join(_tokens(t) for t in curve.tokens)
    means = [statistics.fmean(curve.losses[s][i] for s in curve.losses) for i in range(len(curve.tokens))]
    lines = ["## By how much, in tokens (rough)", "",
             f"{ref} at its chosen setting for budgets of {budgets} tokens (mean final val loss "
             f"{', '.join(_f(m) for m in means)} over seeds {sorted(curve.losses)}), log-linear in tokens. Each arm's paired mean gap to {ref} "
             f"over the confirmation seeds is read off that curve from its first point, so {ref} itself is 1. "
             f"Interval: 95% bootstrap over the curve's seeds and the paired seeds. Rough: a few budgets "
             f"and an interpolation model (scripts/study/token_equivalence.py).", "",
             f"| arm | reaches in {_tokens(curve.tokens[0])} tokens what {ref} reaches in | × {ref}'s tokens | 95% interval |",
             "|---|---|---|---|"]
    for name, eq in sorted(equivalents.items(), key=lambda kv: -kv[1].ratio if math.isfinite(kv[1].ratio) else 0):
        if name == ref:
            continue  # 1 by definition
        mark = {"below": " (extrapolated below the curve)", "beyond": " (extrapolated beyond the curve)"}.get(
            eq.extrapolated or "", "")
        lines.append(f"| {name} | {_tokens(eq.ratio * curve.tokens[0])}{mark} | {_f(eq.ratio, '.2f')} | "
                     f"[{_f(eq.interval[0], '.2f')}, {_f(eq.interval[1], '.2f')}] |")
    return [*lines, ""]


def tuning_section(study: Study, staged: StudyPlan) -> list[str]:
    lines = ["## Stage 1: tuning", "",
             f"Final val loss per grid point on the tuning seed(s) {list(study.tune.seeds)}. The chosen lr is the "
             f"vertex of the parabola in log2(lr) through the best point and its neighbours, rounded to "
             f"{study.tune.round_log2:g} in log2; a best point at an edge extends the grid (at most "
             f"{study.tune.max_extensions} points).", "",
             "| arm | setting | final val loss | diverged |", "|---|---|---|---|"]
    for name, choice in staged.choices.items():
        for spec, outcome in sorted(choice.tuning, key=lambda so: (so[0].setting[1:], so[0].lr, so[0].seed)):
            lines.append(f"| {name} | {setting_label(spec.setting, ', ', '=')} (seed {spec.seed}) | "
                         f"{_f(outcome.final_val_loss)} | {outcome.divergence or ''} |")
        if choice.lr is not None and choice.lr.vertex_log2 is not None:
            lines.append(f"| {name} | parabola vertex lr {2 ** choice.lr.vertex_log2:.4g} -> chosen "
                         f"{choice.lr.lr:.4g} | | |")
    lines += ["", *(f"- waiting: {w}" for w in staged.waiting)]
    return [*lines, ""]

