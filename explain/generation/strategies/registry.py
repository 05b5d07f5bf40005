"""The registry of decoding strategies, and choose(): the strategy transformers' generate() runs for some settings.

Every module of this package registers its class with `@register`; the package imports all its modules, so a new
strategy is one class in one file (plus its tests). `order` is the order choose() asks in, which follows
transformers' GenerationConfig.get_generation_mode (transformers/generation/configuration_utils.py, 5.24) and
GENERATION_MODES_MAPPING (transformers/generation/utils.py):

      0 the modes transformers 5 moved to Hub `custom_generate` repositories (refused, with what to use)
     10 assisted_generation   assistant_model= or prompt_lookup_num_tokens=, one beam   GenerationMixin.
                                                                                         _assisted_decoding
     20 beam_search / beam_sample   num_beams > 1                                          GenerationMixin._beam_search
     30 sample, several sequences   num_return_sequences > 1, do_sample=True               GenerationMixin._sample
    100 greedy_search / sample      one sequence (generation/loop.py's Generation)        GenerationMixin._sample
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...errors import ExplainError
from ..knobs import Knob

if TYPE_CHECKING:  # only named in annotations: base.py's run imports settings, which reads this registry
    from .base import DecodingStrategy

STRATEGIES: dict[str, type[DecodingStrategy]] = {}  # class name -> class, filled by @register


def register(cls: type[DecodingStrategy]) -> type[DecodingStrategy]:
    for other in STRATEGIES.values():
        if other.order == cls.order:
            raise ValueError(f"{cls.__name__} has the order of {other.__name__}; each must be unique")
    STRATEGIES[cls.__name__] = cls
    return cls


def ordered() -> list[type[DecodingStrategy]]:
    return sorted(STRATEGIES.values(), key=lambda cls: cls.order)


def strategy_knobs() -> dict[str, Knob]:
    """Every knob a strategy declares, by name, in the strategies' order."""
    table: dict[str, Knob] = {}
    for cls in ordered():
        for knob in cls.knobs:
            if knob.name in table and table[knob.name] is not knob:
                raise ValueError(f"knob {knob.name!r} is declared twice ({cls.__name__}); declare it once")
            table[knob.name] = knob
    return table


def transformers_lacks(name: str) -> str | None:
    """Why backend="transformers" cannot take the knob `name`: it belongs to a strategy only explain has (its class
    declares in_transformers = False); None otherwise."""
    for cls in ordered():
        if not cls.in_transformers and any(knob.name == name for knob in cls.knobs):
            return (
                f"{name} is a knob of {cls.title} ({cls.__name__}), a decoding strategy that explain has and "
                f'transformers\' generate() does not: run it with backend="explain" (the default), or leave '
                f"{name} out"
            )
    return None


def choose(settings: dict) -> type[DecodingStrategy]:
    """The strategy these (validated) settings select: the first, in order, that applies."""
    for cls in ordered():
        if cls.applies(settings):
            return cls
    raise ExplainError("no decoding strategy applies to these settings")  # the default always applies


def settings_problem(settings: dict) -> str | None:
    """What is wrong with these settings for the strategy they select (or a mode explain refuses)."""
    for cls in ordered():
        problem = cls.settings_problem(settings)
        if problem:
            return problem
    return None


def plain_settings(settings: dict) -> dict:
    """The settings as the trace shows them: a strategy that takes objects (an assistant model) gives their labels."""
    for cls in ordered():
        plain = getattr(cls, "plain", None)
        if plain is not None:
            settings = plain(settings)
    return settings
