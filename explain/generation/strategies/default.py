"""The default strategy: one sequence, greedy (the most likely token) or sampled (torch.multinomial), each step
traced in full. The run is generation/loop.py's Generation, the readable loop every lesson starts from."""

from __future__ import annotations

from .base import DecodingStrategy
from .registry import register


@register
class OneSequence(DecodingStrategy):
    name, title, order = "one_sequence", "one sequence", 100
    description = "one sequence: the most likely token each step (greedy), or one drawn from the probabilities"
    source = "transformers/generation/utils.py, GenerationMixin._sample (greedy_search and sample)"

    @classmethod
    def applies(cls, settings):
        return True

    @classmethod
    def mode(cls, settings):
        return "sample" if settings.get("do_sample") else "greedy_search"

    @classmethod
    def label(cls, settings):
        return "sampling" if settings.get("do_sample") else "greedy decoding"

    @classmethod
    def run_class(cls):
        from ..loop import Generation  # loop imports the settings, which import this package

        return Generation
