"""Range checks for optimizer hyper-parameters: each failure names the config key."""

from __future__ import annotations

from collections.abc import Sequence


def check_positive(key: str, value: float) -> float:
    value = float(value)
    if not value > 0:
        raise ValueError(f"{key} must be > 0, got {value}")
    return value


def check_nonnegative(key: str, value: float) -> float:
    value = float(value)
    if not value >= 0:
        raise ValueError(f"{key} must be >= 0, got {value}")
    return value


def check_beta(key: str, value: float) -> float:
    value = float(value)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{key} must be in [0, 1), got {value}")
    return value


def check_betas(key: str, values: Sequence[float]) -> tuple[float, float]:
    if len(values) != 2:
        raise ValueError(f"{key} must be a pair [beta1, beta2], got {list(values)}")
    return check_beta(f"{key}[0]", values[0]), check_beta(f"{key}[1]", values[1])


def check_int_at_least(key: str, value: int, minimum: int) -> int:
    if int(value) != value or int(value) < minimum:
        raise ValueError(f"{key} must be an integer >= {minimum}, got {value}")
    return int(value)


def check_in(key: str, value: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{key} must be one of {list(choices)}, got '{value}'")
    return value
