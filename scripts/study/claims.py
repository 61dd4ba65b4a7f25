"""The papers' claims (configs/study/claims.yaml), judged on a study's confirmation runs.

A "beats" or "does_not_beat" claim is one paired comparison per pair (scripts/study/paired_stats.py
defines the numbers and the verdict levels); every comparison of the report is one family for Holm.
Rules on top of the statistics, in this order:
- *not tested*: an arm of the pair is not in the study, has fewer than 3 confirmation seeds in common
  with the other, or the claim's tuned key (``tuned: {arm, key}``) was not swept;
- an arm whose every tuning point diverged has no setting to confirm: a claim that it is better
  *does not hold*, a claim that the other is better *holds* (it trains, this one does not);
- an arm still at a grid edge after its last extension is never confirmed (scripts/study/tuning.py):
  its comparisons are *inconclusive (lr not bracketed)*, as is a verdict that calls worse an arm
  whose lr was not bracketed.
A claim over several pairs holds when every pair holds, does not hold when one does not, shows no
practical difference when every pair does, is not tested when one pair is not, and is inconclusive
otherwise.

"more_robust" is descriptive, not a significance test: it needs a wide tuning grid (>= 7 lrs over
>= 64x) with >= 2 tuning seeds for both arms, else it is *not tested*. The robust range is the set of
lrs whose mean final loss is within ``robust_window`` of the arm's best; the claim holds when A's
range is at least two ladder steps (4x) wider and A has no more diverged lrs than B, does not hold
in the mirror case, and is inconclusive otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from scripts.study.paired_stats import (FAILS, HOLDS, INCONCLUSIVE, MIN_SEEDS, NO_DIFFERENCE, UNTESTED, Judgement,
                                        PairedDiff, holm_levels, judge_difference, sign_flip_p_value)
from scripts.study.spec import STUDY_DIR, Study, StudyError

CLAIMS_FILE = STUDY_DIR / "claims.yaml"
KINDS = ("beats", "does_not_beat", "more_robust")
NOT_BRACKETED = "inconclusive (lr not bracketed)"
WIDE_GRID_POINTS, WIDE_GRID_SPAN, ROBUST_SEEDS = 7, 64.0, 2


@dataclass(frozen=True)
class Claim:
    id: str
    source: str
    text: str
    kind: str
    pairs: tuple[tuple[str, str], ...]   # (claimed better, claimed worse), arm names
    useful: bool
    extrapolation: bool
    paper: str | None
    tuned: tuple[str, str] | None = None   # (arm, key) the claim assumes was swept


def load_claims(path: Path = CLAIMS_FILE) -> dict[str, Claim]:
    raw = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    claims = {}
    for entry in raw["claims"]:
        where = f"{path}: claim {entry.get('id')!r}"
        if entry.get("kind") not in KINDS:
            raise StudyError(f"{where}: kind must be one of {', '.join(KINDS)}")
        pairs = tuple(tuple(p) for p in entry["pairs"])
        if not pairs or any(len(p) != 2 for p in pairs):
            raise StudyError(f"{where}: pairs must be a list of [better, worse] arm names")
        claims[entry["id"]] = Claim(entry["id"], entry["source"], entry["text"], entry["kind"], pairs,
                                    bool(entry["useful"]), bool(entry["extrapolation"]), entry.get("paper"),
                                    (entry["tuned"]["arm"], entry["tuned"]["key"]) if entry.get("tuned") else None)
    return claims


def study_claims(study: Study, path: Path = CLAIMS_FILE) -> list[Claim]:
    claims = load_claims(path)
    if study.claims == "all":
        return list(claims.values())
    unknown = [c for c in study.claims if c not in claims]
    if unknown:
        raise StudyError(f"{study.path}: claim '{unknown[0]}' is not in {path} (known: {', '.join(claims)})")
    return [claims[c] for c in study.claims]


@dataclass(frozen=True)
class ArmSummary:
    """What the claims need of an arm: its confirmation losses by seed, and how it was tuned."""

    name: str
    losses: dict[int, float]            # confirmation seed -> counted loss (initial loss if diverged)
    diverged_everywhere: bool = False   # every tuning point diverged: nothing to confirm
    bracketed: bool = True
    tuning: dict[float, list[float]] = field(default_factory=dict)   # lr -> final losses (best line)
    diverged_lrs: frozenset[float] = frozenset()


@dataclass
class Comparison:
    claim: Claim
    better: str
    worse: str
    diff: PairedDiff | None = None
    verdict: str = UNTESTED
    judgement: Judgement | None = None
    sign_flip_p: float = math.nan
    note: str = ""


@dataclass
class Verdict:
    claim: Claim
    verdict: str
    comparisons: list[Comparison]
    evidence: str


def _pair(claim: Claim, better: str, worse: str, arms: dict[str, ArmSummary], study: Study) -> Comparison:
    comparison = Comparison(claim, better, worse)
    missing = [a for a in (better, worse) if a not in arms]
    if missing:
        comparison.note = f"{missing[0]} is not in the study"
        return comparison
    if claim.tuned is not None:
        arm, key = claim.tuned
        grid = study.arms[arm].grid if arm in study.arms else None
        if grid is None or key not in grid:
            comparison.note = f"the claim assumes {arm}'s {key} was tuned; the study does not sweep it"
            return comparison
    a, b = arms[better], arms[worse]
    if a.diverged_everywhere or b.diverged_everywhere:
        comparison.verdict = FAILS if a.diverged_everywhere else HOLDS
        comparison.note = f"{better if a.diverged_everywhere else worse} diverged at every tuning lr"
        return comparison
    unbracketed = [arm.name for arm in (a, b) if not arm.bracketed and not arm.losses]
    if unbracketed:
        comparison.verdict = NOT_BRACKETED
        comparison.note = f"{unbracketed[0]}'s best lr stayed at its grid's edge: not confirmed"
        return comparison
    seeds = tuple(sorted(set(a.losses) & set(b.losses)))
    if len(seeds) < MIN_SEEDS:
        comparison.note = f"{len(seeds)} common confirmation seed(s); a verdict needs {MIN_SEEDS}"
        return comparison
    comparison.diff = PairedDiff(better, worse, seeds, tuple(a.losses[s] for s in seeds),
                                 tuple(b.losses[s] for s in seeds))
    comparison.sign_flip_p = sign_flip_p_value(comparison.diff.diffs)
    return comparison


def _holds_p_value(c: Comparison, margin: float) -> float:
    """The p-value of the test whose rejection makes the comparison "hold" (Holm orders these)."""
    if c.diff is None:
        return math.nan
    if c.claim.kind == "does_not_beat":
        return c.diff.p_value(threshold=margin, greater=False)
    return c.diff.p_value(threshold=margin if c.claim.useful else 0.0)


def _robust(claim: Claim, arms: dict[str, ArmSummary], window: float) -> tuple[str, str]:
    better, worse = claim.pairs[0]
    if better not in arms or worse not in arms:
        return UNTESTED, f"{better if better not in arms else worse} is not in the study"
    widths, diverged = {}, {}
    for name in (better, worse):
        arm = arms[name]
        lrs = sorted(arm.tuning)
        seeds = min((len(v) for v in arm.tuning.values()), default=0)
        if len(lrs) < WIDE_GRID_POINTS or lrs[-1] / lrs[0] < WIDE_GRID_SPAN * (1 - 1e-9) or seeds < ROBUST_SEEDS:
            return UNTESTED, (f"{name}: {len(lrs)} lrs over {lrs[-1] / lrs[0] if lrs else 0:g}x with {seeds} seed(s); "
                              f"a robustness claim needs >= {WIDE_GRID_POINTS} lrs over >= {WIDE_GRID_SPAN:g}x "
                              f"with >= {ROBUST_SEEDS} seeds")
        means = {lr: sum(v) / len(v) for lr, v in arm.tuning.items() if lr not in arm.diverged_lrs}
        best = min(means.values(), default=math.inf)
        widths[name] = sum(1 for m in means.values() if m <= best + window)
        diverged[name] = len(arm.diverged_lrs)
    evidence = (f"lrs within {window:g} nats of the best: {better} {widths[better]}, {worse} {widths[worse]}; "
                f"diverged lrs {diverged[better]} vs {diverged[worse]} (descriptive rule, no p-value)")
    if widths[better] >= widths[worse] + 2 and diverged[better] <= diverged[worse]:
        return HOLDS, evidence
    if widths[worse] >= widths[better] + 2 and diverged[worse] <= diverged[better]:
        return FAILS, evidence
    return INCONCLUSIVE, evidence


def _combine(verdicts: list[str]) -> str:
    if UNTESTED in verdicts:
        return UNTESTED
    if FAILS in verdicts:
        return FAILS
    if all(v == HOLDS for v in verdicts):
        return HOLDS
    if all(v == NO_DIFFERENCE for v in verdicts):
        return NO_DIFFERENCE
    return NOT_BRACKETED if NOT_BRACKETED in verdicts else INCONCLUSIVE


def judge_claims(claims: list[Claim], arms: dict[str, ArmSummary], study: Study) -> list[Verdict]:
    """Every claim's verdict; the comparisons of all "beats"/"does_not_beat" claims form one Holm family."""
    comparisons = [_pair(c, better, worse, arms, study) for c in claims if c.kind != "more_robust"
                   for better, worse in c.pairs]
    levels = holm_levels([_holds_p_value(c, study.margin) for c in comparisons], study.alpha)
    for c, level in zip(comparisons, levels):
        if c.diff is None:
            continue
        c.judgement = judge_difference(c.diff, level, study.margin, c.claim.useful, c.claim.kind)
        c.verdict = c.judgement.verdict
        if c.claim.kind == "does_not_beat":  # "does not hold" means A beats B; "holds" calls nobody worse
            called_worse = c.worse if c.verdict == FAILS else None
        else:
            called_worse = c.worse if c.verdict == HOLDS else c.better if c.verdict == FAILS else None
        if called_worse is not None and not arms[called_worse].bracketed:
            c.verdict = NOT_BRACKETED
            c.note = f"{called_worse}'s best lr is at its grid's edge"
    verdicts = []
    for claim in claims:
        if claim.kind == "more_robust":
            verdict, evidence = _robust(claim, arms, study.robust_window)
            verdicts.append(Verdict(claim, verdict, [], evidence))
            continue
        mine = [c for c in comparisons if c.claim is claim]
        verdicts.append(Verdict(claim, _combine([c.verdict for c in mine]), mine,
                                "; ".join(describe(c) for c in mine)))
    return verdicts


