"""The warpers: processors transformers applies only when sampling (do_sample=True), in its order: temperature,
top-k, top-p, min-p, typical-p, epsilon and eta cutoffs. With one beam each keeps at least one token
(min_tokens_to_keep=1)."""

from __future__ import annotations

import math

import torch

from ...errors import ExplainError
from ..knobs import Knob, Slider, is_integer, is_number, number
from .base import FILTER_VALUE, LogitsProcessor, require
from .registry import register


def check_temperature(value, vocab_size=None) -> str | None:
    if is_number(value) and value > 0 and math.isfinite(value):
        return None
    return (
        f"must be a strictly positive, finite number when sampling, got {value!r}; for greedy decoding "
        "(always the most likely token) use do_sample=False"
    )


def check_top_k(value, vocab_size=None) -> str | None:
    if is_integer(value) and value >= 0:
        return None
    return f"must be a positive integer, or 0 to turn top-k off, got {value!r}"


def check_top_p(value, vocab_size=None) -> str | None:
    # generate() builds TopPLogitsWarper only for top_p < 1.0, which refuses top_p < 0; 0 keeps the top token
    if is_number(value) and not value < 0:
        return None
    return (
        f"must be a number >= 0 (0 keeps only the top token, 1 or more keeps every token), got {value!r}; "
        "top_p=1.0 keeps every token"
    )


def check_typical_p(value, vocab_size=None) -> str | None:
    # generate() builds TypicalLogitsWarper only for typical_p < 1.0, which refuses typical_p <= 0
    if is_number(value) and not value <= 0:
        return None
    return f"must be a number > 0 (1 or more turns it off), got {value!r}; typical_p=1.0 turns it off"


@register
class TemperatureLogitsWarper(LogitsProcessor):
    """Divide by the temperature: below 1 sharpens the distribution, above 1 flattens it."""

    name, title, order, sampling_only = "temperature", "temperature", 170, True
    description = "divides every logit by the temperature: below 1 sharpens the distribution, above 1 flattens it"
    knobs = (
        Knob(
            "temperature",
            1.0,
            "float",
            "divide the logits by this: below 1 sharper, above 1 flatter",
            check=check_temperature,
            sampling_only=True,
            widget=Slider(0.05, 2.0, 0.05, "temperature", main=True),
        ),
    )

    def __init__(self, temperature: float):
        require(self.knobs[0], temperature)
        self.temperature = float(temperature)

    @classmethod
    def build(cls, settings, context):
        value = settings.get("temperature")
        return cls(value) if value is not None and value != 1.0 else None

    def args(self):
        return {"temperature": self.temperature}

    def __call__(self, input_ids, scores):
        return scores / self.temperature


@register
class TopKLogitsWarper(LogitsProcessor):
    """Keep the k highest logits; the rest become -inf."""

    name, title, order, sampling_only = "top_k", "top-k", 190, True
    description = "keeps the k highest logits; every other token becomes impossible"
    knobs = (
        Knob(
            "top_k",
            50,
            "int",
            "keep only the k most likely tokens (0: off)",
            check=check_top_k,
            sampling_only=True,
            widget=Slider(0, 200, 1, "top-k", main=True),
        ),
    )

    def __init__(self, top_k: int, min_tokens_to_keep: int = 1):
        require(self.knobs[0], top_k)
        if top_k == 0:
            require(self.knobs[0], -0.5)  # 0 means "off": the processor is not built, so building it is a mistake
        self.top_k = max(int(top_k), min_tokens_to_keep)

    @classmethod
    def build(cls, settings, context):
        value = settings.get("top_k")
        return cls(value, context.min_tokens_to_keep) if value is not None and value != 0 else None

    def args(self):
        return {"top_k": self.top_k}

    def __call__(self, input_ids, scores):
        top_k = min(self.top_k, scores.size(-1))
        indices_to_remove = scores < torch.topk(scores, top_k)[0][..., -1, None]
        return scores.masked_fill(indices_to_remove, FILTER_VALUE)


