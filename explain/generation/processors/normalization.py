"""The last processor: turn the scores back into log-probabilities (after guidance or watermarking changed them)."""

from __future__ import annotations

from ..knobs import Knob, Toggle, boolean
from .base import LogitsProcessor
from .registry import register


@register
class LogitNormalization(LogitsProcessor):
    """log_softmax: the scores become log-probabilities that sum (as probabilities) to one. Always last."""

    name, title, order = "renormalize_logits", "renormalize (log-softmax)", 999
    description = "replaces the scores by their log-softmax, so that they are log-probabilities again"
    knobs = (
        Knob(
            "renormalize_logits",
            None,
            "bool",
            "turn the final scores into log-probabilities",
            check=boolean,
            widget=Toggle("renormalize logits"),
        ),
    )

    @classmethod
    def build(cls, settings, context):
        return cls() if settings.get("renormalize_logits") is True else None

    def __call__(self, input_ids, scores):
        return scores.log_softmax(dim=-1)
