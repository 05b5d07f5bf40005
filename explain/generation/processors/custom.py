"""Your own processors: generate(logits_processor=[...]) runs each callable (input_ids, scores) -> scores, as
transformers does, after the built processors that act whether or not sampling (and before the warpers)."""

from __future__ import annotations

import torch

from ..knobs import Knob
from .base import LogitsProcessor
from .registry import MERGE_ORDER, register


def check_processor_list(value, vocab_size=None) -> str | None:
    if not isinstance(value, (list, tuple)) or not all(callable(p) for p in value):
        return (
            "must be a list of logits processors (callables (input_ids, scores) -> scores, such as "
            f"transformers.LogitsProcessorList([...])), got {value!r}"
        )
    return None


@register
class CallProcessor(LogitsProcessor):
    """One processor of the call's own `logits_processor` list. Its name is its class's name."""

    name, title, order = "logits_processor", "your processor", MERGE_ORDER
    description = "a processor you passed in logits_processor=[...]"
    knobs = (
        Knob(
            "logits_processor",
            None,
            "object",
            "your own logits processors, run after the built ones",
            check=check_processor_list,
            cli=False,
        ),
    )

    def __init__(self, function):
        self.function = function
        self.transformers_class_name = type(function).__name__
        self.replaces: str | None = None  # the built processor it took the place of, if any

    @classmethod
    def build(cls, settings, context):
        return None  # registry.merge_custom places these, as transformers' _merge_criteria_processor_list does

    @property
    def label(self) -> str:
        return getattr(self.function, "__name__", self.transformers_class_name)

    def args(self):
        return {"processor": self.label} | ({"replaces": self.replaces} if self.replaces else {})

    def __call__(self, input_ids, scores):
        # a copy in, so that a processor that writes in place cannot change the scores explain shows before it
        result = self.function(input_ids, scores.clone())
        if not isinstance(result, torch.Tensor) or result.shape != scores.shape:
            raise TypeError(
                f"logits processor {self.label} returned {type(result).__name__} "
                f"{tuple(getattr(result, 'shape', ()))}, not scores of shape {tuple(scores.shape)}"
            )
        return result
