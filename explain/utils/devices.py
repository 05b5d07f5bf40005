"""One parser for every way a device is spelt: device=, device_map values, max_memory keys, saved placement events.

    parse_device(0) == parse_device("0") == parse_device("cuda:0") == parse_device(torch.device("cuda", 0)) == 0
    parse_device("cpu") == "cpu";  parse_device(-1) == "cpu"   (transformers' pipeline: device=-1 is the CPU)
    device_text(0) == "cuda:0";    device_text("cpu") == "cpu"

parse_device gives accelerate's spelling (a GPU index, or "cpu" / "mps" / "disk"), device_text torch's. Whether the
device exists on this machine is placement's question (explain.stages.placement), not the parser's.
"""

from __future__ import annotations

import torch

from ..errors import ArgumentError

KNOWN = "cpu, cuda, cuda:N, N (a GPU index), mps, disk or a torch.device"
NAMED = ("cpu", "mps", "disk")


def parse_device(value, what: str = "device") -> int | str:
    """accelerate's spelling of a device: a GPU index (int), "cpu", "mps" or "disk"; anything else is refused with
    an error naming `what` (the argument it came from) and the spellings that work."""
    if isinstance(value, torch.device):
        if value.type == "cuda":
            return value.index or 0
        value = value.type
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ArgumentError(f"{what}={value!r} is not a device; use {KNOWN}")
    if isinstance(value, int):
        return "cpu" if value < 0 else value
    text = value.strip().lower()
    if text.isdigit():
        return int(text)
    if text == "cuda":
        return 0  # torch's current CUDA device, the first unless torch.cuda.set_device said otherwise
    if text.startswith("cuda:") and text[5:].isdigit():
        return int(text[5:])
    if text in NAMED or text == "mps:0":
        return text[:3] if text.startswith("mps") else text
    raise ArgumentError(f"{what} {value!r} is not a device torch knows ({KNOWN})")


def device_text(value) -> str:
    """torch's spelling: 0 -> "cuda:0", "cpu" -> "cpu" (any spelling parse_device reads)."""
    device = parse_device(value)
    return f"cuda:{device}" if isinstance(device, int) else device
