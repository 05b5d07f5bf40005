"""The quantized rows: quantization="gguf" (the file's Q4_1 blocks kept as stored and multiplied in 4 bits) against
explain's float32 load and transformers, which dequantizes the same GGUF file when it loads it.

In one process, taking turns on the same prompt ids exactly as the dtype rows do (greedy, EOS disabled):
  explain float32       the reference for the weights' memory and for greedy agreement
  explain gguf (fast)   4-bit weights, bfloat16 activations: the default form of quantization="gguf"
  transformers bf16     the speed reference of the issue's target (skipped by --smoke)
  llama.cpp             llama-cpp-python on the same file, when it is importable (it is not a dependency)
Then the top-1 agreement of the gguf model with float32 on float32's own greedy tokens (teacher forcing, one token
at a time through the KV cache, as explain.compare does), and, in fresh processes, the cold load and peak RSS.
"""

from __future__ import annotations

import os
import time
from typing import Any

import torch

from .contenders import ExplainContender, Timing, TransformersContender, Unavailable, _gaps

LABELS = {
    "explain_float32": "explain float32 (dequantized)",
    "explain_gguf": 'explain quantization="gguf" (fast)',
    "transformers_bfloat16": "transformers bfloat16 (dequantized)",
    "llama_cpp": "llama.cpp (llama-cpp-python)",
}


class LlamaCppContender:
    """llama.cpp's own generation on the same GGUF, greedy (top_k=1), timed token by token like the others."""

    def __init__(self, name: str, path: str, threads: int):
        try:
            from llama_cpp import Llama
        except ImportError as error:
            raise Unavailable(
                f"llama-cpp-python is not importable here ({error}); it builds llama.cpp from source "
                "(~40 minutes on this machine), so it is not a dependency"
            ) from None
        self.name = name
        self.llm = Llama(model_path=path, n_threads=threads, n_threads_batch=threads, n_ctx=2048, verbose=False)

    def generate(self, text: str, ids: list[int], new_tokens: int) -> Timing:
        t0 = time.perf_counter()
        stamps, out = [], []
        for token in self.llm.generate(
            list(ids), top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0, reset=True
        ):
            stamps.append(time.perf_counter())
            out.append(token)
            if len(out) == new_tokens:
                break
        return Timing(
            ids=out,
            first_token_s=stamps[0] - t0,
            prefill_s=stamps[0] - t0,
            decode_s=stamps[-1] - stamps[0],
            step_s=_gaps(stamps),
        )


def forced_agreement(reference_tokens: dict, prompts: list, model) -> dict:
    """Top-1 agreement of `model` with float32's greedy tokens, on float32's own contexts, over every prompt."""
    from explain.features.compare import _forced_logits

    per_prompt, agreeing, steps = [], 0, 0
    with torch.inference_mode():
        for (index, round_), tokens in sorted(reference_tokens.items()):
            if round_:
                continue
            prompt_ids = prompts[index][1]
            ids = torch.tensor([list(prompt_ids) + list(tokens)])  # (1, P + N)
            picked = _forced_logits(model, ids, len(prompt_ids)).argmax(-1).tolist()
            same = sum(a == b for a, b in zip(picked, tokens, strict=True))
            per_prompt.append({"prompt": index, "agreeing_steps": same, "steps": len(tokens)})
            agreeing, steps = agreeing + same, steps + len(tokens)
    return {
        "agreement": agreeing / steps if steps else None,
        "agreeing_steps": agreeing,
        "steps": steps,
        "per_prompt": per_prompt,
    }


def first_differences(tokens: dict, reference: str) -> dict:
    out = {}
    for name, by_run in tokens.items():
        if name == reference:
            continue
        out[name] = [
            next((i for i, (a, b) in enumerate(zip(by_run[key], tokens[reference][key], strict=False)) if a != b), None)
            for key in sorted(by_run)
        ]
    return out


