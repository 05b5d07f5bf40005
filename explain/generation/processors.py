"""Logits processors: `processor(input_ids, scores) -> new scores`, in transformers' order and arithmetic.

Each mirrors the transformers class of the same name (transformers/generation/logits_process.py) and returns
a new tensor; the input is never changed in place, so every intermediate stays available to show.
"""

from __future__ import annotations

import torch

from ..errors import ExplainError

FILTER_VALUE = -float("inf")


class LogitsProcessor:
    name = "processor"

    def args(self) -> dict:
        return {}

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.args().items())})"


class RepetitionPenaltyLogitsProcessor(LogitsProcessor):
    """Tokens already present (prompt included) get their logit divided by the penalty (multiplied if negative)."""
    name = "repetition_penalty"

    def __init__(self, penalty: float):
        if not isinstance(penalty, (int, float)) or not penalty > 0:
            raise ExplainError(f"repetition_penalty must be a positive number, got {penalty!r}; 1.0 means no penalty")
        self.penalty = float(penalty)

    def args(self):
        return {"penalty": self.penalty}

    def __call__(self, input_ids, scores):
        score = torch.gather(scores, 1, input_ids)  # (B, T): the logits of tokens seen so far
        score = torch.where(score < 0, score * self.penalty, score / self.penalty)
        return scores.scatter(1, input_ids, score)


class MinLengthLogitsProcessor(LogitsProcessor):
    """EOS is impossible until the whole sequence (prompt included) has min_length tokens."""
    name = "min_length"

    def __init__(self, min_length: int, eos_token_ids: list[int]):
        self.min_length, self.eos_token_ids = int(min_length), list(eos_token_ids)

    def args(self):
        return {"min_length": self.min_length, "eos_token_ids": self.eos_token_ids}

    def __call__(self, input_ids, scores):
        if input_ids.shape[-1] >= self.min_length:
            return scores.clone()
        return _suppress(scores, self.eos_token_ids)


class MinNewTokensLengthLogitsProcessor(LogitsProcessor):
    """EOS is impossible until min_new_tokens tokens have been generated."""
    name = "min_new_tokens"

    def __init__(self, prompt_length: int, min_new_tokens: int, eos_token_ids: list[int]):
        self.prompt_length, self.min_new_tokens = int(prompt_length), int(min_new_tokens)
        self.eos_token_ids = list(eos_token_ids)

    def args(self):
        return {"min_new_tokens": self.min_new_tokens, "eos_token_ids": self.eos_token_ids}

    def __call__(self, input_ids, scores):
        if input_ids.shape[-1] - self.prompt_length >= self.min_new_tokens:
            return scores.clone()
        return _suppress(scores, self.eos_token_ids)


def _suppress(scores: torch.Tensor, token_ids: list[int]) -> torch.Tensor:
    vocab = torch.arange(scores.shape[-1], device=scores.device)
    mask = torch.isin(vocab, torch.tensor(token_ids, device=scores.device))
    return torch.where(mask, FILTER_VALUE, scores)


class TemperatureLogitsWarper(LogitsProcessor):
    """Divide by the temperature: below 1 sharpens the distribution, above 1 flattens it."""
    name = "temperature"

    def __init__(self, temperature: float):
        if not isinstance(temperature, (int, float)) or not temperature > 0:
            hint = " To pick the most likely token every time, use do_sample=False." if temperature == 0 else ""
            raise ExplainError(f"temperature must be a strictly positive float when sampling, got {temperature!r}.{hint}")
        self.temperature = float(temperature)

    def args(self):
        return {"temperature": self.temperature}

    def __call__(self, input_ids, scores):
        return scores / self.temperature


class TopKLogitsWarper(LogitsProcessor):
    """Keep the k highest logits; the rest become -inf."""
    name = "top_k"

    def __init__(self, top_k: int, min_tokens_to_keep: int = 1):
        if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k <= 0:
            raise ExplainError(f"top_k must be a positive integer, got {top_k!r}; use top_k=0 or None to disable it")
        self.top_k = max(top_k, min_tokens_to_keep)

    def args(self):
        return {"top_k": self.top_k}

    def __call__(self, input_ids, scores):
        top_k = min(self.top_k, scores.size(-1))
        indices_to_remove = scores < torch.topk(scores, top_k)[0][..., -1, None]
        return scores.masked_fill(indices_to_remove, FILTER_VALUE)


