"""The statistics of a study's verdicts: table values, hand cases, and simulations with a known truth
fed through the real judging code (scripts/study/claims.py over paired_stats.py)."""

from __future__ import annotations

import math
import random
import statistics
from dataclasses import replace
from pathlib import Path

import pytest

from scripts.study import student_t, token_equivalence
from scripts.study.claims import NOT_BRACKETED, ArmSummary, Claim, judge_claims
from scripts.study.outcomes import RunOutcome
from scripts.study.paired_stats import (FAILS, HOLDS, INCONCLUSIVE, NO_DIFFERENCE, UNTESTED, PairedDiff,
                                        holm_levels, judge_difference, sign_flip_p_value)
from scripts.study.spec import load_study
from scripts.study.stages import CONFIRM, TUNE, expand
from scripts.study.token_equivalence import TokenCurve, arm_equivalent
from scripts.study.tuning import TunePoint, choose_lr

STUDY = load_study("cpu_smoke")


def claim(id_: str, pairs, kind: str = "beats", useful: bool = False, tuned=None) -> Claim:
    return Claim(id_, "src", id_, kind, tuple(tuple(p) for p in pairs), useful, False, None, tuned)


@pytest.mark.parametrize("q, df, value", [(0.975, 5, 2.570582), (0.95, 5, 2.015048), (0.8, 5, 0.919544),
                                          (0.95, 7, 1.894579), (0.975, 1, 12.706205), (0.99, 30, 2.457262)])
def test_student_t_quantiles_match_the_tables(q, df, value):
    assert student_t.ppf(q, df) == pytest.approx(value, abs=2e-6)
    assert student_t.sf(value, df) == pytest.approx(1 - q, abs=1e-7)
    assert student_t.ppf(1 - q, df) == pytest.approx(-value, abs=2e-6)


def test_sign_flip_p_value_is_exact_on_hand_cases():
    assert sign_flip_p_value([1.0, 2.0, 3.0]) == 1 / 8      # only all-plus reaches 6
    assert sign_flip_p_value([1.0, -2.0, 3.0]) == 3 / 8     # sums 6, 4, 2 of the 8 are >= 2
    assert sign_flip_p_value([0.5] * 6) == 1 / 64           # k = 6: the smallest possible p


def test_holm_levels_step_down_and_stop_at_the_first_failure():
    levels = holm_levels([0.01, 0.04, 0.03, float("nan")], 0.05)
    assert levels[0] == pytest.approx(0.05 / 3)             # smallest p at alpha / m: rejected
    assert levels[2] == pytest.approx(0.05 / 2)             # next at alpha / (m - 1): 0.03 fails here
    assert levels[1] == pytest.approx(0.05 / 2)             # later ones keep the failing level
    assert levels[3] != levels[3]                           # not tested: no level


def test_interval_p_value_and_mde_by_hand():
    d = PairedDiff("a", "b", (1, 2, 3, 4, 5, 6), (3.0,) * 6, (3.01, 3.03, 3.02, 3.04, 3.00, 3.02))
    mean, se = 0.02, d.sd / 6 ** 0.5
    assert d.mean == pytest.approx(mean)
    low, high = d.interval(0.05)
    assert (low, high) == pytest.approx((mean - 2.015048 * se, mean + 2.015048 * se), abs=1e-8)
    assert d.min_detectable_effect(0.05) == pytest.approx((2.015048 + 0.919544) * se, abs=1e-8)
    assert d.p_value() == pytest.approx(student_t.sf(mean / se, 5))
    assert d.p_value(threshold=0.05, greater=False) == pytest.approx(student_t.sf((0.05 - mean) / se, 5))


def test_verdict_rules_on_intervals():
    sure = PairedDiff("a", "b", (1, 2, 3), (3.0, 3.0, 3.0), (3.05, 3.06, 3.05))
    assert judge_difference(sure, 0.05, 0.01, useful_margin=False).verdict == HOLDS
    assert judge_difference(sure, 0.05, 0.05, useful_margin=True).verdict == INCONCLUSIVE  # [0.044, 0.063] vs 0.05
    flipped = PairedDiff("b", "a", (1, 2, 3), (3.05, 3.06, 3.05), (3.0, 3.0, 3.0))
    assert judge_difference(flipped, 0.05, 0.01, useful_margin=False).verdict == FAILS
    tiny = PairedDiff("a", "b", (1, 2, 3, 4), (3.0,) * 4, (3.001, 2.999, 3.0005, 3.0))
    assert judge_difference(tiny, 0.05, 0.01, useful_margin=False).verdict == NO_DIFFERENCE
    assert judge_difference(tiny, 0.05, 0.01, useful_margin=False, kind="does_not_beat").verdict == HOLDS
    assert judge_difference(sure, 0.05, 0.01, useful_margin=False, kind="does_not_beat").verdict == FAILS
    two = PairedDiff("a", "b", (1, 2), (3.0, 3.0), (3.1, 3.1))
    assert judge_difference(two, 0.05, 0.01, useful_margin=False).verdict == UNTESTED        # k < 3


