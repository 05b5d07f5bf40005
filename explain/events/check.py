"""Checking a plain JSON record against a TypedDict declaration, the way a trace file is checked on load.

Only the types the event declarations use are understood: str, int, float (an int, a float, or the strings
"inf", "-inf", "nan" that `explain.trace.plain` writes for values JSON cannot hold), bool, None, Any, Literal,
unions, list[X], dict[str, X] and nested TypedDicts. Keys a declaration does not name are allowed (a newer
producer may add facts), so only the declared fields are promised to readers.
"""

from __future__ import annotations

import types
import typing
from functools import cache
from typing import Any, Literal, NotRequired, Required, Union, get_args, get_origin, get_type_hints

NON_FINITE = ("inf", "-inf", "nan")


class SchemaError(ValueError):
    """A record that does not fit its declaration; `path` names the field (e.g. "processors[2].top.ids[0]")."""

    def __init__(self, path: str, problem: str):
        super().__init__(f"{path}: {problem}" if path else problem)
        self.path, self.problem = path, problem


@cache
def fields_of(declaration: type) -> tuple[dict[str, Any], frozenset[str]]:
    """(field -> type, required fields) of a TypedDict."""
    hints = get_type_hints(declaration)
    # a TypedDict class: typing has no type for one that declares __required_keys__
    return hints, frozenset(declaration.__required_keys__)  # type: ignore[attr-defined]


def _name(kind: Any) -> str:
    if kind is type(None):
        return "null"
    if isinstance(kind, type):
        return {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false",
                "list": "a list", "dict": "an object"}.get(kind.__name__, kind.__name__)
    origin = get_origin(kind)
    if origin in (Union, types.UnionType):
        return " or ".join(_name(k) for k in get_args(kind))
    if origin is Literal:
        return "one of " + ", ".join(repr(v) for v in get_args(kind))
    if origin is list:
        return "a list"
    if origin is dict:
        return "an object"
    return str(kind)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check(value: Any, kind: Any, path: str = "") -> None:
    """Raise SchemaError at the first place `value` does not fit `kind`."""
    if kind is Any:
        return
    origin = get_origin(kind)
    if origin in (Required, NotRequired):
        return check(value, get_args(kind)[0], path)
    if origin in (Union, types.UnionType):
        for option in get_args(kind):
            try:
                return check(value, option, path)
            except SchemaError:
                continue
        raise SchemaError(path, f"expected {_name(kind)}, got {_short(value)}")
    if origin is Literal:
        if value not in get_args(kind):
            raise SchemaError(path, f"expected {_name(kind)}, got {_short(value)}")
        return None
    if origin is list:
        if not isinstance(value, list):
            raise SchemaError(path, f"expected a list, got {_short(value)}")
        (item,) = get_args(kind)
        if item is not Any:
            for i, element in enumerate(value):
                check(element, item, f"{path}[{i}]")
        return None
    if origin is dict:
        if not isinstance(value, dict):
            raise SchemaError(path, f"expected an object, got {_short(value)}")
        _, item = get_args(kind)
        if item is not Any:
            for key, element in value.items():
                check(element, item, f"{path}.{key}" if path else str(key))
        return None
    if typing.is_typeddict(kind):
        return check_record(value, kind, path)
    if kind is type(None):
        if value is not None:
            raise SchemaError(path, f"expected null, got {_short(value)}")
        return None
    if kind is bool:
        if not isinstance(value, bool):
            raise SchemaError(path, f"expected true or false, got {_short(value)}")
        return None
    if kind is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise SchemaError(path, f"expected an integer, got {_short(value)}")
        return None
    if kind is float:
        if isinstance(value, bool) or not (isinstance(value, (int, float)) or value in NON_FINITE):
            raise SchemaError(path, f"expected a number, got {_short(value)}")
        return None
    if kind is str:
        if not isinstance(value, str):
            raise SchemaError(path, f"expected a string, got {_short(value)}")
        return None
    raise TypeError(f"the schema uses a type the checker does not know: {kind!r}")


def check_record(value: Any, declaration: type, path: str = "", partial: bool = False) -> None:
    """Check a dict against a TypedDict; with partial=True (a stage that failed), required fields may be absent."""
    if not isinstance(value, dict):
        raise SchemaError(path, f"expected an object, got {_short(value)}")
    hints, required = fields_of(declaration)
    if not partial:
        missing = sorted(required - value.keys())
        if missing:
            raise SchemaError(path, f"lacks the field{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    for key, kind in hints.items():
        if key in value:
            check(value[key], kind, f"{path}.{key}" if path else key)
