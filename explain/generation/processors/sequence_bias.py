"""Biasing whole token sequences: sequence_bias adds a bias to the token that would complete a sequence, and
bad_words_ids forbids it (a bias of -inf), as transformers' NoBadWordsLogitsProcessor subclasses its
SequenceBiasLogitsProcessor."""

from __future__ import annotations

import math

import torch

from ..knobs import Knob, is_number, token_id_problem
from .base import LogitsProcessor, eos_ids, require
from .registry import register


def _sequence_problem(ids, vocab_size, what: str) -> str | None:
    if not isinstance(ids, (list, tuple)) or not ids:
        return f"has {ids!r} where a non-empty list of token ids belongs ({what})"
    for token in ids:
        problem = token_id_problem(token, vocab_size, within=True)
        if problem:
            return problem
    return None


def check_sequence_bias(value, vocab_size=None) -> str | None:
    pairs = list(value.items()) if isinstance(value, dict) else value
    example = "e.g. [[[1, 2], 5.0], [[7], -3.0]] or {(1, 2): 5.0, (7,): -3.0}"
    if not isinstance(pairs, (list, tuple)) or not pairs:
        return (
            f"must be a non-empty list of [token ids, bias] pairs or a dict {{token ids: bias}}, got {value!r}; "
            + example
        )
    for pair in pairs:
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            return f"must hold [token ids, bias] pairs, got {pair!r}; {example}"
        problem = _sequence_problem(pair[0], vocab_size, "the sequence to bias")
        if problem:
            return problem
        if not is_number(pair[1]) or math.isnan(pair[1]):
            return f"has the bias {pair[1]!r} for {list(pair[0])}; a bias is a number (-inf forbids the sequence)"
    return None


def plain_sequence_bias(value) -> list:
    pairs = value.items() if isinstance(value, dict) else value
    return [[[int(t) for t in ids], float(bias)] for ids, bias in pairs]


def check_bad_words(value, vocab_size=None) -> str | None:
    if not isinstance(value, (list, tuple)) or not value:
        return f"must be a non-empty list of token-id lists, e.g. [[1, 2], [7]], got {value!r}"
    for ids in value:
        problem = _sequence_problem(ids, vocab_size, "a forbidden sequence")
        if problem:
            return problem
    return None


@register
class SequenceBiasLogitsProcessor(LogitsProcessor):
    """Adds a bias to a token when it would complete one of the given sequences (a single token: always)."""

    name, title, order = "sequence_bias", "sequence bias", 20
    description = "adds a bias to the token that would complete each given token sequence"
    knobs = (
        Knob(
            "sequence_bias",
            None,
            "json",
            "[[token ids, bias], ...]: add the bias to the token completing each sequence",
            check=check_sequence_bias,
            convert=plain_sequence_bias,
        ),
    )

    def __init__(self, sequence_bias):
        require(SequenceBiasLogitsProcessor.knobs[0], sequence_bias)
        self.sequence_bias = {tuple(ids): bias for ids, bias in plain_sequence_bias(sequence_bias)}
        self.prepared_vocab = None

    @classmethod
    def build(cls, settings, context):
        value = settings.get("sequence_bias")
        return cls(value) if value is not None else None

    def args(self):
        return {"sequence_bias": [[list(ids), bias] for ids, bias in self.sequence_bias.items()]}

    def _prepare(self, scores: torch.Tensor) -> None:
        """The bias tensors, built once the vocabulary size is known (as transformers does on its first call)."""
        vocab_size = scores.shape[-1]
        if self.sequence_bias:  # bad words naming only the EOS token leave none: nothing to do, as in transformers
            biases = [[list(k), v] for k, v in self.sequence_bias.items()]
            require(SequenceBiasLogitsProcessor.knobs[0], biases, vocab_size)
        self.length_1_bias = torch.zeros((vocab_size,), dtype=torch.float, device=scores.device)
        single = [(ids[0], bias) for ids, bias in self.sequence_bias.items() if len(ids) == 1]
        if single:
            self.length_1_bias[[i for i, _ in single]] = torch.tensor([b for _, b in single], device=scores.device)
        by_prefix_length: dict[int, list] = {}  # longer sequences, grouped so each group is one comparison
        for ids, bias in self.sequence_bias.items():
            if len(ids) > 1:
                by_prefix_length.setdefault(len(ids) - 1, []).append((ids, bias))
        self.multi_token_biases = [
            (
                torch.tensor([ids[:-1] for ids, _ in group], device=scores.device),  # (S, prefix length)
                torch.tensor([ids[-1] for ids, _ in group], device=scores.device),  # (S,)
                torch.tensor([bias for _, bias in group], dtype=torch.float, device=scores.device),
            )  # (S,)
            for group in by_prefix_length.values()
        ]
        self.prepared_vocab = vocab_size

    def __call__(self, input_ids, scores):
        if self.prepared_vocab != scores.shape[-1]:
            self._prepare(scores)
        bias = torch.zeros_like(scores)
        bias += self.length_1_bias
        for prefixes, last_tokens, biases in self.multi_token_biases:
            prefix_length = prefixes.shape[1]
            if prefix_length > input_ids.shape[1]:  # longer than the text so far
                continue
            matching = (input_ids[:, None, -prefix_length:] == prefixes).all(dim=-1)  # (B, S)
            bias.index_add_(1, last_tokens, torch.where(matching, biases, 0.0).to(bias.dtype))
        return scores + bias


@register
class NoBadWordsLogitsProcessor(SequenceBiasLogitsProcessor):
    """Forbids the token that would complete any of the given sequences (a sequence of one token: always).
    A bad word that is just the EOS token is dropped, as in transformers: EOS stays possible."""

    name, title, order = "bad_words_ids", "forbidden words", 70
    description = "forbids the token that would complete each given token sequence"
    knobs = (
        Knob(
            "bad_words_ids",
            None,
            "json",
            "[[token ids], ...]: sequences that must not be generated",
            check=check_bad_words,
            convert=lambda value: [[int(t) for t in ids] for ids in value],
        ),
    )

    def __init__(self, bad_words_ids, eos_token_ids=()):
        require(NoBadWordsLogitsProcessor.knobs[0], bad_words_ids)
        self.bad_words_ids = [list(ids) for ids in bad_words_ids]
        kept = [ids for ids in self.bad_words_ids if all(ids != [eos] for eos in eos_token_ids)]
        self.sequence_bias = {tuple(ids): float("-inf") for ids in kept}
        self.prepared_vocab = None

    @classmethod
    def build(cls, settings, context):
        value = settings.get("bad_words_ids")
        return cls(value, eos_ids(settings)) if value is not None else None

    def args(self):
        return {"bad_words_ids": self.bad_words_ids}
