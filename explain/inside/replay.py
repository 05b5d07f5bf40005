"""Replaying one generation step with the model opened up: every layer's hidden state at the new position and
every layer's attention weights, computed again from the run's own KV cache.

Step k's logits came from one forward pass: the prompt (k = 0, the prefill) or the token at position p - 1 over
a cache of p - 1 positions. The replay runs that same pass again, on the same cached keys and values cut back
to p - 1 positions, so it is the same arithmetic and gives the same logits bit for bit; forward hooks read the
hidden states on the way. Attention weights need the eager path (output_attentions=True), which is a second pass
with the same inputs: SDPA never forms the weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ExplainError
from ..models.cache import KVCache

# where decoder-only models keep their parts, in the names transformers' modeling files use ("model.decoder": OPT)
BASES = ("model", "transformer", "gpt_neox", "model.decoder")
EMBEDDINGS = ("embed_tokens", "wte", "embed_in", "word_embeddings")
LAYERS = ("layers", "h")
FINAL_NORMS = ("norm", "ln_f", "final_layer_norm")


@dataclass
class Parts:
    embedding: nn.Module  # token embeddings
    layers: nn.ModuleList  # the decoder layers, in order
    final_norm: nn.Module  # the norm applied after the last layer
    head: nn.Module  # the LM head: hidden state -> one logit per vocabulary entry


def _module(owner, path: str) -> nn.Module | None:
    for name in path.split("."):
        owner = getattr(owner, name, None)
    return owner if isinstance(owner, nn.Module) else None


def decoder_parts(model: nn.Module) -> Parts:
    """The embedding, layers, final norm and LM head of a decoder-only model (explain's or transformers')."""
    head = getattr(model, "lm_head", None) or getattr(model, "embed_out", None)
    for path in BASES:
        base = _module(model, path)
        if base is None or head is None:
            continue
        found = {
            key: next((getattr(base, n) for n in names if isinstance(getattr(base, n, None), nn.Module)), None)
            for key, names in (("embedding", EMBEDDINGS), ("layers", LAYERS), ("final_norm", FINAL_NORMS))
        }
        embedding, layers, final_norm = found["embedding"], found["layers"], found["final_norm"]
        if (
            embedding is not None
            and layers is not None
            and final_norm is not None
            and getattr(base, "project_out", None) is None
        ):  # OPT-350m projects: not read
            return Parts(embedding, layers, final_norm, head)
    raise ExplainError(
        f"cannot find the layers of {type(model).__name__} (looked for {'/'.join(BASES)} with "
        f"{'/'.join(LAYERS)}, {'/'.join(FINAL_NORMS)} and lm_head): looking inside needs a "
        "decoder-only model laid out as transformers lays them out"
    )


@dataclass
class Replay:
    hidden_states: list[
        torch.Tensor
    ]  # (hidden_size,) at the new position: the input to layer 0, then each layer's output
    attentions: list[torch.Tensor] | None  # per layer (num_heads, positions): the new position's weights
    logits: torch.Tensor  # (vocab_size,) float32, as the step recorded them


def _cache_for(generation, position: int) -> KVCache | None:
    """The run's cache cut back to `position` positions (a view; the run's own cache is not changed)."""
    cache = KVCache()
    cache.keys, cache.values = list(generation.cache.keys), list(generation.cache.values)
    cache.crop(position)
    return cache


@torch.inference_mode()
def replay(generation, step: int, attentions: bool = True) -> Replay:
    """Run the forward pass of `step` again, reading every layer's hidden state (and attention weights)."""
    if not 0 <= step < len(generation.steps):
        raise ExplainError(f"step {step} has not been generated; steps 0..{len(generation.steps) - 1} exist")
    position = generation.steps[step]["position"]  # the sequence length when the step's logits were computed
    if len(generation.cache) < position - 1:
        raise ExplainError(
            f"the run's KV cache holds {len(generation.cache)} positions, fewer than step {step} "
            "needs; inspect a step of a run that is still in memory"
        )
    parts = decoder_parts(generation.model)
    ids = generation.input_ids[:, :position]
    captured: list[torch.Tensor] = []

    def before_first(module, args, kwargs):  # the embeddings, as layer 0 receives them (positions added, for GPT-2)
        captured.append((args[0] if args else kwargs["hidden_states"])[0, -1])

    def after(module, args, output):
        captured.append((output[0] if isinstance(output, tuple) else output)[0, -1])

    hooks = [parts.layers[0].register_forward_pre_hook(before_first, with_kwargs=True)]
    hooks += [layer.register_forward_hook(after) for layer in parts.layers]
    try:
        if step == 0:  # the prefill: the whole prompt, no cache, as the step ran it
            out = generation.model(ids, cache=KVCache(), logits_to_keep=1)
        else:  # one token over the cache of the positions before it
            out = generation.model(ids[:, -1:], cache=_cache_for(generation, position - 1), logits_to_keep=1)
    finally:
        for hook in hooks:
            hook.remove()
    weights = None
    if attentions:
        if step == 0:
            eager = generation.model(ids, cache=KVCache(), logits_to_keep=1, output_attentions=True)
        else:
            eager = generation.model(
                ids[:, -1:], cache=_cache_for(generation, position - 1), logits_to_keep=1, output_attentions=True
            )
        weights = [layer[0, :, -1, :].float() for layer in eager.attentions]  # (num_heads, positions)
    return Replay(captured, weights, out.logits[0, -1].float())
