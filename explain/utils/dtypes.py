"""One dtype table: every spelling of a dtype explain accepts, what each means, and which ones explain runs.

    runnable_dtype("bf16") -> torch.bfloat16          (dtype= / torch_dtype= of explain.pipeline)
    runnable_dtype(torch.float8_e4m3fn)               -> UnsupportedError naming what runs
    dtype_name(torch.bfloat16) -> "bfloat16"          (the name events and files use)
    canonical_name("torch.float16") -> "float16"      (the device planner also knows "int8" and "4bit")

The planner (explain.device_plan) sizes models in every entry of DTYPES; the pipeline runs the entries that have
no quantised part (RUNNABLE). Quantised entries ("int8", "4bit") are bitsandbytes' sizes as transformers counts them.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from accelerate.utils import CustomDtype

from ..errors import UnsupportedError


class Dtype(NamedTuple):
    torch_dtype: torch.dtype  # every tensor that is not quantised, and the dtype the model computes in
    quantized: object | None  # the dtype of quantised Linear weights (torch.int8, accelerate's CustomDtype.INT4)
    label: str  # what a weight costs, for a reader


DTYPES = {
    "float32": Dtype(torch.float32, None, "4 bytes per weight"),
    "bfloat16": Dtype(torch.bfloat16, None, "2 bytes per weight"),
    "float16": Dtype(torch.float16, None, "2 bytes per weight"),
    "int8": Dtype(torch.bfloat16, torch.int8, "Linear weights 1 byte (bitsandbytes LLM.int8), the rest bfloat16"),
    "4bit": Dtype(torch.bfloat16, CustomDtype.INT4, "Linear weights 0.5 byte (bitsandbytes 4-bit), the rest bfloat16"),
}
ALIASES = {
    "fp32": "float32",
    "float": "float32",
    "bf16": "bfloat16",
    "fp16": "float16",
    "half": "float16",
    "8bit": "int8",
    "int4": "4bit",
    "nf4": "4bit",
    "fp4": "4bit",
    "load_in_8bit": "int8",
    "load_in_4bit": "4bit",
}
RUNNABLE = tuple(name for name, entry in DTYPES.items() if entry.quantized is None)  # what explain's models run
RUNNABLE_SPELLINGS = (
    '"auto", ' + ", ".join(f'"{name}"' for name in RUNNABLE) + ", or torch." + ", torch.".join(RUNNABLE)
)


def canonical_name(dtype) -> str:
    """torch.bfloat16, "torch.bfloat16", "bf16", "BF16" -> "bfloat16". Unknown spellings come back as they are
    (lowercased, without "torch."), for the caller to refuse with its own list."""
    return ALIASES.get(
        str(dtype).replace("torch.", "").strip().lower(), str(dtype).replace("torch.", "").strip().lower()
    )


def dtype_name(dtype: torch.dtype) -> str:
    """torch.bfloat16 -> "bfloat16": the spelling events, config.json and the console use."""
    return str(dtype).replace("torch.", "")


def runnable_dtype(dtype, checkpoint_dtype=None) -> torch.dtype:
    """dtype / torch_dtype as transformers takes them: a torch.dtype, a name, or "auto" / None (the checkpoint's
    dtype, float32 when it states none or one explain does not run). Anything explain cannot run is refused here,
    before any file is read, with the list of what runs."""
    if dtype is None or (isinstance(dtype, str) and dtype == "auto"):
        name = canonical_name(checkpoint_dtype) if isinstance(checkpoint_dtype, str) else None
        return DTYPES[name].torch_dtype if name in RUNNABLE else torch.float32
    if not isinstance(dtype, (str, torch.dtype)):
        raise UnsupportedError(f"dtype={dtype!r} is not a dtype; use {RUNNABLE_SPELLINGS}")
    name = canonical_name(dtype)
    if name in RUNNABLE:
        return DTYPES[name].torch_dtype
    if name in DTYPES:
        why = (
            f"dtype {dtype!r} is a quantised size the device planner counts (explain.plan_device_map(dtype="
            f"{name!r})), not a dtype explain's models run"
        )
    elif isinstance(dtype, torch.dtype):
        why = (
            f"dtype {dtype} is not one explain's models run (their matrix products and norms need a float dtype "
            "torch computes in)"
        )
    else:
        why = f"unknown dtype {dtype!r}"
    raise UnsupportedError(f"{why}; use {RUNNABLE_SPELLINGS}")
