"""`python -m bench.transformers_backend`: what tracing costs on backend="transformers".

The same transformers.pipeline call three ways, on one model object (one copy of the weights), side by side:
  transformers untraced     transformers.TextGenerationPipeline(model, tokenizer), the user's own pipeline
  transformers traced       explain.attach(that pipeline): the same call, every stage traced (default capture)
  traced + live dashboard   the traced call with explain.widgets' live dashboard subscribed, no front end
Each call is greedy with EOS disabled and a streamer that stamps each new token (generate's own hook, passed the
same way to all three), so decode time is the same interval everywhere: first new token -> last new token. The
three take turns in a rotating order. Targets: tracing <= 3% of decode time, the live dashboard <= 5%.

Two clocks: wall time, and the CPU time of the thread that runs the model and the tracing (torch uses one thread,
--threads 1, so all of it). On a machine shared with other jobs the wall time of a token also counts the time the
thread waited for a core, which swamps a few per cent; the CPU time counts only the work done, so the targets are
checked on it (both are reported).
Writes bench/results/<date>-<machine>-transformers-backend.json and .md (run alone; the main benchmark is
`python -m bench`).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time
import warnings
from itertools import pairwise
from typing import Any

import torch

from .contenders import Unavailable, attach_widget
from .run import PROMPTS, RESULTS, machine, rotated, summarize_decode

CONTENDERS = ("transformers_untraced", "transformers_traced", "transformers_widget")
LABELS = {
    "transformers_untraced": "transformers pipeline, untraced",
    "transformers_traced": "the same call traced (explain.attach)",
    "transformers_widget": "traced + live dashboard sink",
}
TARGETS = {"transformers_traced": 3.0, "transformers_widget": 5.0}  # % of decode time, at most


def parse(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m bench.transformers_backend",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", default=None, help="a local model folder (default: the embedded GGUF)")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--prompts", type=int, default=len(PROMPTS), choices=range(1, len(PROMPTS) + 1))
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="results folder (default bench/results)")
    parser.add_argument("--smoke", action="store_true", help="4 tokens, 1 prompt, float32; needs --out")
    args = parser.parse_args(argv)
    if args.smoke:
        if args.out is None:
            parser.error("--smoke writes only to a folder you name: add --out DIR")
        args.new_tokens, args.prompts, args.dtypes, args.rounds = 4, 1, "float32", 1
    args.dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    args.out = args.out or RESULTS
    return args


def contenders(dtype: str, model: str | None) -> tuple[dict[str, tuple[Any, list]], dict[str, str], Any]:
    import transformers

    import explain

    loaded = explain.pipeline("text-generation", model=model, backend="transformers", dtype=getattr(torch, dtype))
    plain = transformers.TextGenerationPipeline(model=loaded.model, tokenizer=loaded.tokenizer)
    out: dict[str, tuple[Any, list]] = {
        "transformers_untraced": (plain, []),
        "transformers_traced": (explain.attach(plain), []),
    }
    unavailable: dict[str, str] = {}
    widget_pipe = explain.attach(plain)
    try:
        _, sinks, _ = attach_widget(widget_pipe)
        for sink in sinks:  # subscribed for the runs only
            widget_pipe.trace.unsubscribe(sink)
        out["transformers_widget"] = (widget_pipe, sinks)
    except Unavailable as error:
        unavailable["transformers_widget"] = f"not available: {error}"
    return out, unavailable, loaded


class Clock:
    """A transformers streamer that notes the wall time and this thread's CPU time of the prompt and each token."""

    def __init__(self):
        self.times: list[float] = []
        self.cpu: list[float] = []

    def put(self, value) -> None:
        self.times.append(time.perf_counter())
        self.cpu.append(time.thread_time())

    def end(self) -> None:
        pass


