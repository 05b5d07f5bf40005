"""Looking inside a transformers model at one step of a traced run: the replay explain.inside needs, on
transformers' own forward and Cache.

explain.inside (the logit lens, attention, attribution) reads a step by running that step's forward pass again
with hooks on the decoder layers (explain/inside/replay.py does it for explain's models). Here the pass is
transformers' forward: the prompt for step 0, else the token before the step over a copy of the run's Cache
cropped to the positions before it (transformers' Cache.crop), so it is the pass generate() ran.

The hidden states are read by forward hooks on the layers, not through output_hidden_states: transformers 5 puts
the final norm's output in the last place of output_hidden_states (`capture_outputs(tie_last_hidden_states=True)`,
transformers/utils/output_capturing.py:310-322 and 377-379, 5.24), while the lens applies the final norm to every
layer's output itself, so it needs the last layer's output before the norm. Attention weights need the
eager implementation (SDPA and flash attention never form them): the model is switched to "eager" with
transformers' set_attn_implementation for that one pass, and switched back.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from ...errors import ExplainError
from ...inside.replay import Replay, decoder_parts
from .cache import cropped


def _cache_before(generation, length: int):
    """A copy of the run's Cache holding its first `length` positions (the run's own is not changed)."""
    cache = cropped(generation.cache, length)
    if cache is None:
        raise ExplainError(
            "this run's cache cannot be cut back to the step (a sliding-window or static cache); "
            "inspect a step of a run on a model with transformers' DynamicCache"
        )
    return cache


@contextmanager
def eager_attention(model):
    """The model's attention implementation set to "eager" for the block (output_attentions needs it)."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    previous = getattr(config, "_attn_implementation", None) or "eager"
    if previous == "eager":
        yield
        return
    try:
        model.set_attn_implementation("eager")
    except (ValueError, ImportError, AttributeError) as error:
        raise ExplainError(
            f"{type(model).__name__} cannot switch to eager attention ({error}); attention weights "
            'need it. Inspect with what=("lens",) instead'
        ) from None
    try:
        yield
    finally:
        model.set_attn_implementation(previous)


def _forward(generation, step: int, **kwargs):
    position = generation.steps[step]["position"]  # the sequence length when the step's logits were computed
    ids = generation.input_ids[:, :position].to(generation.device)
    if step == 0 or generation.cache is None:  # the prefill (or a branch whose cache could not be kept): no cache
        return generation.model(input_ids=ids, logits_to_keep=1, use_cache=False, **kwargs)
    if generation.cache.get_seq_length() < position - 1:
        raise ExplainError(
            f"the run's cache holds {generation.cache.get_seq_length()} positions, fewer than step "
            f"{step} needs; inspect a step of a run that is still in memory"
        )
    cache = _cache_before(generation, position - 1)
    return generation.model(input_ids=ids[:, -1:], cache=cache, logits_to_keep=1, **kwargs)


@torch.inference_mode()
def replay(generation, step: int, attentions: bool = True) -> Replay:
    """Step `step`'s forward pass again on transformers' model, every layer's hidden state read at the new
    position (and, with attentions=True, a second, eager pass for the attention weights)."""
    if not 0 <= step < len(generation.steps):
        raise ExplainError(f"step {step} has not been generated; steps 0..{len(generation.steps) - 1} exist")
    parts = decoder_parts(generation.model)
    captured: list[torch.Tensor] = []

    def before_first(module, args, kwargs):  # the embeddings as layer 0 receives them (scaled, positions added)
        captured.append((args[0] if args else kwargs["hidden_states"])[0, -1])

    def after(module, args, output):
        captured.append((output[0] if isinstance(output, tuple) else output)[0, -1])

    hooks = [parts.layers[0].register_forward_pre_hook(before_first, with_kwargs=True)]
    hooks += [layer.register_forward_hook(after) for layer in parts.layers]
    try:
        out = _forward(generation, step)
    finally:
        for hook in hooks:
            hook.remove()
    weights = None
    if attentions:
        with eager_attention(generation.model):
            eager = _forward(generation, step, output_attentions=True)
        if not eager.attentions or eager.attentions[0] is None:
            raise ExplainError(
                f'{type(generation.model).__name__} returned no attention weights; inspect with what=("lens",) instead'
            )
        weights = [layer[0, :, -1, :].float() for layer in eager.attentions]  # (num_heads, positions)
    return Replay(captured, weights, out.logits[0, -1].float())
