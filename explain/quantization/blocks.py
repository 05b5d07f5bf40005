"""GGUF's quantised blocks read as the integers and scales they store: no float round trip.

    Q4_0  32 weights in 18 bytes: d (float16), then 16 bytes of 4-bit q in 0..15      weight = d * (q - 8)
    Q4_1  32 weights in 20 bytes: d (float16), m (float16), then 16 bytes of q         weight = d * q + m
    Q8_0  32 weights in 34 bytes: d (float16), then 32 signed bytes q in -128..127     weight = d * q

The byte layouts are llama.cpp's (ggml-common.h: block_q4_0, block_q4_1, block_q8_0), read as the gguf package's
dequantize_blocks reads them (gguf/quants.py): in a 4-bit block the low nibbles of the 16 bytes are weights 0..15
and the high nibbles weights 16..31. `Blocks.dequantize()` is the float32 the formats define, used by the tests
and by the fallback for layers no kernel takes; the kernels themselves get `values`, `scales`, `minimums`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

GROUP_SIZE = 32  # weights per block, in all three formats
BYTES_PER_BLOCK = {"Q4_0": 18, "Q4_1": 20, "Q8_0": 34}


@dataclass
class Blocks:
    """One matrix as its format stores it, unpacked (rows, columns) = (out_features, in_features)."""

    kind: str  # "Q4_0", "Q4_1" or "Q8_0"
    values: torch.Tensor  # (N, K) the stored integers: uint8 0..15 (4-bit formats) or int8 (Q8_0)
    scales: torch.Tensor  # (N, K / 32) float32: d of each block (a float16 in the file, so exact in float32)
    minimums: torch.Tensor | None  # (N, K / 32) float32: m of each Q4_1 block; None for the others

    @property
    def shape(self) -> tuple[int, int]:
        rows, columns = self.values.shape
        return rows, columns

    def dequantize(self, dtype: torch.dtype = torch.float32, rows: int = 2048) -> torch.Tensor:
        """The weights the format defines, in float32 (equal to gguf.quants.dequantize, which the tests check),
        then cast to `dtype`; computed `rows` rows at a time so that a large matrix never exists twice in float32."""
        out = torch.empty(self.shape, dtype=dtype)
        for start in range(0, self.shape[0], rows):
            part = slice(start, start + rows)
            scales = self.scales[part].repeat_interleave(GROUP_SIZE, dim=1)  # (rows, K): each block's d on its 32
            values = self.values[part].to(torch.float32)
            if self.kind == "Q4_0":
                weights = scales * (values - 8)
            elif self.kind == "Q4_1":
                assert self.minimums is not None  # every Q4_1 block has its m
                weights = scales * values + self.minimums[part].repeat_interleave(GROUP_SIZE, dim=1)
            else:
                weights = scales * values
            out[part] = weights
        return out


def _half(raw: np.ndarray) -> np.ndarray:
    """(..., 2) bytes -> (...) float32: a float16 stored little-endian, as GGUF stores d and m."""
    return np.ascontiguousarray(raw).view("<f2")[..., 0].astype(np.float32)


def unpack(raw: np.ndarray, kind: str, rows: int | None = None) -> Blocks:
    """Bytes of a GGUF tensor, shaped (N, bytes per row) as gguf.GGUFReader gives them -> Blocks."""
    if kind not in BYTES_PER_BLOCK:
        raise ValueError(f"{kind} is not a block format explain reads as integers ({', '.join(BYTES_PER_BLOCK)})")
    rows = rows if rows is not None else raw.shape[0]
    blocks = np.asarray(raw, dtype=np.uint8).reshape(rows, -1, BYTES_PER_BLOCK[kind])  # (N, K / 32, bytes)
    scales = _half(blocks[..., 0:2])  # (N, K / 32)
    minimums = None
    if kind == "Q8_0":
        values = np.ascontiguousarray(blocks[..., 2:]).view(np.int8).reshape(rows, -1)  # (N, K)
    else:
        start = 2 if kind == "Q4_0" else 4
        if kind == "Q4_1":
            minimums = torch.from_numpy(_half(blocks[..., 2:4]))
        packed = blocks[..., start:]  # (N, K / 32, 16): two weights per byte
        values = np.concatenate([packed & 0x0F, packed >> 4], axis=-1).reshape(rows, -1)  # (N, K) uint8
    return Blocks(kind, torch.from_numpy(np.ascontiguousarray(values)), torch.from_numpy(scales), minimums)


def permute_rows(blocks: Blocks, reorder) -> Blocks:
    """The same blocks with their rows reordered by `reorder` (an array function that acts on axis 0), e.g. the
    q/k row permutation llama.cpp's converter applies: every block stays whole, so it is exact."""

    def rows(tensor):
        return None if tensor is None else torch.from_numpy(np.ascontiguousarray(reorder(tensor.numpy())))

    return Blocks(blocks.kind, rows(blocks.values), rows(blocks.scales), rows(blocks.minimums))


def quantize_q4_1(weight: torch.Tensor) -> Blocks:
    """Float weights -> Q4_1 blocks with the gguf package's quantizer (llama.cpp's reference: per block of 32,
    d = (max - min) / 15, m = min, q = round((w - m) / d)); the same scheme as torchao's int4 weight-only with
    float zero points, except that d and m are kept as float16."""
    from gguf import GGMLQuantizationType
    from gguf.quants import quantize

    data = weight.detach().to(torch.float32).cpu().numpy()
    return unpack(quantize(data, GGMLQuantizationType.Q4_1), "Q4_1", rows=data.shape[0])
