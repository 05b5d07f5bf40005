"""The benchmark's targets (stated and checked in the results, never asserted) and its markdown table."""

from __future__ import annotations

from . import long_context
from .batching import markdown as batching_markdown
from .inside import markdown as inside_markdown
from .strategies import markdown as strategies_markdown

LABELS = {
    "explain_traced": "explain, traced (default capture)",
    "explain_untraced": "explain, tracing off",
    "explain_widget": "explain + live widget sink",
    "transformers": "transformers generate",
}

# Why a target is missed, from profiling explain's decode step and load (see the report's "Where the time goes").
# Shown under the table only for the targets a run misses.
WHY = {
    "tracing_overhead": (
        "The trace's own work per step is small: build an Event, turn the step record into plain JSON values "
        "(trace.plain) and keep it (about 0.1-0.2 ms). The step record itself (top-k, softmax, entropy, token "
        "texts: about 1.2 ms/step in total) is computed whether the trace is on or off, so it weighs on both "
        "explain rows alike. A miss of a point or two is the shared machine's noise, not the trace."
    ),
    "widget_overhead": (
        "The live widget sink runs inside every step (trace.emit calls it synchronously); explain.widgets' "
        "ThrottledSink only appends each event and redraws about ten times a second, so its cost is the redraws "
        "(folding events into the dashboard state, setting traitlets) that land between tokens."
    ),
    "speedup_vs_transformers": (
        "A decode step is the model's 211 matrix-vector products (every nn.Linear weight read once) plus what is "
        "around them. explain and transformers run the same torch kernel for the products (F.linear), and it "
        "takes about 85% of explain's forward (\"Where explain's decode time goes\" below); what is left is "
        "small on both sides: explain's forward is a little leaner than transformers', and explain's loop "
        "(~1.2 ms/token with the trace) costs about what generate's does. Even if everything but the products "
        'were free, explain could be at most the "ceiling" below faster, so 1.3x needs faster products - '
        "quantized weights or a GEMV that reaches the measured bandwidth (torch's single-thread sgemv reads ~11 "
        "GB/s here against ~24 GB/s for a plain sum) - not less Python. bf16 halves the bytes but not the time: "
        "on this CPU torch's bf16 linear is bound by converting and computing, not by reading, so it gains ~1.2x, "
        "on both sides alike."
    ),
    "cold_load_ratio": (
        "Both loads do the same work on the same file, and explain does it once where transformers does it "
        "twice. What is left of explain's ~4 s: importing torch (~1 s), gguf.GGUFReader parsing the metadata "
        "(~0.7 s over a plain ndarray view of the memory map; over np.memmap it took 2 s, see GGUFFile in "
        "explain/stages/config.py), and dequantizing the Q4_1 tensors with gguf.quants on one thread (~2 s). "
        "A miss of a few hundredths is this shared machine's noise; a real margin needs the dequantisation spread over "
        "threads."
    ),
    "quantized_weight_memory": (
        "The 210 matrices are stored in 5 bits per weight (int4 values and a bfloat16 scale and zero per group of "
        "32, the file's own size), but the tied embedding / LM head (28 M of the 134.5 M parameters) is kept in "
        "bfloat16: torch has no group-wise int8 kernel for the Q8_0 head, and the embedding lookup needs its rows."
    ),
    "quantized_speed_vs_transformers_bf16": (
        "The 4-bit products read a quarter of the bytes, but a decode step (~50 ms, profiled with torch.profiler "
        "on 2026-11-30) is: the 210 int4 products ~21 ms (torch's int4 CPU kernel on one thread unpacks at ~2-3 GB/s, "
        "far from the memory roofline); the tied LM head (49152 x 576) ~10 ms as a bfloat16 product, which this "
        "AVX2 CPU without native bfloat16 arithmetic converts as it goes (int8 through _weight_int8pack_mm is no "
        "faster here; a 4-bit head takes ~5 ms but drops agreement with float32 to 91.9% (353/384) and multiplies "
        "the mean KL by ~50, so the head stays as it is); bfloat16 attention ~4 ms (SDPA's bfloat16 path is ~3.5x "
        "slower than float32 at 130 positions); and ~12 ms of elementwise ops and Python, as in transformers. "
        "Between runs the ratio moves with the machine: 1.28x, 1.34x and 1.14x on 2026-11-30."
    ),
    "quantized_agreement": (
        "The fast form rounds the activations and the scales to bfloat16 (8 significant bits), so near-ties between "
        "the two most likely tokens can flip; the exact form (dtype=torch.float32) agrees to float32 rounding."
    ),
    "quantized_vs_llama_cpp": (
        "llama.cpp multiplies the Q4_1 blocks with hand-tuned SIMD kernels that quantize the activations to 8 bits "
        "too (q4_1 x q8_1 dot products) and runs no Python per token; explain calls torch's int4 kernel once per "
        "matrix from Python and keeps bfloat16 activations."
    ),
    "trace_bytes_per_step": (
        "Each step stores the top-20 logits before and after every processor that changed anything, the top-10 "
        "probabilities and the text of every token id it names; more processors (sampling with top-k/top-p) "
        "mean more lists per step."
    ),
}


