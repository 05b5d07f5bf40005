"""The console view: a sink that prints the trace as a readable timeline, and streams generated tokens."""

from __future__ import annotations

import os
import sys

from .trace import Event, Trace
from .units import size_text


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f} ms"


def describe(event: Event) -> str | None:
    """One line for a loading or summary event; None for events shown elsewhere (steps, progress)."""
    d = event.data
    if event.stage == "registry":
        return (f"task {d.get('task')!r} -> {d.get('pipeline_class')} + {d.get('model_class')}; "
                f"transformers' default {d.get('default_model')}@{d.get('default_revision')}, "
                f"explain uses {d.get('model_used')}")
    if event.stage == "config" and event.kind == "file":
        if d.get("absent"):
            return f"{d['filename']}: not in {d['repo']} (optional)"
        commit = (d.get("commit") or "")[:7]
        return (f"{d['filename']}: {d['cache']}{' @' + commit if commit else ''}, {size_text(d.get('size'))}"
                f"{' (offline)' if d.get('offline') else ''}")
    if event.stage == "config" and event.kind == "config":
        h = d.get("hyperparameters", {})
        layers = h.get("num_hidden_layers", h.get("n_layer"))
        hidden = h.get("hidden_size", h.get("n_embd"))
        heads = h.get("num_attention_heads", h.get("n_head"))
        return (f"{d['architecture']} ({d['model_type']}): {layers} layers, hidden {hidden}, {heads} heads"
                f"{', ' + str(h['num_key_value_heads']) + ' kv heads' if 'num_key_value_heads' in h else ''}, "
                f"vocab {h.get('vocab_size')}, tied embeddings {h.get('tie_word_embeddings', False)}")
    if event.stage == "tokenizer":
        special = ", ".join(f"{k.replace('_token', '')}={v['token']!r}" for k, v in
                            (d.get("special_tokens") or {}).items() if isinstance(v, dict))
        return (f"{d.get('model')} from {d.get('source')}: {d.get('vocab_size')} tokens, {d.get('num_merges')} merges; "
                f"{special}; chat template: {'yes' if d.get('has_chat_template') else 'no'}")
    if event.stage == "weights" and event.kind == "load":
        kinds = ", ".join(f"{n} x {k}" for k, n in (d.get("quantization_types") or d.get("stored_dtypes") or {}).items())
        tied = f"; tied {', '.join(d['tied'])}" if d.get("tied") else ""
        return (f"{d['format']}: {d['tensors']} tensors ({kinds}) -> {d['dtype']}, {d['parameters'] / 1e6:.1f} M "
                f"parameters, {size_text(d['bytes'])}{tied}; missing {len(d['missing'])}, unexpected {d['unexpected_count']}")
    if event.stage == "weights" and event.kind == "quantize":
        kept = ", ".join(f"{c['tensors']} x {c['from']} -> {c['to'].split(':')[0]}" for c in d["conversions"])
        memory = d.get("process_memory") or {}
        process = (f"; process {size_text(memory['rss_bytes'])} (peak {size_text(memory['peak_rss_bytes'])})"
                   if memory.get("rss_bytes") else "")
        return (f"quantization {d['method']} ({d['form']}, {d['compute_dtype']} activations): {kept}; "
                f"{size_text(d['float32_bytes'])} in float32 -> {size_text(d['total_after'])} "
                f"({d['ratio_to_float32']:.2f}x, {d['bits_per_parameter']:.1f} bits per parameter){process}")
    if event.stage == "weights" and event.kind == "adapter":
        return (f"LoRA adapter {d['adapter']!r}: r={d['r']}, alpha={d['lora_alpha']} on {d['layers']} layers; "
                f"{d['adapter_parameters'] / 1e6:.2f} M parameters, {d['share_of_base']:.2%} of the base's "
                f"{d['base_parameters'] / 1e6:.1f} M; applied with {d['applied_with']}")
    if event.stage == "weights" and event.kind == "adapter_merge":
        return (f"adapter {d['adapter']!r} {'merged: W + (alpha / r) B A' if d['merged'] else 'unmerged: W back'} "
                f"in {d['layers']} layers")
    if event.stage == "generation" and event.kind == "compare":
        summary, first = d["summary"], d["first_divergence"]
        return (f"compare {d['labels'][0]} vs {d['labels'][1]}: top-1 agreement {summary['agreement']:.0%} over "
                f"{summary['steps']} steps, mean KL {summary['mean_kl']:.4f} nats; "
                + (f"texts first differ at step {first['step']}" if first else "identical texts"))
    if event.stage == "placement":
        per = ", ".join(f"{k}: {size_text(v)}" for k, v in d.get("bytes_per_device", {}).items())
        return f"{d.get('strategy')} -> {', '.join(d.get('devices', []))} ({per}); {d.get('reason')}"
    if event.stage == "tokenization":
        return f"{d['count']} tokens from {d['kind_of_input']} input"
    if event.stage == "generation" and event.kind == "prefill":
        return f"prefill: {d['prompt_tokens']} tokens, {d['tokens_per_s']:.0f} tokens/s"
    if event.stage == "generation" and event.kind == "end":
        rate = d.get("decode_tokens_per_s")
        return (f"{d['new_tokens']} new tokens, stopped by {d['stop_reason']}"
                f"{f', decode {rate:.1f} tokens/s' if rate else ''}")
    if event.stage == "decoding":
        return f"{len(d['ids'])} ids -> {len(d['text'])} characters"
    return None