def measure(args, prompt_texts: tuple, gguf_name: str) -> dict:
    """The quantized section of the results."""
    import transformers

    import explain
    from explain.features.embedded import packaged_gguf

    from . import decode as bench_run

    marks, t0 = {}, time.perf_counter()
    pipes = {
        "explain_float32": explain.pipeline("text-generation", dtype="float32"),
        "explain_gguf": explain.pipeline("text-generation", quantization="gguf"),
    }
    contenders: dict[str, Any] = {name: ExplainContender(name, pipe) for name, pipe in pipes.items()}
    unavailable = {}
    if args.smoke:
        unavailable["transformers_bfloat16"] = "skipped in the smoke run (--smoke): it is slow to load"
    else:
        folder = os.path.dirname(packaged_gguf())
        model = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_name, dtype=torch.bfloat16)
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=gguf_name)
        contenders["transformers_bfloat16"] = TransformersContender("transformers_bfloat16", model.eval(), tokenizer)
    try:
        contenders["llama_cpp"] = LlamaCppContender("llama_cpp", packaged_gguf(), args.threads)
    except Unavailable as error:
        unavailable["llama_cpp"] = str(error)
    marks["load"] = time.perf_counter() - t0
    prompts = [(text, pipes["explain_float32"].tokenizer.encode(text)) for text in prompt_texts[: args.prompts]]
    runs, steps, tokens = bench_run.measure_decode(contenders, prompts, args)
    marks["decode"] = time.perf_counter() - t0 - marks["load"]
    decode = {
        name: bench_run.summarize_decode(runs[name], steps[name])
        if name in runs
        else {"available": False, "reason": unavailable.get(name)}
        for name in LABELS
    }
    quantized = pipes["explain_gguf"].quantization
    float32_bytes = sum(pipes["explain_float32"].trace.last("placement", "place").data["bytes_per_device"].values())
    entry = {
        "decode": decode,
        "prompt_tokens": [len(ids) for _, ids in prompts],
        "weights": {
            "explain_float32_bytes": float32_bytes,
            "explain_gguf_bytes": quantized["total_after"],
            "ratio": quantized["total_after"] / float32_bytes,
            "bytes_after": quantized["bytes_after"],
            "bytes_before": quantized["bytes_before"],
            "bits_per_parameter": quantized["bits_per_parameter"],
            "form": quantized["form"],
            "label": quantized["label"],
        },
        "agreement_with_float32": forced_agreement(tokens["explain_float32"], prompts, pipes["explain_gguf"].model),
        "first_difference_from_float32": first_differences(tokens, "explain_float32"),
        "process_memory_in_process": quantized["process_memory"],
    }
    marks["agreement"] = time.perf_counter() - t0 - marks["load"] - marks["decode"]
    del contenders, pipes
    loads = [
        bench_run.child("explain_gguf", "bfloat16", args.threads, args.new_tokens if run == 0 else 0)
        for run in range(args.load_runs)
    ]
    entry["cold_load"] = {
        "available": True,
        "load_s": sorted(r["load_s"] for r in loads)[len(loads) // 2],
        "runs_s": [r["load_s"] for r in loads],
        "peak_rss_after_load_bytes": max(r["peak_rss_after_load"] for r in loads),
        "peak_rss_after_generate_bytes": loads[0].get("peak_rss_after_generate"),
        "generated_tokens": loads[0].get("new_tokens"),
    }
    marks["cold load"] = time.perf_counter() - t0 - sum(marks.values())
    entry["phases_s"] = marks
    return entry


def add_roofline(entry: dict, bytes_per_s: float) -> None:
    """The same bound as the dtype rows: bandwidth / the bytes of weights a decode step reads (all of them, the
    tied embedding once)."""
    entry["roofline_tokens_per_s"] = bytes_per_s / entry["weights"]["explain_gguf_bytes"]
    gguf = entry["decode"]["explain_gguf"]
    if gguf.get("available"):
        gguf["roofline_share"] = gguf["median_tokens_per_s"] / entry["roofline_tokens_per_s"]
