"""Where a decode step's time goes: one forward of explain's model, one of transformers', and the model's
matrix-vector products alone (every nn.Linear's weight times a vector, nothing else), taken in turns.

The products read every weight once; they are the part neither implementation can do with less work. What a
forward takes beyond them is its own overhead (norms, rotary, attention, cache, Python), and what a generation
step takes beyond the forward is the generation loop's (see the decode rows' forward_ms_per_token).
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F

from explain.models.cache import KVCache


def forward_breakdown(model, reference, prompt_ids: list[int], repeats: int = 20) -> dict:
    """Median milliseconds of one decode forward (after a prompt of prompt_ids) for explain and transformers,
    and of the linears alone; `reference` is transformers' model (or None)."""
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    dtype = linears[0].weight.dtype
    inputs = {n: torch.randn(1, 1, n, dtype=dtype) for n in {m.in_features for m in linears}}

    def linear_only():
        for m in linears:
            F.linear(inputs[m.in_features], m.weight, m.bias)

    ids = torch.tensor([prompt_ids])  # (1, T)
    token = torch.tensor([[prompt_ids[-1]]])  # (1, 1)
    times = {"explain_forward": [], "transformers_forward": [], "linear_only": []}
    with torch.inference_mode():
        cache = KVCache()
        model(ids, cache=cache, logits_to_keep=1)
        reference_cache = reference(ids, use_cache=True).cache if reference is not None else None
        for _ in range(repeats):  # in turns, so drift hits all three; the caches grow by one position per turn
            times["explain_forward"].append(_timed(lambda: model(token, cache=cache, logits_to_keep=1)))
            if reference is not None:
                times["transformers_forward"].append(_timed(
                    lambda: reference(token, cache=reference_cache, use_cache=True, logits_to_keep=1)))
            times["linear_only"].append(_timed(linear_only))
    out = {"repeats": repeats, "linears": len(linears),
           "linear_weight_bytes": sum(m.weight.numel() * m.weight.element_size() for m in linears)}
    for name, values in times.items():
        out[f"{name}_ms"] = 1000 * statistics.median(values) if values else None
    out["linear_share_of_explain_forward"] = out["linear_only_ms"] / out["explain_forward_ms"]
    return out


def _timed(function) -> float:
    t0 = time.perf_counter()
    function()
    return time.perf_counter() - t0
