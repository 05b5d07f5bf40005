"""Logits processors: `processor(input_ids, scores) -> new scores`, in transformers' order and arithmetic.

Each class mirrors the transformers class of the same name (transformers/generation/logits_process.py) and
returns a new tensor; the input is never changed in place, so every intermediate stays available to show. Every
module of this package is imported here, and registers its classes (registry.py): a new processor is one class in
one file, and its knobs reach settings, validation, set_settings / what_if, the CLI and the step-through widgets.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from .base import FILTER_VALUE, BuildContext, LogitsProcessor
from .registry import PROCESSORS, build_processors, knobs, ordered, register, transformers_lacks

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
    # the classes are reachable as attributes of this package, as they were of the single module before
for _cls in PROCESSORS.values():
    globals()[_cls.__name__] = _cls


def __getattr__(name: str) -> Any:
    """Reached only for a name the loop above did not set, which fails as usual. It tells a type checker that the
    classes, set by name at import (their names are written nowhere in this file), exist: it sees them as Any."""
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "FILTER_VALUE",
    "BuildContext",
    "LogitsProcessor",
    "PROCESSORS",
    "build_processors",
    "knobs",
    "ordered",
    "transformers_lacks",
    "register",
    *sorted(cls.__name__ for cls in PROCESSORS.values()),
]
