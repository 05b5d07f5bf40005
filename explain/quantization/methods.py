"""The quantization methods explain runs, one entry each: what it reads, the kernels it needs, the layer it builds.

    gguf   the GGUF file's own blocks, kept as stored: Q4_0 / Q4_1 -> Int4Linear, Q8_0 -> BlockInt8Linear
    int8   any checkpoint, on load: each linear weight -> int8 per output row (Int8Linear)
    int4   any checkpoint, on load: each linear weight -> Q4_1 blocks by gguf's quantizer -> Int4Linear

Adding a method (or a GGUF block type) is one entry here plus, if its storage is new, a layer in linear.py and an
unpacker in blocks.py; docs/architecture.md has the recipe.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .blocks import Blocks, quantize_q4_1
from .linear import INT4_KERNEL, INT8_KERNEL, BlockInt8Linear, Int4Linear, Int8Linear, QuantizedLinear


def _gguf_layer(blocks: Blocks, dtype: torch.dtype, bias) -> QuantizedLinear:
    if blocks.kind == "Q8_0":
        return BlockInt8Linear.from_blocks(blocks, dtype, bias)
    return Int4Linear.from_blocks(blocks, dtype, bias)


def _int8_layer(weight: torch.Tensor, dtype: torch.dtype, bias) -> QuantizedLinear:
    return Int8Linear.from_float(weight, dtype, bias)


def _int4_layer(weight: torch.Tensor, dtype: torch.dtype, bias) -> QuantizedLinear:
    return Int4Linear.from_blocks(quantize_q4_1(weight), dtype, bias)


@dataclass(frozen=True)
class Method:
    name: str
    summary: str  # one line, for errors and the event
    reads: str  # "gguf": the file's blocks as stored; "float": the weights as loaded, quantized on load
    layer: Callable  # (Blocks or float weight, activations dtype, bias or None) -> a QuantizedLinear
    kernels: tuple = ()  # torch ops it cannot run without (checked before anything is loaded)
    bits: int = 4  # of the layers it builds (Int4Linear needs out_features % 16 == 0 and in_features % 32 == 0)
    conversions: dict = field(default_factory=dict)  # source kind -> how it is stored after


METHODS = {
    method.name: method
    for method in (
        Method(
            "gguf",
            "the GGUF file's Q4_0 / Q4_1 / Q8_0 blocks kept as stored and multiplied as integers",
            reads="gguf",
            layer=_gguf_layer,
            kernels=(INT4_KERNEL,),
            conversions={
                "Q4_1": "Int4Linear: the stored 4-bit integers in groups of 32, scale = d, zero = m + 8d",
                "Q4_0": "Int4Linear: the stored 4-bit integers in groups of 32, scale = d, zero = 0",
                "Q8_0": "BlockInt8Linear: the stored int8 values and per-block scales d, dequantized at each "
                "product (torch has no group-wise int8 kernel; torchao does the same)",
            },
        ),
        Method(
            "int8",
            "weight-only int8 on load: one scale per output row (symmetric, scale = max |w| / 127)",
            reads="float",
            layer=_int8_layer,
            kernels=(INT8_KERNEL,),
            bits=8,
            conversions={"float": "Int8Linear: int8 per output row, scale = max |w| / 127"},
        ),
        Method(
            "int4",
            "weight-only int4 on load: blocks of 32 with a scale and a minimum (gguf's Q4_1 quantizer)",
            reads="float",
            layer=_int4_layer,
            kernels=(INT4_KERNEL,),
            conversions={
                "float": "Int4Linear: Q4_1 blocks of 32 (d = (max - min) / 15, m = min) from gguf's "
                "quantizer, scale = d, zero = m + 8d"
            },
        ),
    )
}

GGUF_KINDS = ("Q4_0", "Q4_1", "Q8_0")  # the block types read as integers (blocks.py)


def kernel_available(kernel: str) -> tuple[bool, str]:
    """Can this torch run the kernel? Tried on a tiny input, so a build that lists the op but lacks it fails here."""
    try:
        if kernel == INT4_KERNEL:
            values = torch.zeros(16, 32, dtype=torch.int32)  # (N, K): the smallest shape the packer takes
            packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(values, 1)
            torch.ops.aten._weight_int4pack_mm_for_cpu(
                torch.ones(1, 32, dtype=torch.bfloat16), packed, 32, torch.ones(1, 16, 2, dtype=torch.bfloat16)
            )
        elif kernel == INT8_KERNEL:
            torch.ops.aten._weight_int8pack_mm(torch.ones(1, 32), torch.ones(16, 32, dtype=torch.int8), torch.ones(16))
        return True, ""
    except (AttributeError, RuntimeError, NotImplementedError) as error:
        return False, f"{type(error).__name__}: {str(error).splitlines()[0][:160]}"
