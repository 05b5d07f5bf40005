"""The decoding strategies, measured on the embedded model: what one step of each costs in time and in trace bytes,
against greedy decoding of one sequence (the issue's bound: a beam step records every beam's top candidates, never
whole rows). A step is one forward pass of the model: one token of every sample, one token of every beam, one
draft-and-check round of assisted decoding.
"""

from __future__ import annotations

import json
import time
from typing import Any

PROMPT = "Copy this sentence: Paris is the capital of France.\nCopy: Paris is"
CALLS = {  # name -> the pipeline's arguments beyond the prompt, do_sample and max_new_tokens
    "greedy": {},
    "5 samples": {"do_sample": True, "num_return_sequences": 5},
    "4 beams": {"num_beams": 4},
    "prompt lookup": {"prompt_lookup_num_tokens": 3},
}
KINDS = ("step", "beams", "ranking", "draft")  # the generation events a step of some strategy emits


def _bytes(events) -> int:
    return sum(len(json.dumps(e.to_dict(), ensure_ascii=False)) for e in events)


def measure(pipe, new_tokens: int = 12) -> dict:
    """Per strategy: forward passes, new tokens, seconds and trace bytes per forward pass, and both against greedy."""
    out: dict[str, dict[str, Any]] = {}
    for name, call in CALLS.items():
        t0 = time.perf_counter()
        pipe(PROMPT, max_new_tokens=new_tokens, **{"do_sample": False, **call})
        seconds = time.perf_counter() - t0
        generation = pipe.last_generation
        events = [e for e in pipe.trace.filter("generation", run=generation.run_id) if e.kind in KINDS]
        forwards = len(getattr(generation, "rounds", None) or []) or len(
            {e.data["step"] for e in events if e.kind in ("step", "beams")}
        )
        size = _bytes(events)
        out[name] = {
            "call": call,
            "forward_passes": forwards,
            "new_tokens": len(generation.generated_ids),
            "sequences": len(generation.sequences),
            "seconds": seconds,
            "trace_bytes": size,
            "bytes_per_step": size / forwards,
            "s_per_step": seconds / forwards,
        }
    greedy = out["greedy"]
    for entry in out.values():
        entry["bytes_vs_greedy"] = entry["bytes_per_step"] / greedy["bytes_per_step"]
        entry["time_vs_greedy"] = entry["s_per_step"] / greedy["s_per_step"]
    return {"prompt": PROMPT, "new_tokens": new_tokens, "strategies": out}


def markdown(measured: dict) -> list[str]:
    lines = [
        "",
        "## Decoding strategies (float32)",
        "",
        f"{measured['new_tokens']} new tokens; a step is one forward pass of the model (every sample, every beam, "
        "or one draft-and-check round).",
        "",
        "| strategy | forward passes | new tokens | ms a step | x greedy | trace KB a step | x greedy |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, e in measured["strategies"].items():
        lines.append(
            f"| {name} | {e['forward_passes']} | {e['new_tokens']} | {1000 * e['s_per_step']:.0f} | "
            f"{e['time_vs_greedy']:.2f} | {e['bytes_per_step'] / 1024:.1f} | {e['bytes_vs_greedy']:.2f} |"
        )
    return lines
