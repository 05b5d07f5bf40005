"""Values read from a trace, made safe for a page: numbers that are numbers, text that is escaped.

A trace is a file people share, so any field may hold anything: a step's `rank` may be the string
`<img src=x onerror=...>`. Every value that reaches HTML goes through `esc` (text) or `fmt` (a number, formatted
only when it is one, escaped otherwise), and every value that reaches the JavaScript views as a number goes
through `number` / `integer` first, so a view never formats or draws a string it took for a number.
"""

from __future__ import annotations

import math
from html import escape


def number(value) -> float | None:
    """A finite float, or None for anything else (strings, None, inf and nan, booleans)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def integer(value) -> int | None:
    """An int, or None for anything else (floats with a fraction, strings, booleans)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def text(value, default: str = "") -> str:
    """A string as it is; anything else as its str() (escape it before it reaches HTML)."""
    if value is None:
        return default
    return value if isinstance(value, str) else str(value)


def esc(value) -> str:
    """Any value as HTML text (quotes escaped too, so it is safe inside an attribute)."""
    return escape(text(value), quote=True)


def fmt(value, spec: str = "", default: str = "?") -> str:
    """A number formatted with `spec` when it is one; otherwise the value escaped (or `default` when None)."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return esc(value)
    try:
        return esc(format(value, spec))
    except (ValueError, TypeError):
        return esc(value)
