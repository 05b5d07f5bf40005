"""Generation: the knobs, settings resolution, the registry of logits processors, and the step-by-step loop."""

from .contract import GenerationInterface, RunState
from .knobs import Slider, Toggle
from .loop import Generation
from .options import RunOptions
from .processors import build_processors
from .settings import KNOBS, SETTINGS, resolve

__all__ = [
    "Generation",
    "GenerationInterface",
    "RunOptions",
    "RunState",
    "build_processors",
    "KNOBS",
    "SETTINGS",
    "resolve",
    "Slider",
    "Toggle",
]
