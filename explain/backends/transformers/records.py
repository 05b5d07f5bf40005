"""Plain records of transformers objects, in the fields explain's events use.

processor_records(...)        generate()'s processor list -> {"name", "class", "title", "args"} of each, as
                              explain's processor registry names them
processor_effect(...)         what one processor did to one step's scores (removed, changed, kept, top)
settings_record(config, ...)  a prepared GenerationConfig -> the `settings` of generation/settings
cache_record(cache)           transformers' Cache object -> {"length", "bytes"}
stop_reason(criteria)         the criteria that fired -> "eos", "max_length", "stop_string", ...
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import torch

from ...errors import ExplainError
from ...generation.ending import max_new_tokens_effective
from ...generation.options import TOP_WHEN_ALL
from ...generation.processors import build_processors
from ...generation.rows import processor_record
from ...generation.settings import GENERATE_DEFAULTS, KNOBS, validate

# transformers' stopping criteria -> explain's stop reasons, in the order explain checks them
STOP_REASONS = {
    "EosTokenCriteria": "eos",
    "MaxLengthCriteria": "max_length",
    "StopStringCriteria": "stop_string",
    "MaxTimeCriteria": "max_time",
    "ConfidenceCriteria": "confidence",
}
SETTINGS = tuple(GENERATE_DEFAULTS)  # the settings explain's generation/settings event lists


def plain_value(value):
    """A processor attribute as JSON: tensors of token ids become lists of ints, numbers stay numbers."""
    if isinstance(value, torch.Tensor):
        value = value.tolist()
        return value if isinstance(value, list) else [value]
    return value


def snake_case(name: str) -> str:
    name = re.sub(r"(LogitsProcessor|LogitsWarper|Processor)$", "", name)
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower() or "processor"


def generic_record(processor) -> dict:
    """A processor explain's registry has no entry for (a class of the user's, or one transformers added): its
    class name, and its public scalar settings as arguments."""
    cls = type(processor).__name__
    args = {
        key: plain_value(value)
        for key, value in vars(processor).items()
        if not key.startswith("_")
        and key != "filter_value"
        and (isinstance(value, (bool, int, float, str)) or (isinstance(value, torch.Tensor) and value.numel() <= 16))
    }
    return {"name": snake_case(cls), "class": cls, "title": cls, "args": args}


def processor_records(config, processors, arguments: dict, vocab_size: int | None) -> list[dict]:
    """The record of each processor generate() built, in its order: name, title and arguments from explain's
    processor registry (explain/generation/processors/), which builds its list from the same settings (the
    GenerationConfig generate() prepared, and the builder's own arguments: the call's logits_processor list, the
    prefix function, the prompt), pairing each of transformers' processors with the registry's of the same class.
    A processor with no registry twin gets generic_record. Both backends therefore name, title and parametrise a
    processor the same way (tests/test_transformers_backend.py compares them)."""
    prompt = arguments.get("encoder_input_ids")
    settings = {key: plain_value(getattr(config, key)) if hasattr(config, key) else None for key in KNOBS}
    settings.update(
        logits_processor=list(arguments.get("logits_processor") or []) or None,
        prefix_allowed_tokens_fn=arguments.get("prefix_allowed_tokens_fn"),
        negative_prompt_ids=arguments.get("negative_prompt_ids"),
    )
    settings = {
        key: GENERATE_DEFAULTS[key] if value is None and key in GENERATE_DEFAULTS else value
        for key, value in settings.items()
    }
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # transformers warned already, where it had something to say
            ours = build_processors(
                validate(settings, vocab_size),
                arguments.get("input_ids_seq_length") or 0,
                prompt_ids=prompt,
                vocab_size=vocab_size,
                device="cpu",
            )
    except (ExplainError, TypeError, ValueError, RuntimeError):  # settings only transformers takes: generic records
        ours = []
    records = []
    for processor in processors:
        twin = next((p for p in ours if _twins(p, processor)), None)
        if twin is None:
            records.append(generic_record(processor))
            continue
        ours.remove(twin)
        records.append({"name": twin.name, "class": type(processor).__name__, "title": twin.title, "args": twin.args()})
    return records


def _twins(ours, theirs) -> bool:
    function = getattr(ours, "function", None)  # the call's own processor, wrapped by the registry's CallProcessor
    if function is not None and getattr(ours, "transformers_class_name", None) is not None:
        return function is theirs
    return ours.transformers_class == type(theirs).__name__


def top(scores: torch.Tensor, count, token_text) -> dict:
    """The `count` highest finite values of a (1, vocab) row, as explain records them (trace_top="all": the top
    TOP_WHEN_ALL, the whole rows going into the step's "rows")."""
    row = scores[0]
    values, ids = torch.topk(row, min(TOP_WHEN_ALL if count == "all" else count, row.numel()))
    values, ids = values.float().cpu().numpy(), ids.cpu().numpy()  # a few numbers: numpy is cheaper than torch
    keep = np.isfinite(values)
    ids = ids[keep].tolist()
    for token_id in ids:
        token_text(token_id)
    return {"ids": ids, "values": [float(np.format_float_positional(v, unique=True, trim="-")) for v in values[keep]]}


def processor_effect(record: dict, before: torch.Tensor, after: torch.Tensor, count, token_text) -> dict:
    """What one processor (its processor_records entry) did at one step: explain's per-processor record."""
    return processor_record(record, before, after, lambda now: top(now, count, token_text))


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
    settings["max_new_tokens_effective"] = max_new_tokens_effective(config.max_length, prompt_length)
    return settings


def stop_reason(fired: list) -> str | None:
    """explain's name for why generation stopped, from the criteria that fired at the last token."""
    if not fired:
        return None
    names = [type(criterion).__name__ for criterion in fired]
    for cls, reason in STOP_REASONS.items():
        if cls in names:
            return reason
    return names[0]  # a criterion of the caller's: its class name, as the explain backend names it
