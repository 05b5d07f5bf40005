"""Decode at a long context: explain and transformers, token by token, after a prompt of ~2,000 tokens.

At short contexts a decode step is the weights' matrix-vector products; after 2,000 tokens it also reads every
layer's cached keys and values, and how attention treats grouped-query heads shows. SmolLM2-135M has 9 query
heads sharing 3 key/value heads: copying each key/value head three times per step (`repeat_kv` before SDPA) made
explain 1.31x slower than transformers here (103 against 79 ms/token, fp32), while SDPA's enable_gqa, which
transformers 5 passes, shares them without copies.

Part of `python -m bench` (a row per dtype under "Decode at a long context"); `python -m bench.long_context`
runs these rows alone and prints them (nothing is written).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from typing import Any

CONTENDERS = ("explain_traced", "transformers")


def measure(contenders: dict, text: str, ids: list, new_tokens: int, rounds: int) -> dict:
    """Each contender generates `new_tokens` greedily after the prompt `ids`, `rounds` times, in turns."""
    names = [name for name in CONTENDERS if name in contenders]
    steps: dict[str, list] = {name: [] for name in names}
    forward: dict[str, list] = {name: [] for name in names}
    tokens: dict[str, list] = {name: [] for name in names}
    for round_ in range(rounds):
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:  # the first place rotates
            timing = contenders[name].generate(text, ids, new_tokens)
            steps[name].extend(timing.step_s)
            tokens[name].append(timing.ids)
            if timing.forward_s is not None:
                forward[name].append(timing.forward_s / timing.decode_tokens)
    out: dict[str, Any] = {"prompt_tokens": len(ids), "new_tokens": new_tokens, "rounds": rounds, "contenders": {}}
    for name in names:
        median = statistics.median(steps[name])
        out["contenders"][name] = {
            "median_ms_per_token": 1000 * median,
            "median_tokens_per_s": 1 / median,
            "mean_ms_per_token": 1000 * statistics.fmean(steps[name]),
            "decode_tokens": len(steps[name]),
            "forward_ms_per_token": 1000 * statistics.fmean(forward[name]) if forward[name] else None,
        }
    if "explain_traced" in names and "transformers" in names:
        explain, reference = out["contenders"]["explain_traced"], out["contenders"]["transformers"]
        out["explain_time_vs_transformers"] = explain["median_ms_per_token"] / reference["median_ms_per_token"]
        out["same_tokens_as_transformers"] = tokens["explain_traced"] == tokens["transformers"]
    return out


def markdown(results: dict) -> list[str]:
    """The section's lines for the report (none when the results have no long-context rows)."""
    rows = [(dtype, entry["long_context"]) for dtype, entry in results["dtypes"].items() if entry.get("long_context")]
    if not rows:
        return []
    first = rows[0][1]
    lines = [
        "",
        f"## Decode at a long context ({first['prompt_tokens']:,}-token prompt)",
        "",
        f"Greedy, {first['new_tokens']} new tokens after the prompt, {first['rounds']} round(s) in turns; each "
        "step reads the KV cache of every earlier position as well as the weights.",
        "",
        "| dtype | contender | median token, ms | tokens/s at the median | model forward, ms/token | "
        "time vs transformers |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for dtype, entry in rows:
        reference = entry["contenders"].get("transformers", {}).get("median_ms_per_token")
        for name, row in entry["contenders"].items():
            ratio = f"{row['median_ms_per_token'] / reference:.2f}x" if reference else "n/a"
            forward = "n/a" if row["forward_ms_per_token"] is None else f"{row['forward_ms_per_token']:.1f}"
            lines.append(
                f"| {dtype} | {name.replace('_', ' ')} | {row['median_ms_per_token']:.1f} | "
                f"{row['median_tokens_per_s']:.2f} | {forward} | {ratio} |"
            )
        if "same_tokens_as_transformers" in entry:
            lines.append(
                f"| {dtype} | same greedy tokens as transformers | "
                f"{'yes' if entry['same_tokens_as_transformers'] else '**no**'} | | | |"
            )
    return lines


def main(argv=None) -> int:
    """Only these rows: load the contenders for each dtype, measure, print the markdown section."""
    import os
    import warnings

    import torch

    from . import decode as run

    parser = argparse.ArgumentParser(
        prog="python -m bench.long_context", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dtypes", default="float32")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--long-context-tokens", type=int, default=2000)
    parser.add_argument("--long-context-new-tokens", type=int, default=32)
    parser.add_argument("--long-context-rounds", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    warnings.filterwarnings("ignore")
    results: dict[str, Any] = {"dtypes": {}}
    for dtype in [d.strip() for d in args.dtypes.split(",") if d.strip()]:
        contenders, _, pipe = run.load_contenders(dtype)
        for name in CONTENDERS:  # warm-up: every code path once
            contenders[name].generate(run.PROMPTS[0], pipe.tokenizer.encode(run.PROMPTS[0]), 2)
        text, ids = run.long_prompt(pipe, args.long_context_tokens)
        results["dtypes"][dtype] = {
            "long_context": measure(contenders, text, ids, args.long_context_new_tokens, args.long_context_rounds)
        }
    print("\n".join(markdown(results)).lstrip("\n"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
