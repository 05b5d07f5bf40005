"""One check for a step number or a token id that a user passes (generation.inspect / what_if / force, on both
backends): an integer (a Python, numpy or 0-d torch integer), never a bool, a float or a string, and inside the
range that exists. A negative step is refused everywhere (what_if(-1) used to answer for the newest step while
force(-1, ...) refused): steps are named by the number the views and the trace show, 0 for the first.
"""

from __future__ import annotations

import operator

from ..errors import ArgumentError


def whole_number(value, what: str) -> int:
    """`value` as an int, or an ArgumentError naming `what`: True would be step 1, 1.0 and "1" are not numbers."""
    floating = getattr(value, "is_floating_point", None)  # a torch tensor, without importing torch here
    if isinstance(value, (bool, float, str, bytes)) or (callable(floating) and floating()):
        raise ArgumentError(f"the {what} must be an integer (an int), got {value!r:.60} of type {type(value).__name__}")
    try:
        return operator.index(value)
    except TypeError:
        raise ArgumentError(
            f"the {what} must be an integer (an int), got {value!r:.60} of type {type(value).__name__}"
        ) from None


def step_number(value, count: int) -> int:
    """A step of a run that has made `count` steps: 0 <= step < count."""
    step = whole_number(value, "step")
    if not 0 <= step < count:
        have = f"steps 0..{count - 1} exist" if count else "no step has been generated yet"
        newest = (
            f" (negative steps are not counted from the end: name the step, e.g. the newest, {count - 1})"
            if step < 0 and count
            else ""
        )
        raise ArgumentError(f"step {step} has not been generated; {have}{newest}")
    return step


def token_number(value, vocab_size: int) -> int:
    """A token id of a vocabulary of `vocab_size`: 0 <= id < vocab_size."""
    token_id = whole_number(value, "token id")
    if not 0 <= token_id < vocab_size:
        raise ArgumentError(f"token id {token_id} is outside the vocabulary (0..{vocab_size - 1})")
    return token_id
