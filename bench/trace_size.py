"""What a saved trace costs per generated token, measured on the file Trace.save writes.

Each step is one event in the file, written as json.dumps writes it (UTF-8, ", " between events), so a step costs
the size of its own JSON plus two bytes. How big that is depends on the call more than on the model: a greedy
step stores the top-20 logits, the top-10 probabilities and the text of each token they name; a sampling step
also stores a top-20 list for every processor that changed the scores (a default pipeline call samples with
temperature 0.7 and top_k 50: two more lists).
"""

from __future__ import annotations

import json
import os
import tempfile

import torch

from explain.trace import Trace


def saved_bytes_per_step(trace: Trace, runs: set) -> dict:
    """The runs' events saved twice, with and without their generation/step events: what the steps add to the
    file, per step."""
    events = [e for e in trace.events if e.run in runs]
    steps = [e for e in events if e.stage == "generation" and e.kind == "step"]
    step_ids = {id(e) for e in steps}
    with tempfile.TemporaryDirectory(prefix="explain-bench-trace-") as folder:
        whole = Trace(events, trace.meta).save(os.path.join(folder, "whole.json"))
        without = Trace([e for e in events if id(e) not in step_ids], trace.meta).save(
            os.path.join(folder, "without-steps.json")
        )
        file_bytes, steps_bytes = os.path.getsize(whole), os.path.getsize(whole) - os.path.getsize(without)
    largest = max(len(json.dumps(e.to_dict(), ensure_ascii=False, allow_nan=False).encode()) for e in steps) + 2
    return {
        "method": "Trace.save file, with minus without the step events",
        "steps": len(steps),
        "bytes": steps_bytes,
        "bytes_per_step": steps_bytes / len(steps),
        "max_step_bytes": largest,
        "file_bytes": file_bytes,
    }


def default_call(pipe, prompt: str, new_tokens: int, seed: int = 0) -> dict:
    """One call with the pipeline's own defaults (sampling), EOS off so it makes `new_tokens`; its saved cost."""
    torch.manual_seed(seed)
    pipe(prompt, max_new_tokens=new_tokens, eos_token_id=None)
    settings = pipe.trace.filter("generation", "settings", run=pipe.trace.run)[-1].data
    out = saved_bytes_per_step(pipe.trace, {pipe.trace.run})
    out["processors"] = [p["name"] for p in settings["processors"]]
    return out
