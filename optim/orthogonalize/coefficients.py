"""Coefficient schedules of the odd quintic iteration X <- a X + b (X X^T) X + c (X X^T)^2 X.

    fixed          one triplet (a, b, c) repeated every step: ``optim.orthogonalize.coefficients``,
                   by default Keller Jordan's (3.4445, -4.7750, 2.0315) (github.com/KellerJordan/Muon).
                   Maps singular values into a band around 1 ([0.68, 1.13] after 5 steps) and stalls there.
    polar_express  a different triplet per step, each the minimax-optimal odd quintic for the interval
                   the previous ones left (Amsel, Persson, Musco, Gower 2025, "The Polar Express",
                   arXiv:2505.16932, Algorithm 1, degree 5, l = 1e-3). Safety factor 1.01: every triplet
                   but the last is divided as (a / 1.01, b / 1.01^3, c / 1.01^5), and the input is
                   normalized by 1.01 ||X||_F, so bf16 rounding cannot push a value above the interval the
                   polynomials were fit on. Steps beyond the table repeat its last triplet
                   (15/8, -10/8, 3/8: the classical degree-5 Newton-Schulz).

A schedule is a tuple of triplets, one per iteration, plus the normalization scale; the kernel
(optim.orthogonalize.newton_schulz) runs whatever it is given.
"""

from __future__ import annotations

from dataclasses import dataclass

Triplet = tuple[float, float, float]

JORDAN: Triplet = (3.4445, -4.7750, 2.0315)
SCHEDULES = ("fixed", "polar_express")

# Algorithm 1 of arXiv:2505.16932 (the published table, before the safety factor)
_POLAR_EXPRESS_TABLE: tuple[Triplet, ...] = (
    (8.28721201814563, -23.595886519098837, 17.300387312530933),
    (4.107059111542203, -2.9478499167379106, 0.5448431082926601),
    (3.9486908534822946, -2.908902115962949, 0.5518191394370137),
    (3.3184196573706015, -2.488488024314874, 0.51004894012372),
    (2.300652019954817, -1.6689039845747493, 0.4188073119525673),
    (1.891301407787398, -1.2679958271945868, 0.37680408948524835),
    (1.8750014808534479, -1.2500016453999487, 0.3750001645474248),
    (1.875, -1.25, 0.375),
)
POLAR_EXPRESS_SAFETY = 1.01
POLAR_EXPRESS: tuple[Triplet, ...] = tuple(
    (a / POLAR_EXPRESS_SAFETY, b / POLAR_EXPRESS_SAFETY**3, c / POLAR_EXPRESS_SAFETY**5)
    for a, b, c in _POLAR_EXPRESS_TABLE[:-1]
) + (_POLAR_EXPRESS_TABLE[-1],)


@dataclass(frozen=True)
class IterationSchedule:
    """What the kernel runs: one (a, b, c) per iteration; X0 = X / (norm_scale ||X||_F + eps)."""

    triplets: tuple[Triplet, ...]
    norm_scale: float = 1.0

    @property
    def steps(self) -> int:
        return len(self.triplets)


def iteration_schedule(name: str, steps: int, fixed: Triplet = JORDAN) -> IterationSchedule:
    """The ``steps`` triplets of schedule ``name`` (``fixed`` repeats ``fixed``)."""
    if name not in SCHEDULES:
        raise ValueError(f"optim.orthogonalize.schedule must be one of {list(SCHEDULES)}, got '{name}'")
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"optim.orthogonalize.steps must be an integer >= 1, got {steps!r}")
    if name == "fixed":
        fixed = tuple(float(c) for c in fixed)
        if len(fixed) != 3:
            raise ValueError(f"optim.orthogonalize.coefficients must be [a, b, c], got {list(fixed)}")
        return IterationSchedule(triplets=(fixed,) * steps)
    table = POLAR_EXPRESS[:steps] + (POLAR_EXPRESS[-1],) * max(0, steps - len(POLAR_EXPRESS))
    return IterationSchedule(triplets=table, norm_scale=POLAR_EXPRESS_SAFETY)