CLAIMS = [claim("x_beats_y_z", [("x", "y"), ("x", "z")]), claim("y_beats_z", [("y", "z")]),
          claim("w_beats_x", [("w", "x")]), claim("z_not_better_w", [("z", "w")], kind="does_not_beat")]


def simulate(rng: random.Random, k: int, effects: dict[str, float], sd_seed=0.05, sd_noise=0.02):
    """Arms' confirmation losses: a shared per-seed level (the pairing) + the arm's effect + noise."""
    seeds = range(k)
    level = {s: 3.0 + rng.gauss(0, sd_seed) for s in seeds}
    return {name: ArmSummary(name, {s: level[s] + effect + rng.gauss(0, sd_noise) for s in seeds})
            for name, effect in effects.items()}


def test_global_null_gives_definite_verdicts_at_most_at_the_nominal_rate():
    rng, trials = random.Random(1), 3000
    definite = {c.id: 0 for c in CLAIMS}
    for _ in range(trials):
        arms = simulate(rng, 6, {"w": 0.0, "x": 0.0, "y": 0.0, "z": 0.0})
        for v in judge_claims(CLAIMS, arms, STUDY):
            definite[v.claim.id] += v.verdict in (HOLDS, FAILS) and v.claim.kind == "beats"
            definite[v.claim.id] += v.verdict == FAILS and v.claim.kind == "does_not_beat"
    for claim_id, count in definite.items():
        assert count / trials <= 0.05, (claim_id, count / trials)


def test_single_comparison_null_rate_is_alpha_in_each_direction():
    rng, trials, counts = random.Random(2), 4000, {HOLDS: 0, FAILS: 0}
    one = [claim("a_beats_b", [("a", "b")])]
    for _ in range(trials):
        (v,) = judge_claims(one, simulate(rng, 6, {"a": 0.0, "b": 0.0}), STUDY)
        counts[v.verdict] = counts.get(v.verdict, 0) + 1
    for verdict in (HOLDS, FAILS):  # one-sided tests at alpha = 0.05 each (Monte Carlo s.e. 0.0034)
        assert 0.035 <= counts[verdict] / trials <= 0.06, (verdict, counts[verdict] / trials)


def test_a_one_sigma_effect_with_eight_seeds_holds_at_least_80_percent_of_the_time():
    rng, trials, holds = random.Random(3), 4000, 0
    one = [claim("a_beats_b", [("a", "b")])]
    sd_noise = 0.02
    sigma_d = sd_noise * 2 ** 0.5  # sd of the paired difference
    for _ in range(trials):
        (v,) = judge_claims(one, simulate(rng, 8, {"a": 0.0, "b": sigma_d}, sd_noise=sd_noise), STUDY)
        holds += v.verdict == HOLDS
    assert holds / trials >= 0.80  # the paired t's power here is 0.815


def test_not_tested_diverged_and_unbracketed_rules():
    arms = simulate(random.Random(4), 6, {"a": 0.0, "b": 0.05})
    verdict = lambda claims, arms_: {v.claim.id: v for v in judge_claims(claims, arms_, STUDY)}  # noqa: E731
    missing = verdict([claim("a_beats_q", [("a", "q")])], arms)["a_beats_q"]
    assert missing.verdict == UNTESTED and "q is not in the study" in missing.evidence
    few = {n: replace(a, losses=dict(list(a.losses.items())[:2])) for n, a in arms.items()}
    assert verdict([claim("ab", [("a", "b")])], few)["ab"].verdict == UNTESTED
    untuned = verdict([claim("ab", [("a", "b")], tuned=("a", "optim.matrix.clamp_c"))], arms)["ab"]
    assert untuned.verdict == UNTESTED and "does not sweep it" in untuned.evidence
    blown = {**arms, "a": ArmSummary("a", {}, diverged_everywhere=True)}
    assert verdict([claim("ab", [("a", "b")])], blown)["ab"].verdict == FAILS     # never "not tested"
    assert verdict([claim("ba", [("b", "a")])], blown)["ba"].verdict == HOLDS
    edge = {**arms, "b": replace(arms["b"], bracketed=False)}                    # confirmed, tuned at an edge
    assert verdict([claim("ab", [("a", "b")])], edge)["ab"].verdict == NOT_BRACKETED
    assert verdict([claim("ab", [("a", "b")])], arms)["ab"].verdict == HOLDS     # the same data, bracketed
    never = {**arms, "b": ArmSummary("b", {}, bracketed=False)}
    assert verdict([claim("ab", [("a", "b")])], never)["ab"].verdict == NOT_BRACKETED


