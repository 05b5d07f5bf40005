"""`explain.compare(pipe_a, pipe_b, prompt)`: the same prompt through two pipelines, step by step.

Typical pairs: the float32 model and a quantized one, a base model and the same with a LoRA adapter. Each pipeline
generates on its own (an ordinary traced call: its text, its speed), and then pipeline B is also run along A's
tokens (teacher forcing, computed as B's own run computes: the prompt, then one token at a time through the KV
cache), so that at every step both next-token distributions come from the same context. Per step:

    agree     does B's most likely next token equal A's (top-1 agreement, same context)?
    kl        KL(P_A || P_B) in nats: how much B's distribution differs from A's, weighted by A's probabilities
    p_b       the probability B gives to the token A chose

and, over the free runs, the step and character where the two texts first differ. The result is plain data
(Comparison.to_dict()), printed by Comparison.print() and drawn by explain.widgets.CompareView; the compared
pipeline's trace gets it as a generation/compare event.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import ExplainError
from ..models.cache import KVCache
from ..utils.dtypes import dtype_name
from ..utils.units import size_text

# not the pipeline's 256 (generation/settings.PIPELINE_DEFAULTS): compare generates with both pipelines and then
# runs each model again over every position, and a difference shows in the first tokens
COMPARE_MAX_NEW_TOKENS = 32


def _event_data(pipe, stage: str, kind: str) -> dict | None:
    event = pipe.trace.last(stage, kind) if getattr(pipe, "trace", None) is not None else None
    return event.data if event is not None else None


def is_transformers_pipe(pipe) -> bool:
    """A pipeline of backend="transformers" (explain.pipeline(..., backend="transformers") or explain.attach)."""
    return getattr(pipe, "trace", None) is not None and pipe.trace.meta.get("backend") == "transformers"


def label_of(pipe) -> str:
    """A short name for a pipeline: its dtype, its quantization and its adapter (on backend="transformers", read
    from its weights events: transformers' quantization_config and the peft adapter it loaded)."""
    if is_transformers_pipe(pipe):
        quantization, adapter = _event_data(pipe, "weights", "quantize"), _event_data(pipe, "weights", "adapter")
        text = "transformers " + (
            f"{quantization['method']} ({quantization['label']})" if quantization else dtype_name(pipe.model.dtype)
        )
        return text + (f" + LoRA {adapter['adapter']}" if adapter else "")
    quantization = getattr(pipe, "quantization", None)
    text = (
        f"{quantization['method']} ({quantization['form']}, {quantization['compute_dtype']} activations)"
        if quantization
        else pipe.dtype
    )
    adapter = getattr(pipe, "adapter", None)
    return text + (f" + LoRA {adapter.name}" if adapter is not None else "")


def weight_bytes(pipe) -> int | None:
    """The bytes the pipeline's weights take in memory (the placement stage's count)."""
    event = pipe.trace.last("placement", "place")
    return sum(event.data.get("bytes_per_device", {}).values()) if event is not None else None


@dataclass
class Comparison:
    prompt: object
    labels: list  # [A, B]
    steps: list  # one dict per step of A's run: step, token_a, text_a, top1_b, text_b, agree, kl, p_a, p_b
    texts: list  # [A's generated text, B's]
    ids: list  # [A's generated ids, B's]
    first_divergence: dict | None  # {"step", "character", "token_a", "token_b"} of the free runs; None if equal
    summary: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def __repr__(self) -> str:
        s = self.summary
        where = (
            f"texts first differ at step {self.first_divergence['step']}"
            if self.first_divergence
            else "identical texts"
        )
        return (
            f"Comparison({self.labels[0]!r} vs {self.labels[1]!r}: {len(self.steps)} steps, top-1 agreement "
            f"{s['agreement']:.0%}, mean KL {s['mean_kl']:.4f} nats, {where})"
        )

    def print(self, file=None, steps: bool = True) -> None:
        """The comparison as text: the summary, both texts from where they differ, and a step table."""
        file = file or sys.stdout
        s = self.summary
        print(f"A: {self.labels[0]}\nB: {self.labels[1]}", file=file)
        sizes = s.get("weight_bytes") or [None, None]
        if all(sizes):
            print(
                f"weights in memory: {size_text(sizes[0])} vs {size_text(sizes[1])} ({sizes[1] / sizes[0]:.2f}x)",
                file=file,
            )
        speeds = s.get("decode_tokens_per_s") or [None, None]
        if all(speeds):
            print(f"decode: {speeds[0]:.1f} vs {speeds[1]:.1f} tokens/s ({speeds[1] / speeds[0]:.2f}x)", file=file)
        print(
            f"top-1 agreement on A's context: {s['agreeing_steps']}/{len(self.steps)} steps ({s['agreement']:.0%}); "
            f"KL(A||B) mean {s['mean_kl']:.4f}, max {s['max_kl']:.4f} nats (step {s['max_kl_step']})",
            file=file,
        )
        if self.first_divergence is None:
            print(f"the texts are identical ({len(self.ids[0])} tokens)", file=file)
        else:
            d = self.first_divergence
            common = self.texts[0][: d["character"]]
            print(f"the texts first differ at step {d['step']} (character {d['character']}):", file=file)
            print(f"  common: ...{common[-60:]!r}", file=file)
            print(f"  A then: {self.texts[0][d['character'] :][:60]!r}", file=file)
            print(f"  B then: {self.texts[1][d['character'] :][:60]!r}", file=file)
        if steps:
            print(f"{'step':>4}  {'A token':<14} {'p_A':>6}  {'B top-1':<14} {'p_B(A)':>6}  {'KL':>8}", file=file)
            for row in self.steps:
                mark = " " if row["agree"] else "*"
                print(
                    f"{row['step']:>4}{mark} {row['text_a']!r:<14} {row['p_a']:6.3f}  {row['text_b']!r:<14} "
                    f"{row['p_b']:6.3f}  {row['kl']:8.4f}",
                    file=file,
                )


def _run(pipe, prompt, kwargs):
    generation = pipe.start(prompt, keep_logits=True, **kwargs)
    t0 = time.perf_counter()
    generation.run()
    pipe.finish(generation)
    end = pipe.trace.last("generation", "end", run=generation.run_id)
    return generation, end.data.get("decode_tokens_per_s"), time.perf_counter() - t0


def is_transformers_model(model) -> bool:
    """A transformers PreTrainedModel (or peft's PeftModel around one), not one of explain's readable models."""
    classes = [
        getattr(sys.modules.get(module), name, None)
        for module, name in (("transformers", "PreTrainedModel"), ("peft", "PeftModel"))
    ]
    return any(cls is not None and isinstance(model, cls) for cls in classes)


def _forced_logits(model, input_ids: torch.Tensor, prompt_length: int) -> torch.Tensor:
    """B's next-token logits at each of A's steps, computed as B's own run computes them (the prompt's forward, then
    one token at a time through the KV cache), so that up to the first difference they equal B's free run's.
    explain's models take cache=KVCache(); a transformers model (backend="transformers") takes transformers'
    DynamicCache, as generate() builds it (transformers 5.24 names the argument cache=; past_key_values= is its
    deprecated name)."""
    device = next(model.parameters()).device
    ids = input_ids.to(device)  # (1, P + N)
    cache: Any  # transformers' DynamicCache or explain's KVCache: the model's own kind of cache
    if is_transformers_model(model):
        from transformers import DynamicCache

        cache, options = DynamicCache(config=model.config), {"use_cache": True}
    else:
        cache, options = KVCache(), {}
    rows = [model(ids[:, :prompt_length], cache=cache, logits_to_keep=1, **options).logits[0, -1]]
    for position in range(prompt_length, ids.shape[1] - 1):
        rows.append(model(ids[:, position : position + 1], cache=cache, logits_to_keep=1, **options).logits[0, -1])
    return torch.stack(rows).float().cpu()  # (N, vocab)


@torch.inference_mode()
def compare(
    pipe_a,
    pipe_b,
    prompt,
    max_new_tokens: int = COMPARE_MAX_NEW_TOKENS,
    labels: list | None = None,
    print_result: bool = False,
    file=None,
    **generate_kwargs,
) -> Comparison:
    """Run `prompt` through both pipelines (greedy unless told otherwise) and compare them step by step."""
    for which, pipe in (("first", pipe_a), ("second", pipe_b)):
        if not callable(getattr(pipe, "start", None)) or getattr(pipe, "tokenizer", None) is None:
            raise ExplainError(
                f"compare takes two pipelines from explain.pipeline(...); the {which} argument is "
                f"{type(pipe).__name__} {str(pipe)[:40]!r}"
            )
    if pipe_a.tokenizer.vocab_size != pipe_b.tokenizer.vocab_size:
        raise ExplainError(
            f"the two pipelines have different vocabularies ({pipe_a.tokenizer.vocab_size} and "
            f"{pipe_b.tokenizer.vocab_size} tokens); compare pipelines of the same model family"
        )
    vocab_a, vocab_b = pipe_a.tokenizer.get_vocab(), pipe_b.tokenizer.get_vocab()
    if vocab_a != vocab_b:  # the same size, other ids: every comparison of ids would compare other tokens
        differ = sorted(token for token in vocab_a if vocab_b.get(token) != vocab_a[token])[:3]
        raise ExplainError(
            f"the two pipelines' tokenizers give other ids to the same tokens ({', '.join(map(repr, differ))}, ...), "
            "so their steps cannot be compared id by id; compare pipelines that share a tokenizer"
        )
    kwargs = {"do_sample": False, **generate_kwargs, "max_new_tokens": max_new_tokens}
    run_a, speed_a, _ = _run(pipe_a, prompt, kwargs)
    run_b, speed_b, _ = _run(pipe_b, prompt, kwargs)
    if run_a.input_ids[0, : run_a.prompt_length].tolist() != run_b.input_ids[0, : run_b.prompt_length].tolist():
        raise ExplainError(
            "the two pipelines tokenize the prompt differently; compare pipelines that share a tokenizer"
        )
    prompt_length, ids_a = run_a.prompt_length, run_a.generated_ids
    if not ids_a:
        raise ExplainError("pipeline A generated no tokens (max_new_tokens=0, or the prompt fills the context)")
    forced = _forced_logits(pipe_b.model, run_a.input_ids, prompt_length)  # (N, vocab): B on A's contexts
    steps, tokenizer = [], pipe_a.tokenizer
    for index, token in enumerate(ids_a):
        log_a = F.log_softmax(run_a.raw_logits[index].float(), dim=-1)  # (vocab,)
        log_b = F.log_softmax(forced[index], dim=-1)
        kl = float((log_a.exp() * (log_a - log_b)).sum().clamp(min=0))
        top_b = int(log_b.argmax())
        steps.append(
            {
                "step": index,
                "token_a": token,
                "text_a": tokenizer.decode([token]),
                "top1_a": int(log_a.argmax()),
                "top1_b": top_b,
                "text_b": tokenizer.decode([top_b]),
                "agree": int(log_a.argmax()) == top_b,
                "kl": kl,
                "p_a": float(log_a[token].exp()),
                "p_b": float(log_b[token].exp()),
            }
        )
    ids_b = run_b.generated_ids
    divergence = next((i for i, (a, b) in enumerate(zip(ids_a, ids_b, strict=False)) if a != b), None)
    if divergence is None and len(ids_a) != len(ids_b):
        divergence = min(len(ids_a), len(ids_b))
    first = None
    if divergence is not None:
        character = len(tokenizer.decode(ids_a[:divergence]))
        first = {
            "step": divergence,
            "character": character,
            "token_a": ids_a[divergence] if divergence < len(ids_a) else None,
            "token_b": ids_b[divergence] if divergence < len(ids_b) else None,
        }
    kls = [s["kl"] for s in steps]
    agreeing = sum(s["agree"] for s in steps)
    summary = {
        "agreement": agreeing / len(steps),
        "agreeing_steps": agreeing,
        "steps": len(steps),
        "mean_kl": sum(kls) / len(kls),
        "max_kl": max(kls),
        "max_kl_step": kls.index(max(kls)),
        "weight_bytes": [weight_bytes(pipe_a), weight_bytes(pipe_b)],
        "decode_tokens_per_s": [speed_a, speed_b],
        "prompt_tokens": prompt_length,
        "identical_texts": first is None,
    }
    comparison = Comparison(
        prompt=prompt,
        labels=list(labels or [label_of(pipe_a), label_of(pipe_b)]),
        steps=steps,
        texts=[run_a.output_text, run_b.output_text],
        ids=[ids_a, ids_b],
        first_divergence=first,
        summary=summary,
    )
    pipe_b.trace.emit("generation", "compare", comparison.to_dict(), run=run_b.run_id)
    if print_result:
        comparison.print(file=file)
    return comparison