def print_timeline(trace: Trace, run: int | None = 0, file=None) -> None:
    file = file or sys.stdout
    events = [e for e in trace.events if run is None or e.run == run]
    if not events:
        return
    origin = events[0].start
    for event in events:
        line = describe(event)
        if line is not None:
            print(f"{event.start - origin:7.2f}s {_ms(event.duration)}  {event.stage:<12} {line}", file=file)


class TokenStream:
    """A sink that prints each generated token as it arrives, coloured by its probability on a terminal."""

    def __init__(self, file=None, color: bool | None = None):
        self.file = file or sys.stdout
        self.color = color if color is not None else (self.file.isatty() and not os.environ.get("NO_COLOR"))

    def __call__(self, event: Event) -> None:
        if event.stage != "generation" or event.kind != "step":
            return
        text, p = event.data.get("text") or "", event.data.get("prob", 1.0)
        if self.color:
            code = 32 if p >= 0.6 else 33 if p >= 0.2 else 31  # green, yellow, red
            text = f"\x1b[{code}m{text}\x1b[0m"
        self.file.write(text)
        self.file.flush()


def print_steps(trace: Trace, run: int, file=None, alternatives: int = 3) -> None:
    """A table: each generated token, its probability and rank, and the runners-up."""
    file = file or sys.stdout
    print(f"{'step':>4}  {'token':<16} {'prob':>6} {'rank':>4}  runners-up", file=file)
    for event in trace.filter("generation", "step", run):
        d = event.data
        texts = d.get("token_texts", {})
        others = [(i, v) for i, v in zip(d["probs_top"]["ids"], d["probs_top"]["values"]) if i != d["token_id"]]
        runners = "  ".join(f"{texts.get(str(i), '?')!r} {v:.2f}" for i, v in others[:alternatives])
        print(f"{d['step']:>4}  {d['token']!r:<16} {d['prob']:6.3f} {d['rank']:>4}  {runners}", file=file)


def print_summary(trace: Trace, run: int, file=None) -> None:
    file = file or sys.stdout
    loading = sum(e.duration for e in trace.events if e.run == 0 and e.kind != "progress" and e.stage != "registry")
    end = trace.last("generation", "end")
    prefill = [e for e in trace.filter("generation", "prefill", run)]
    print(f"load {loading:.2f} s", end="", file=file)
    if prefill:
        print(f" | prefill {prefill[0].duration * 1000:.0f} ms ({prefill[0].data['prompt_tokens']} tokens)",
              end="", file=file)
    if end is not None and end.run == run:
        rate = end.data.get("decode_tokens_per_s")
        print(f" | decode {end.data['new_tokens']} tokens{f' at {rate:.1f} tokens/s' if rate else ''}"
              f" | stopped by {end.data['stop_reason']}", end="", file=file)
    print(file=file)
