"""Memory budgets: hardware profiles, max_memory parsing, dtypes, and the headroom transformers keeps.

The budget given to accelerate.infer_auto_device_map is not the raw memory of the machine. When you call
`from_pretrained(device_map="auto")` without max_memory, transformers (integrations/accelerate.py) first
  1. keeps 10% of the CPU RAM free (get_max_memory: cpu *= 0.90),
  2. for "auto" / "balanced" / "balanced_low_0", balances the GPUs (get_balanced_memory): each GPU but the last
     gets (model size / GPUs + 1.25 x the biggest layer or leaf) so that the layers spread evenly, and a lone GPU
     keeps 10% free for activations,
  3. with bitsandbytes int8 / 4-bit, keeps 10% of every device free (the quantizer's adjust_max_memory).
`headroom()` mirrors these steps (transformers is never imported here); tests compare it with transformers itself.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from functools import lru_cache

import torch

from ..errors import ExplainError
from ..utils.devices import device_text, parse_device
from ..utils.dtypes import DTYPES, canonical_name

HARDWARE_FILE = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "hardware.json")
NON_ACCELERATORS = ("cpu", "disk")
UNITS = {
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KiB": 2**10,
    "MiB": 2**20,
    "GiB": 2**30,
    "TiB": 2**40,
}  # as accelerate's convert_file_size_to_int
SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)\s*$", re.IGNORECASE)
MAX_MEMORY_FORMAT = (
    'max_memory maps a device to a size: keys 0, 1, ... (GPU index), "mps", "cpu" or "disk"; '
    'values an int (bytes) or a string with a unit, "8GiB", "500MB", "1.5TB" '
    "(KiB/MiB/GiB/TiB are powers of 1024, KB/MB/GB/TB powers of 1000). "
    'Example: {0: "8GiB", "cpu": "30GiB"}, or on the command line 0=8GiB,cpu=30GiB'
)


class HardwareError(ExplainError):
    """An unknown hardware profile or a malformed max_memory."""


# -- dtypes: explain.utils.dtypes' one table (name -> torch dtype of the tensors that are not quantised, dtype of
# quantised Linear weights or None, label) ----------------------------------------------------------------------------
SMALLER = ("float32", "bfloat16", "int8", "4bit")  # the order dtype suggestions walk down


def dtype_name(dtype) -> str:
    """ "bf16", torch.bfloat16, "torch.bfloat16" -> "bfloat16"; an unknown name gets the accepted list."""
    name = canonical_name(dtype)
    if name not in DTYPES:
        raise HardwareError(
            f"dtype {dtype!r} is not one explain plans for; use one of "
            f"{', '.join(DTYPES)} (or fp32, bf16, fp16, 8bit, nf4)"
        )
    return name


# -- hardware profiles ---------------------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def profiles() -> dict:
    with open(HARDWARE_FILE, encoding="utf-8") as f:
        table = json.load(f)
    return {
        name: {**entry, "memory": parse_max_memory(entry["memory"])}
        for name, entry in table.items()
        if not name.startswith("_")
    }


def profile(name: str) -> dict:
    table = profiles()
    if name not in table:
        close = difflib.get_close_matches(str(name), list(table), n=1, cutoff=0.4)
        listing = "; ".join(f"{key} ({entry['description']})" for key, entry in table.items())
        raise HardwareError(
            f"unknown hardware profile {name!r}"
            + (f" (did you mean {close[0]!r}?)" if close else "")
            + f'. Profiles: {listing}. Or pass max_memory={{0: "15GiB", "cpu": "12GiB"}}, '
            "or neither for this machine"
        )
    return table[name]


# -- max_memory ------------------------------------------------------------------------------------------------------
def _device_key(key):
    if isinstance(key, int) and not isinstance(key, bool) and key < 0:
        raise HardwareError(f"max_memory key {key} is negative; GPU indices start at 0. {MAX_MEMORY_FORMAT}")
    try:
        return parse_device(key, "max_memory key")
    except ExplainError:
        raise HardwareError(f"max_memory key {key!r} is not a device. {MAX_MEMORY_FORMAT}") from None


def parse_size(value, where: str = "max_memory") -> int:
    """An int (bytes) or "8GiB" / "500MB" -> bytes, the units read as accelerate reads them."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise HardwareError(f"{where}: {value!r} is not a size. {MAX_MEMORY_FORMAT}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise HardwareError(f"{where}: {value} is negative. {MAX_MEMORY_FORMAT}")
        return int(value)
    match = SIZE.match(value)
    if not match:
        raise HardwareError(f"{where}: {value!r} is not a size explain can read. {MAX_MEMORY_FORMAT}")
    number, unit = match.groups()
    if unit.endswith("b") and len(unit) > 1 and not unit.lower().endswith("ib"):  # accelerate reads "Gb" / "mb" as bits
        raise HardwareError(
            f"{where}: {value!r} ends in a lowercase b, which accelerate reads as bits "
            f"({value} = 1/8 of {number}{unit[:-1].upper()}B); write {number}{unit[:-1].upper()}B "
            f"or {number}{unit[0].upper()}iB"
        )
    scale = UNITS[unit.upper().replace("IB", "iB")]  # "gib" -> "GiB", "mb" never gets here
    return int(float(number) * scale)