def describe(c: Comparison) -> str:
    """'namo vs adamw: d̄ = +0.031 [+0.012, +0.050] (90%, Holm level 0.0167), sign-flip p 0.016, ρ 0.82, MDE 0.021'"""
    if c.judgement is None:
        return f"{c.better} vs {c.worse}: {c.note or 'not tested'}"
    j, d = c.judgement, c.diff
    text = (f"{c.better} vs {c.worse}: d̄ = {d.mean:+.4f} [{j.interval[0]:+.4f}, {j.interval[1]:+.4f}] "
            f"({1 - 2 * j.level:.1%} interval, one-sided level {j.level:.4g}), k = {d.k}, "
            f"sign-flip p {c.sign_flip_p:.3g}, ρ {d.correlation:.2f}, MDE {j.mde:.4f}")
    return text + (f" ({c.note})" if c.note else "")


def summary_row(c: Comparison) -> dict[str, Any]:
    """The comparison's numbers for report.json."""
    row: dict[str, Any] = {"claim": c.claim.id, "better": c.better, "worse": c.worse, "verdict": c.verdict,
                           "note": c.note}
    if c.judgement is not None:
        row.update(seeds=list(c.diff.seeds), loss_better=list(c.diff.loss_better), loss_worse=list(c.diff.loss_worse),
                   mean_diff=c.diff.mean, interval=list(c.judgement.interval), level=c.judgement.level,
                   sign_flip_p=c.sign_flip_p, correlation=c.diff.correlation, mde=c.judgement.mde)
    return row
