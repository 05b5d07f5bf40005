"""Decoding strategies: how generate() turns next-token scores into sequences. A registry of same-signature classes
(base.py, registry.py); importing the package registers every module's class. The default, greedy decoding or
sampling of one sequence, is generation/loop.py's Generation (default.py points at it)."""

from . import assisted, beam, default, hub, samples  # noqa: F401  (each registers its class)
from .registry import STRATEGIES, choose, ordered, register

__all__ = ["STRATEGIES", "choose", "ordered", "register"]
