"""Decoding strategies: how generate() turns next-token scores into sequences. A registry of same-signature classes
(base.py, registry.py); importing the package imports every module of it, and each registers its class, so a new
strategy is one module here. The default, greedy decoding or sampling of one sequence, is generation/loop.py's
Generation (default.py points at it)."""

import importlib
import pkgutil

from .registry import STRATEGIES, choose, ordered, register

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["STRATEGIES", "choose", "ordered", "register"]
