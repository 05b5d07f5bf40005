"""The memory roofline of decoding: every new token reads every weight once, so tokens/s <= bandwidth / weight bytes.

Bandwidth is measured, not looked up: the best of a few sums over a buffer far larger than the caches (numpy's
single-threaded sum and torch's sum at the benchmark's thread count; the faster one counts).
"""

from __future__ import annotations

import time

import numpy as np
import torch


def read_bandwidth(buffer_bytes: int, repeats: int = 5) -> dict:
    """Bytes per second read by a plain sum over `buffer_bytes`, best of `repeats`, for numpy and torch."""
    values = np.ones(buffer_bytes // 4, dtype=np.float32)
    best = {}
    for name, total in (("numpy_sum", values.sum), ("torch_sum", torch.from_numpy(values).sum)):
        total()  # touch every page first
        seconds = min(_timed(total) for _ in range(repeats))
        best[name] = {"bytes_per_s": values.nbytes / seconds, "seconds": seconds}
    del values
    fastest = max(best, key=lambda k: best[k]["bytes_per_s"])
    return {
        "buffer_bytes": buffer_bytes,
        "repeats": repeats,
        "threads": torch.get_num_threads(),
        **best,
        "bytes_per_s": best[fastest]["bytes_per_s"],
        "method": fastest,
    }


def _timed(function) -> float:
    t0 = time.perf_counter()
    function()
    return time.perf_counter() - t0


def weight_bytes(model) -> dict:
    """Bytes of weights one decode step reads. A tied embedding is one tensor, counted once: the LM head reads
    all of it every token, while the embedding lookup reads only the one row of the new token."""
    parameters = list(model.parameters())  # nn.Module.parameters() yields a shared (tied) tensor once
    total = sum(p.numel() * p.element_size() for p in parameters)
    embedding = model.get_input_embeddings().weight if hasattr(model, "get_input_embeddings") else None
    if embedding is None:
        embedding = next(m.weight for m in model.modules() if isinstance(m, torch.nn.Embedding))
    head = getattr(model, "lm_head", None)
    tied = head is not None and head.weight is embedding
    embedding_bytes, row = embedding.numel() * embedding.element_size(), embedding.shape[1] * embedding.element_size()
    return {
        "parameters": sum(p.numel() for p in parameters),
        "parameter_bytes": total,
        "embedding_bytes": embedding_bytes,
        "tied_embedding": tied,
        "bytes_per_token": total + row if tied else total - embedding_bytes + row,
        "note": (
            "tied embedding counted once: the LM head reads the whole matrix every token, and the lookup "
            "reads one more row of it"
        )
        if tied
        else "untied: the embedding lookup reads one row of its matrix",
    }