def test_robustness_needs_a_wide_grid_with_two_seeds():
    narrow = {n: ArmSummary(n, {}, tuning={1e-3: [3.0, 3.0], 2e-3: [3.0, 3.0]}) for n in ("a", "b")}
    (v,) = judge_claims([claim("r", [("a", "b")], kind="more_robust")], narrow, STUDY)
    assert v.verdict == UNTESTED and "needs >= 7 lrs over >= 64x" in v.evidence
    lrs = [1e-3 * 2 ** i for i in range(7)]
    wide_a = {lr: [3.0, 3.0] for lr in lrs}
    wide_b = {lr: [3.0 if i == 3 else 3.2, 3.0 if i == 3 else 3.2] for i, lr in enumerate(lrs)}
    arms = {"a": ArmSummary("a", {}, tuning=wide_a), "b": ArmSummary("b", {}, tuning=wide_b, diverged_lrs=frozenset({lrs[-1]}))}
    (v,) = judge_claims([claim("r", [("a", "b")], kind="more_robust")], arms, STUDY)
    assert v.verdict == HOLDS


@pytest.mark.parametrize("losses, diverged, expected_lr, bracketed", [
    ((3.00, 2.90, 2.95), (), 2e-3, True),                        # vertex +0.17 steps: rounds to the point
    ((3.00, 2.90, 2.91), (), 2e-3 * 2 ** 0.5, True),             # vertex +0.41 steps: rounds to +1/2
    ((2.91, 2.90, 3.00), (), 2e-3 / 2 ** 0.5, True),
    ((3.00, 2.90, float("nan")), (4e-3,), 2e-3, True),           # a diverged larger lr brackets
])
def test_parabola_choice(losses, diverged, expected_lr, bracketed):
    points = [TunePoint(lr, loss, lr in diverged) for lr, loss in zip((1e-3, 2e-3, 4e-3), losses)]
    choice = choose_lr(points, (1e-3, 2e-3, 4e-3), 2, 0.5)
    assert choice.lr == pytest.approx(expected_lr) and choice.bracketed is bracketed


def test_edge_extends_and_never_confirms_an_unbracketed_lr():
    grid = (1e-3, 2e-3, 4e-3)
    edge = [TunePoint(lr, loss, False) for lr, loss in zip(grid, (3.0, 2.9, 2.8))]
    first = choose_lr(edge, grid, 1, 0.5)
    assert first.lr is None and first.extend_to == pytest.approx(8e-3)
    still = choose_lr([*edge, TunePoint(8e-3, 2.7, False)], grid, 1, 0.5)
    assert still.lr is None and still.extend_to is None and not still.bracketed and still.best_lr == 8e-3
    found = choose_lr([*edge, TunePoint(8e-3, 2.85, False)], grid, 1, 0.5)
    assert found.bracketed and found.lr is not None
    blown = choose_lr([TunePoint(lr, float("nan"), True) for lr in grid], grid, 1, 0.5)
    assert blown.extend_to == pytest.approx(5e-4) and blown.lr is None


def outcome(loss: float, initial: float = 10.0, best: float | None = None, skipped: int = 0) -> RunOutcome:
    return RunOutcome(Path("/nowhere"), loss, loss if best is None else best, initial, skipped, 100, 1.0)


def test_divergence_rules():
    assert not outcome(5.0).diverged
    assert outcome(5.0, skipped=1).divergence == "skipped 1 step(s)"
    assert outcome(10.5).diverged and outcome(float("nan")).diverged
    spiked = outcome(7.5, best=5.5)   # the case the old rule passed
    assert spiked.diverged and spiked.counted_loss == 10.0
    assert outcome(5.9, best=5.5).counted_loss == 5.9


