"""Plain records of transformers objects, in the fields explain's events use.

    processor_record(processor)   TemperatureLogitsWarper(0.7) -> {"name": "temperature", "class": ..., "args": ...}
    processor_effect(...)         what one processor did to one step's scores (removed, changed, kept, top)
    settings_record(config, ...)  a prepared GenerationConfig -> the `settings` of generation/settings
    cache_record(cache)           transformers' Cache object -> {"length", "bytes"}
    stop_reason(criteria)         the criteria that fired -> "eos", "max_length", "stop_string", ...
"""

from __future__ import annotations

import re

import numpy as np
import torch

from ...generation.settings import GENERATE_DEFAULTS

# transformers' processor class -> (explain's processor name, {explain's argument: transformers' attribute}).
# The names and arguments are those of explain's own processors (explain/generation/processors.py), so a record
# reads the same from either backend; tests/test_transformers_backend.py checks both build the same records.
PROCESSORS = {
    "RepetitionPenaltyLogitsProcessor": ("repetition_penalty", {"penalty": "penalty"}),
    "MinLengthLogitsProcessor": ("min_length", {"min_length": "min_length", "eos_token_ids": "eos_token_id"}),
    "MinNewTokensLengthLogitsProcessor": ("min_new_tokens", {"min_new_tokens": "min_new_tokens",
                                                              "eos_token_ids": "eos_token_id"}),
    "TemperatureLogitsWarper": ("temperature", {"temperature": "temperature"}),
    "TopKLogitsWarper": ("top_k", {"top_k": "top_k"}),
    "TopPLogitsWarper": ("top_p", {"top_p": "top_p"}),
    "MinPLogitsWarper": ("min_p", {"min_p": "min_p"}),
}
# transformers' stopping criteria -> explain's stop reasons, in the order explain checks them
STOP_REASONS = {"EosTokenCriteria": "eos", "MaxLengthCriteria": "max_length", "StopStringCriteria": "stop_string",
                "MaxTimeCriteria": "max_time", "ConfidenceCriteria": "confidence"}
SETTINGS = tuple(GENERATE_DEFAULTS)  # the settings explain's generation/settings event lists


def floats(values: torch.Tensor) -> list[float]:
    """float32 values written with the fewest digits that read back as the same float32."""
    # Copied from explain.generation.loop._floats: the two backends must write numbers identically
    return [float(np.format_float_positional(v, unique=True, trim="-")) for v in values.float().cpu().numpy()]


def plain_value(value):
    """A processor attribute as JSON: tensors of token ids become lists of ints, numbers stay numbers."""
    if isinstance(value, torch.Tensor):
        value = value.tolist()
        return value if isinstance(value, list) else [value]
    return value


def snake_case(name: str) -> str:
    name = re.sub(r"(LogitsProcessor|LogitsWarper|Processor)$", "", name)
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower() or "processor"


def processor_record(processor) -> dict:
    """{"name", "class", "args"} of one of transformers' processors, named as explain names its own."""
    cls = type(processor).__name__
    if cls in PROCESSORS:
        name, attributes = PROCESSORS[cls]
        args = {key: plain_value(getattr(processor, attribute)) for key, attribute in attributes.items()}
    else:  # a processor explain has no counterpart of: its public scalar settings
        name = snake_case(cls)
        args = {key: plain_value(value) for key, value in vars(processor).items()
                if not key.startswith("_") and key != "filter_value" and (
                    isinstance(value, (bool, int, float, str)) or
                    (isinstance(value, torch.Tensor) and value.numel() <= 16))}
    return {"name": name, "class": cls, "args": args}


def top(scores: torch.Tensor, count, token_text) -> dict:
    """The `count` highest finite values of a (1, vocab) row ("all": every value), as explain records them."""
    row = scores[0]
    if count == "all":
        values, ids = row, torch.arange(row.numel())
    else:
        values, ids = torch.topk(row, min(count, row.numel()))
    values, ids = values.float().cpu().numpy(), ids.cpu().numpy()  # a few numbers: numpy is cheaper than torch
    keep = np.isfinite(values)
    ids = ids[keep].tolist()
    if count != "all":
        for token_id in ids:
            token_text(token_id)
    return {"ids": ids, "values": [float(np.format_float_positional(v, unique=True, trim="-")) for v in values[keep]]}


def processor_effect(processor, before: torch.Tensor, after: torch.Tensor, count, token_text) -> dict:
    """What one processor did at one step: explain's per-processor record."""
    record = processor_record(processor)
    changed = int((before != after).sum())
    return {"name": record["name"], "args": record["args"],
            "removed": int((torch.isfinite(before) & ~torch.isfinite(after)).sum()), "changed": changed,
            "kept": int(torch.isfinite(after).sum()), "top": top(after, count, token_text) if changed else None}


def cache_record(cache) -> dict:
    """Length and bytes of transformers' own Cache object (every tensor its layers hold)."""
    if cache is None:
        return {"length": 0, "bytes": 0}
    total = 0
    for layer in getattr(cache, "layers", []):
        for value in vars(layer).values():
            if isinstance(value, torch.Tensor):
                total += value.numel() * value.element_size()
    return {"length": int(cache.get_seq_length()), "bytes": total}


def settings_record(config, prompt_length: int) -> dict:
    """The settings generate() ran with (its prepared GenerationConfig), as explain's generation/settings lists them."""
    settings = {}
    for key in SETTINGS:
        value = getattr(config, key, None)
        settings[key] = plain_value(value)
    settings["max_new_tokens_effective"] = max((config.max_length or 0) - prompt_length, 0)
    return settings


def stop_reason(fired: list) -> str | None:
    """explain's name for why generation stopped, from the criteria that fired at the last token."""
    if not fired:
        return None
    names = [type(criterion).__name__ for criterion in fired]
    for cls, reason in STOP_REASONS.items():
        if cls in names:
            return reason
    return snake_case(names[0])