def parse_max_memory(max_memory) -> dict:
    """{0: "8GiB", "cpu": "30GiB"} or "0=8GiB,cpu=30GiB" -> {0: bytes, "cpu": bytes} in accelerate's device order."""
    if isinstance(max_memory, str):
        pairs = [p for p in max_memory.split(",") if p.strip()]
        if not pairs or any("=" not in p for p in pairs):
            raise HardwareError(f"max_memory {max_memory!r} is not DEVICE=SIZE pairs. {MAX_MEMORY_FORMAT}")
        max_memory = dict(p.split("=", 1) for p in pairs)
    if not isinstance(max_memory, dict) or not max_memory:
        raise HardwareError(f"max_memory {max_memory!r} is not a dict of devices. {MAX_MEMORY_FORMAT}")
    parsed = {}
    for key, value in max_memory.items():
        device = _device_key(key)
        if device in parsed:
            raise HardwareError(f"max_memory names device {device!r} twice ({key!r}). {MAX_MEMORY_FORMAT}")
        parsed[device] = parse_size(value, f"max_memory[{key!r}]")
    return order(parsed)


def order(memory: dict) -> dict:
    """accelerate's device order (get_max_memory): GPUs by index, then mps, cpu, disk."""
    gpus = sorted(k for k in memory if isinstance(k, int))
    return {k: memory[k] for k in gpus + [k for k in ("mps", "cpu", "disk") if k in memory]}


def accelerators(memory: dict) -> list:
    return [k for k in memory if k not in NON_ACCELERATORS]


# -- transformers' headroom (mirrors transformers/integrations/accelerate.py, get_max_memory & get_balanced_memory) --
def leaf_sizes(model: torch.nn.Module, sizes: dict) -> dict:
    """Bytes held directly by each module (its own parameters and buffers): transformers' "leaves"."""
    leaves: dict[str, int] = {}
    for name, _ in list(model.named_parameters()) + list(model.named_buffers()):
        if "." in name:
            parent = name.rsplit(".", 1)[0]
            leaves[parent] = leaves.get(parent, 0) + sizes.get(name, 0)
    return leaves


def balanced(
    memory: dict, model: torch.nn.Module, sizes: dict, no_split: list, user_set: bool, low_zero: bool = False
) -> dict:
    """transformers' get_balanced_memory, step for step (after get_max_memory has run)."""
    memory = dict(memory)
    devices = [d for d in memory if d not in NON_ACCELERATORS and memory[d] > 0]
    if not devices:
        return memory
    if len(devices) == 1:
        low_zero = False  # one GPU: nothing to balance, but keep 10% free if the user set no max_memory
        if not user_set:
            for key in memory:
                if isinstance(key, int):
                    memory[key] *= 0.9
                    break
    per_gpu = sizes[""] // (len(devices) - 1 if low_zero else len(devices))
    layers = [sizes[n] for n, m in model.named_modules() if type(m).__name__ in no_split]
    biggest_leaf = max(leaf_sizes(model, sizes).values(), default=0)
    per_gpu += int(1.25 * max(max(layers, default=0), biggest_leaf))
    gpus = sorted(d for d, size in memory.items() if isinstance(d, int) and size > 0)
    for index in gpus[:-1]:  # the last GPU keeps its whole budget, in case the buffer was not enough
        memory[index] = min(memory[0] if low_zero and index == 0 else per_gpu, memory[index])
    if low_zero:
        memory[0] = min(max(0, sizes[""] - sum(memory[i] for i in range(1, len(devices)))), memory[0])
    return memory


def headroom(
    memory: dict, model: torch.nn.Module, sizes: dict, no_split: list, user_set: bool, strategy: str, quantized: bool
) -> tuple[dict, list[str]]:
    """The max_memory transformers hands to infer_auto_device_map, and a sentence per step that changed it."""
    steps, memory = [], dict(memory)
    if not user_set and "cpu" in memory:
        memory["cpu"] *= 0.90
        steps.append("transformers keeps 10% of the CPU RAM free when no max_memory is given (get_max_memory)")
    if strategy != "sequential":
        before = dict(memory)
        memory = balanced(memory, model, sizes, no_split, user_set, low_zero=strategy == "balanced_low_0")
        changed = [k for k in memory if memory[k] != before[k]]
        if changed and len(accelerators(memory)) == 1:
            steps.append(
                f"with one GPU, transformers keeps 10% of GPU {changed[0]} free for activations (get_balanced_memory)"
            )
        elif changed:
            many = len(changed) > 1
            steps.append(
                f"device_map={strategy!r} balances the GPUs: GPU{'s' if many else ''} "
                f"{', '.join(map(str, changed))} {'get' if many else 'gets'} at most model size / GPUs + "
                "1.25 x the biggest layer or leaf module (get_balanced_memory)"
            )
    if quantized:
        memory = {k: v * 0.90 for k, v in memory.items()}
        steps.append("bitsandbytes keeps 10% of every device free for quantisation buffers (adjust_max_memory)")
    return memory, steps


def device_label(device) -> str:
    return device_text(device)
