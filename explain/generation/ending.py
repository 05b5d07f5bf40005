"""The end of a run, written once for both producers (the explain backend's TextGenerationPipeline and the
transformers backend's TracedTextGenerationPipeline): generation/end, decoding/decode, and the two facts they
compute the same way, the effective max_new_tokens and the role segments of a chat template's text.

Each producer passes what only it knows (transformers' stopping criteria, its postprocess output) as extra fields
of the event, which events/kinds.py declares.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .contract import GenerationInterface


def max_new_tokens_effective(max_length: int | None, prompt_length: int) -> int:
    """The new tokens a run may generate: max_length counts the prompt (max_new_tokens has become max_length)."""
    return max((max_length or 0) - prompt_length, 0)


def emit_end(generation: GenerationInterface, start: float, duration: float, interrupted: bool, **facts) -> bool:
    """generation/end, once per run (a run ended already emits nothing and returns False). `duration` is the
    run's time (a call's, or the sum of its steps' forwards for a run advanced by hand)."""
    if generation.ended:
        return False
    generation.ended = True
    steps = generation.steps
    decode_steps = [step for step in steps if step.get("forward") == "decode"]
    decode_time = sum(step.get("forward_time") or 0.0 for step in decode_steps)
    prefill = generation.trace.last("generation", "prefill", run=generation.run_id)
    generation.trace.emit(
        "generation",
        "end",
        {
            "stop_reason": generation.stop_reason or ("interrupted" if interrupted else None),
            "interrupted": interrupted,
            "new_tokens": len(steps),
            "prompt_tokens": generation.prompt_length,
            "prefill_time": prefill.duration if prefill is not None else None,
            "decode_tokens_per_s": len(decode_steps) / decode_time if decode_steps and decode_time > 0 else None,
            "tokens_per_s": len(steps) / duration if duration > 0 else None,
            "branch": generation.branch,
            **facts,
        },
        run=generation.run_id,
        start=start,
        duration=duration,
    )
    return True


def finish_by_hand(generation: GenerationInterface, end: Callable[[float, float], Any]) -> str | None:
    """Close a run advanced by hand (start + step/run), for both producers' finish(): `end(start, duration)`
    emits generation/end and decoding/decode, with the steps' own forward time as the duration (not the pauses
    between them). A run ends once: finishing it again returns the same text and emits nothing."""
    if generation.ended:
        return generation.output_text
    duration = sum(step.get("forward_time") or 0.0 for step in generation.steps)
    end(time.time() - duration, duration)
    return generation.output_text


def emit_decode(
    trace,
    generation: GenerationInterface | None,
    decode: Callable[[list[int], bool], str],
    ids: list[int] | None = None,
    skip_special_tokens: bool = True,
    interrupted: bool = False,
    **facts,
) -> str:
    """decoding/decode: the run's new tokens (`ids`, by default generation.generated_ids) as text, with and
    without special tokens, each further returned sequence decoded too; sets generation.output_text and returns
    the text. `decode(ids, skip_special_tokens)` is the producer's tokenizer."""
    start, t0 = time.time(), time.perf_counter()
    if ids is None:
        assert generation is not None, "emit_decode needs the generation or the ids"
        ids = generation.generated_ids
    text = decode(ids, skip_special_tokens)
    data: dict[str, Any] = {
        "ids": ids,
        "text": text,
        "text_with_special": decode(ids, False),
        "stop_reason": generation.stop_reason if generation is not None else None,
        "interrupted": interrupted,
        "skip_special_tokens": skip_special_tokens,
    }
    if generation is not None:
        data["branch"] = generation.branch
        sequences = generation.sequences
        if len(sequences) > 1:  # several returned sequences: each decoded, the first is ids/text above
            data["sequences"] = [
                {
                    "ids": row[generation.prompt_length :],
                    "text": decode(row[generation.prompt_length :], skip_special_tokens),
                }
                for row in sequences
            ]
            batch_rows = getattr(generation, "batch_rows", None) or []  # a batch of prompts: each row's prompt index
            for entry, batch_row in zip(data["sequences"], batch_rows, strict=False):
                entry["batch_row"] = batch_row
    data.update(facts)
    trace.emit(
        "decoding",
        "decode",
        data,
        run=generation.run_id if generation is not None else trace.run,
        start=start,
        duration=time.perf_counter() - t0,
    )
    if generation is not None:
        generation.output_text = text
    return text


SEGMENTED_MESSAGES = 128  # the longest chat whose messages role_segments finds (n renders of up to n messages)


def role_segments(render: Callable[[list], str], messages: list, text: str, passes: tuple = ()) -> list | None:
    """Character ranges of each message in a chat template's `text`: `render(messages[:i])` is the template's text
    of each prefix of the conversation (no generation prompt); what follows the last message is the generation
    prompt. None when the template refuses a partial conversation or its prefixes are not prefixes of `text`.
    An exception of a class in `passes` is raised rather than read as a refusal (explain's template limits).
    None too past SEGMENTED_MESSAGES messages: the prefixes cost n renders of up to n messages each (1,000 messages
    took 84 s), and a chat that long is shown as text."""
    if len(messages) > SEGMENTED_MESSAGES:
        return None
    segments, start = [], 0
    for index in range(len(messages)):
        try:
            end = len(render(messages[: index + 1]))
        except passes:
            raise
        except Exception:  # a template that refuses partial conversations: no segments, nothing is lost
            return None
        if end > len(text) or end < start:
            return None
        segments.append({"role": messages[index]["role"], "start": start, "end": end})
        start = end
    if start < len(text):
        segments.append({"role": "generation prompt", "start": start, "end": len(text)})
    return segments
