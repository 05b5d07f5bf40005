"""Top-h sampling (transformers 5): keep the most likely tokens until they hold a share of the entropy."""

from __future__ import annotations

import torch

from ..knobs import Knob, Slider, number
from .base import FILTER_VALUE, LogitsProcessor, require
from .registry import register


@register
class TopHLogitsWarper(LogitsProcessor):
    """Among the 100 most likely tokens, keep the most likely ones until their entropy share reaches top_h of the
    whole entropy (always at least the top one)."""

    name, title, order, sampling_only = "top_h", "top-h (entropy)", 180, True  # after temperature, before top-k
    description = "keeps the most likely tokens until their share of the entropy reaches top_h"
    knobs = (
        Knob(
            "top_h",
            None,
            "float",
            "keep the top tokens until they hold this share of the entropy",
            check=number(0, 1, low_open=True),
            sampling_only=True,
            widget=Slider(0.0, 1.0, 0.05, "top-h", off=0.0),
        ),
    )
    top_n = 100  # transformers' cap on the tokens considered

    def __init__(self, top_h: float):
        require(self.knobs[0], top_h)
        self.top_h = float(top_h)

    @classmethod
    def build(cls, settings, context):
        value = settings.get("top_h")
        return cls(value) if value is not None else None

    def args(self):
        return {"top_h": self.top_h}

    def __call__(self, input_ids, scores):
        batch, vocab_size = scores.shape
        top_logits, top_ids = torch.topk(scores, min(self.top_n, vocab_size), dim=-1, largest=True, sorted=True)
        distribution = torch.distributions.Categorical(logits=top_logits)
        probs = distribution.probs  # (B, top_n)
        tau = (distribution.entropy() * self.top_h).unsqueeze(-1)  # (B, 1): the entropy budget
        cumulative_entropy = torch.cumsum(-probs * torch.log(probs), dim=-1)
        selected = cumulative_entropy <= tau
        selected[:, 0] = True
        keep = torch.zeros((batch, vocab_size), dtype=torch.bool, device=scores.device)
        keep.scatter_(dim=1, index=top_ids, src=selected)
        return scores.masked_fill(~keep, FILTER_VALUE)
