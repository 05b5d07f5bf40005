"""Reading JSON that someone else wrote (a shared trace) strictly, with bounded resources.

Python's json module accepts more than JSON: NaN, Infinity and -Infinity literals, lone surrogates (`"\\ud800"`,
which no UTF-8 file can hold and json.dumps then cannot write), integers of any length (a 5,000-digit one costs
quadratic time and ends in a ValueError) and nesting as deep as the C stack allows (a value nested 600 deep loads,
then every recursive reader of it hits RecursionError). `loads` refuses each, naming the field where it is, so what
loads can always be written back. `read_file` reads at most `max_bytes` from a regular file: the limit counts the
bytes actually read (/dev/zero says its size is 0 and never ends), and a FIFO, a device or a folder is refused at
once, without blocking (the file is opened with O_NONBLOCK and checked with fstat before any read).
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from collections.abc import Iterable
from typing import Any

from .files import file_kind

MAX_DIGITS = 20  # an integer of more digits is beyond int64/uint64, which no event field holds
MAX_DEPTH = 64  # objects and lists inside each other; an explain trace nests about 8 deep
CHUNK = 1 << 20
LONE_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]", re.ASCII)  # the only way a JSON text holds a surrogate


class NotStrictJSON(ValueError):
    """A value JSON does not define or explain does not accept; `where` is the field's path ("meta.config.x")."""

    def __init__(self, where: str, problem: str):
        super().__init__(f"{where or 'the top level'}: {problem}")
        self.where, self.problem = where, problem


class NotRegularFile(OSError):
    """A path that is a folder, device, FIFO or socket, not a file to read."""

    def __init__(self, path: str, kind: str):
        super().__init__(f"{path} is {kind}, not a regular file")
        self.path, self.kind = path, kind


class TooLarge(ValueError):
    """A file longer than the limit; `size` is what fstat says (0 for a device that never ends)."""

    def __init__(self, path: str, limit: int, size: int):
        super().__init__(f"{path} is longer than {limit} bytes")
        self.path, self.limit, self.size = path, limit, size


