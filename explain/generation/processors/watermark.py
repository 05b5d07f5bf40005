"""Watermarking: hidden statistical signals in the chosen tokens, applied after every other processor but the final
normalisation (transformers/generation/utils.py: "Watermarking should be after all logits processing").

watermarking_config is what transformers takes: a dict (read as a WatermarkingConfig), a WatermarkingConfig or a
SynthIDTextWatermarkingConfig object, or explain's plain form {"type": "<one of those class names>", ...fields}.
explain keeps the plain form, so that a trace can hold it.
  * WatermarkingConfig (Kirchenbauer et al. 2023): the previous token seeds a random "green list" of
    greenlist_ratio of the vocabulary, whose logits get + bias.
  * SynthIDTextWatermarkingConfig (Dathathri et al. 2024): each candidate token is hashed with the previous
    ngram_len - 1 tokens and each key into g-values of 0 or 1, and the probabilities are tilted towards g = 1.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ..knobs import Knob, number, suggest_name
from .base import LogitsProcessor, require
from .registry import register

WATERMARK_FIELDS = {
    "greenlist_ratio": 0.25,
    "bias": 2.0,
    "hashing_key": 15485863,
    "seeding_scheme": "lefthash",
    "context_width": 1,
}
SYNTHID_FIELDS = {
    "ngram_len": None,
    "keys": None,
    "context_history_size": 1024,
    "sampling_table_seed": 0,
    "sampling_table_size": 2**16,
    "skip_first_ngram_calls": False,
    "debug_mode": False,
}
TYPES: dict[str, dict[str, Any]] = {
    "WatermarkingConfig": WATERMARK_FIELDS,
    "SynthIDTextWatermarkingConfig": SYNTHID_FIELDS,
}


def plain_watermark(value) -> dict:
    """The plain form: {"type": class name, every field}. Objects are read through their to_dict()."""
    if not isinstance(value, dict):
        kind = type(value).__name__
        value = {**value.to_dict(), "type": kind}
    kind = value.get("type", "WatermarkingConfig")
    fields = TYPES[kind]
    return {"type": kind, **{k: value.get(k, default) for k, default in fields.items()}}


def check_watermark(value, vocab_size=None) -> str | None:
    if not isinstance(value, dict):
        if type(value).__name__ not in TYPES or not hasattr(value, "to_dict"):
            return (
                f"must be a dict of WatermarkingConfig fields ({', '.join(WATERMARK_FIELDS)}), or a "
                f"transformers WatermarkingConfig / SynthIDTextWatermarkingConfig, got {value!r}"
            )
        value = plain_watermark(value)
    kind = value.get("type", "WatermarkingConfig")
    if kind not in TYPES:
        return f"has type {kind!r}; the types are {', '.join(TYPES)}"
    fields = TYPES[kind]
    for key in value:
        if key != "type" and key not in fields:
            hint = (
                ' (SynthID\'s fields need "type": "SynthIDTextWatermarkingConfig")'
                if key in SYNTHID_FIELDS
                else suggest_name(key, fields)
            )
            return f"has the unknown field {key!r} for a {kind}{hint}"
    plain = plain_watermark(value)
    if kind == "WatermarkingConfig":
        if plain["seeding_scheme"] not in ("selfhash", "lefthash"):
            return f'has seeding_scheme {plain["seeding_scheme"]!r}; it is "lefthash" or "selfhash"'
        for key, check in (
            ("greenlist_ratio", number(0, 1, low_open=True, high_open=True)),
            ("bias", number()),
            ("hashing_key", number(integer=True)),
            ("context_width", number(1, integer=True)),
        ):
            problem = check(plain[key])
            if problem:
                return f"has {key} that {problem}"
        return None
    if number(1, integer=True)(plain["ngram_len"]) is not None:
        return f"needs ngram_len, an integer >= 1, got {plain['ngram_len']!r}"
    keys = plain["keys"]
    if (
        not isinstance(keys, (list, tuple))
        or not keys
        or number(integer=True)(keys[0]) is not None
        or any(number(integer=True)(k) for k in keys)
    ):
        return f"needs keys, a non-empty list of integers (the watermarking keys), got {keys!r}"
    for key, check in (
        ("context_history_size", number(1, integer=True)),
        ("sampling_table_seed", number(integer=True)),
        ("sampling_table_size", number(1, 2**24, integer=True)),
    ):
        problem = check(plain[key])
        if problem:
            return f"has {key} that {problem}"
    return None


class _Watermark(LogitsProcessor):
    """The shared declaration: one knob, two processors, chosen by the config's type."""

    name, order = "watermarking_config", 900
    knobs: ClassVar[tuple[Knob, ...]] = (
        Knob(
            "watermarking_config",
            None,
            "json",
            "a watermark: {greenlist_ratio, bias, ...} or "
            '{"type": "SynthIDTextWatermarkingConfig", "ngram_len": .., "keys": [..]}',
            check=check_watermark,
            convert=plain_watermark,
        ),
    )

    @classmethod
    def build(cls, settings, context):
        value = settings.get("watermarking_config")
        if value is None:
            return None
        value = plain_watermark(value)
        fields = {k: v for k, v in value.items() if k != "type"}
        if value["type"] == "WatermarkingConfig":
            return WatermarkLogitsProcessor(context.vocab_size, context.device, **fields)
        return SynthIDTextWatermarkLogitsProcessor(prompt_length=context.prompt_length, device=context.device, **fields)


