"""Student's t distribution: survival function and quantiles, without a statistics package.

    sf(t, df)   = P(T > t) = I_x(df/2, 1/2) / 2 for t >= 0, x = df / (df + t²)
    ppf(q, df)  = the t with P(T <= t) = q, by bisection on sf (monotone), to ~1e-12

I_x(a, b) is the regularized incomplete beta function, evaluated by its continued fraction
(Lentz's method, as in Numerical Recipes §6.4), switching to the symmetric form where the fraction
converges slowly. tests/test_study_stats.py checks table values (t_{0.975,5} = 2.570582, ...).
"""

from __future__ import annotations

import math
from functools import lru_cache

_EPS, _TINY, _MAX_ITER = 1e-15, 1e-300, 500


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, _MAX_ITER + 1):
        m2 = 2 * m
        for numerator in (m * (b - m) * x / ((a + m2 - 1) * (a + m2)),
                          -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > _TINY else _TINY)
            c = 1.0 + numerator / c
            c = c if abs(c) > _TINY else _TINY
            h *= d * c
        if abs(d * c - 1.0) < _EPS:
            break
    return h


def regularized_incomplete_beta(a: float, b: float, x: float) -> float:
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, 1.0 - x) / b


def sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with ``df`` degrees of freedom."""
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    tail = 0.5 * regularized_incomplete_beta(df / 2.0, 0.5, df / (df + t * t))
    return tail if t >= 0 else 1.0 - tail


@lru_cache(maxsize=4096)  # simulations ask for the same few (level, df) pairs many times
def ppf(q: float, df: float) -> float:
    """The q-quantile of Student's t (0 < q < 1)."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"a quantile needs 0 < q < 1, got {q}")
    if q < 0.5:
        return -ppf(1.0 - q, df)
    target = 1.0 - q  # find t >= 0 with sf(t) = target
    low, high = 0.0, 1.0
    while sf(high, df) > target:
        high *= 2.0
    for _ in range(200):
        mid = 0.5 * (low + high)
        if sf(mid, df) > target:
            low = mid
        else:
            high = mid
        if high - low < 1e-13 * max(1.0, high):
            break
    return 0.5 * (low + high)
