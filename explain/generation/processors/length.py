"""Processors about where the text ends: keep EOS away until a minimum length, force the first or last token,
and make EOS more likely the longer the text grows."""

from __future__ import annotations

import torch

from ..knobs import Knob, is_integer, number, token_id, token_ids
from .base import FILTER_VALUE, LogitsProcessor, eos_ids, require, token_mask
from .registry import register

LENGTH = number(0, integer=True)


def _suppress(scores: torch.Tensor, token_ids_: list[int]) -> torch.Tensor:
    return torch.where(token_mask(scores, token_ids_), FILTER_VALUE, scores)


@register
class MinLengthLogitsProcessor(LogitsProcessor):
    """EOS is impossible until the whole sequence (prompt included) has min_length tokens."""

    name, title, order = "min_length", "minimum length", 80
    description = "makes EOS impossible until the text, prompt included, has min_length tokens"
    knobs = (Knob("min_length", 0, "int", "EOS is impossible before this many tokens, prompt included", check=LENGTH),)

    def __init__(self, min_length: int, eos_token_ids: list[int]):
        require(self.knobs[0], min_length)
        self.min_length, self.eos_token_ids = int(min_length), list(eos_token_ids)

    @classmethod
    def build(cls, settings, context):
        eos, length = eos_ids(settings), settings.get("min_length")
        return cls(length, eos) if eos and length is not None and length > 0 else None

    def args(self):
        return {"min_length": self.min_length, "eos_token_ids": self.eos_token_ids}

    def __call__(self, input_ids, scores):
        if input_ids.shape[-1] >= self.min_length:
            return scores.clone()
        return _suppress(scores, self.eos_token_ids)


@register
class MinNewTokensLengthLogitsProcessor(LogitsProcessor):
    """EOS is impossible until min_new_tokens tokens have been generated."""

    name, title, order = "min_new_tokens", "minimum new tokens", 90
    description = "makes EOS impossible until min_new_tokens tokens have been generated"
    knobs = (Knob("min_new_tokens", None, "int", "EOS is impossible before this many new tokens", check=LENGTH),)

    def __init__(self, prompt_length: int, min_new_tokens: int, eos_token_ids: list[int]):
        require(self.knobs[0], min_new_tokens)
        self.prompt_length, self.min_new_tokens = int(prompt_length), int(min_new_tokens)
        self.eos_token_ids = list(eos_token_ids)

    @classmethod
    def build(cls, settings, context):
        eos, count = eos_ids(settings), settings.get("min_new_tokens")
        return cls(context.prompt_length, count, eos) if eos and count is not None and count > 0 else None

    def args(self):
        return {"min_new_tokens": self.min_new_tokens, "eos_token_ids": self.eos_token_ids}

    def __call__(self, input_ids, scores):
        if input_ids.shape[-1] - self.prompt_length >= self.min_new_tokens:
            return scores.clone()
        return _suppress(scores, self.eos_token_ids)


@register
class ForcedBOSTokenLogitsProcessor(LogitsProcessor):
    """When the text is a single token, the next one must be forced_bos_token_id (every other is impossible)."""

    name, title, order = "forced_bos_token_id", "forced first token", 110
    description = "when the text is one token long, forces this token next"
    knobs = (
        Knob("forced_bos_token_id", None, "int", "the token forced right after a one-token prompt", check=token_id),
    )

    def __init__(self, bos_token_id: int):
        require(self.knobs[0], bos_token_id)
        self.bos_token_id = int(bos_token_id)

    @classmethod
    def build(cls, settings, context):
        value = settings.get("forced_bos_token_id")
        return cls(value) if value is not None else None

    def args(self):
        return {"bos_token_id": self.bos_token_id}

    def __call__(self, input_ids, scores):
        if input_ids.shape[-1] != 1:
            return scores.clone()
        forced = torch.full_like(scores, FILTER_VALUE)
        forced[:, self.bos_token_id] = 0
        return forced


@register
class ForcedEOSTokenLogitsProcessor(LogitsProcessor):
    """At the last position max_length allows, EOS is forced (every other token is impossible)."""

    name, title, order = "forced_eos_token_id", "forced last token", 120
    description = "forces this token (usually EOS) as the last one max_length allows"
    knobs = (
        Knob(
            "forced_eos_token_id",
            None,
            "json",
            "the token(s) forced at the last position max_length allows",
            check=token_ids,
        ),
    )

    def __init__(self, max_length: int, eos_token_id):
        require(self.knobs[0], eos_token_id)
        self.max_length = int(max_length)
        self.eos_token_ids = [int(eos_token_id)] if is_integer(eos_token_id) else [int(e) for e in eos_token_id]

    @classmethod
    def build(cls, settings, context):
        value = settings.get("forced_eos_token_id")
        return cls(settings["max_length"], value) if value is not None else None

    def args(self):
        return {"max_length": self.max_length, "eos_token_ids": self.eos_token_ids}

    def __call__(self, input_ids, scores):
        if input_ids.shape[-1] != self.max_length - 1:
            return scores.clone()
        forced = torch.full_like(scores, FILTER_VALUE)
        forced[:, self.eos_token_ids] = 0
        return forced


def check_decay(value, vocab_size=None) -> str | None:
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 2
        or not is_integer(value[0])
        or value[0] < 0
        or number()(value[1]) is not None
    ):
        return (
            f"must be a pair (start, decay factor): after `start` new tokens the EOS logit grows by "
            f"factor ** (tokens past start); e.g. (10, 1.5), got {value!r}"
        )
    return None


@register
class ExponentialDecayLengthPenalty(LogitsProcessor):
    """After `start` new tokens, the EOS logits grow by |logit| * (factor ** (tokens past start) - 1)."""

    name, title, order = "exponential_decay_length_penalty", "EOS boost with length", 140
    description = "after `start` new tokens, makes EOS exponentially more likely with every token"
    knobs = (
        Knob(
            "exponential_decay_length_penalty",
            None,
            "json",
            "(start, factor): after start new tokens, raise EOS by factor per token",
            check=check_decay,
            convert=lambda value: [int(value[0]), float(value[1])],
        ),
    )

    def __init__(self, exponential_decay_length_penalty, eos_token_ids: list[int], prompt_length: int):
        require(self.knobs[0], exponential_decay_length_penalty)
        self.start, self.factor = int(exponential_decay_length_penalty[0]), exponential_decay_length_penalty[1]
        self.regulation_start = self.start + prompt_length
        self.eos_token_ids = list(eos_token_ids)

    @classmethod
    def settings_problem(cls, settings):
        if settings.get("exponential_decay_length_penalty") is not None and not eos_ids(settings):
            return (
                "exponential_decay_length_penalty raises the EOS logit, but there is no eos_token_id; "
                "pass eos_token_id too"
            )
        return None

    @classmethod
    def build(cls, settings, context):
        value = settings.get("exponential_decay_length_penalty")
        return cls(value, eos_ids(settings), context.prompt_length) if value is not None else None

    def args(self):
        return {"start": self.start, "factor": self.factor}

    def __call__(self, input_ids, scores):
        length = input_ids.shape[-1]
        if length <= self.regulation_start:
            return scores.clone()
        eos_scores = scores[:, self.eos_token_ids]  # (B, number of EOS ids)
        # the penalty is computed on |logit| and added, so that negative logits grow too
        penalty = torch.abs(eos_scores) * (pow(self.factor, length - self.regulation_start) - 1)
        penalty = penalty.masked_fill(~torch.isfinite(eos_scores), 0.0)
        penalties = torch.zeros_like(scores)
        penalties[:, self.eos_token_ids] = penalty
        return scores + penalties
