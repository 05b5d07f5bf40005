"""LoRA in a few readable lines, for the layers peft cannot wrap (explain's quantized layers) or when peft is absent.

A LoRA adapter adds a low-rank change to a linear layer's weight:   W' = W + (alpha / r) * B A
with A (r, in_features) and B (out_features, r), r much smaller than either. Unmerged, the layer computes
    y = base(x) + (alpha / r) * B(A(x))
which is peft's lora.Linear.forward for a plain LoRA adapter (peft 0.21.2, peft/tuners/lora/layer.py line 1102:
`result = result + lora_B(lora_A(dropout(x))) * scaling`; dropout is the identity at inference). Merged, the
base weight itself becomes W + (alpha / r) B A (peft's merge, line 1008) and the layer costs what the base costs.
The scale is alpha / r, or alpha / sqrt(r) with use_rslora (peft/tuners/lora/layer.py lines 278-281).
"""

from __future__ import annotations

import torch
from torch import nn


class LoraLinear(nn.Module):
    def __init__(self, base_layer: nn.Module, lora_A: torch.Tensor, lora_B: torch.Tensor, scaling: float):
        super().__init__()
        self.base_layer = base_layer
        rank, in_features = lora_A.shape
        self.lora_A = nn.Linear(in_features, rank, bias=False)  # (r, in_features): peft's names, so keys match
        self.lora_B = nn.Linear(rank, lora_B.shape[0], bias=False)  # (out_features, r)
        self.lora_A.weight = nn.Parameter(lora_A, requires_grad=False)
        self.lora_B.weight = nn.Parameter(lora_B, requires_grad=False)
        self.scaling = scaling
        self.merged = False

    @property
    def in_features(self) -> int:
        return self.lora_A.in_features

    @property
    def out_features(self) -> int:
        return self.lora_B.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base_layer(x)
        if self.merged:
            return result
        low_rank = self.lora_B(self.lora_A(x.to(self.lora_A.weight.dtype)))  # (B, T, r) -> (B, T, out_features)
        return (result + low_rank * self.scaling).to(result.dtype)

    def delta_weight(self) -> torch.Tensor:
        """(out_features, in_features): the change the adapter makes to the weight, (alpha / r) * B A."""
        return (self.lora_B.weight @ self.lora_A.weight) * self.scaling

    def merge(self) -> None:
        """W <- W + (alpha / r) B A: afterwards the layer is a plain linear again (no extra product per token)."""
        if not self.merged:
            weight = self.base_layer.get_parameter("weight")
            weight.data += self.delta_weight().to(weight.dtype)
            self.merged = True

    def unmerge(self) -> None:
        """W <- W - (alpha / r) B A: the base weight back (up to the rounding of its dtype)."""
        if self.merged:
            weight = self.base_layer.get_parameter("weight")
            weight.data -= self.delta_weight().to(weight.dtype)
            self.merged = False

    def extra_repr(self) -> str:
        return f"rank={self.lora_A.out_features}, scaling={self.scaling:g}"
