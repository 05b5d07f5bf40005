"""Hard constraints on which tokens may come next: a token list that is never allowed, one that is not allowed
first, a function that names the allowed tokens, and the clean-up of inf/nan logits."""

from __future__ import annotations

import torch

from ...errors import ExplainError
from ..knobs import Knob, boolean, is_integer, token_list
from .base import FILTER_VALUE, LogitsProcessor, require, token_mask
from .registry import register


@register
class SuppressTokensLogitsProcessor(LogitsProcessor):
    """The given tokens are impossible at every step."""

    name, title, order = "suppress_tokens", "suppressed tokens", 150
    description = "makes the given tokens impossible at every step"
    knobs = (
        Knob(
            "suppress_tokens",
            None,
            "json",
            "[token ids] that are never generated",
            check=token_list,
            convert=lambda value: [int(t) for t in value],
        ),
    )

    def __init__(self, suppress_tokens):
        require(self.knobs[0], suppress_tokens)
        self.suppress_tokens = [int(t) for t in suppress_tokens]

    @classmethod
    def settings_problem(cls, settings):
        """transformers' GenerationConfig.validate refuses forcing a token that is suppressed (the step would have
        no possible token at all)."""
        suppressed = settings.get("suppress_tokens")
        if suppressed is None:
            return None
        for forced_name in ("forced_bos_token_id", "forced_eos_token_id"):
            forced = settings.get(forced_name)
            if forced is None:
                continue
            forced = {forced} if is_integer(forced) else set(forced)
            if forced and forced <= set(suppressed):
                return (
                    f"every token of {forced_name} ({sorted(forced)}) is also in suppress_tokens: at the forcing "
                    "step no token would be possible; remove it from one of them (to keep the model from ending "
                    "early, use min_new_tokens)"
                )
        return None

    @classmethod
    def build(cls, settings, context):
        value = settings.get("suppress_tokens")
        return cls(value) if value is not None else None

    def args(self):
        return {"suppress_tokens": self.suppress_tokens}

    def __call__(self, input_ids, scores):
        return torch.where(token_mask(scores, self.suppress_tokens), FILTER_VALUE, scores)


@register
class SuppressTokensAtBeginLogitsProcessor(LogitsProcessor):
    """The given tokens are impossible as the first generated token."""

    name, title, order = "begin_suppress_tokens", "suppressed first tokens", 160
    description = "makes the given tokens impossible as the first generated token"
    knobs = (
        Knob(
            "begin_suppress_tokens",
            None,
            "json",
            "[token ids] that cannot be the first new token",
            check=token_list,
            convert=lambda value: [int(t) for t in value],
        ),
    )

    def __init__(self, begin_suppress_tokens, begin_index: int):
        require(self.knobs[0], begin_suppress_tokens)
        self.begin_suppress_tokens, self.begin_index = [int(t) for t in begin_suppress_tokens], int(begin_index)

    @classmethod
    def build(cls, settings, context):
        value = settings.get("begin_suppress_tokens")
        if value is None:
            return None
        begin = context.prompt_length  # one later when a forced BOS comes first after a one-token prompt
        if context.prompt_length <= 1 and settings.get("forced_bos_token_id") is not None:
            begin += 1
        return cls(value, begin)

    def args(self):
        return {"begin_suppress_tokens": self.begin_suppress_tokens, "begin_index": self.begin_index}

    def __call__(self, input_ids, scores):
        if input_ids.shape[-1] != self.begin_index:
            return scores.clone()
        return torch.where(token_mask(scores, self.begin_suppress_tokens), FILTER_VALUE, scores)


def check_callable(value, vocab_size=None) -> str | None:
    if callable(value):
        return None
    return f"must be a function (batch_id, input_ids) -> list of allowed token ids, got {value!r}"


@register
class PrefixConstrainedLogitsProcessor(LogitsProcessor):
    """Only the tokens your function allows for the text so far are possible."""

    name, title, order = "prefix_allowed_tokens_fn", "allowed tokens (your function)", 100
    description = "only the tokens prefix_allowed_tokens_fn(batch_id, input_ids) returns are possible"
    knobs = (
        Knob(
            "prefix_allowed_tokens_fn",
            None,
            "object",
            "a function (batch_id, input_ids) -> the token ids allowed next",
            check=check_callable,
            cli=False,
        ),
    )

    def __init__(self, prefix_allowed_tokens_fn, num_beams: int = 1):
        require(self.knobs[0], prefix_allowed_tokens_fn)
        self.function, self.num_beams = prefix_allowed_tokens_fn, int(num_beams)

    @classmethod
    def build(cls, settings, context):
        value = settings.get("prefix_allowed_tokens_fn")
        return cls(value, context.num_beams) if value is not None else None

    def args(self):
        return {"function": getattr(self.function, "__name__", type(self.function).__name__)}

    def __call__(self, input_ids, scores):
        mask = torch.full_like(scores, FILTER_VALUE)
        for row in range(input_ids.shape[0]):  # the function gets the prompt's index, as in transformers
            allowed = self.function(row // self.num_beams, input_ids[row])
            if len(allowed) == 0:
                raise ExplainError(
                    f"prefix_allowed_tokens_fn returned no token for the text so far "
                    f"({input_ids.shape[-1]} tokens): the constraint cannot be met; make the "
                    "function always allow at least one token (EOS, for instance)"
                )
            mask[row, allowed] = 0
        processed = scores + mask
        # if every allowed token is already impossible, force them with a score of 0 so the constraint holds
        unsatisfiable = processed.amax(dim=-1, keepdim=True).isneginf()  # (B, 1)
        return torch.where(unsatisfiable, mask, processed)


@register
class InfNanRemoveLogitsProcessor(LogitsProcessor):
    """nan becomes 0, +inf and -inf the largest and smallest float: sampling never meets an invalid number."""

    name, title, order = "remove_invalid_values", "remove inf/nan", 130
    description = "replaces nan by 0 and ±inf by the largest/smallest float, so sampling cannot fail on them"
    knobs = (
        Knob("remove_invalid_values", False, "bool", "replace nan and ±inf logits by finite numbers", check=boolean),
    )

    @classmethod
    def build(cls, settings, context):
        return cls() if settings.get("remove_invalid_values") is True else None

    def __call__(self, input_ids, scores):
        processed = torch.where(scores != scores, 0.0, scores)
        processed = torch.where(scores == float("inf"), torch.finfo(scores.dtype).max, processed)
        return torch.where(scores == -float("inf"), torch.finfo(scores.dtype).min, processed)