def read_file(path: str, max_bytes: int) -> bytes:
    """The bytes of a regular file, at most `max_bytes` of them (TooLarge beyond), never blocking on a FIFO."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)  # a FIFO with no writer opens at once with O_NONBLOCK, and fstat then says what it is
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotRegularFile(path, file_kind(info.st_mode))
        if info.st_size > max_bytes:
            raise TooLarge(path, max_bytes, info.st_size)
        chunks, count = [], 0
        while True:  # a file that grows while it is read (or lies about its size) still stops at the limit
            chunk = os.read(fd, min(CHUNK, max_bytes + 1 - count))
            if not chunk:
                break
            chunks.append(chunk)
            count += len(chunk)
            if count > max_bytes:
                raise TooLarge(path, max_bytes, info.st_size)
        return b"".join(chunks)
    finally:
        os.close(fd)


class _Refused:
    """What the parser puts where a refused value was, so the walk can say which field held it."""

    def __init__(self, problem: str):
        self.problem = problem


def _constant(name: str) -> _Refused:
    return _Refused(
        f"{name} is not a JSON number (JSON has no NaN or infinities; explain writes them as the strings "
        '"nan", "inf", "-inf")'
    )


def _integer(text: str):
    if len(text.lstrip("-")) > MAX_DIGITS:
        return _Refused(
            f"an integer of {len(text.lstrip('-'))} digits (more than {MAX_DIGITS}; no field of a trace holds one)"
        )
    return int(text)


def _float(text: str):
    value = float(text)
    if not math.isfinite(value):
        return _Refused(f"{text[:30]} is beyond the range of a double (it would read as infinity)")
    return value


def _field(where: str, key) -> str:
    return f"{where}[{key}]" if isinstance(key, int) else (f"{where}.{key}" if where else str(key))


def loads(data: bytes, surrogates_possible: bool | None = None):
    """Parse UTF-8 JSON strictly (see the module's docstring); raises NotStrictJSON naming the field, or
    json.JSONDecodeError / UnicodeDecodeError for text that is not JSON. The nesting depth is the caller's to check
    (check_depth), where no schema bounds it already."""
    flagged: list[_Refused] = []

    def refuse_constant(name):
        flagged.append(_constant(name))
        return flagged[-1]

    def integer(text):
        value = _integer(text)
        if isinstance(value, _Refused):
            flagged.append(value)
        return value

    def number(text):
        value = _float(text)
        if isinstance(value, _Refused):
            flagged.append(value)
        return value

    hooks: dict[str, Any] = {"parse_constant": refuse_constant}
    if _long_numbers(data):  # a hook per number costs seconds on a large trace: only when a number may need it
        hooks.update(parse_int=integer, parse_float=number)
    value = json.loads(data.decode("utf-8"), **hooks)
    if surrogates_possible is None:  # a byte search first: the regular expression is slower on a large file
        surrogates_possible = (b"\\ud" in data or b"\\uD" in data) and LONE_SURROGATE_ESCAPE.search(data) is not None
    if flagged or surrogates_possible:
        _walk(value, bool(flagged), surrogates_possible)  # find the field; it also checks the depth
    return value


_DIGITS_AS_ZERO = bytes.maketrans(b"123456789E", b"000000000e")
_LONG_RUN = b"0" * (MAX_DIGITS + 1)


def _long_numbers(data: bytes) -> bool:
    """Whether the text may hold an integer of more than MAX_DIGITS digits or a number beyond a double's range (an
    exponent of 3 digits, or 21 digits in a row): two byte searches on a copy whose digits are all 0, far faster
    than a regular expression."""
    flat = data.translate(_DIGITS_AS_ZERO)
    return _LONG_RUN in flat or b"e000" in flat or b"e+000" in flat or b"e-000" in flat


def check_depth(value, where: str = "", limit: int = MAX_DEPTH) -> None:
    """NotStrictJSON when `value` holds objects and lists nested more than `limit` deep. loads() leaves this to its
    caller, which knows where the depth is not already bounded (explain.events checks the declared fields; only
    meta and the fields no declaration names need this walk)."""
    if isinstance(value, (dict, list)):
        _walk(value, False, False, limit, where)


def _walk(value, refused: bool, surrogates: bool, limit: int = MAX_DEPTH, start: str = "") -> None:
    """Check the depth of every container and, when the parse flagged something, find where it is."""
    stack = [(value, start, 1)]
    while stack:
        item, where, depth = stack.pop()
        children: Iterable[tuple[Any, Any]]
        if isinstance(item, dict):
            children = item.items()
        elif isinstance(item, list):
            children = enumerate(item)
        else:
            continue
        if depth > limit:
            raise NotStrictJSON(_shorten(where), f"nested more than {limit} deep (objects and lists inside each other)")
        for key, child in children:
            if isinstance(child, (dict, list)):
                stack.append((child, _field(where, key), depth + 1))
            elif refused and isinstance(child, _Refused):
                raise NotStrictJSON(_field(where, key), child.problem)
            elif surrogates and isinstance(child, str) and not _encodes(child):
                raise NotStrictJSON(
                    _field(where, key), f"{_lone_surrogate(child)} (half of a UTF-16 pair), which is not a character"
                )
            if surrogates and isinstance(key, str) and not _encodes(key):
                raise NotStrictJSON(
                    _field(where, key),
                    f"the key holds {_lone_surrogate(key)} (half of a UTF-16 pair), which is not a character",
                )
    if isinstance(value, _Refused):
        raise NotStrictJSON("", value.problem)
    if surrogates and isinstance(value, str) and not _encodes(value):
        raise NotStrictJSON("", f"{_lone_surrogate(value)}, which is not a character")


def _shorten(where: str) -> str:
    return where if len(where) <= 100 else f"{where[:50]}...{where[-40:]}"


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _lone_surrogate(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        return f"a lone surrogate {text[error.start]!r} at character {error.start}"
    return "no lone surrogate"