def _ratio(a, b):
    return a / b if a is not None and b else None


def targets(results: dict) -> list[dict]:
    """Every target, per dtype, with its value, whether it is met, and by how much it is missed."""
    out = []
    for dtype, entry in results["dtypes"].items():
        decode = entry["decode"]
        rate = {k: v["median_tokens_per_s"] if v.get("available") else None for k, v in decode.items()}
        traced, untraced = rate.get("explain_traced"), rate.get("explain_untraced")
        overhead = None if not traced or not untraced else 100 * (1 - traced / untraced)
        out.append(
            _target(
                "tracing_overhead",
                dtype,
                "tracing overhead at default capture",
                overhead,
                3.0,
                "%",
                "max",
                decode["explain_traced"],
            )
        )
        widget = rate.get("explain_widget")
        overhead = None if not widget or not untraced else 100 * (1 - widget / untraced)
        out.append(
            _target(
                "widget_overhead",
                dtype,
                "overhead with the live widget sink",
                overhead,
                5.0,
                "%",
                "max",
                decode.get("explain_widget"),
            )
        )
        out.append(
            _target(
                "speedup_vs_transformers",
                dtype,
                "explain traced vs transformers decode tokens/s",
                _ratio(traced, rate.get("transformers")),
                1.3,
                "x",
                "min",
                decode["transformers"],
            )
        )
        cold = entry.get("cold_load", {})
        explain_load = cold.get("explain", {}).get("load_s")
        transformers_load = cold.get("transformers", {}).get("load_s")
        out.append(
            _target(
                "cold_load_ratio",
                dtype,
                "explain cold load vs transformers'",
                _ratio(explain_load, transformers_load),
                0.25,
                "x",
                "max",
                cold.get("transformers"),
            )
        )
        out.append(
            _target(
                "trace_bytes_per_step",
                dtype,
                "default trace size per step",
                entry["trace_bytes_per_step"]["bytes_per_step"],
                4096,
                "B",
                "max",
                {"available": True},
            )
        )
    return out + quantized_targets(results.get("quantized"))


def quantized_targets(entry: dict | None) -> list[dict]:
    """The quantization="gguf" targets (issue 14); "not measured" rows when the section did not run."""
    absent = {"available": False, "reason": "not measured (--quantized off)"}
    entry = entry or {"decode": {}, "weights": {}, "agreement_with_float32": {}}
    decode = entry["decode"]
    rate = {k: v.get("median_tokens_per_s") if v.get("available") else None for k, v in decode.items()}
    gguf = rate.get("explain_gguf")
    agreement = entry["agreement_with_float32"].get("agreement")
    return [
        _target(
            "quantized_weight_memory",
            "gguf",
            'quantization="gguf" weights vs explain float32\'s',
            entry["weights"].get("ratio"),
            0.3,
            "x",
            "max",
            decode.get("explain_gguf", absent),
        ),
        _target(
            "quantized_speed_vs_transformers_bf16",
            "gguf",
            'quantization="gguf" decode vs transformers bfloat16',
            _ratio(gguf, rate.get("transformers_bfloat16")),
            1.5,
            "x",
            "min",
            decode.get("transformers_bfloat16", absent),
        ),
        _target(
            "quantized_agreement",
            "gguf",
            "greedy top-1 agreement with float32",
            None if agreement is None else 100 * agreement,
            90.0,
            "%",
            "min",
            decode.get("explain_gguf", absent),
        ),
        _target(
            "quantized_vs_llama_cpp",
            "gguf",
            'stretch: quantization="gguf" decode vs llama.cpp',
            _ratio(gguf, rate.get("llama_cpp")),
            0.5,
            "x",
            "min",
            decode.get("llama_cpp", absent),
        ),
    ]


