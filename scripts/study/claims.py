"""The papers' claims, each checked against a study's measurements.

Verdicts: "holds", "does not hold" (the measured comparison goes the other way, beyond the seed
spread), "inconclusive" (the gap is within the seed spread, or one seed), "not tested" (an optimizer
of the claim is not in the study or has no stable setting). The definitions of gap and spread are
``scripts.study.aggregate``'s. A claim over several comparisons holds when all of them hold and does
not hold when one of them does not.
"""

from __future__ import annotations

from dataclasses import dataclass

from scripts.study.aggregate import OptimizerResult, gap

HOLDS, FAILS, INCONCLUSIVE, UNTESTED = "holds", "does not hold", "inconclusive", "not tested"


@dataclass(frozen=True)
class Claim:
    source: str
    text: str
    kind: str                                  # beats | does_not_beat | more_robust
    pairs: tuple[tuple[str, str], ...]         # (claimed better, claimed worse)
    tuned: tuple[str, str] | None = None       # (optimizer, key) the claim assumes was tuned


CLAIMS = (
    Claim("NAMO (arXiv 2602.17080)", "NAMO beats AdamW and Muon on GPT-2 pretraining", "beats",
          (("namo", "adamw"), ("namo", "muon"))),
    Claim("NAMO (arXiv 2602.17080)", "NAMO-D beats AdamW and Muon on GPT-2 pretraining", "beats",
          (("namo_d", "adamw"), ("namo_d", "muon"))),
    Claim("NAMO (arXiv 2602.17080)", "NAMO-D (tuned clamp c) gains over NAMO", "beats", (("namo_d", "namo"),),
          tuned=("namo_d", "optim.matrix.clamp_c")),
    Claim("NorMuon (arXiv 2510.05491)", "NorMuon trains better than Muon and Adam", "beats",
          (("normuon", "muon"), ("normuon", "adamw"))),
    Claim("AdaGO (arXiv 2509.02981)", "AdaGO beats Muon and Adam (shown there on non-GPT-2 tasks)", "beats",
          (("adago", "muon"), ("adago", "adamw"))),
    Claim("Delving into Muon and Beyond (arXiv 2602.04669)",
          "RMS-normalized (Adam-input) updates are more stable than momentum-input ones "
          "(spectral_adam vs spectral_msgd: wider lr range near the best, fewer diverged settings)",
          "more_robust", (("spectral_adam", "spectral_msgd"),)),
    Claim("Delving into Muon and Beyond (arXiv 2602.04669)",
          "p = 0 (Muon) does not consistently beat Adam", "does_not_beat", (("muon", "adamw"),)),
)


@dataclass
class Verdict:
    claim: Claim
    verdict: str
    evidence: str


def _beats(better: str, worse: str, by_name: dict[str, OptimizerResult]) -> tuple[str, str]:
    missing = [n for n in (better, worse) if n not in by_name or by_name[n].best is None]
    if missing:
        return UNTESTED, f"{missing[0]}: not in the study or no stable setting"
    g = gap(by_name[better], by_name[worse])
    a, b = by_name[better].best, by_name[worse].best
    numbers = (f"{better} {a.mean():.4f}±{a.std():.4f} vs {worse} {b.mean():.4f}±{b.std():.4f} "
               f"(gap {g.gap:.4f}, spread {g.spread:.4f})")
    if not g.conclusive:
        return INCONCLUSIVE, numbers
    return (HOLDS if g.better == better else FAILS), numbers


def _more_robust(stable: str, other: str, by_name: dict[str, OptimizerResult]) -> tuple[str, str]:
    missing = [n for n in (stable, other) if n not in by_name]
    if missing:
        return UNTESTED, f"{missing[0]}: not in the study"
    a, b = by_name[stable], by_name[other]
    a_div, b_div = sum(s.diverged for s in a.settings), sum(s.diverged for s in b.settings)
    a_ratio = a.robust_ratio if a.best else 0.0
    b_ratio = b.robust_ratio if b.best else 0.0
    numbers = (f"lr range within the window: {stable} x{a_ratio:.3g} ({len(a.robust_lrs)} lrs), "
               f"{other} x{b_ratio:.3g} ({len(b.robust_lrs)} lrs); diverged settings {a_div} vs {b_div}")
    score = (a_ratio > b_ratio) - (a_ratio < b_ratio) + (a_div < b_div) - (a_div > b_div)
    return (HOLDS if score > 0 else FAILS if score < 0 else INCONCLUSIVE), numbers


def judge(claim: Claim, by_name: dict[str, OptimizerResult], grids: dict[str, dict]) -> Verdict:
    verdict = _judge(claim, by_name)
    if claim.tuned and claim.tuned[0] in grids and claim.tuned[1] not in grids[claim.tuned[0]]:
        verdict.evidence += f" ({claim.tuned[1]} not swept: {claim.tuned[0]} at its configured value)"
    return verdict


def _judge(claim: Claim, by_name: dict[str, OptimizerResult]) -> Verdict:
    if claim.kind == "more_robust":
        verdict, evidence = _more_robust(*claim.pairs[0], by_name)
        return Verdict(claim, verdict, evidence)
    parts = [_beats(better, worse, by_name) for better, worse in claim.pairs]
    parts = list(dict.fromkeys(parts))  # one "not in the study" line per missing optimizer
    verdicts = [v for v, _ in parts]
    if claim.kind == "does_not_beat":  # the claim holds unless the optimizer clearly wins
        verdict = {HOLDS: FAILS, FAILS: HOLDS, INCONCLUSIVE: HOLDS, UNTESTED: UNTESTED}[verdicts[0]]
    elif UNTESTED in verdicts:
        verdict = UNTESTED
    elif FAILS in verdicts:
        verdict = FAILS
    elif all(v == HOLDS for v in verdicts):
        verdict = HOLDS
    else:
        verdict = INCONCLUSIVE
    return Verdict(claim, verdict, "; ".join(e for _, e in parts))


def judge_all(results: list[OptimizerResult], grids: dict[str, dict]) -> list[Verdict]:
    """Every claim of CLAIMS against the results; ``grids`` (the study's) says what was swept."""
    by_name = {r.optimizer: r for r in results}
    return [judge(claim, by_name, grids) for claim in CLAIMS]
