"""Penalties on repeating: tokens already seen, n-grams already seen (in the whole text, or in the prompt only).

For a decoder-only model transformers' "encoder" processors read the prompt: generate() passes the input ids as
`encoder_input_ids` (transformers/generation/utils.py, _get_logits_processor), so encoder_repetition_penalty
favours the prompt's tokens and encoder_no_repeat_ngram_size forbids repeating the prompt's n-grams.
"""

from __future__ import annotations

import torch

from ..knobs import Knob, Slider, number
from .base import FILTER_VALUE, LogitsProcessor, require
from .registry import register

PENALTY = number(0, low_open=True, fix="1.0 means no penalty")
NGRAM = number(0, integer=True, fix="0 turns it off")


@register
class RepetitionPenaltyLogitsProcessor(LogitsProcessor):
    """Tokens already present (prompt included) get their logit divided by the penalty (multiplied if negative)."""

    name, title, order = "repetition_penalty", "repetition penalty", 40
    description = "divides the logit of every token already in the text by the penalty (multiplies it if negative)"
    knobs = (
        Knob(
            "repetition_penalty",
            1.0,
            "float",
            "above 1 makes tokens already in the text less likely",
            check=PENALTY,
            widget=Slider(1.0, 2.0, 0.05, "repetition penalty", main=True),
        ),
    )

    def __init__(self, penalty: float):
        require(self.knobs[0], penalty)
        self.penalty = float(penalty)

    @classmethod
    def build(cls, settings, context):
        penalty = settings.get("repetition_penalty")
        return cls(penalty) if penalty is not None and penalty != 1.0 else None

    def args(self):
        return {"penalty": self.penalty}

    def __call__(self, input_ids, scores):
        score = torch.gather(scores, 1, input_ids)  # (B, T): the logits of tokens seen so far
        score = torch.where(score < 0, score * self.penalty, score / self.penalty)
        return scores.scatter(1, input_ids, score)


@register
class EncoderRepetitionPenaltyLogitsProcessor(LogitsProcessor):
    """The prompt's tokens get their logit multiplied by the penalty (divided if negative): above 1, the model
    sticks to the prompt's words (transformers calls it a hallucination penalty)."""

    name, title, order = "encoder_repetition_penalty", "prompt-token boost", 30
    description = "above 1 makes the prompt's own tokens more likely (an anti-hallucination boost)"
    knobs = (
        Knob(
            "encoder_repetition_penalty", 1.0, "float", "above 1 makes the prompt's tokens more likely", check=PENALTY
        ),
    )

    def __init__(self, penalty: float, encoder_input_ids: torch.Tensor):
        require(self.knobs[0], penalty)
        self.given = float(penalty)
        self.penalty = 1 / float(penalty)  # as transformers stores it
        self.encoder_input_ids = encoder_input_ids

    @classmethod
    def build(cls, settings, context):
        penalty = settings.get("encoder_repetition_penalty")
        if penalty is None or penalty == 1.0:
            return None
        return cls(penalty, context.prompt_ids)

    def args(self):
        return {"penalty": self.given}

    def __call__(self, input_ids, scores):
        score = torch.gather(scores, 1, self.encoder_input_ids)  # (B, prompt length)
        score = torch.where(score < 0, score * self.penalty, score / self.penalty)
        return scores.scatter(1, self.encoder_input_ids, score)


@register
class NoRepeatNGramLogitsProcessor(LogitsProcessor):
    """A token that would complete an n-gram already in the text (prompt included) is forbidden."""

    name, title, order = "no_repeat_ngram_size", "no repeated n-grams", 50
    description = "forbids every token that would repeat an n-gram of this size already in the text"
    knobs = (
        Knob(
            "no_repeat_ngram_size",
            0,
            "int",
            "forbid repeating any n-gram of this many tokens (0: off)",
            check=NGRAM,
            widget=Slider(0, 8, 1, "no repeat n-gram", off=0),
        ),
    )

    def __init__(self, ngram_size: int):
        require(self.knobs[0], ngram_size)
        self.ngram_size = int(ngram_size)

    @classmethod
    def build(cls, settings, context):
        size = settings.get("no_repeat_ngram_size")
        return cls(size) if size is not None and size > 0 else None

    def args(self):
        return {"ngram_size": self.ngram_size}

    def __call__(self, input_ids, scores):
        length = input_ids.shape[-1]
        if length < self.ngram_size:
            return scores.clone()  # no complete n-gram yet
        # the n-grams the next token could complete start with the last n-1 tokens: match that prefix against
        # every window; a matching window forbids its own last token
        prefix = input_ids[:, length + 1 - self.ngram_size :]  # (B, n-1)
        windows = input_ids.unfold(dimension=1, size=self.ngram_size, step=1)  # (B, windows, n)
        matches = (windows[..., :-1] == prefix.unsqueeze(1)).all(dim=-1)  # (B, windows)
        vocab_size = scores.shape[-1]
        banned = scores.new_zeros((scores.shape[0], vocab_size + 1), dtype=torch.bool)  # a spare column for no-match
        banned.scatter_(1, torch.where(matches, windows[..., -1].clamp(max=vocab_size), vocab_size), True)
        return scores.masked_fill(banned[:, :vocab_size], FILTER_VALUE)


@register
class EncoderNoRepeatNGramLogitsProcessor(LogitsProcessor):
    """A token that would repeat an n-gram of the prompt is forbidden."""

    name, title, order = "encoder_no_repeat_ngram_size", "no prompt n-grams", 60
    description = "forbids every token that would repeat an n-gram of this size from the prompt"
    knobs = (
        Knob(
            "encoder_no_repeat_ngram_size",
            0,
            "int",
            "forbid repeating any n-gram of this many tokens from the prompt (0: off)",
            check=NGRAM,
        ),
    )

    def __init__(self, ngram_size: int, encoder_input_ids: torch.Tensor):
        require(self.knobs[0], ngram_size)
        self.ngram_size = int(ngram_size)
        tokens = encoder_input_ids[0].tolist()
        self.ngrams: dict[tuple, list[int]] = {}  # the prompt's (n-1)-token prefixes -> the tokens that followed
        for ngram in zip(*[tokens[i:] for i in range(self.ngram_size)], strict=False):
            self.ngrams[tuple(ngram[:-1])] = self.ngrams.get(tuple(ngram[:-1]), []) + [ngram[-1]]

    @classmethod
    def build(cls, settings, context):
        size = settings.get("encoder_no_repeat_ngram_size")
        return cls(size, context.prompt_ids) if size is not None and size > 0 else None

    def args(self):
        return {"ngram_size": self.ngram_size}

    def __call__(self, input_ids, scores):
        length = input_ids.shape[-1]
        processed = scores.clone()
        for row in range(scores.shape[0]):
            # the same slice as transformers' _get_generated_ngrams (a negative start wraps, as it does there)
            key = tuple(input_ids[row][length + 1 - self.ngram_size : length].tolist())
            processed[row, self.ngrams.get(key, [])] = FILTER_VALUE
        return processed