def generate(pipe, sinks: list, text: str, new_tokens: int) -> dict:
    trace: Any = getattr(pipe, "trace", None)  # explain's Trace: a pipeline given sinks is a traced one
    for sink in sinks:
        trace.subscribe(sink)
    clock = Clock()
    try:
        t0 = time.perf_counter()
        output = pipe(
            text, max_new_tokens=new_tokens, do_sample=False, eos_token_id=None, streamer=clock, return_full_text=False
        )
        t3 = time.perf_counter()
    finally:
        for sink in sinks:
            trace.unsubscribe(sink)
    stamps, cpu = clock.times[1:], clock.cpu[1:]  # the prompt, then each new token
    if len(stamps) != new_tokens:
        raise RuntimeError(f"{type(pipe).__name__}: {len(stamps)} tokens, expected {new_tokens}")
    steps = [b - a for a, b in pairwise(stamps)]
    return {
        "run": {
            "prompt": None,
            "new_tokens": new_tokens,
            "decode_tokens": new_tokens - 1,
            "decode_s": stamps[-1] - stamps[0],
            "first_token_s": stamps[0] - t0,
            "call_s": t3 - t0,
            "tokens_per_s": (new_tokens - 1) / (stamps[-1] - stamps[0]),
            "decode_cpu_s": cpu[-1] - cpu[0],
        },
        "steps": steps,
        "cpu_steps": [b - a for a, b in pairwise(cpu)],
        "text": output[0]["generated_text"],
    }


def run(args, on_dtype=None) -> dict:
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    warnings.filterwarnings("ignore")
    started, t0 = datetime.datetime.now(), time.perf_counter()
    results: dict[str, Any] = {
        "format": "explain-bench-transformers-backend",
        "version": 1,
        "date": started.strftime("%Y-%m-%d"),
        "started": started.isoformat(timespec="seconds"),
        "machine": machine(),
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "load_average_start": os.getloadavg(),
        "dtypes": {},
    }
    for dtype in args.dtypes:
        pipes, unavailable, loaded = contenders(dtype, args.model)
        names = list(pipes)
        for name in names:  # warm-up: every code path once
            generate(*pipes[name], PROMPTS[0], 8)
        runs: dict[str, list] = {n: [] for n in names}
        steps: dict[str, list] = {n: [] for n in names}
        texts: dict[str, list] = {n: [] for n in names}
        cpu_steps: dict[str, list] = {n: [] for n in names}
        turn = 0
        for round_ in range(args.rounds):
            for index, text in enumerate(PROMPTS[: args.prompts]):
                for position, name in enumerate(rotated(names, turn)):
                    measured = generate(*pipes[name], text, args.new_tokens)
                    runs[name].append(dict(measured["run"], prompt=index, round=round_, position_in_turn=position))
                    steps[name].extend(measured["steps"])
                    cpu_steps[name].extend(measured["cpu_steps"])
                    texts[name].append(measured["text"])
                turn += 1
        decode: dict[str, dict[str, Any]] = {
            name: summarize_decode(runs[name], steps[name])
            if name in runs
            else {"available": False, "reason": unavailable.get(name)}
            for name in CONTENDERS
        }
        for name in runs:
            ordered = sorted(cpu_steps[name])
            decode[name]["cpu"] = {
                "median_ms_per_token": 1000 * statistics.median(ordered),
                "ms_per_token": 1000 * sum(ordered) / len(ordered),
                "token_ms_percentiles": {
                    str(q): 1000 * ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] for q in (10, 50, 90)
                },
            }
        traced = pipes["transformers_traced"][0].trace
        step_events = traced.filter("generation", "step")
        results["dtypes"][dtype] = {
            "decode": decode,
            "same_text": all(texts[n] == texts["transformers_untraced"] for n in names),
            "trace_bytes_per_step": sum(len(json.dumps(e.to_dict())) for e in step_events) / max(len(step_events), 1),
            "model": type(loaded.model).__name__,
            "source_file": loaded.trace.meta.get("source_file"),
        }
        del pipes, loaded
        if on_dtype is not None:  # a slow machine keeps what it measured so far
            on_dtype(dict(results, load_average_end=os.getloadavg(), targets=targets(results)))
    results["load_average_end"] = os.getloadavg()
    results["duration_s"] = time.perf_counter() - t0
    results["targets"] = targets(results)
    return results


