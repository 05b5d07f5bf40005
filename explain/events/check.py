"""Checking a plain JSON record against a TypedDict declaration, the way a trace file is checked on load.

Only the types the event declarations use are understood: str, int, float (an int, a float, or the strings
"inf", "-inf", "nan" that `explain.trace.plain` writes for values JSON cannot hold), bool, None, Any, Literal,
unions, list[X], dict[str, X] and nested TypedDicts. Keys a declaration does not name are allowed (a newer
producer may add facts), so only the declared fields are promised to readers.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from functools import cache
from typing import Any, Literal, NotRequired, Required, Union, get_args, get_origin, get_type_hints

NON_FINITE = ("inf", "-inf", "nan")
MAX_FREE_DEPTH = 32  # objects and lists inside a field no declaration describes (Any, or a key it does not name)


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
        return {
            "str": "a string",
            "int": "an integer",
            "float": "a number",
            "bool": "true or false",
            "list": "a list",
            "dict": "an object",
        }.get(kind.__name__, kind.__name__)
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


def _too_deep(value: Any, limit: int = MAX_FREE_DEPTH) -> bool:
    """Whether `value` nests objects and lists more than `limit` deep (a file's undeclared field could nest 600
    deep and then break every recursive reader: the views, json.dumps on save)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def _free(value: Any, path: str) -> None:
    """A field no declaration describes: any JSON, nested at most MAX_FREE_DEPTH deep."""
    if isinstance(value, (dict, list)) and _too_deep(value):
        raise SchemaError(path, f"nested more than {MAX_FREE_DEPTH} deep (objects and lists inside each other)")


def check(value: Any, kind: Any, path: str = "") -> None:
    """Raise SchemaError at the first place `value` does not fit `kind`."""
    if kind is Any:
        return _free(value, path)
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
        for i, element in enumerate(value):
            check(element, item, f"{path}[{i}]")
        return None
    if origin is dict:
        if not isinstance(value, dict):
            raise SchemaError(path, f"expected an object, got {_short(value)}")
        _, item = get_args(kind)
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
    if not partial and fits(declaration)(value):
        return None
    if not isinstance(value, dict):
        raise SchemaError(path, f"expected an object, got {_short(value)}")
    hints, required = fields_of(declaration)
    if not partial:
        missing = sorted(required - value.keys())
        if missing:
            raise SchemaError(path, f"lacks the field{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    for key, element in value.items():
        here = f"{path}.{key}" if path else key
        if key in hints:
            check(element, hints[key], here)
        else:
            _free(element, here)  # a newer producer's fact: allowed, but bounded


# -- the fast path: a predicate per declaration, compiled once --------------------------------------------------
# A trace of 7,000 steps holds millions of values; walking the declarations with get_origin for each costs seconds.
# `fits(declaration)` is the same test as check_record, as one predicate per type built once; only a record that
# fails it is walked again by check_record, which says where and why.


def _predicate(kind: Any) -> Callable[[Any], bool]:
    if kind is Any:
        return lambda value: not (isinstance(value, (dict, list)) and _too_deep(value))
    origin = get_origin(kind)
    if origin in (Required, NotRequired):
        return _predicate(get_args(kind)[0])
    if origin in (Union, types.UnionType):
        options = [_predicate(option) for option in get_args(kind)]
        return lambda value: any(option(value) for option in options)
    if origin is Literal:
        allowed = get_args(kind)
        return lambda value: value in allowed
    if origin is list:
        (item,) = get_args(kind)
        if item is float:  # the common case by far: probabilities, logits
            return lambda value: type(value) is list and all(type(x) is float or _number(x) for x in value)
        if item is int:
            return lambda value: type(value) is list and all(type(x) is int for x in value)
        element = _predicate(item)
        return lambda value: type(value) is list and all(map(element, value))
    if origin is dict:
        _, item = get_args(kind)
        element = _predicate(item)
        return lambda value: type(value) is dict and all(map(element, value.values()))
    if typing.is_typeddict(kind):
        return fits(kind)
    if kind is type(None):
        return lambda value: value is None
    if kind is bool:
        return lambda value: value is True or value is False
    if kind is int:
        return lambda value: type(value) is int or (isinstance(value, int) and not isinstance(value, bool))
    if kind is float:
        return _number
    if kind is str:
        return lambda value: isinstance(value, str)
    raise TypeError(f"the schema uses a type the checker does not know: {kind!r}")


def _number(value: Any) -> bool:
    return (
        type(value) in (int, float)
        or (isinstance(value, (int, float)) and not isinstance(value, bool))
        or (isinstance(value, str) and value in NON_FINITE)
    )


_FITS: dict[type, Callable[[Any], bool]] = {}


def fits(declaration: type) -> Callable[[Any], bool]:
    """A predicate: does a (complete) record fit `declaration`? Built once per declaration."""
    found = _FITS.get(declaration)
    if found is not None:
        return found
    hints, required = fields_of(declaration)
    declared: dict[str, Callable[[Any], bool]] = {}

    def record(value: Any) -> bool:
        if type(value) is not dict or not required <= value.keys():
            return False
        for key, element in value.items():
            test = declared.get(key)
            if test is None:
                if isinstance(element, (dict, list)) and _too_deep(element):
                    return False
            elif not test(element):
                return False
        return True

    _FITS[declaration] = record  # before the fields: a declaration may name itself
    declared.update({key: _predicate(kind) for key, kind in hints.items()})
    return record
