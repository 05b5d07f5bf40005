"""Quantized weights, run for real: the matrix products of a quantized model take integer weights.

    explain.pipeline("text-generation", quantization="gguf")                  # the file's Q4_1 / Q8_0 as stored,
                                                                             # bfloat16 activations (fast)
    explain.pipeline("text-generation", quantization="gguf", dtype=torch.float32)   # the exact form
    explain.pipeline("text-generation", model=folder, quantization="int8")   # or "int4": weight-only, on load

`dtype` names the activations' dtype; with a quantization it defaults to bfloat16, the dtype torch's int4 CPU
kernel is fast in. blocks.py reads GGUF blocks as integers, linear.py holds the layers and their kernels,
methods.py the registry of methods, quantizer.py one load's bookkeeping and its weights/quantize event.
"""

from __future__ import annotations

import torch

from ..errors import ExplainError, UnsupportedError
from ..utils.dtypes import dtype_name
from .blocks import Blocks, quantize_q4_1, unpack
from .linear import BlockInt8Linear, Int4Linear, Int8Linear, QuantizedLinear
from .methods import METHODS, Method, kernel_available
from .quantizer import FORMS, Quantizer

DEFAULT_DTYPE = torch.bfloat16


def _cpu_only(method: str, device, device_map) -> None:
    where = []
    if device is not None and str(device) not in ("cpu", "-1") and device != -1:
        where.append(f"device={device!r}")
    if isinstance(device_map, dict):
        where += [f"device_map puts {k or 'the model'} on {v!r}" for k, v in device_map.items() if str(v) != "cpu"]
    elif device_map is not None and str(device_map) != "cpu":
        if (
            device_map not in ("auto", "balanced", "balanced_low_0", "sequential")
            or torch.cuda.is_available()
            or torch.backends.mps.is_available()
        ):
            where.append(f"device_map={device_map!r}")
    if where:
        raise UnsupportedError(
            f"quantization={method!r} runs on the CPU only (torch's int4/int8 weight-only CPU "
            f'kernels), but {", ".join(where[:2])}; load with device="cpu", or drop '
            "quantization= to run a float dtype on that device"
        )


def check(quantization, device=None, device_map=None) -> Method | None:
    """The method pipeline(quantization=...) names, or None; checked before anything is loaded: the method exists,
    the device is the CPU and this torch runs the method's kernels."""
    if quantization is None:
        return None
    if not isinstance(quantization, str) or quantization not in METHODS:
        raise ExplainError(
            f"unknown quantization {quantization!r}; explain runs "
            + "; ".join(f"{name!r} ({m.summary})" for name, m in METHODS.items())
        )
    method = METHODS[quantization]
    _cpu_only(quantization, device, device_map)
    for kernel in method.kernels:
        ok, why = kernel_available(kernel)
        if not ok:
            can = [name for name, m in METHODS.items() if all(kernel_available(k)[0] for k in m.kernels)]
            raise UnsupportedError(
                f"quantization={quantization!r} needs {kernel}, which torch {torch.__version__} "
                f"cannot run here ({why}); "
                + (
                    f"this machine runs quantization={' or '.join(map(repr, can))}"
                    if can
                    else "no quantization runs here: load a float dtype (dtype=torch.bfloat16)"
                )
            )
    return method


def make_quantizer(method: Method, dtype_given: bool, dtype: torch.dtype, gguf_reader=None) -> Quantizer:
    """One load's Quantizer: activations in `dtype` when the caller gave one, else bfloat16."""
    if method.reads == "gguf" and gguf_reader is None:
        raise ExplainError(
            f'quantization="{method.name}" keeps a GGUF file\'s own blocks, and this model is not '
            "loaded from a GGUF file; pass gguf_file=..., or quantize on load with "
            'quantization="int8" or "int4"'
        )
    dtype = dtype if dtype_given else DEFAULT_DTYPE
    if dtype not in FORMS:
        raise ExplainError(f"quantized layers take float32, bfloat16 or float16 activations, not {dtype_name(dtype)}")
    return Quantizer(method, dtype, gguf_reader if method.reads == "gguf" else None)


__all__ = [
    "METHODS",
    "Method",
    "Quantizer",
    "FORMS",
    "Blocks",
    "unpack",
    "quantize_q4_1",
    "Int4Linear",
    "Int8Linear",
    "BlockInt8Linear",
    "QuantizedLinear",
    "check",
    "make_quantizer",
    "DEFAULT_DTYPE",
]
