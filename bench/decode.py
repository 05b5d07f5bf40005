"""What the whole benchmark (run.py) and its sections run alone (long_context.py, quantized.py) share: the prompts,
the contenders loaded for a dtype, the decode measurement and its summary, a prompt of an exact length, a fresh
process. Here, below all of them, so that no section imports run.py (which imports every section)."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from typing import Any

import torch

from .contenders import ExplainContender, TransformersContender, Unavailable

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

PROMPTS = (
    "The history of the printing press begins",
    "Here is a recipe for a simple vegetable soup:",
    "In a distant galaxy, a small robot woke up and",
)

# prose long enough to cut a prompt of any length from (the prefill and time-to-first-token test)
LONG_TEXT = (
    "The lighthouse stood at the end of a narrow spit of rock, and every evening its keeper climbed the "
    "one hundred and twelve steps to light the lamp. Ships passing in the night saw the beam sweep across "
    "the water and knew where the reef lay. "
)


def rotated(items: list, k: int) -> list:
    k %= len(items)
    return items[k:] + items[:k]


def load_contenders(dtype: str) -> tuple[dict, dict, Any]:
    """(name -> contender, name -> why unavailable, explain pipeline) for one dtype."""
    import transformers

    import explain
    from explain.features.embedded import packaged_gguf

    pipe = explain.pipeline("text-generation", dtype=dtype)
    contenders: dict[str, Any] = {
        "explain_traced": ExplainContender("explain_traced", pipe),
        "explain_untraced": ExplainContender("explain_untraced", pipe, traced=False),
    }
    unavailable = {}
    try:
        contenders["explain_widget"] = ExplainContender("explain_widget", pipe, widget=True)
    except Unavailable as error:
        unavailable["explain_widget"] = f"not available: {error}"
    folder = os.path.dirname(packaged_gguf())
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF, dtype=getattr(torch, dtype))
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=GGUF)
    contenders["transformers"] = TransformersContender("transformers", model.eval(), tokenizer)
    return contenders, unavailable, pipe


def run_record(timing, prompt: int, round_: int, position: int) -> dict:
    record = {
        "prompt": prompt,
        "round": round_,
        "position_in_turn": position,
        "new_tokens": len(timing.ids),
        "decode_tokens": timing.decode_tokens,
        "decode_s": timing.decode_s,
        "tokens_per_s": timing.decode_tokens / timing.decode_s if timing.decode_s > 0 else None,
        "first_token_s": timing.first_token_s,
        "prefill_s": timing.prefill_s,
        "median_step_s": statistics.median(timing.step_s) if timing.step_s else None,
    }
    if timing.forward_s is not None:
        record["forward_s"] = timing.forward_s  # the model's share of decode_s; the rest is the loop and the trace
    return record


def measure_decode(contenders: dict, prompts: list, args) -> tuple[dict, dict, dict]:
    names = list(contenders)
    for name in names:  # warm-up: every code path once, allocator and caches settled
        text, ids = prompts[0]
        contenders[name].generate(text, ids, args.warmup_tokens)
    runs: dict[str, list[dict]] = {name: [] for name in names}
    steps: dict[str, list[float]] = {name: [] for name in names}  # every decoded token's time, all runs
    tokens: dict[str, dict] = {name: {} for name in names}
    turn = 0
    for round_ in range(args.rounds):
        for index, (text, ids) in enumerate(prompts):
            for position, name in enumerate(rotated(names, turn)):
                timing = contenders[name].generate(text, ids, args.new_tokens)
                runs[name].append(run_record(timing, index, round_, position))
                runs[name][-1]["trace_run"] = timing.trace_run
                steps[name].extend(timing.step_s)
                tokens[name][(index, round_)] = timing.ids
            turn += 1
    return runs, steps, tokens


def summarize_decode(runs: list, steps: list) -> dict:
    """tokens_per_s is new tokens / seconds over all runs. median_tokens_per_s is 1 / the median token's time:
    other jobs on a shared machine only ever add time, in bursts, and the median is what they disturb least,
    so the ratios (overheads, speed-up, roofline share) are taken from it."""
    decode_tokens = sum(r["decode_tokens"] for r in runs)
    decode_s = sum(r["decode_s"] for r in runs)
    ordered = sorted(steps)
    median = statistics.median(ordered)
    summary = {
        "available": True,
        "decode_tokens": decode_tokens,
        "decode_s": decode_s,
        "tokens_per_s": decode_tokens / decode_s,
        "ms_per_token": 1000 * decode_s / decode_tokens,
        "median_tokens_per_s": 1 / median,
        "median_ms_per_token": 1000 * median,
        "token_ms_percentiles": {
            str(q): 1000 * ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] for q in (10, 50, 90)
        },
        "runs_tokens_per_s": {
            "min": min(r["tokens_per_s"] for r in runs),
            "median": statistics.median(r["tokens_per_s"] for r in runs),
            "max": max(r["tokens_per_s"] for r in runs),
        },
        "runs": runs,
    }
    if all("forward_s" in r for r in runs):
        forward = sum(r["forward_s"] for r in runs)
        summary["forward_ms_per_token"] = 1000 * forward / decode_tokens
        summary["outside_forward_ms_per_token"] = 1000 * (decode_s - forward) / decode_tokens
    return summary


def long_prompt(pipe, length: int) -> tuple[str, list]:
    """A text that explain tokenizes to exactly `length` ids."""
    text = LONG_TEXT * (1 + length // 40)
    ids = pipe.tokenizer.encode(text)
    while len(ids) < length:
        text, ids = text + LONG_TEXT, pipe.tokenizer.encode(text + LONG_TEXT)
    for cut in range(length, length - 8, -1):
        candidate = pipe.tokenizer.decode(ids[:cut])
        again = pipe.tokenizer.encode(candidate)
        if len(again) == length:
            return candidate, again
    raise RuntimeError(f"could not cut a prompt of exactly {length} tokens")


def child(contender: str, dtype: str, threads: int, new_tokens: int = 0) -> dict:
    command = [sys.executable, "-m", "bench.child", contender, dtype, str(threads)] + (
        [str(new_tokens)] if new_tokens else []
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error", PYTHONWARNINGS="ignore")
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