def _target(key, dtype, name, value, limit, unit, kind, source) -> dict:
    target = {
        "key": key,
        "dtype": dtype,
        "target": name,
        "limit": limit,
        "unit": unit,
        "rule": f"{'<=' if kind == 'max' else '>='} {limit:g}{unit}",
        "value": value,
    }
    if value is None:
        reason = (source or {}).get("reason") or "not measured"
        return {**target, "met": None, "miss": None, "note": reason}
    met = value <= limit if kind == "max" else value >= limit
    target["met"] = met
    if met:
        target["miss"] = None
    elif unit == "%" and kind == "min":
        target["miss"] = f"{limit - value:.1f} points short"
    elif unit == "%":
        target["miss"] = f"{value - limit:.1f} points over"
    elif unit == "x" and kind == "min":
        target["miss"] = f"{limit - value:.2f}x short ({100 * (limit / value - 1):.0f}% more tokens/s needed)"
    elif unit == "x":
        target["miss"] = f"{value - limit:.2f}x over (explain's load {100 * (1 - limit / value):.0f}% too slow)"
    else:
        target["miss"] = f"{value - limit:.0f} {unit} over"
    return target


# -- markdown ----------------------------------------------------------------------------------------------
QUANTIZED_LABELS = {
    "explain_float32": "explain float32 (dequantized)",
    "explain_gguf": 'explain quantization="gguf" (fast: 4-bit weights, bfloat16 activations)',
    "transformers_bfloat16": "transformers bfloat16 (dequantized)",
    "llama_cpp": "llama.cpp (llama-cpp-python), same file",
}


def _targets_markdown(results: dict) -> list[str]:
    lines = [
        "",
        "## Targets",
        "",
        "| target | dtype | value | target | met | missed by |",
        "|---|---|---:|---:|---|---|",
    ]
    for t in results["targets"]:
        value = (
            "n/a"
            if t["value"] is None
            else f"{t['value']:.2f}{t['unit']}"
            if t["unit"] != "B"
            else f"{t['value']:,.0f} B"
        )
        met = {True: "yes", False: "**no**", None: "not measured"}[t["met"]]
        lines.append(
            f"| {t['target']} | {t['dtype']} | {value} | {t['rule']} | {met} | {t['miss'] or t.get('note') or ''} |"
        )
    missed = []
    for t in results["targets"]:
        if t["met"] is False and t["key"] not in missed:
            missed.append(t["key"])
    if missed:
        lines += ["", "## Why the misses", ""] + [f"- **{key.replace('_', ' ')}**: {WHY[key]}" for key in missed]
    return lines


