"""`python -m bench`: explain against transformers on the embedded SmolLM2-135M-Instruct, fp32 and bf16.

For each dtype, in one process: explain traced, explain untraced, explain with the live widget sink and
transformers' generate take turns on the same prompt ids (the order rotates every run, so the machine's drift
hits all of them), greedy, EOS disabled, same torch threads. Then, in fresh processes, each cold load and its
peak RSS. Writes bench/results/<date>-<machine>.json, the same as a markdown table, and latest.md.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import re
import shutil
import socket
import statistics
import sys
import time
import warnings
from typing import Any

import torch

from . import batching, long_context, quantized, report, trace_size
from .decode import GGUF, PROMPTS, REPO, child, load_contenders, long_prompt, measure_decode, rotated, summarize_decode
from .forward import forward_breakdown
from .inside import measure as measure_inside
from .roofline import read_bandwidth, weight_bytes
from .strategies import measure as measure_strategies

RESULTS = os.path.join(REPO, "bench", "results")
CONTENDERS = ("explain_traced", "explain_untraced", "explain_widget", "transformers")


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny settings for the test suite: 4 new tokens, 1 prompt, float32, 1 cold load of "
        "explain only, 32-token prefill; write to --out (required)",
    )
    parser.add_argument("--out", default=None, help=f"results folder (default {os.path.relpath(RESULTS, REPO)})")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads for every contender (default 1: on a small machine shared with other "
        "jobs, a second thread waits on a busy core and makes runs several times slower)",
    )
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--prompts", type=int, default=len(PROMPTS), choices=range(1, len(PROMPTS) + 1))
    parser.add_argument("--rounds", type=int, default=1, help="times each prompt is run by each contender")
    parser.add_argument("--warmup-tokens", type=int, default=8)
    parser.add_argument("--prefill-tokens", type=int, default=512)
    parser.add_argument("--prefill-repeats", type=int, default=3)
    parser.add_argument(
        "--long-context-tokens",
        type=int,
        default=2000,
        help="prompt length of the long-context decode rows (0 skips them)",
    )
    parser.add_argument("--long-context-new-tokens", type=int, default=32)
    parser.add_argument("--long-context-rounds", type=int, default=2)
    parser.add_argument("--forward-repeats", type=int, default=20, help="forwards timed for the breakdown")
    parser.add_argument(
        "--batch-sizes",
        default=",".join(map(str, batching.SIZES)),
        help="batch sizes of the batch-throughput rows (bench/batching.py; empty skips them)",
    )
    parser.add_argument("--batch-new-tokens", type=int, default=16, help="new tokens per row of those rows")
    parser.add_argument("--load-runs", type=int, default=3, help="cold loads per contender and dtype (median)")
    parser.add_argument("--no-transformers-load", action="store_true", help="skip transformers' cold loads")
    parser.add_argument("--bandwidth-mib", type=int, default=1024, help="buffer summed to measure read bandwidth")
    parser.add_argument(
        "--quantized",
        choices=("on", "off", "only"),
        default="on",
        help='the quantization="gguf" rows (bench/quantized.py): with the others, not at all, or alone (no dtype rows)',
    )
    args = parser.parse_args(argv)
    if args.smoke:
        if args.out is None:
            parser.error("--smoke writes only to a folder you name: add --out DIR")
        args.new_tokens, args.prompts, args.dtypes, args.rounds, args.warmup_tokens = 4, 1, "float32", 1, 2
        args.prefill_tokens, args.prefill_repeats, args.load_runs, args.forward_repeats = 32, 1, 1, 3
        args.no_transformers_load, args.bandwidth_mib = True, 64
        args.long_context_tokens, args.long_context_new_tokens, args.long_context_rounds = 48, 3, 1
        args.batch_sizes, args.batch_new_tokens = "1,2", 2
    args.dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    args.batch_sizes = [int(size) for size in args.batch_sizes.split(",") if size.strip()]
    args.out = args.out or RESULTS
    return args


def machine() -> dict:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import numpy
    import transformers

    import explain

    info = {
        "hostname": socket.gethostname(),
        "cpu": model,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "numpy": numpy.__version__,
        "explain": explain.__version__,
        "platform": platform.platform(),
    }
    try:
        import psutil

        info["memory_bytes"] = psutil.virtual_memory().total
    except ImportError:
        pass
    info["slug"] = re.sub(r"[^a-z0-9]+", "-", f"{model} {info['cpus']}cpu".lower()).strip("-")
    return info


# -- in-process measurements ---------------------------------------------------------------------------------


def agreement(tokens: dict) -> dict:
    """Do explain's greedy tokens equal transformers' (same prompt ids, same dtype)?"""
    reference = tokens.get("transformers", {})
    out = {}
    for name, by_run in tokens.items():
        if name == "transformers" or not reference:
            continue
        same = [by_run[key] == reference[key] for key in by_run]
        first = [
            next((i for i, (a, b) in enumerate(zip(by_run[k], reference[k], strict=False)) if a != b), None)
            for k in by_run
        ]
        out[name] = {"identical_runs": sum(same), "runs": len(same), "first_difference_at": first}
    return out


def measure_prefill(contenders: dict, pipe, args) -> dict:
    text, ids = long_prompt(pipe, args.prefill_tokens)
    runs: dict[str, list] = {name: [] for name in contenders}
    for repeat in range(args.prefill_repeats):
        for name in rotated(list(contenders), repeat):
            timing = contenders[name].generate(text, ids, 1)
            runs[name].append({"prefill_s": timing.prefill_s, "first_token_s": timing.first_token_s})
    out = {}
    for name, records in runs.items():
        prefill = statistics.median(r["prefill_s"] for r in records)
        out[name] = {
            "prompt_tokens": len(ids),
            "prefill_s": prefill,
            "prompt_tokens_per_s": len(ids) / prefill,
            "first_token_s": statistics.median(r["first_token_s"] for r in records),
            "runs": records,
        }
    return out


# -- fresh processes -------------------------------------------------------------------------------------------


def measure_cold(dtype: str, args) -> dict:
    names = ["explain"] + ([] if args.no_transformers_load else ["transformers"])
    records: dict[str, list] = {name: [] for name in names}
    for run in range(args.load_runs):
        for name in rotated(names, run):
            records[name].append(child(name, dtype, args.threads, args.new_tokens if run == 0 else 0))
    out = {}
    for name in ("explain", "transformers"):
        if name not in records:
            out[name] = {"available": False, "reason": "skipped (--no-transformers-load or --smoke)"}
            continue
        loads = [r["load_s"] for r in records[name]]
        first = records[name][0]
        out[name] = {
            "available": True,
            "load_s": statistics.median(loads),
            "runs_s": loads,
            "peak_rss_after_load_bytes": max(r["peak_rss_after_load"] for r in records[name]),
            "peak_rss_after_generate_bytes": first.get("peak_rss_after_generate"),
            "generated_tokens": first.get("new_tokens"),
        }
    return out


# -- the whole benchmark ---------------------------------------------------------------------------------------
def run(args) -> dict:
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    warnings.filterwarnings("ignore")
    started, t0 = datetime.datetime.now(), time.perf_counter()
    results: dict[str, Any] = {
        "format": "explain-bench",
        "version": 1,
        "date": started.strftime("%Y-%m-%d"),
        "started": started.isoformat(timespec="seconds"),
        "machine": machine(),
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "load_average_start": os.getloadavg(),
        "dtypes": {},
    }
    phases = results["phases_s"] = {}
    mark = time.perf_counter()

    def phase(name):
        nonlocal mark
        now = time.perf_counter()
        phases[name] = now - mark
        mark = now

    bandwidth = read_bandwidth(args.bandwidth_mib << 20)
    phase("bandwidth")
    for dtype in args.dtypes if args.quantized != "only" else []:
        contenders, unavailable, pipe = load_contenders(dtype)
        phase(f"{dtype} load in-process")
        prompts = [(text, pipe.tokenizer.encode(text)) for text in PROMPTS[: args.prompts]]
        runs, steps, tokens = measure_decode(contenders, prompts, args)
        phase(f"{dtype} decode")
        decode = {
            name: summarize_decode(runs[name], steps[name])
            if name in runs
            else {"available": False, "reason": unavailable.get(name)}
            for name in CONTENDERS
        }
        if "explain_widget" in contenders:
            decode["explain_widget"]["widget"] = contenders["explain_widget"].widget_entry
        entry = {
            "weights": weight_bytes(pipe.model),
            "decode": decode,
            "agreement_with_transformers": agreement(tokens),
            "prompt_tokens": [len(ids) for _, ids in prompts],
            "transformers_tokenizer_same_ids": contenders["transformers"].same_ids,
            "trace_bytes_per_step": trace_size.saved_bytes_per_step(
                pipe.trace, {r["trace_run"] for r in runs["explain_traced"]}
            ),
            "trace_bytes_per_step_default_call": trace_size.default_call(pipe, PROMPTS[0], args.new_tokens),
            "prefill": measure_prefill(contenders, pipe, args),
        }
        phase(f"{dtype} prefill")
        if args.long_context_tokens:
            text, ids = long_prompt(pipe, args.long_context_tokens)
            entry["long_context"] = long_context.measure(
                contenders, text, ids, args.long_context_new_tokens, args.long_context_rounds
            )
            phase(f"{dtype} long-context decode")
        entry["forward_breakdown"] = forward_breakdown(
            pipe.model, contenders["transformers"].model, prompts[0][1], repeats=args.forward_repeats
        )
        phase(f"{dtype} forward breakdown")
        if dtype == "float32":
            entry["inside"] = measure_inside(pipe)
            phase("inside the model")
            entry["strategies"] = measure_strategies(pipe, new_tokens=4 if args.smoke else 12)
            phase("decoding strategies")
            if args.batch_sizes:
                reference = contenders["transformers"]
                entry["batching"] = batching.measure(
                    pipe,
                    reference.model,
                    reference.tokenizer,
                    args.batch_sizes,
                    args.batch_new_tokens,
                    rounds=1 if args.smoke else 2,
                )
                phase("batch throughput")
        results["dtypes"][dtype] = entry
        del contenders, pipe
        gc.collect()
        entry["cold_load"] = measure_cold(dtype, args)
        phase(f"{dtype} cold load")
    if args.quantized != "off":
        results["quantized"] = quantized.measure(args, PROMPTS, GGUF)
        phase("quantized")
    again = read_bandwidth(args.bandwidth_mib << 20)  # best of the start and the end
    results["bandwidth"] = max((bandwidth, again), key=lambda b: b["bytes_per_s"])
    results["bandwidth"]["start_and_end_bytes_per_s"] = [bandwidth["bytes_per_s"], again["bytes_per_s"]]
    if "quantized" in results:
        quantized.add_roofline(results["quantized"], results["bandwidth"]["bytes_per_s"])
    for entry in results["dtypes"].values():
        bound = results["bandwidth"]["bytes_per_s"] / entry["weights"]["bytes_per_token"]
        entry["roofline_tokens_per_s"] = bound
        for summary in entry["decode"].values():
            if summary["available"]:
                summary["roofline_share"] = summary["median_tokens_per_s"] / bound
    results["load_average_end"] = os.getloadavg()
    results["duration_s"] = time.perf_counter() - t0
    results["targets"] = report.targets(results)
    return results


def write(results: dict, folder: str) -> dict:
    os.makedirs(folder, exist_ok=True)
    stem = os.path.join(folder, f"{results['date']}-{results['machine']['slug']}")
    with open(stem + ".json", "w") as f:
        json.dump(results, f, indent=1, allow_nan=False)
        f.write("\n")
    with open(stem + ".md", "w") as f:
        f.write(report.markdown(results, os.path.basename(stem) + ".json"))
    shutil.copyfile(stem + ".md", os.path.join(folder, "latest.md"))
    return {"json": stem + ".json", "markdown": stem + ".md", "latest": os.path.join(folder, "latest.md")}


def main(argv=None) -> int:
    args = parse(argv)
    results = run(args)
    paths = write(results, args.out)
    print(report.markdown(results, os.path.basename(paths["json"])))
    print(f"wrote {paths['json']}, {paths['markdown']}, {paths['latest']}", file=sys.stderr)
    return 0