class TopPLogitsWarper(LogitsProcessor):
    """Nucleus sampling: keep the smallest set of top tokens whose probabilities add up to top_p."""
    name = "top_p"

    def __init__(self, top_p: float, min_tokens_to_keep: int = 1):
        if not isinstance(top_p, (int, float)) or not 0 < top_p <= 1:
            raise ExplainError(f"top_p must be in (0, 1], got {top_p!r}; top_p=1.0 keeps every token")
        self.top_p, self.min_tokens_to_keep = float(top_p), min_tokens_to_keep

    def args(self):
        return {"top_p": self.top_p}

    def __call__(self, input_ids, scores):
        sorted_logits, sorted_indices = torch.sort(scores, descending=False)
        cumulative_probs = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        sorted_indices_to_remove = cumulative_probs <= (1 - self.top_p)  # the low tail that sums to 1 - top_p
        sorted_indices_to_remove[..., -self.min_tokens_to_keep:] = 0
        indices_to_remove = sorted_indices_to_remove.scatter(1, sorted_indices, sorted_indices_to_remove)
        return scores.masked_fill(indices_to_remove, FILTER_VALUE)


class MinPLogitsWarper(LogitsProcessor):
    """Keep tokens whose probability is at least min_p times the top token's probability."""
    name = "min_p"

    def __init__(self, min_p: float, min_tokens_to_keep: int = 1):
        if not isinstance(min_p, (int, float)) or not 0 <= min_p <= 1:
            raise ExplainError(f"min_p must be in [0, 1], got {min_p!r}")
        self.min_p, self.min_tokens_to_keep = float(min_p), min_tokens_to_keep

    def args(self):
        return {"min_p": self.min_p}

    def __call__(self, input_ids, scores):
        probs = torch.softmax(scores, dim=-1)
        top_probs = probs.amax(dim=-1, keepdim=True)
        tokens_to_remove = probs < self.min_p * top_probs
        # the min_tokens_to_keep most likely always stay; torch.topk picks among ties exactly as transformers does
        keep = torch.topk(probs, min(self.min_tokens_to_keep, probs.shape[-1]), dim=-1).indices
        tokens_to_remove = tokens_to_remove.scatter(-1, keep, False)
        return scores.masked_fill(tokens_to_remove, FILTER_VALUE)


def build_processors(settings: dict, prompt_length: int) -> list[LogitsProcessor]:
    """The processors transformers' generate() would build for these settings, in its order."""
    processors: list[LogitsProcessor] = []
    eos = settings.get("eos_token_id")
    eos = [] if eos is None else ([eos] if isinstance(eos, int) else list(eos))
    if settings.get("repetition_penalty") not in (None, 1.0):
        processors.append(RepetitionPenaltyLogitsProcessor(settings["repetition_penalty"]))
    if eos and (settings.get("min_length") or 0) > 0:
        processors.append(MinLengthLogitsProcessor(settings["min_length"], eos))
    if eos and (settings.get("min_new_tokens") or 0) > 0:
        processors.append(MinNewTokensLengthLogitsProcessor(prompt_length, settings["min_new_tokens"], eos))
    if settings.get("do_sample"):
        if settings.get("temperature") is not None and settings["temperature"] != 1.0:
            processors.append(TemperatureLogitsWarper(settings["temperature"]))
        if settings.get("top_k") not in (None, 0):
            processors.append(TopKLogitsWarper(settings["top_k"]))
        if settings.get("top_p") is not None and settings["top_p"] < 1.0:
            processors.append(TopPLogitsWarper(settings["top_p"]))
        if settings.get("min_p") is not None:
            processors.append(MinPLogitsWarper(settings["min_p"]))
    return processors
