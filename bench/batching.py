"""Batch throughput: a list of prompts with batch_size=b, explain (traced and untraced) against transformers' own
pipeline on the same model, side by side in one run.

For each batch size, b prompts of different lengths (the batch is left-padded) make `new_tokens` tokens each, EOS
off so every row runs to the end; the throughput is the new tokens of the whole batch per second of the call
(tokenization, padding, generation and decoding, as a user waits for them). Each contender runs each size `rounds`
times, in rotating order (the first to run is not always the same one); the median counts. Also measured: the
tracing overhead (untraced against traced explain), the trace's bytes per forward pass (one step of the batch: a
generation/step record per row) against batch size 1, and whether explain's texts equal transformers'.
"""

from __future__ import annotations

import json
import statistics
import time
from typing import Any

SIZES = (1, 4, 16)
TEXTS = (
    "Write a story about a cat",
    "The capital of France is",
    "Hi",
    "Here is a recipe for a simple vegetable soup, with the steps in order:",
    "Once upon a time",
    "In a distant galaxy, a small robot woke up and",
    "def add(a, b):",
    "Three facts about octopuses:",
)


def prompts(count: int) -> list[str]:
    """`count` prompts of different lengths (the texts, repeated with a number when there are more of them)."""
    return [TEXTS[i % len(TEXTS)] + (f" ({i // len(TEXTS)})" if i >= len(TEXTS) else "") for i in range(count)]


def _step_bytes(trace, run: int) -> int:
    return sum(
        len(json.dumps(e.to_dict(), ensure_ascii=False)) + 2
        for e in trace.events
        if e.run == run and e.stage == "generation" and e.kind == "step"
    )


def measure(pipe, model, tokenizer, sizes=SIZES, new_tokens: int = 16, rounds: int = 2) -> dict:
    """Per batch size: tokens/s of explain traced, explain untraced and transformers (medians), explain against
    transformers, the tracing overhead, the trace bytes per forward and per row, and whether the texts agree."""
    import transformers

    reference = transformers.pipeline("text-generation", model=model, tokenizer=tokenizer)
    rows = {}
    for size in sizes:
        texts = prompts(size)
        call = dict(batch_size=size, max_new_tokens=new_tokens, do_sample=False, eos_token_id=None)
        seconds: dict[str, list[float]] = {"explain_traced": [], "explain_untraced": [], "transformers": []}
        outputs: dict[str, object] = {}
        step_bytes, forwards = 0, 0  # set by the traced run, which every round makes
        for round_ in range(rounds):
            order = list(seconds)
            order = order[round_ % len(order) :] + order[: round_ % len(order)]
            for name in order:
                pipe.trace.enabled = name != "explain_untraced"
                try:
                    t0 = time.perf_counter()
                    out = (reference if name == "transformers" else pipe)(texts, **call)
                    seconds[name].append(time.perf_counter() - t0)
                finally:
                    pipe.trace.enabled = True
                outputs[name] = out
                if name == "explain_traced":  # the last batch's run: the whole list when it is one batch
                    generation = pipe.last_generation
                    step_bytes, forwards = _step_bytes(pipe.trace, generation.run_id), len(generation.steps)
        tokens = size * new_tokens
        entry: dict[str, Any] = {
            "prompts": size,
            "new_tokens_per_row": new_tokens,
            "rounds": rounds,
            "seconds": {name: statistics.median(values) for name, values in seconds.items()},
        }
        entry["tokens_per_s"] = {name: tokens / value for name, value in entry["seconds"].items()}
        entry["explain_vs_transformers"] = (
            entry["tokens_per_s"]["explain_traced"] / entry["tokens_per_s"]["transformers"]
        )
        entry["untraced_vs_transformers"] = (
            entry["tokens_per_s"]["explain_untraced"] / entry["tokens_per_s"]["transformers"]
        )
        entry["tracing_overhead"] = entry["seconds"]["explain_traced"] / entry["seconds"]["explain_untraced"] - 1
        entry["trace_bytes_per_forward"] = step_bytes / forwards
        entry["trace_bytes_per_row_step"] = step_bytes / forwards / size
        entry["texts_equal_transformers"] = outputs["explain_traced"] == outputs["transformers"]
        rows[str(size)] = entry
    first = rows[str(sizes[0])]
    for entry in rows.values():
        entry["trace_bytes_vs_size_1"] = entry["trace_bytes_per_forward"] / first["trace_bytes_per_forward"]
    largest = rows[str(sizes[-1])]
    targets = {
        "explain_at_least_transformers_at_every_size": all(e["explain_vs_transformers"] >= 1 for e in rows.values()),
        f"tracing_overhead_at_{sizes[-1]}_at_most_3_percent": largest["tracing_overhead"] <= 0.03,
        "trace_bytes_per_step_at_most_linear_in_batch": all(
            e["trace_bytes_vs_size_1"] <= int(size) / sizes[0] * 1.05 for size, e in rows.items()
        ),
        "texts_equal_transformers": all(e["texts_equal_transformers"] for e in rows.values()),
    }
    return {"sizes": list(sizes), "new_tokens": new_tokens, "rounds": rounds, "batches": rows, "targets": targets}


def markdown(measured: dict) -> list[str]:
    lines = [
        "",
        "## Batch throughput (float32)",
        "",
        f"b prompts of different lengths, `batch_size=b`, {measured['new_tokens']} new tokens each (EOS off); "
        "tokens/s = the batch's new tokens per second of the call, median of "
        f"{measured['rounds']} rotating rounds. A forward is one step of the whole batch.",
        "",
        "| batch | explain traced tok/s | untraced tok/s | transformers tok/s | explain / transformers | "
        "tracing overhead | trace KB a forward | x batch 1 | same texts |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for size, e in measured["batches"].items():
        t = e["tokens_per_s"]
        lines.append(
            f"| {size} | {t['explain_traced']:.1f} | {t['explain_untraced']:.1f} | {t['transformers']:.1f} | "
            f"{e['explain_vs_transformers']:.2f} | {100 * e['tracing_overhead']:+.1f}% | "
            f"{e['trace_bytes_per_forward'] / 1024:.1f} | {e['trace_bytes_vs_size_1']:.2f} | "
            f"{'yes' if e['texts_equal_transformers'] else 'NO'} |"
        )
    lines += [
        "",
        "Targets: "
        + "; ".join(
            f"{name.replace('_', ' ')}: {'met' if met else 'MISSED'}" for name, met in measured["targets"].items()
        ),
    ]
    return lines
