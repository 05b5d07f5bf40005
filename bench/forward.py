"""Where a decode step's time goes: one forward of explain's model, one of transformers', and the model's
matrix-vector products alone (every nn.Linear's weight times a vector, nothing else), taken in turns.

The products read every weight once; they are the part neither implementation can do with less work. What a
forward takes beyond them is its own overhead (norms, rotary, attention, cache, Python), and what a generation
step takes beyond the forward is the generation loop's (see the decode rows' forward_ms_per_token).
"""

from __future__ import annotations

import inspect
import statistics
import time
from typing import Any

import torch
import torch.nn.functional as F

from explain.models.cache import KVCache


def forward_breakdown(model, reference, prompt_ids: list[int], repeats: int = 20) -> dict:
    """Median milliseconds of one decode forward (after a prompt of prompt_ids) for explain and transformers,
    and of the linears alone; `reference` is transformers' model (or None)."""
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    dtype, device = linears[0].weight.dtype, linears[0].weight.device
    inputs = {n: torch.randn(1, 1, n, dtype=dtype, device=device) for n in {m.in_features for m in linears}}

    def linear_only():
        for m in linears:
            F.linear(inputs[m.in_features], m.weight, m.bias)

    ids = torch.tensor([prompt_ids], device=device)  # (1, T)
    token = torch.tensor([[prompt_ids[-1]]], device=device)  # (1, 1)
    times: dict[str, list[float]] = {"explain_forward": [], "transformers_forward": [], "linear_only": []}
    with torch.inference_mode():
        cache = KVCache()
        model(ids, cache=cache, logits_to_keep=1)
        reference_cache, name = None, _cache_argument(reference)
        if reference is not None:  # transformers 5.2x calls the cache `cache`; earlier releases `past_key_values`
            reference_cache = getattr(reference(ids.to(reference.device), use_cache=True), name)
        for _ in range(repeats):  # in turns, so drift hits all three; the caches grow by one position per turn
            times["explain_forward"].append(_timed(lambda: model(token, cache=cache, logits_to_keep=1)))
            if reference is not None:
                times["transformers_forward"].append(
                    _timed(
                        lambda: reference(
                            token.to(reference.device), use_cache=True, logits_to_keep=1, **{name: reference_cache}
                        )
                    )
                )
            times["linear_only"].append(_timed(linear_only))
    out: dict[str, Any] = {
        "repeats": repeats,
        "linears": len(linears),
        "linear_weight_bytes": sum(m.weight.numel() * m.weight.element_size() for m in linears),
    }
    for name, values in times.items():
        out[f"{name}_ms"] = 1000 * statistics.median(values) if values else None
    out["linear_share_of_explain_forward"] = out["linear_only_ms"] / out["explain_forward_ms"]
    return out


def _cache_argument(reference) -> str:
    if reference is None:
        return "cache"
    return "cache" if "cache" in inspect.signature(reference.forward).parameters else "past_key_values"


def _timed(function) -> float:
    """Seconds `function` takes to finish, including the GPU work it queued (CUDA calls return before it ends)."""
    synchronize()
    t0 = time.perf_counter()
    function()
    synchronize()
    return time.perf_counter() - t0


def synchronize() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
