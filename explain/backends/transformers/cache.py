"""transformers' Cache cut back to a step: what a step-through's branch and explain.inside's replay of a step start
from (generation.py and inside.py both use it; neither imports the other for it)."""

from __future__ import annotations

import copy


def cropped(cache, length: int):
    """A copy of transformers' Cache holding its first `length` positions, or None when it cannot be cropped."""
    if cache is None:
        return None
    try:
        copied = copy.deepcopy(cache)
        copied.crop(-(copied.get_seq_length() - length))  # transformers 5: a negative count of tokens to remove
    except (RuntimeError, ValueError, NotImplementedError):
        return None
    return copied if copied.get_seq_length() == length else None
