"""Range checks and strict typed construction of config dataclasses: each failure names the key.

``from_mapping`` turns a composed config node into a dataclass (unknown, missing and mistyped keys
are errors); the ``check_*`` helpers are the range checks the dataclasses call on themselves.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any


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


# ------------------------------------------------------------------ typed construction from config
def from_mapping(cls: type[T], values: Mapping[str, Any], prefix: str) -> T:
    """Build the dataclass ``cls`` from a config mapping, strictly: an unknown or missing key, or a
    value of the wrong type, raises ValueError naming ``<prefix>.<key>``. Nested dataclass fields are
    built recursively; lists become tuples where the field is a tuple. Range checks are the class's
    own (``__post_init__`` / ``validate``)."""
    if not isinstance(values, Mapping):
        raise ValueError(f"{prefix} must be a mapping of keys, got {values!r}")
    hints = typing.get_type_hints(cls)
    fields = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"{prefix}.{unknown[0]} is not a known key (known: {', '.join(fields)})")
    missing = [name for name in fields if name not in values and not _has_default(cls, name)]
    if missing:
        raise ValueError(f"{prefix}.{missing[0]} is missing; set it in the YAML or on the command line")
    return cls(**{name: _coerce(hints[name], values[name], f"{prefix}.{name}") for name in fields if name in values})


T = typing.TypeVar("T")


def _has_default(cls: type, name: str) -> bool:
    field = next(f for f in dataclasses.fields(cls) if f.name == name)
    return field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING


def _coerce(hint: Any, value: Any, key: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        for option in options[:-1]:  # the first type that takes the value
            try:
                return _coerce(option, value, key)
            except ValueError:
                pass
        return _coerce(options[-1], value, key)
    if dataclasses.is_dataclass(hint):
        return from_mapping(hint, value, key)
    if origin is tuple:
        if not isinstance(value, Sequence) or isinstance(value, str):
            raise ValueError(f"{key} must be a list, got {value!r}")
        items = args if args and args[-1] is not Ellipsis else (args[0],) * len(value)
        if len(items) != len(value):
            raise ValueError(f"{key} must be a list of {len(items)} values, got {list(value)}")
        return tuple(_coerce(h, v, f"{key}[{i}]") for i, (h, v) in enumerate(zip(items, value)))
    if origin in (dict, Mapping) or hint in (dict, Any):
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{key} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{key} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{key} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ValueError(f"{key} must be a string, got {value!r}")
        return value
    return value
