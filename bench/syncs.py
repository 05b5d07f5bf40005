"""Count the host-device synchronisations of explain's generation step, on any machine (the CPU included).

On a GPU, the host waits for the device whenever Python reads a tensor's values: `.item()`, `.tolist()`,
`int(t)`, `float(t)`, `bool(t)`, `.cpu()` / `.to("cpu")` / `.numpy()`, and any operator whose result's size depends
on the values (`t[mask]`, `nonzero`, `masked_select`). Each one costs a round trip (tens of microseconds) and stops
the host from queueing the next kernels while the GPU works. Tensors made from Python data with device= are
copies the other way (host to device).

`HostReads` follows which tensors live "on the device": the model's parameters and buffers, tensors made with
device=, and everything computed from them; a read of one of those counts as a sync, and its result (a CPU copy,
a Python number) does not count again. That is what would happen on a GPU, so the counts taken on this CPU are
the GPU's.
"""

from __future__ import annotations

from collections import Counter

import torch
from torch.overrides import TorchFunctionMode

READS = {
    torch.Tensor.item: "item()",
    torch.Tensor.tolist: "tolist()",
    torch.Tensor.__int__: "int(tensor)",
    torch.Tensor.__float__: "float(tensor)",
    torch.Tensor.__bool__: "bool(tensor)",
    torch.Tensor.__index__: "index(tensor)",
    torch.Tensor.numpy: "numpy()",
    torch.Tensor.cpu: "cpu()",
}
DATA_DEPENDENT = {
    torch.nonzero: "nonzero",
    torch.Tensor.nonzero: "nonzero",
    torch.masked_select: "masked_select",
    torch.Tensor.masked_select: "masked_select",
    torch.unique: "unique",
}
FACTORIES = {torch.tensor, torch.as_tensor}


def _tensors(value):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)


class HostReads(TorchFunctionMode):
    """A torch function mode; `roots` are the tensors that start on the device (a model's parameters, buffers).
    `device` is the device they are on: `.to(device)` moves nothing, `.to("cpu")` from elsewhere is a read (on
    the CPU itself only `.cpu()`, `.tolist()` and the others count, since both spellings name the same device)."""

    def __init__(self, roots=(), device="cpu"):
        super().__init__()
        self.device = torch.device(device)
        self.resident: dict[int, torch.Tensor] = {}  # id -> tensor (kept alive, so an id is never reused)
        for tensor in roots:
            self.mark(tensor)
        self.syncs: Counter = Counter()
        self.host_to_device: Counter = Counter()

    def mark(self, tensor: torch.Tensor) -> None:
        self.resident[id(tensor)] = tensor

    def on_device(self, value) -> bool:
        return any(id(t) in self.resident for t in _tensors(value))

    @property
    def total(self) -> int:
        return sum(self.syncs.values())

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func in READS or (func is torch.Tensor.to and _to_cpu(args, kwargs) and self.device.type != "cpu"):
            if self.on_device(args[:1]):
                self.syncs[READS.get(func, "to(cpu)")] += 1
                if out is args[0]:  # on the CPU, .cpu() returns the tensor itself; on a GPU, a host copy
                    out = out.clone()
            return out  # a host copy or a Python value
        if func in FACTORIES:
            if kwargs.get("device") is not None and torch.device(kwargs["device"]).type != "meta":
                if not isinstance(args[0] if args else None, torch.Tensor):
                    self.host_to_device[getattr(func, "__name__", str(func))] += 1
                for tensor in _tensors(out):
                    self.mark(tensor)
            return out
        device_inputs = self.on_device(args) or self.on_device(kwargs)
        if device_inputs and (func in DATA_DEPENDENT or (func is torch.Tensor.__getitem__ and _boolean_index(args))):
            self.syncs[DATA_DEPENDENT.get(func, "tensor[mask]")] += 1
        if device_inputs or kwargs.get("device") is not None:
            for tensor in _tensors(out):
                self.mark(tensor)
        return out


def _to_cpu(args, kwargs) -> bool:
    target = kwargs.get("device", args[1] if len(args) > 1 else None)
    if isinstance(target, (str, torch.device)):
        return torch.device(target).type == "cpu"
    return False


def _boolean_index(args) -> bool:
    index = args[1] if len(args) > 1 else None
    parts = index if isinstance(index, tuple) else (index,)
    return any(isinstance(p, torch.Tensor) and p.dtype == torch.bool for p in parts)


def count_step_syncs(pipe, prompt: str, steps: int = 4, **generate_kwargs) -> dict:
    """Syncs of each of `steps` generation steps of explain's loop (the prefill step first), with their kinds."""
    generation = pipe.start(prompt, max_new_tokens=steps, eos_token_id=None, **generate_kwargs)
    roots = list(pipe.model.parameters()) + list(pipe.model.buffers()) + [generation.input_ids]
    per_step = []
    for _ in range(steps):
        with HostReads(roots, generation.device) as mode:
            generation.step()
        per_step.append({"syncs": mode.total, "kinds": dict(mode.syncs), "host_to_device": dict(mode.host_to_device)})
        roots = roots[:-1] + [generation.input_ids]
    decode = per_step[1:] or per_step
    return {
        "steps": per_step,
        "processors": [p.name for p in generation.processors],
        "syncs_per_decode_step": max(s["syncs"] for s in decode),
        "host_to_device_per_decode_step": max(sum(s["host_to_device"].values()) for s in decode),
    }