@register
class WatermarkLogitsProcessor(_Watermark):
    """Kirchenbauer et al.: the previous token (lefthash) or every candidate (selfhash) seeds a random green list
    of greenlist_ratio of the vocabulary, whose logits get + bias."""

    title = "watermark (green list)"
    description = "adds a bias to a green list of tokens drawn at random from the previous token"

    def __init__(
        self,
        vocab_size,
        device,
        greenlist_ratio=0.25,
        bias=2.0,
        hashing_key=15485863,
        seeding_scheme="lefthash",
        context_width=1,
    ):
        config = {
            "greenlist_ratio": greenlist_ratio,
            "bias": bias,
            "hashing_key": hashing_key,
            "seeding_scheme": seeding_scheme,
            "context_width": context_width,
        }
        require(self.knobs[0], config, vocab_size)  # built by hand: the knob's own check (transformers' ValueErrors)
        self.vocab_size = vocab_size
        self.greenlist_ratio, self.greenlist_size = greenlist_ratio, int(vocab_size * greenlist_ratio)
        self.bias, self.seeding_scheme, self.hash_key, self.context_width = (
            bias,
            seeding_scheme,
            hashing_key,
            context_width,
        )
        self.rng = torch.Generator(device=device)
        self.rng.manual_seed(hashing_key)
        self.table_size = 1_000_003
        self.fixed_table = torch.randperm(self.table_size, generator=self.rng, device=device)

    def args(self):
        return {"greenlist_ratio": self.greenlist_ratio, "bias": self.bias, "seeding_scheme": self.seeding_scheme}

    def _set_seed(self, input_seq: torch.Tensor) -> None:
        input_seq = input_seq[-self.context_width :]
        if self.seeding_scheme == "selfhash":
            a = self.fixed_table[input_seq % self.table_size] + 1
            b = self.fixed_table[input_seq[-1] % self.table_size] + 1
            seed = (self.hash_key * a * b).min().item()
        else:
            seed = self.hash_key * input_seq[-1].item()
        self.rng.manual_seed(seed % (2**64 - 1))

    def _greenlist(self, input_seq: torch.Tensor) -> torch.Tensor:
        self._set_seed(input_seq)
        return torch.randperm(self.vocab_size, device=input_seq.device, generator=self.rng)[: self.greenlist_size]

    def _selfhash_greenlist(self, input_seq: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """selfhash: among the 40 most likely candidates, those inside the green list they seed themselves."""
        green = []
        _, candidates = scores.sort(dim=-1, descending=True)
        for i in range(40):
            if candidates[i] in self._greenlist(torch.cat([input_seq, candidates[i, None]], dim=-1)):
                green.append(candidates[i])
        return torch.tensor(green, device=input_seq.device)

    def __call__(self, input_ids, scores):
        if input_ids.shape[-1] < self.context_width:
            return scores.clone()  # too short to seed: transformers skips the step (with a warning)
        processed = scores.clone()
        for row, input_seq in enumerate(input_ids):
            if self.seeding_scheme == "selfhash":
                green = self._selfhash_greenlist(input_seq, scores[row])
            else:
                green = self._greenlist(input_seq)
            processed[row, green] = processed[row, green] + self.bias
        return processed


MULTIPLIER, INCREMENT = 6364136223846793005, 1  # SynthID's hash: h -> (h + x) * MULTIPLIER + INCREMENT, int64


def accumulate_hash(current: torch.Tensor, data: torch.Tensor) -> torch.Tensor:
    """SynthID's hash of `data` (..., n) onto `current` (...), one element at a time, wrapping as int64 does."""
    for i in range(data.shape[-1]):
        current = torch.add(current, data[..., i])
        current = torch.mul(current, MULTIPLIER)
        current = torch.add(current, INCREMENT)
    return current


@register
class SynthIDTextWatermarkLogitsProcessor(_Watermark):
    """SynthID: every candidate token, hashed with the previous ngram_len - 1 tokens and each key, gets g-values
    of 0 or 1; the probabilities are tilted towards g = 1, once per key. A context seen before is left alone.

    transformers keeps the context and the history of contexts as state that grows by one token a call; here they
    are recomputed from the generated tokens, which gives the same numbers and also works for a what-if on an
    earlier step or a forced branch."""

    name, order = "watermarking_config_synthid", 901
    title = "watermark (SynthID)"
    description = "tilts the probabilities towards tokens whose hash with the previous tokens gives g = 1"
    knobs = ()

    def __init__(
        self,
        ngram_len,
        keys,
        prompt_length=0,
        sampling_table_size=2**16,
        sampling_table_seed=0,
        context_history_size=1024,
        device="cpu",
        skip_first_ngram_calls=False,
        debug_mode=False,
    ):
        self.ngram_len, self.prompt_length = int(ngram_len), int(prompt_length)
        self.keys = torch.tensor(keys, device=device)
        generator = torch.Generator(device=device).manual_seed(sampling_table_seed)
        self.sampling_table = torch.randint(
            low=0, high=2, size=(sampling_table_size,), generator=generator, device=device
        )
        self.context_history_size, self.device = context_history_size, device
        self.skip_first_ngram_calls, self.debug_mode = skip_first_ngram_calls, debug_mode
        self._context_hashes: dict[tuple, int] = {}

    @classmethod
    def build(cls, settings, context):
        return None  # built by WatermarkLogitsProcessor.build when the config's type is SynthID's

    def args(self):
        return {"ngram_len": self.ngram_len, "depth": int(self.keys.numel())}

    def _context(self, generated: list[int], call: int) -> list[int]:
        """The ngram_len - 1 tokens before call `call` (0-based): zeros, then the generated tokens."""
        tokens = [0] * (self.ngram_len - 1) + generated[:call]
        return tokens[len(tokens) - (self.ngram_len - 1) :]

    def _context_hash(self, context: list[int]) -> int:
        key = tuple(context)
        if key not in self._context_hashes:
            start = torch.ones(1, device=self.device, dtype=torch.long)
            self._context_hashes[key] = int(accumulate_hash(start, torch.tensor([context], device=self.device))[0])
        return self._context_hashes[key]

    def __call__(self, input_ids, scores):
        if input_ids.shape[0] != 1:
            raise ValueError("explain runs one sequence at a time")
        generated = input_ids[0, self.prompt_length :].tolist()
        call = len(generated)  # transformers' num_calls - 1
        if self.debug_mode:
            scores = torch.ones_like(scores)
        if self.skip_first_ngram_calls and call + 1 < self.ngram_len:
            return scores.clone()
        # the contexts hashed before this call, most recent first, then the zeros the history starts with
        hashed = [j for j in range(call) if not self.skip_first_ngram_calls or j + 1 >= self.ngram_len]
        history = [self._context_hash(self._context(generated, j)) for j in reversed(hashed)]
        history = (history + [0] * self.context_history_size)[: self.context_history_size]
        context = self._context(generated, call)
        context_hash = self._context_hash(context)
        vocab_size = scores.shape[-1]
        indices = torch.arange(vocab_size, device=self.device)[None, :, None]  # (1, V, 1)
        per_token = accumulate_hash(torch.full((1, 1), context_hash, dtype=torch.long, device=self.device), indices)
        ngram_keys = accumulate_hash(per_token[:, :, None], self.keys[None, None, :, None])  # (1, V, depth)
        g_values = torch.take_along_dim(
            self.sampling_table.reshape(1, 1, -1), indices=ngram_keys % self.sampling_table.shape[0], dim=2
        )  # (1, V, depth)
        probs = torch.softmax(scores, dim=1)
        for depth in range(g_values.shape[2]):
            g = g_values[:, :, depth]
            g_mass = (g * probs).sum(axis=1, keepdims=True)
            probs = probs * (1 + g - g_mass)
        log_probs = torch.log(probs)
        updated = torch.where(torch.isfinite(log_probs), log_probs, torch.finfo(log_probs.dtype).min)
        if context_hash in history:  # this context was watermarked before: leave the step alone
            return scores.clone()
        return updated
