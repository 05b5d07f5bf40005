"""Inside the model, measured: what generation.inspect(step) costs on the embedded model at ~100 context tokens
(lens and attention, the issue's target: under 1 s; attribution by gradient x input beside it), and what
capture="inside" costs per step in decode time and trace bytes, against the default capture.
"""

from __future__ import annotations

import json
import statistics
import time
from typing import Any

PROMPT = (
    "The lighthouse stood at the end of a narrow spit of rock, and every evening its keeper climbed the one "
    "hundred and twelve steps to light the lamp. Ships passing in the night saw the beam sweep across the "
    "water and knew where the reef lay. The keeper's daughter kept a log of every ship: its name, its flag, "
    "the hour it passed and the weather. One winter night a storm broke the great lens, the lamp went out, "
    "and the keeper"
)
NEW_TOKENS = 8


def _step_bytes(trace, run, kind) -> float:
    events = trace.filter("generation", kind, run)
    return statistics.mean(len(json.dumps(e.to_dict(), ensure_ascii=False)) for e in events) if events else 0.0


def measure(pipe, repeats: int = 3) -> dict:
    """inspect() times at the last steps of a run whose context is ~100 tokens, and capture="inside"'s cost."""
    ids = pipe.tokenizer.encode(PROMPT)
    generation = pipe.start(PROMPT, max_new_tokens=NEW_TOKENS, do_sample=False).run()
    context = generation.steps[-1]["position"]
    lens_attention, attribution = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        generation.inspect(NEW_TOKENS - 1)
        lens_attention.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    generation.inspect(NEW_TOKENS - 1, what=("attribution",))
    attribution.append(time.perf_counter() - t0)
    pipe.finish(generation)
    timings: dict[str, Any] = {}
    for capture in (None, "inside", None, "inside"):  # in turns, so the machine's drift hits both
        run = pipe.trace.new_run()
        t0 = time.perf_counter()
        pipe.start(PROMPT, run=run, max_new_tokens=NEW_TOKENS, do_sample=False, capture=capture).run()
        timings.setdefault(capture or "default", []).append((time.perf_counter() - t0) / NEW_TOKENS)
        timings.setdefault(f"{capture or 'default'}_run", []).append(run)
    inside_run = timings["inside_run"][-1]
    default_run = timings["default_run"][-1]
    step_bytes = _step_bytes(pipe.trace, default_run, "step")
    inspect_bytes = _step_bytes(pipe.trace, inside_run, "inspect")
    return {
        "context_tokens": context,
        "prompt_tokens": len(ids),
        "layers": pipe.config.get("num_hidden_layers"),
        "inspect_lens_attention_s": min(lens_attention),
        "inspect_lens_attention_all_s": lens_attention,
        "inspect_attribution_s": min(attribution),
        "target_lens_attention_s": 1.0,
        "met": min(lens_attention) < 1.0,
        "step_s_default": min(timings["default"]),
        "step_s_inside": min(timings["inside"]),
        "capture_inside_slowdown": min(timings["inside"]) / min(timings["default"]),
        "step_event_bytes": step_bytes,
        "inspect_event_bytes": inspect_bytes,
        "bytes_per_step_default": step_bytes,
        "bytes_per_step_inside": step_bytes + inspect_bytes,
    }


def markdown(inside: dict) -> list[str]:
    return [
        "",
        "## Inside the model (float32)",
        "",
        f"At {inside['context_tokens']} context tokens ({inside['layers']} layers): `generation.inspect(step)` "
        f"(logit lens and attention) takes {inside['inspect_lens_attention_s']:.2f} s (target under "
        f"{inside['target_lens_attention_s']:.0f} s: {'met' if inside['met'] else 'missed'}); attribution by "
        f"gradient x input {inside['inspect_attribution_s']:.2f} s.",
        "",
        f'`capture="inside"` records lens and attention at every step: {1000 * inside["step_s_inside"]:.0f} ms a '
        f"step against {1000 * inside['step_s_default']:.0f} ms ({inside['capture_inside_slowdown']:.1f}x), and "
        f"{inside['bytes_per_step_inside'] / 1024:.0f} KB of trace a step against "
        f"{inside['bytes_per_step_default'] / 1024:.1f} KB (the attention weights of every layer and head over "
        "the whole context are most of it).",
    ]
