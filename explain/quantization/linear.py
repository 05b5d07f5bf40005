"""The layers a quantized model runs: nn.Linear's job, y = x W^T + b, with W kept as integers in memory.

    Int4Linear       4-bit integers in groups of 32 along the input, a scale and a zero per group:
                     W[n, k] = (q[n, k] - 8) * scale[n, k // 32] + zero[n, k // 32]
                     product: torch.ops.aten._weight_int4pack_mm_for_cpu, on the layout made by
                     _convert_weight_to_int4pack_for_cpu (the kernel torchao's Int4OpaqueTensor calls on CPU)
    Int8Linear       int8 with one scale per output row: W[n, k] = q[n, k] * scale[n]
                     product: torch.ops.aten._weight_int8pack_mm
    BlockInt8Linear  int8 in blocks of 32 with a scale per block (GGUF's Q8_0 as stored):
                     W[n, k] = q[n, k] * d[n, k // 32]
                     product: the weight is dequantized (torch.ops.quantized_decomposed.dequantize_per_channel_group)
                     and multiplied by F.linear, as torchao's int8 weight-only does for groups (torch has no
                     group-wise int8 kernel)

The kernels are PyTorch's own; nothing here computes a product by hand. Each layer keeps the shape facts of the
nn.Linear it replaces (in_features, out_features, bias) under the same module name, so the model reads as before.
"""

from __future__ import annotations

import torch
import torch.ao.quantization.fx._decomposed  # noqa: F401  registers torch.ops.quantized_decomposed.*
import torch.nn.functional as F
from torch import nn

from ..errors import UnsupportedError
from .blocks import GROUP_SIZE, Blocks

INT4_KERNEL = "torch.ops.aten._weight_int4pack_mm_for_cpu"
INT8_KERNEL = "torch.ops.aten._weight_int8pack_mm"
BLOCK_INT8_KERNEL = "torch.ops.quantized_decomposed.dequantize_per_channel_group + F.linear"