@register
class TopPLogitsWarper(LogitsProcessor):
    """Nucleus sampling: keep the smallest set of top tokens whose probabilities add up to top_p."""

    name, title, order, sampling_only = "top_p", "top-p (nucleus)", 200, True
    description = "keeps the smallest set of most likely tokens whose probabilities add up to top_p"
    knobs = (
        Knob(
            "top_p",
            1.0,
            "float",
            "keep the fewest top tokens whose probabilities reach this (1.0: off)",
            check=check_top_p,
            sampling_only=True,
            widget=Slider(0.05, 1.0, 0.05, "top-p", main=True),
        ),
    )

    def __init__(self, top_p: float, min_tokens_to_keep: int = 1):
        require(self.knobs[0], top_p)
        if top_p > 1.0:  # transformers' class refuses it too; generate() builds none for top_p >= 1
            raise ExplainError(f"top_p must be at most 1 for a TopPLogitsWarper, got {top_p!r}; 1.0 keeps every token")
        self.top_p, self.min_tokens_to_keep = float(top_p), min_tokens_to_keep

    @classmethod
    def build(cls, settings, context):
        value = settings.get("top_p")
        return cls(value, context.min_tokens_to_keep) if value is not None and value < 1.0 else None

    def args(self):
        return {"top_p": self.top_p}

    def __call__(self, input_ids, scores):
        sorted_logits, sorted_indices = torch.sort(scores, descending=False)
        cumulative_probs = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        sorted_indices_to_remove = cumulative_probs <= (1 - self.top_p)  # the low tail that sums to 1 - top_p
        sorted_indices_to_remove[..., -self.min_tokens_to_keep :] = 0
        indices_to_remove = sorted_indices_to_remove.scatter(1, sorted_indices, sorted_indices_to_remove)
        return scores.masked_fill(indices_to_remove, FILTER_VALUE)


@register
class MinPLogitsWarper(LogitsProcessor):
    """Keep tokens whose probability is at least min_p times the top token's probability."""

    name, title, order, sampling_only = "min_p", "min-p", 210, True
    description = "keeps the tokens at least min_p times as likely as the most likely one"
    knobs = (
        Knob(
            "min_p",
            None,
            "float",
            "keep tokens at least this fraction as likely as the top one",
            check=number(0, 1),
            sampling_only=True,
            widget=Slider(0.0, 0.5, 0.01, "min-p", off=0.0),
        ),
    )

    def __init__(self, min_p: float, min_tokens_to_keep: int = 1):
        require(self.knobs[0], min_p)
        self.min_p, self.min_tokens_to_keep = float(min_p), min_tokens_to_keep

    @classmethod
    def build(cls, settings, context):
        value = settings.get("min_p")
        return cls(value, context.min_tokens_to_keep) if value is not None else None

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


@register
class TypicalLogitsWarper(LogitsProcessor):
    """Locally typical sampling: keep the tokens whose surprise is closest to the distribution's entropy, until
    their probabilities add up to typical_p."""

    name, title, order, sampling_only = "typical_p", "typical-p", 220, True
    description = "keeps the tokens whose surprise is closest to the entropy, until they hold typical_p of the mass"
    knobs = (
        Knob(
            "typical_p",
            1.0,
            "float",
            "keep the most typical tokens up to this probability mass (1.0: off)",
            check=check_typical_p,
            sampling_only=True,
            widget=Slider(0.05, 1.0, 0.05, "typical-p"),
        ),
    )

    def __init__(self, mass: float, min_tokens_to_keep: int = 1):
        require(self.knobs[0], mass)
        if mass >= 1.0:  # transformers' class refuses it too; generate() builds none for typical_p >= 1
            raise ExplainError(f"typical_p must be below 1 for a TypicalLogitsWarper, got {mass!r}; 1.0 turns it off")
        self.mass, self.min_tokens_to_keep = float(mass), min_tokens_to_keep

    @classmethod
    def build(cls, settings, context):
        value = settings.get("typical_p")
        return cls(value, context.min_tokens_to_keep) if value is not None and value < 1.0 else None

    def args(self):
        return {"typical_p": self.mass}

    def __call__(self, input_ids, scores):
        normalized = torch.nn.functional.log_softmax(scores, dim=-1)
        p = torch.exp(normalized)
        entropy = -(normalized * p).nansum(-1, keepdim=True)  # (B, 1)
        shifted_scores = torch.abs((-normalized) - entropy)  # |surprise - entropy|: small is typical
        sorted_scores, sorted_indices = torch.sort(shifted_scores, descending=False)
        sorted_logits = scores.gather(-1, sorted_indices)
        cumulative_probs = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        last_index = (cumulative_probs < self.mass).sum(dim=1)
        last_index.clamp_(max=sorted_scores.shape[-1] - 1)
        sorted_indices_to_remove = sorted_scores > sorted_scores.gather(1, last_index.view(-1, 1))
        sorted_indices_to_remove[..., : self.min_tokens_to_keep] = 0
        indices_to_remove = sorted_indices_to_remove.scatter(1, sorted_indices, sorted_indices_to_remove)
        return scores.masked_fill(indices_to_remove, FILTER_VALUE)


