"""Generation: settings resolution, logits processors, and the step-by-step loop."""

from .loop import Generation
from .processors import build_processors
from .settings import SETTINGS, resolve

__all__ = ["Generation", "build_processors", "SETTINGS", "resolve"]