def targets(results: dict) -> list[dict]:
    """Overhead = the extra CPU time of a median decoded token, as a share of the untraced call's."""
    out = []
    for dtype, entry in results["dtypes"].items():
        decode = entry["decode"]
        base = decode["transformers_untraced"]["cpu"]["median_ms_per_token"]
        for name, limit in TARGETS.items():
            summary = decode.get(name, {})
            value = 100 * (summary["cpu"]["median_ms_per_token"] / base - 1) if summary.get("available") else None
            out.append(
                {
                    "dtype": dtype,
                    "target": f"{LABELS[name]}: decode CPU time over the untraced call",
                    "limit": limit,
                    "value": value,
                    "met": None if value is None else value <= limit,
                    "miss": None if value is None or value <= limit else f"{value - limit:.1f} points over",
                    "note": summary.get("reason"),
                }
            )
    return out


def markdown(results: dict, json_name: str) -> str:
    m, s = results["machine"], results["settings"]
    lines = [
        f'# backend="transformers": what tracing costs, {results["date"]}: {m["cpu"]}, {m["cpus"]} CPUs, '
        f"{s['threads']} torch thread(s)",
        "",
        f"{s['model'] or 'The embedded SmolLM2-135M-Instruct (Q4_1 GGUF)'} loaded by transformers; the same "
        f"transformers.pipeline call untraced, traced (explain.attach) and traced with the live dashboard sink, "
        f"on one model object; greedy, {s['new_tokens']} new tokens, EOS disabled, {s['prompts']} prompt(s) x "
        f"{s['rounds']} round(s) after a warm-up, in a rotating order. torch {m['torch']}, transformers "
        f"{m['transformers']}. Load average {results['load_average_start'][0]:.1f} at the start, "
        f"{results['load_average_end'][0]:.1f} at the end. Raw numbers: [{json_name}]({json_name}).",
        "",
        "| dtype | contender | tokens/s (wall) | median token, ms (wall) | median token, ms (CPU) | CPU vs untraced "
        "| same text |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for dtype, entry in results["dtypes"].items():
        base = entry["decode"]["transformers_untraced"]["cpu"]["median_ms_per_token"]
        for name in CONTENDERS:
            d = entry["decode"][name]
            if not d.get("available"):
                lines.append(f"| {dtype} | {LABELS[name]} | n/a | n/a | n/a | n/a | {d.get('reason')} |")
                continue
            cpu = d["cpu"]["median_ms_per_token"]
            lines.append(
                f"| {dtype} | {LABELS[name]} | {d['tokens_per_s']:.2f} | {d['median_ms_per_token']:.1f} | "
                f"{cpu:.1f} | {cpu / base:.3f}x | {'yes' if entry['same_text'] else '**no**'} |"
            )
    lines += [
        "",
        "Overheads are taken at the median token's CPU time: the thread's own work, which other jobs on a "
        "shared machine do not change (its wall time also counts the waits for a core). A traced step is about "
        + ", ".join(f"{e['trace_bytes_per_step']:,.0f} B ({d})" for d, e in results["dtypes"].items())
        + " of JSON.",
        "",
        "## Targets",
        "",
        "| target | dtype | value | target | met |",
        "|---|---|---:|---:|---|",
    ]
    for t in results["targets"]:
        value = "n/a" if t["value"] is None else f"{t['value']:.2f}%"
        met = "n/a" if t["met"] is None else ("yes" if t["met"] else f"**no** ({t['miss']})")
        lines.append(f"| {t['target']} | {t['dtype']} | {value} | <= {t['limit']:g}% | {met} |")
    return "\n".join(lines) + "\n"


def write(results: dict, folder: str) -> dict:
    os.makedirs(folder, exist_ok=True)
    stem = os.path.join(folder, f"{results['date']}-{results['machine']['slug']}-transformers-backend")
    with open(stem + ".json", "w") as f:
        json.dump(results, f, indent=1, allow_nan=False)
        f.write("\n")
    with open(stem + ".md", "w") as f:
        f.write(markdown(results, os.path.basename(stem) + ".json"))
    return {"json": stem + ".json", "markdown": stem + ".md"}


def main(argv=None) -> int:
    args = parse(argv)
    results = run(args, on_dtype=lambda partial: write(partial, args.out))
    paths = write(results, args.out)
    print(markdown(results, os.path.basename(paths["json"])))
    print(f"wrote {paths['json']}, {paths['markdown']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
