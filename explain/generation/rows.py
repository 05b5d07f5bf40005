"""Whole rows over the vocabulary, kept in bounded, compact form.

`KeptLogits` holds each step's raw logits for what-if and forcing (keep_logits=True, what the step-through uses):
a 49,152-token row is 196 KB, so it keeps the newest KEEP_LOGITS rows (about 100 MB for the embedded model)
unless asked for more, and says which step was dropped when one is asked for.

`processor_record` is what one logits processor did to one step's row (removed, changed, kept, top), the record
every producer writes: the explain backend's loop, its samples and assisted strategies, and the transformers
backend's tracer.

`encode_row` / `decode_row` write a row as base64 of little-endian float32 (trace_top="all"): 262 KB of JSON a
row, read back bit for bit, where a list of JSON numbers took ~1 MB and 21 MiB of Python objects.
"""

from __future__ import annotations

import base64
import math
from collections import deque

import numpy as np
import torch

from ..errors import ExplainError
from ..utils.units import size_text

KEEP_LOGITS = 512  # rows keep_logits=True keeps (the newest); keep_logits=<n> keeps n


class KeptLogits:
    """The raw logits of steps 0..n-1, of which the newest `limit` are still held (float32, on the CPU)."""

    def __init__(self, limit: int, rows=()):
        self.limit = limit
        self.rows: deque[torch.Tensor] = deque(rows, maxlen=limit)
        self.count = len(self.rows)  # steps recorded, kept or not

    @classmethod
    def from_option(cls, keep_logits) -> KeptLogits | None:
        """keep_logits=False (None), True (the newest KEEP_LOGITS rows) or a positive int (that many), as
        RunOptions has checked it."""
        if keep_logits is None or keep_logits is False:
            return None
        return cls(KEEP_LOGITS if keep_logits is True else keep_logits)

    def append(self, row: torch.Tensor) -> None:
        self.rows.append(row.detach().to("cpu", torch.float32))
        self.count += 1

    def __len__(self) -> int:
        return self.count

    def __iter__(self):
        return iter(self.rows)

    def __getitem__(self, step: int) -> torch.Tensor:
        if isinstance(step, int) and -self.count <= step < 0:  # raw_logits[-1]: the newest step, as with a list
            step += self.count
        if not isinstance(step, int) or not 0 <= step < self.count:
            raise ExplainError(f"step {step} has not been generated; steps 0..{self.count - 1} exist")
        first = self.count - len(self.rows)
        if step < first:
            raise ExplainError(
                f"the logits of step {step} are no longer kept: keep_logits keeps the newest "
                f"{self.limit} steps ({first}..{self.count - 1} now); start the run with "
                f"keep_logits={self.count} or more to look back that far"
            )
        return self.rows[step - first]

    def upto(self, step: int) -> KeptLogits:
        """The rows of steps 0..step, for a branch that leaves this run at `step`."""
        self[step]  # raises when dropped
        first = self.count - len(self.rows)
        kept = KeptLogits(self.limit, list(self.rows)[: step - first + 1])
        kept.count = step + 1
        return kept


def all_rows_warning(processors: int, vocab_size: int, steps: int) -> str:
    """What trace_top="all" costs, as both backends tell the reader in generation/settings's warnings."""
    rows = 2 + processors
    per_step = rows * 4 * math.ceil(vocab_size * 4 / 3)
    return (
        f'trace_top="all" keeps {rows} whole rows of {vocab_size} values per step: {size_text(per_step)} of '
        f"trace a step, up to {size_text(per_step * steps)} for {steps} steps"
    )


def encode_row(row: torch.Tensor) -> str:
    return base64.b64encode(row.detach().to("cpu", torch.float32).numpy().astype("<f4").tobytes()).decode("ascii")


def decode_row(text: str) -> np.ndarray:
    """A row written by encode_row, as float32 (bit-identical to the tensor it came from)."""
    return np.frombuffer(base64.b64decode(text, validate=True), dtype="<f4")


def float32_list(values: torch.Tensor) -> list[float]:
    """float32 values written with the fewest digits that read back as the same float32 (what JSON stores)."""
    return [
        float(np.format_float_positional(v, unique=True, trim="-"))
        for v in values.detach().float().cpu().numpy().ravel()
    ]


NOT_A_DISTRIBUTION = (
    "the probabilities to sample from hold NaN, infinity or a negative value (torch.multinomial refuses them: "
    '"probability tensor contains either inf, nan or element < 0"), so no token can be drawn. The model\'s logits '
    "are not numbers: its weights hold NaN or infinity, or overflowed in this dtype; check the checkpoint's "
    "weights, or load it with dtype=torch.float32"
)


def sampled(probs: torch.Tensor, num_samples: int = 1) -> torch.Tensor:
    """torch.multinomial(probs, num_samples), with explain's message when `probs` is no distribution (NaN weights).

    On the CPU torch checks the probabilities itself and raises, so its error is translated and a step reads nothing
    more from the tensors; elsewhere (a CUDA kernel asserts instead, which ends the process) they are checked first,
    in one read of the device."""
    if probs.device.type == "cpu":
        try:
            return torch.multinomial(probs, num_samples=num_samples)
        except RuntimeError as error:
            if "probability tensor contains" in str(error):
                raise ExplainError(NOT_A_DISTRIBUTION) from None
            raise
    if bool((~torch.isfinite(probs) | (probs < 0)).any()):
        raise ExplainError(NOT_A_DISTRIBUTION)
    return torch.multinomial(probs, num_samples=num_samples)


def processor_record(processor, before: torch.Tensor, after: torch.Tensor, top) -> dict:
    """What `processor` (anything with name, title and args: a processor, or the transformers backend's record of
    one) did to one row of scores, `before` into `after`: how many tokens it removed (finite to -inf), changed and
    kept finite, read from the device in one copy, and `top(after)`, its highest scores, where it changed any."""
    finite = torch.isfinite(after)
    removed, changed, kept = torch.stack(
        [(torch.isfinite(before) & ~finite).sum(), (before != after).sum(), finite.sum()]
    ).tolist()
    named = processor if isinstance(processor, dict) else None
    return {
        "name": named["name"] if named else processor.name,
        "title": named["title"] if named else processor.title,
        "args": named["args"] if named else processor.args(),
        "removed": removed,
        "changed": changed,
        "kept": kept,
        "top": top(after) if changed else None,
    }
