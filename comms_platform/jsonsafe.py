"""JSON read from the internet, refused before it can break something further down.

PostgreSQL's ``jsonb`` refuses ``NaN`` and ``Infinity`` (which Python's ``json`` accepts, and
which ``1e400`` becomes), and Python's parser raises ``RecursionError`` on deep nesting. Every
place that reads JSON from a request (the API's parser, the SendGrid webhook) goes through
``loads``, which raises ``UnsafeJSON`` (a ValueError) for all of these, so the caller answers 400.
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_DEPTH = 64


class UnsafeJSON(ValueError):
    pass


def _refuse_constant(name: str) -> Any:
    raise UnsafeJSON(f"{name} is not a number JSON allows")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise UnsafeJSON(f"the number {text[:40]} is too large")
    return value


def nesting_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in ``text`` (brackets inside strings ignored)."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def loads(data: bytes | str, *, max_depth: int = MAX_DEPTH, allow_non_finite: bool = False) -> Any:
    """``json.loads`` that refuses nesting deeper than ``max_depth`` and, unless allowed,
    ``NaN``/``Infinity`` and numbers too large for a float (UnsafeJSON, a ValueError)."""
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    # Counting brackets is cheap; the character scan runs only when nesting is possible.
    if text.count("[") + text.count("{") > max_depth and nesting_depth(text) > max_depth:
        raise UnsafeJSON(f"nesting deeper than {max_depth} levels")
    if allow_non_finite:
        return json.loads(text)
    return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)


def non_finite_path(value: Any, path: str = "$") -> str | None:
    """Where in ``value`` a NaN or infinite number is (a JSON path), or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return path
    if isinstance(value, dict):
        for key, item in value.items():
            found = non_finite_path(item, f"{path}.{key}")
            if found:
                return found
    elif isinstance(value, list):
        for n, item in enumerate(value):
            found = non_finite_path(item, f"{path}[{n}]")
            if found:
                return found
    return None


def storable(value: Any) -> Any:
    """``value`` with every non-finite number replaced by its name (``"NaN"``, ``"Infinity"``)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {key: storable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [storable(item) for item in value]
    return value