def test_stages_extend_then_confirm_on_fresh_shared_seeds():
    finished: dict[str, RunOutcome] = {}
    losses = {"adamw": {1e-3: 3.0, 2e-3: 2.9, 4e-3: 2.8, 8e-3: 2.85}, "muon": {1e-2: 3.0, 2e-2: 2.9, 4e-2: 2.95}}
    plan = expand(STUDY, lambda spec: finished.get(spec.run_id))
    assert {s.stage for s in plan.specs} == {TUNE} and len(plan.waiting) == 3
    for spec in plan.specs:
        finished[spec.run_id] = outcome(losses[spec.arm][spec.lr])
    plan = expand(STUDY, lambda spec: finished.get(spec.run_id))
    assert any("extending to 0.008" in w for w in plan.waiting)          # adamw's best is at the top edge
    assert {s.arm for s in plan.specs if s.stage == CONFIRM} == {"muon"}
    extension = [s for s in plan.specs if s.stage == TUNE and s.lr == pytest.approx(8e-3)]
    finished[extension[0].run_id] = outcome(2.85)
    plan = expand(STUDY, lambda spec: finished.get(spec.run_id))
    confirm = {(s.arm, s.seed) for s in plan.specs if s.stage == CONFIRM}
    assert confirm == {(arm, seed) for arm in ("adamw", "muon") for seed in (1, 2, 3)}  # fresh: tuning used 0
    assert plan.choices["adamw"].setting == (("optim.matrix.lr", pytest.approx(4e-3)),)


# ------------------------------------------------------------- tokens: known truth, log-linear curve
def _truth(tokens_ratio: float) -> float:
    """A reference whose loss falls 0.5 nats per e-fold of tokens from 6.0 at T0."""
    return 6.0 - 0.5 * math.log(tokens_ratio)


def _token_curve(effects: dict[int, float], curve_seeds=(1, 2), ratios=(1.0, 1.5, 2.0)) -> TokenCurve:
    T0 = 131072.0
    return TokenCurve(tuple(T0 * r for r in ratios),
                      {s: tuple(_truth(r) + effects[s] for r in ratios) for s in curve_seeds})


def test_equivalent_tokens_are_exact_on_a_noiseless_log_linear_truth_whatever_the_curve_seeds():
    # seed effects shared by every arm (same init and data order); the curve's two seeds are luckier
    # than the six confirmation seeds on average, which must not move any arm's figure
    effects = {1: -0.06, 2: -0.04, 3: 0.05, 4: 0.02, 5: 0.03, 6: 0.01}
    curve = _token_curve(effects)
    reference = {s: _truth(1.0) + e for s, e in effects.items()}
    assert arm_equivalent(curve, reference, reference).ratio == pytest.approx(1.0, abs=1e-12)
    for r in (1.2, 1.7):  # an arm as good as the reference trained on r x the tokens
        arm = {s: _truth(r) + e for s, e in effects.items()}
        eq = arm_equivalent(curve, arm, reference)
        assert eq.ratio == pytest.approx(r, rel=1e-9) and eq.extrapolated is None
        assert eq.interval[0] == pytest.approx(r, rel=1e-9) and eq.interval[1] == pytest.approx(r, rel=1e-9)
    worse = arm_equivalent(curve, {s: _truth(0.8) + e for s, e in effects.items()}, reference)
    assert worse.ratio == pytest.approx(0.8, rel=1e-9) and worse.extrapolated == "below"
    better = arm_equivalent(curve, {s: _truth(2.5) + e for s, e in effects.items()}, reference)
    assert better.ratio == pytest.approx(2.5, rel=1e-9) and better.extrapolated == "beyond"


def test_equivalent_tokens_interval_covers_the_truth(monkeypatch):
    """Paired noise on the gaps (k = 6) and on the curve: the 95% bootstrap interval covers the true
    ratio in most simulated studies and the point estimate is unbiased to a few percent."""
    monkeypatch.setattr(token_equivalence, "BOOTSTRAP", 400)
    rng = random.Random(7)
    true_ratio, covered, points = 1.25, 0, []
    for study in range(120):
        effects = {s: rng.gauss(0, 0.05) for s in range(1, 7)}
        curve = _token_curve({s: e + rng.gauss(0, 0.005) for s, e in effects.items()})
        reference = {s: _truth(1.0) + e for s, e in effects.items()}
        arm = {s: _truth(true_ratio) + e + rng.gauss(0, 0.02) for s, e in effects.items()}
        eq = arm_equivalent(curve, arm, reference, seed=study)
        covered += eq.interval[0] <= true_ratio <= eq.interval[1]
        points.append(eq.ratio)
    assert covered / 120 >= 0.8, covered
    assert statistics.median(points) == pytest.approx(true_ratio, rel=0.03)