def check_cutoff(value, vocab_size=None) -> str | None:
    # generate() builds the epsilon / eta warper only for 0 < value < 1 and skips any other number
    if is_number(value):
        return None
    return f"must be a number (0 turns it off; try 3e-4), got {value!r}"


def cutoff_for_class(name: str, value) -> None:
    """transformers' classes built by hand refuse a cutoff outside (0, 1): so do explain's."""
    if not 0.0 < value < 1.0:
        raise ExplainError(
            f"{name} must be in (0, 1) for its warper, got {value!r}; generate() builds none for 0 (0 turns it off)"
        )


@register
class EpsilonLogitsWarper(LogitsProcessor):
    """Truncation sampling: remove every token whose probability is below epsilon."""

    name, title, order, sampling_only = "epsilon_cutoff", "epsilon cutoff", 230, True
    description = "removes every token whose probability is below epsilon"
    knobs = (
        Knob(
            "epsilon_cutoff",
            0.0,
            "float",
            "remove tokens less likely than this (0: off; try 3e-4)",
            check=check_cutoff,
            sampling_only=True,
            widget=Slider(0.0, 0.01, 0.0005, "epsilon cutoff", format=".4f"),
        ),
    )

    def __init__(self, epsilon: float, min_tokens_to_keep: int = 1):
        require(self.knobs[0], epsilon)
        cutoff_for_class("epsilon_cutoff", epsilon)
        self.epsilon, self.min_tokens_to_keep = float(epsilon), min_tokens_to_keep

    @classmethod
    def build(cls, settings, context):
        value = settings.get("epsilon_cutoff")
        return cls(value, context.min_tokens_to_keep) if value is not None and 0.0 < value < 1.0 else None

    def args(self):
        return {"epsilon": self.epsilon}

    def __call__(self, input_ids, scores):
        indices_to_remove = scores.softmax(dim=-1) < self.epsilon
        top_k = min(self.min_tokens_to_keep, scores.size(-1))  # the most likely tokens always stay
        indices_to_remove = indices_to_remove & (scores < torch.topk(scores, top_k)[0][..., -1, None])
        return scores.masked_fill(indices_to_remove, FILTER_VALUE)


@register
class EtaLogitsWarper(LogitsProcessor):
    """Eta sampling: remove tokens below min(eta, sqrt(eta) * exp(-entropy)), a cutoff that loosens when the model
    is unsure."""

    name, title, order, sampling_only = "eta_cutoff", "eta cutoff", 240, True
    description = "removes tokens below min(eta, sqrt(eta)·e^-entropy): a cutoff that adapts to the entropy"
    knobs = (
        Knob(
            "eta_cutoff",
            0.0,
            "float",
            "entropy-adaptive cutoff (0: off; try 3e-4)",
            check=check_cutoff,
            sampling_only=True,
            widget=Slider(0.0, 0.01, 0.0005, "eta cutoff", format=".4f"),
        ),
    )

    def __init__(self, epsilon: float, min_tokens_to_keep: int = 1, device="cpu"):
        require(self.knobs[0], epsilon)
        cutoff_for_class("eta_cutoff", epsilon)
        self.given, self.min_tokens_to_keep = float(epsilon), min_tokens_to_keep
        self.epsilon = torch.tensor(float(epsilon), device=device)  # a float32 tensor, as in transformers

    @classmethod
    def build(cls, settings, context):
        value = settings.get("eta_cutoff")
        return (
            cls(value, context.min_tokens_to_keep, device=context.device)
            if value is not None and 0.0 < value < 1.0
            else None
        )

    def args(self):
        return {"eta": self.given}

    def __call__(self, input_ids, scores):
        probabilities = scores.softmax(dim=-1)
        entropy = torch.distributions.Categorical(logits=scores).entropy()  # (B,)
        eta = torch.min(self.epsilon, torch.sqrt(self.epsilon) * torch.exp(-entropy))[..., None]  # (B, 1)
        indices_to_remove = probabilities < eta
        top_k = min(self.min_tokens_to_keep, scores.size(-1))
        indices_to_remove = indices_to_remove & (scores < torch.topk(scores, top_k)[0][..., -1, None])
        return scores.masked_fill(indices_to_remove, FILTER_VALUE)
