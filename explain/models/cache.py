"""The KV cache every model file uses: per layer, the keys and values of all positions seen so far."""

from __future__ import annotations

import torch


class KVCache:
    """Grows by concatenation, like transformers' DynamicCache. Shapes: (B, num_key_value_heads, T, head_dim).

    A left-padded batch keeps its padded rows as they are: every row has the same T positions, pads included (their
    keys and values are computed and stored, as transformers stores them); the attention mask passed to each
    forward, not the cache, says which positions are pads, and attention never reads them (padding_mask)."""

    def __init__(self):
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []

    def update(self, layer_idx: int, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if layer_idx == len(self.keys):
            self.keys.append(key)
            self.values.append(value)
        else:
            self.keys[layer_idx] = torch.cat([self.keys[layer_idx], key], dim=-2)
            self.values[layer_idx] = torch.cat([self.values[layer_idx], value], dim=-2)
        return self.keys[layer_idx], self.values[layer_idx]

    def __len__(self) -> int:
        """Number of cached positions."""
        return self.keys[0].shape[-2] if self.keys else 0

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.keys + self.values)

    def crop(self, length: int) -> None:
        """Forget every position from `length` on (used to rewind a step-through run)."""
        self.keys = [k[..., :length, :] for k in self.keys]
        self.values = [v[..., :length, :] for v in self.values]

    def reorder(self, rows: torch.Tensor) -> None:
        """Keep row rows[i] as row i (beam search: each new beam continues the cache of the beam it came from), as
        transformers' Cache.reorder_cache does with index_select on the batch dimension."""
        self.keys = [k.index_select(0, rows.to(k.device)) for k in self.keys]
        self.values = [v.index_select(0, rows.to(v.device)) for v in self.values]
