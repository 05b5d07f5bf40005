"""How close explain's bfloat16 logits must be to transformers', and the checks that use it.

The tolerance, derived (every number below is in the results file, so the derivation can be checked):

  u = 2^-8, bfloat16's unit roundoff (torch.finfo(torch.bfloat16).eps / 2: 8 significant bits). Rounding a value
  to bfloat16 changes it by at most u times its size; over many values the change is spread evenly, so its root
  mean square is u / sqrt(3) times the value.

  The logits are z = W h: the LM head's weight rows times the hidden state h that leaves the final norm. In a
  bfloat16 forward the residual stream that becomes h is rounded at every write: once per sublayer (attention,
  MLP), 2 L times, and the final norm's output once more: R = 2 L + 1 roundings, each adding independent noise of
  relative size u / sqrt(3). They add up like a random walk, to u sqrt(R / 3) relative to |h|. A weight row w
  maps noise of that size in a random direction to u sqrt(R / 3) |w| |h| / sqrt(d) = u sqrt(R / 3) rms(z), where
  rms(z) is the root mean square of the logits over the vocabulary. Rounding z itself adds u |z| / sqrt(3). So
  one bfloat16 logit is off from the exact (float32) one by noise of

      sigma = u / sqrt(3) * sqrt(R * rms(z)^2 + |z|^2)          (|z|: the row's largest logit, to bound all)

  The largest of N such values (every logit of every row compared: N = rows x vocabulary) stays below k sigma
  with k = sqrt(2 ln N), the size of the largest of N normal deviates. Two implementations are each within k sigma
  of the exact logits, so they are within

      tolerance = 2 k sigma                                       of each other (the triangle inequality).

  For Llama-3.1-8B's shapes (L = 32, d = 4096, rms(z) ~ 1.3 with random weights, |z| ~ 6, 33 rows of 128,256)
  that is about 0.3: two or three bfloat16 steps of the largest logit, and a small fraction of a real model's
  logit range. The estimate is checked wherever the run can afford a float32 copy of the model (the smoke run on
  the CPU, and the GPU run when the GPU has the room): the measured root mean square of bfloat16 - float32 must be
  between a quarter and twice sigma's (rms(z) in place of |z|), and its largest value below k sigma. The estimate
  is meant as an upper one (rounding errors partly cancel, and a rounded value's relative error is often below
  u): on this machine's tiny Llamas the measured noise was 0.76 (4 layers) and 0.60 (32 layers) of it.

Greedy ids: transformers and explain pick the argmax of their own logits. They can only disagree at a step whose
two best logits are closer than the two implementations' difference there; the check passes when all ids agree,
or when the first disagreement is such a near-tie and the logits there are within the tolerance.
"""

from __future__ import annotations

import math
from typing import Any

import torch

UNIT_ROUNDOFF = torch.finfo(torch.bfloat16).eps / 2  # 2**-8


def tolerance(reference: torch.Tensor, layers: int) -> dict:
    """The bound above for logit rows `reference` (rows, vocab) of a model with `layers` decoder layers."""
    reference = reference.float()
    rows, vocab = reference.shape
    rms = reference.pow(2).mean(-1).sqrt()  # (rows,)
    peak = reference.abs().amax(-1)  # (rows,)
    roundings = 2 * layers + 1
    sigma = UNIT_ROUNDOFF / math.sqrt(3) * torch.sqrt(roundings * rms.pow(2) + peak.pow(2))  # (rows,)
    k = math.sqrt(2 * math.log(rows * vocab))
    worst = float(sigma.max())
    return {
        "unit_roundoff": UNIT_ROUNDOFF,
        "layers": layers,
        "roundings": roundings,
        "rows": rows,
        "vocab": vocab,
        "logit_rms": float(rms.mean()),
        "logit_peak": float(peak.max()),
        "sigma": worst,
        "k": k,
        "one_implementation_bound": k * worst,
        "tolerance": 2 * k * worst,
        "predicted_noise_rms": UNIT_ROUNDOFF / math.sqrt(3) * float(rms.mean()) * math.sqrt(roundings + 1),
    }


def difference(a: torch.Tensor, b: torch.Tensor) -> dict:
    """Largest and root-mean-square |a - b| over rows of logits, and where the largest is."""
    d = (a.float() - b.float()).abs()
    flat = int(d.argmax())
    return {
        "max": float(d.max()),
        "rms": float(d.pow(2).mean().sqrt()),
        "at_row": flat // d.shape[-1],
        "at_token": flat % d.shape[-1],
    }


def check_noise_model(low: torch.Tensor, exact: torch.Tensor, bound: dict) -> dict:
    """Is one implementation's bfloat16 - float32 noise the size the derivation says?"""
    measured = difference(low, exact)
    ratio = measured["rms"] / bound["predicted_noise_rms"]
    return {
        **measured,
        "predicted_rms": bound["predicted_noise_rms"],
        "rms_ratio": ratio,
        "bound": bound["one_implementation_bound"],
        "passed": 0.25 <= ratio <= 2.0 and measured["max"] <= bound["one_implementation_bound"],
    }


def greedy(
    explain_ids: list, reference_ids: list, explain_rows: torch.Tensor, reference_rows: torch.Tensor, limit: float
) -> dict:
    """Greedy ids compared; at the first difference, is it a near-tie the logits' difference explains?"""
    same = next((i for i, (a, b) in enumerate(zip(explain_ids, reference_ids, strict=False)) if a != b), None)
    out: dict[str, Any] = {
        "tokens": len(reference_ids),
        "equal": explain_ids == reference_ids,
        "equal_tokens": len(reference_ids) if same is None else same,
        "first_difference_at": same,
    }
    if same is None:
        return {**out, "passed": explain_ids == reference_ids}
    ours, theirs = explain_ids[same], reference_ids[same]
    row_e, row_t = explain_rows[same].float(), reference_rows[same].float()
    gap = float(row_t[theirs] - row_t[ours])  # how much transformers preferred its pick
    shift = float((row_e[ours] - row_t[ours]) - (row_e[theirs] - row_t[theirs]))  # how much explain moved them
    step_max = float((row_e - row_t).abs().max())
    out.update(
        explain_token=ours,
        reference_token=theirs,
        reference_gap=gap,
        relative_shift=shift,
        logit_max_difference_at_step=step_max,
        near_tie=gap <= shift and step_max <= limit,
    )
    out["passed"] = out["near_tie"]
    return out