class QuantizedLinear(nn.Module):
    """What the three layers share: the nn.Linear facts, an optional float bias, their storage in bytes."""

    kernel = ""
    bits = 0

    def __init__(self, in_features: int, out_features: int, bias: torch.Tensor | None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.bias = nn.Parameter(bias, requires_grad=False) if bias is not None else None

    def _flat(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(-1, self.in_features).contiguous()  # (B * T, in_features): the kernels take 2-D inputs

    def _finish(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        y = y.reshape(*x.shape[:-1], self.out_features)  # (B, T, out_features)
        return y + self.bias if self.bias is not None else y

    def storage(self) -> dict:
        """Bytes of each stored part: {"int4 values": ..., "scales and zeros (bfloat16)": ...}."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Int4Linear(QuantizedLinear):
    kernel = INT4_KERNEL
    bits = 4
    packed_weight: torch.Tensor  # a buffer: nn.Module's attribute lookup would give the checker Tensor | Module
    scales_and_zeros: torch.Tensor

    def __init__(
        self,
        packed_weight: torch.Tensor,
        scales_and_zeros: torch.Tensor,
        in_features: int,
        bias: torch.Tensor | None = None,
        group_size: int = GROUP_SIZE,
    ):
        super().__init__(in_features, scales_and_zeros.shape[1], bias)
        self.group_size = group_size
        self.register_buffer("packed_weight", packed_weight)  # (N, K / 2) uint8: two 4-bit values a byte
        self.register_buffer("scales_and_zeros", scales_and_zeros)  # (K / group, N, 2): the kernel's layout

    @classmethod
    def from_blocks(cls, blocks: Blocks, dtype: torch.dtype, bias: torch.Tensor | None = None) -> Int4Linear:
        """Q4_1 (d * q + m) and Q4_0 (d * (q - 8)) are this layer's (q - 8) * scale + zero with scale = d and
        zero = m + 8d (Q4_1) or 0 (Q4_0): the stored integers go to the kernel as they are."""
        if blocks.kind not in ("Q4_0", "Q4_1"):
            raise ValueError(f"Int4Linear takes 4-bit blocks (Q4_0, Q4_1), not {blocks.kind}")
        scale = blocks.scales  # (N, K / 32) float32
        if blocks.kind == "Q4_1":
            assert blocks.minimums is not None  # every Q4_1 block has its m
            zero = blocks.minimums + 8 * scale
        else:
            zero = torch.zeros_like(scale)
        scales_and_zeros = torch.stack([scale.t(), zero.t()], dim=-1).to(dtype).contiguous()  # (K / 32, N, 2)
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(blocks.values.to(torch.int32).contiguous(), 1)
        return cls(packed, scales_and_zeros, blocks.shape[1], bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(
            self._flat(x), self.packed_weight, self.group_size, self.scales_and_zeros
        )
        return self._finish(y, x)

    def dequantized_weight(self) -> torch.Tensor:
        """(N, K) the weight the kernel multiplies by, read back through the kernel itself: identity @ W^T."""
        eye = torch.eye(self.in_features, dtype=self.scales_and_zeros.dtype)  # (K, K)
        return torch.ops.aten._weight_int4pack_mm_for_cpu(
            eye, self.packed_weight, self.group_size, self.scales_and_zeros
        ).t()  # (N, K)

    def storage(self) -> dict:
        kind = str(self.scales_and_zeros.dtype).replace("torch.", "")
        return {"int4 values": self.packed_weight.nbytes, f"scales and zeros ({kind})": self.scales_and_zeros.nbytes}


# torch's CPU _weight_int8pack_mm reads the input dimension K in blocks of 16 with no remainder loop (torch 2.13,
# measured: K = 100, 36, 12 crash the process with a segfault; K = 8, 24, 40, 56, 72, 88, 120 return inf, NaN or
# values off by 40%; every multiple of 16 is exact to bfloat16). Layers with another K stay in float.
INT8_IN_MULTIPLE = 16


def int8_shape_problem(out_features: int, in_features: int) -> str:
    return (
        f"{out_features} x {in_features}: torch's int8 kernel (_weight_int8pack_mm) needs in_features divisible by "
        f"{INT8_IN_MULTIPLE} (otherwise it crashes the process or returns garbage), so this layer stays in float"
    )


class Int8Linear(QuantizedLinear):
    kernel = INT8_KERNEL
    bits = 8
    weight_int8: torch.Tensor  # a buffer: nn.Module's attribute lookup would give the checker Tensor | Module
    scales: torch.Tensor

    def __init__(self, weight: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None = None):
        if weight.shape[1] % INT8_IN_MULTIPLE:  # the kernel would read past the row: a crash or garbage
            raise UnsupportedError(int8_shape_problem(weight.shape[0], weight.shape[1]))
        super().__init__(weight.shape[1], weight.shape[0], bias)
        self.register_buffer("weight_int8", weight)  # (N, K) int8
        self.register_buffer("scales", scales)  # (N,) one per output row, in the activations' dtype

    @classmethod
    def from_float(cls, weight: torch.Tensor, dtype: torch.dtype, bias: torch.Tensor | None = None) -> Int8Linear:
        """Symmetric int8 per output row with torch's reference ops: scale = max |w| / 127, q = round(w / scale)."""
        weight = weight.detach().to(torch.float32)
        scales, zeros = torch.ops.quantized_decomposed.choose_qparams_per_token(weight, torch.int8)  # (N, 1)
        values = torch.ops.quantized_decomposed.quantize_per_channel_group(
            weight, scales, zeros, -128, 127, torch.int8, weight.shape[1]
        )  # one group = the whole row
        return cls(values, scales.reshape(-1).to(dtype), bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._finish(torch.ops.aten._weight_int8pack_mm(self._flat(x), self.weight_int8, self.scales), x)

    def dequantized_weight(self) -> torch.Tensor:
        return self.weight_int8.to(self.scales.dtype) * self.scales[:, None]  # (N, K)

    def storage(self) -> dict:
        kind = str(self.scales.dtype).replace("torch.", "")
        return {"int8 values": self.weight_int8.nbytes, f"scales ({kind})": self.scales.nbytes}


class BlockInt8Linear(QuantizedLinear):
    kernel = BLOCK_INT8_KERNEL
    bits = 8
    weight_int8: torch.Tensor  # a buffer: nn.Module's attribute lookup would give the checker Tensor | Module
    block_scales: torch.Tensor

    def __init__(self, values: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None = None):
        super().__init__(values.shape[1], values.shape[0], bias)
        self.register_buffer("weight_int8", values)  # (N, K) int8, as the file stores them
        self.register_buffer("block_scales", scales)  # (N, K / 32) float32: each block's d (a float16 in the file)

    @classmethod
    def from_blocks(cls, blocks: Blocks, dtype: torch.dtype, bias: torch.Tensor | None = None) -> BlockInt8Linear:
        if blocks.kind != "Q8_0":
            raise ValueError(f"BlockInt8Linear takes Q8_0 blocks, not {blocks.kind}")
        return cls(blocks.values, blocks.scales, bias)

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return torch.ops.quantized_decomposed.dequantize_per_channel_group(
            self.weight_int8, self.block_scales, None, -128, 127, torch.int8, GROUP_SIZE, dtype
        )  # (N, K)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.dequantized_weight(x.dtype), self.bias)

    def storage(self) -> dict:
        return {"int8 values": self.weight_int8.nbytes, "block scales (float32)": self.block_scales.nbytes}