def quantized_markdown(entry: dict, settings: dict) -> list[str]:
    decode, weights = entry["decode"], entry["weights"]
    reference = decode.get("transformers_bfloat16", {}).get("median_tokens_per_s")
    lines = [
        "",
        '## Quantized: the GGUF file\'s blocks as stored (quantization="gguf")',
        "",
        f"The same {settings['new_tokens']} greedy tokens per prompt, contenders taking turns. Weights in memory: "
        f'{_mib(weights["explain_gguf_bytes"])} for quantization="gguf" against '
        f"{_mib(weights['explain_float32_bytes'])} "
        f"for explain's float32 load ({weights['ratio']:.2f}x; {weights['bits_per_parameter']:.2f} bits per "
        f"parameter: " + ", ".join(f"{k} {_mib(v)}" for k, v in weights["bytes_after"].items()) + ").",
        "",
        "| contender | tokens/s | median token, ms | tokens/s at the median | vs transformers bf16 |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, label in QUANTIZED_LABELS.items():
        summary = decode.get(name, {})
        if not summary.get("available"):
            lines.append(f"| {label} | {summary.get('reason') or 'not available'} | | | |")
            continue
        rate = summary["median_tokens_per_s"]
        lines.append(
            f"| {label} | {summary['tokens_per_s']:.2f} | {summary['median_ms_per_token']:.1f} | {rate:.2f} | "
            f"{_num(_ratio(rate, reference), 2, 'x')} |"
        )
    agreement = entry["agreement_with_float32"]
    firsts = entry["first_difference_from_float32"].get("explain_gguf")
    lines += [
        "",
        f"Greedy top-1 agreement with float32, on float32's own tokens (teacher forcing): "
        f"{agreement['agreeing_steps']}/{agreement['steps']} steps ({100 * agreement['agreement']:.1f}%); "
        f"the free-running texts first differ at step(s) {firsts} (None: identical).",
    ]
    if entry.get("roofline_tokens_per_s"):
        share = decode["explain_gguf"].get("roofline_share")
        lines[-1] += (
            f" Roofline for {_mib(weights['explain_gguf_bytes'])} of weights: "
            f"{entry['roofline_tokens_per_s']:.0f} tokens/s"
            + (f'; quantization="gguf" reaches {100 * share:.0f}% of it.' if share else ".")
        )
    cold = entry.get("cold_load") or {}
    if cold.get("available"):
        lines.append(
            f"Cold load in a fresh process: {cold['load_s']:.2f} s, peak RSS {_mib(cold['peak_rss_after_load_bytes'])} "
            f"after loading and {_mib(cold['peak_rss_after_generate_bytes'])} after {cold['generated_tokens']} "
            "tokens (compare the dtype rows' cold loads above)."
        )
    return lines


def _num(value, digits=1, suffix=""):
    return "n/a" if value is None else f"{value:,.{digits}f}{suffix}"


def _mib(value):
    return "n/a" if value is None else f"{value / 2**20:,.0f} MiB"


def markdown(results: dict, json_name: str) -> str:
    m, s = results["machine"], results["settings"]
    bw = results["bandwidth"]
    lines = [
        f"# explain benchmark, {results['date']}: {m['cpu']}, {m['cpus']} CPUs, {s['threads']} torch thread(s)",
        "",
        f"SmolLM2-135M-Instruct (the embedded Q4_1 GGUF, dequantized to each dtype); greedy, {s['new_tokens']} new "
        f"tokens, EOS disabled, {s['prompts']} prompt(s) x {s['rounds']} round(s) after a warm-up; the contenders "
        f"take turns in a rotating order. torch {m['torch']}, transformers {m['transformers']}, explain "
        f"{m['explain']}. Load average {results['load_average_start'][0]:.1f} at the start, "
        f"{results['load_average_end'][0]:.1f} at the end (the machine is shared). Raw numbers: "
        f"[{json_name}]({json_name}).",
        "",
    ]
    if not results["dtypes"]:  # --quantized only
        lines += [f"Measured read bandwidth {bw['bytes_per_s'] / 1e9:.1f} GB/s ({bw['method']})."]
        lines += quantized_markdown(results["quantized"], s) + _targets_markdown(results)
        return "\n".join(lines) + "\n"
    lines += [
        "## Decode",
        "",
        "| dtype | contender | tokens/s | median token, ms | tokens/s at the median | vs tracing off | "
        "vs transformers | share of roofline |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for dtype, entry in results["dtypes"].items():
        decode = entry["decode"]
        base = decode["explain_untraced"].get("median_tokens_per_s")
        ref = decode["transformers"].get("median_tokens_per_s")
        for name, summary in decode.items():
            if not summary.get("available"):
                lines.append(f"| {dtype} | {LABELS[name]} | {summary.get('reason') or 'not available'} | | | | | |")
                continue
            rate = summary["median_tokens_per_s"]
            lines.append(
                f"| {dtype} | {LABELS[name]} | {summary['tokens_per_s']:.2f} | "
                f"{summary['median_ms_per_token']:.1f} | {rate:.2f} | {_num(_ratio(rate, base), 3, 'x')} | "
                f"{_num(_ratio(rate, ref), 2, 'x')} | {100 * summary['roofline_share']:.0f}% |"
            )
    lines += [
        "",
        "tokens/s is new tokens / seconds over all runs (the first token, from the prefill, not counted). "
        "The ratios and the roofline share are taken at the median token's time: other jobs on a shared "
        "machine only ever add time, in bursts, and the median is what they disturb least.",
    ]
    lines += [
        "",
        f"Roofline: measured read bandwidth {bw['bytes_per_s'] / 1e9:.1f} GB/s ({bw['method']}, best of "
        f"{bw['repeats']} over {bw['buffer_bytes'] >> 20} MiB, at the start and the end). ",
    ]
    for dtype, entry in results["dtypes"].items():
        w = entry["weights"]
        lines[-1] += (
            f"{dtype}: {w['bytes_per_token'] / 1e6:.0f} MB of weights read per token "
            f"({w['parameters'] / 1e6:.1f} M parameters) -> at most {entry['roofline_tokens_per_s']:.1f} "
            f"tokens/s. "
        )
    if results["dtypes"]:
        lines[-1] += (
            f"The {next(iter(results['dtypes'].values()))['weights']['note']}; the KV cache's reads are left out."
        )
    lines += long_context.markdown(results)
    if results.get("quantized"):
        lines += quantized_markdown(results["quantized"], s)
    lines += [
        "",
        f"## Prefill ({s['prefill_tokens']}-token prompt, median of {s['prefill_repeats']})",
        "",
        "| dtype | contender | prefill s | prompt tokens/s | time to first token s |",
        "|---|---|---:|---:|---:|",
    ]
    for dtype, entry in results["dtypes"].items():
        for name, p in entry["prefill"].items():
            lines.append(
                f"| {dtype} | {LABELS[name]} | {p['prefill_s']:.3f} | {p['prompt_tokens_per_s']:.0f} | "
                f"{p['first_token_s']:.3f} |"
            )
    lines += [
        "",
        f"## Cold load and memory (fresh process, median of {s['load_runs']})",
        "",
        "From the first `import` to a pipeline ready to generate (model and tokenizer loaded); peak RSS is the "
        "process's high-water mark after loading and after generating.",
        "",
        f"| dtype | contender | cold load s | peak RSS after load | peak RSS after {s['new_tokens']} tokens |",
        "|---|---|---:|---:|---:|",
    ]
    for dtype, entry in results["dtypes"].items():
        for name, c in entry["cold_load"].items():
            if not c.get("available"):
                lines.append(f"| {dtype} | {name} | {c.get('reason')} | | |")
                continue
            lines.append(
                f"| {dtype} | {name} | {c['load_s']:.2f} | {_mib(c['peak_rss_after_load_bytes'])} | "
                f"{_mib(c['peak_rss_after_generate_bytes'])} |"
            )
    lines += [
        "",
        "## Trace size (default capture)",
        "",
        "Bytes each generated token adds to a file written by Trace.save (the runs saved with and without "
        "their step events).",
        "",
        "| dtype | call | bytes per step | largest step | steps |",
        "|---|---|---:|---:|---:|",
    ]
    for dtype, entry in results["dtypes"].items():
        t = entry["trace_bytes_per_step"]
        lines.append(
            f"| {dtype} | greedy (the decode runs above) | {t['bytes_per_step']:,.0f} | "
            f"{t['max_step_bytes']:,} | {t['steps']} |"
        )
        d = entry.get("trace_bytes_per_step_default_call")
        if d:
            lines.append(
                f"| {dtype} | pipeline defaults (sampling: {', '.join(d['processors'])}) | "
                f"{d['bytes_per_step']:,.0f} | {d['max_step_bytes']:,} | {d['steps']} |"
            )
    lines += _targets_markdown(results)
    lines += ["", "## Where explain's decode time goes", ""]
    for dtype, entry in results["dtypes"].items():
        for name in ("explain_traced", "explain_untraced", "explain_widget"):
            d = entry["decode"].get(name, {})
            if d.get("available") and "forward_ms_per_token" in d:
                lines.append(
                    f"- {dtype}, {LABELS[name]}: {d['ms_per_token']:.1f} ms/token = model forward "
                    f"{d['forward_ms_per_token']:.1f} ms + loop and trace {d['outside_forward_ms_per_token']:.2f} ms"
                )
        ref = entry["decode"]["transformers"]
        if ref.get("available"):
            lines.append(f"- {dtype}, transformers generate: {ref['ms_per_token']:.1f} ms/token")
        f = entry.get("forward_breakdown")
        if f:
            lines.append(
                f"- {dtype}, one decode forward (median of {f['repeats']}, in turns): explain "
                f"{f['explain_forward_ms']:.1f} ms, transformers {_num(f['transformers_forward_ms'])} ms; "
                f"the {f['linears']} matrix-vector products alone {f['linear_only_ms']:.1f} ms "
                f"({100 * f['linear_share_of_explain_forward']:.0f}% of explain's forward, reading "
                f"{f['linear_weight_bytes'] / 1e6:.0f} MB)"
            )
            if ref.get("available"):
                lines.append(
                    f"- {dtype}, ceiling: if everything but the products were free, explain could be at "
                    f"most {ref['ms_per_token'] / f['linear_only_ms']:.2f}x transformers' decode tokens/s"
                )
    for entry in results["dtypes"].values():
        if entry.get("inside"):
            lines += inside_markdown(entry["inside"])
        if entry.get("strategies"):
            lines += strategies_markdown(entry["strategies"])
        if entry.get("batching"):
            lines += batching_markdown(entry["batching"])
    notes = results.get("notes") or []
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"
