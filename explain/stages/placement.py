"""Stage 5, placement: which device each module's weights live on, decided by accelerate as transformers does.

device="cpu" / "cuda:0" / 0         everything on one device
device_map="auto" (or "balanced", "sequential", "balanced_low_0")
                                    accelerate.infer_auto_device_map over the devices accelerate finds, with
                                    max_memory from accelerate.utils.get_max_memory (or the caller's)
device_map={"model.layers.0": 0, ...}  the caller's own map

When the map spans devices, accelerate's dispatch_model attaches hooks that move activations between them; a module
mapped to "cpu" beside a GPU is *offloaded*: its weights stay in CPU RAM (its parameters become meta tensors) and
are copied to the GPU for every forward, so it runs on the GPU. The event says both: where each module's weights
are stored (device_map, bytes_per_device, layers) and where it runs (execution_devices, offloaded, main_device).
"""

from __future__ import annotations

import time
from typing import Any

import torch
from accelerate import dispatch_model
from accelerate.utils import compute_module_sizes, get_max_memory, infer_auto_device_map, set_module_tensor_to_device

from ..device_plan.memory import headroom, order
from ..errors import ArgumentError, ExplainError
from ..quantization.memory import release_freed_memory
from ..trace import Trace
from ..utils.devices import device_text, parse_device
from ..utils.dtypes import dtype_name
from .loading import Loading

AUTO_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")


def _available(device: str) -> tuple[bool, str]:
    kind = device.split(":")[0]
    if kind == "cpu":
        return True, ""
    if kind == "cuda":
        if not torch.cuda.is_available():
            return False, (
                f"torch.cuda.is_available() is False (torch {torch.__version__}"
                f"{', a CPU-only build' if torch.version.cuda is None else ''})"
            )
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            return False, f"there are {torch.cuda.device_count()} CUDA devices"
        return True, ""
    if kind == "mps":
        ok = torch.backends.mps.is_available()
        return ok, "" if ok else "torch.backends.mps.is_available() is False"
    return False, "explain runs models fully loaded and does not offload weights to disk"  # "disk"


def normalise_device(device, what: str = "device") -> str:
    """torch's spelling of a device this machine has ("cpu", "cuda:0", "mps"); any spelling explain.utils.devices
    reads."""
    try:
        device = device_text(parse_device(device, what))
    except ArgumentError as error:
        raise ArgumentError(f'{error}; use device="cpu", or device_map="auto" to take whatever devices exist') from None
    ok, why = _available(device)
    if not ok:
        raise ExplainError(
            f'device {device!r} was asked for but {why} on this machine; use device="cpu", or '
            'device_map="auto" to take whatever devices exist'
        )
    return device


def plan(model: torch.nn.Module, dtype: torch.dtype, device=None, device_map=None, max_memory=None) -> dict:
    """Decide the device map without moving anything; returns the facts the placement event shows."""
    if device is not None and device_map is not None:
        raise ExplainError(
            "pass either device= or device_map=, not both (transformers warns that they conflict and lets device= win)"
        )
    no_split = sorted(
        {type(m).__name__ for m in model.modules() if type(m).__name__.endswith(("DecoderLayer", "Block"))}
    )
    facts: dict[str, Any] = {
        "asked": {
            "device": str(device) if device is not None else None,
            "device_map": device_map if not isinstance(device_map, dict) else "dict",
        },
        "no_split_module_classes": no_split,
        "dtype": dtype_name(dtype),
    }
    if isinstance(device_map, str) and device_map in AUTO_STRATEGIES:
        memory = order(get_max_memory(dict(max_memory) if max_memory is not None else None))
        gpus = [k for k in memory if k not in ("cpu", "disk", "mps")]
        # the budget from_pretrained hands accelerate: headroom and GPU balancing as transformers does them
        sizes = dict(compute_module_sizes(model, dtype=dtype))
        budget, steps = headroom(memory, model, sizes, no_split, max_memory is not None, device_map, quantized=False)
        found = infer_auto_device_map(model, max_memory=dict(budget), no_split_module_classes=no_split, dtype=dtype)
        facts.update(strategy=device_map, max_memory=memory, budget=budget, headroom=steps, device_map=dict(found))
        if not gpus and max_memory is not None:
            facts["reason"] = (
                f"the max_memory given names no accelerator ({', '.join(map(str, memory))}), so "
                "every module goes to cpu"
            )
        elif not gpus:
            facts["reason"] = (
                "no accelerator is visible (torch.cuda.is_available() is False"
                + (", no MPS" if not torch.backends.mps.is_available() else "")
                + "), so accelerate's get_max_memory() lists only the CPU "
                f"({memory.get('cpu', 0) / 2**30:.1f} GiB free) and every module goes to cpu"
            )
        else:
            facts["reason"] = (
                f"accelerate filled the devices in order ({', '.join(map(str, memory))}) within "
                "max_memory, keeping each decoder layer whole" + "".join(f"; {s}" for s in steps)
            )
    elif isinstance(device_map, dict):
        facts.update(strategy="given", device_map=dict(device_map), reason="device_map given by the caller")
    else:
        target = normalise_device(device_map if device_map is not None else (device if device is not None else "cpu"))
        facts.update(
            strategy="single device",
            device_map={"": target},
            reason="no device given: transformers' default is the CPU"
            if device is None and device_map is None
            else f"everything on {target}, as asked",
        )
    devices: set[str] = set()
    for module, where in facts["device_map"].items():
        where = normalise_device(where) if where != "disk" else where
        if where == "disk":
            raise ExplainError(
                f"the device map puts {module or 'the model'} on disk: the model does not fit the "
                "memory given; explain runs fully loaded models only. Use a smaller dtype "
                "(torch_dtype=torch.bfloat16) or a smaller model, or raise max_memory"
            )
        devices.add(where)
    facts["devices"] = sorted(devices)
    return facts


def _device_of(name: str, device_map: dict) -> str:
    """The device of the longest device-map prefix that owns `name`."""
    best = None
    for module in device_map:
        if module == "" or name == module or name.startswith(module + "."):
            if best is None or len(module) > len(best):
                best = module
    if best is None:
        raise ExplainError(f'the device map does not place {name!r}; add its module (or "") to device_map')
    return device_text(device_map[best])


def place(
    model: torch.nn.Module,
    state: dict,
    dtype: torch.dtype,
    trace: Trace,
    device=None,
    device_map=None,
    max_memory=None,
    tied: dict | None = None,
) -> torch.nn.Module:
    """Run the placement stage: put each checkpoint tensor on its device, tie weights, emit `placement/place`."""
    start, t0 = time.time(), time.perf_counter()
    facts = plan(model, dtype, device, device_map, max_memory)
    device_map = facts["device_map"]
    for name, tensor in state.items():  # dtype given, or accelerate casts to the skeleton's float32
        set_module_tensor_to_device(model, name, _device_of(name, device_map), value=tensor, dtype=tensor.dtype)
    for target, source in (tied or {}).items():
        _tie(model, target, source)
    for name, buffer in list(model.named_buffers()):  # computed buffers (rotary frequencies) follow their module
        set_module_tensor_to_device(model, name, _device_of(name, device_map), value=buffer)
    per_device: dict[str, int] = {}
    seen: set[int] = set()  # where the weights are stored, counted before dispatch makes offloaded ones meta
    for parameter in _stored_tensors(model):  # parameters, and the buffers a quantized layer keeps its weight in
        if parameter.data_ptr() in seen:
            continue
        seen.add(parameter.data_ptr())
        key = str(parameter.device)
        per_device[key] = per_device.get(key, 0) + parameter.numel() * parameter.element_size()
    facts.update(
        bytes_per_device=per_device,
        tied=dict(tied or {}),
        modules={
            name: str(next(m.parameters()).device)
            for name, m in model.named_children()
            if any(True for _ in m.parameters())
        },
    )
    facts["layers"] = _layer_devices(model)
    if len(facts["devices"]) > 1:
        dispatch_model(model, device_map=device_map)  # hooks that move activations (and offloaded weights)
    facts.update(execution(model, device_map))
    if facts["offloaded"]:
        facts["reason"] += (
            f"; {len(facts['offloaded'])} module(s) mapped to cpu keep their weights in CPU RAM and "
            f"run on {facts['main_device']}: accelerate copies their weights there for every forward"
        )
    trace.emit("placement", "place", facts, start=start, duration=time.perf_counter() - t0)
    model.eval()
    return model


def _stored_tensors(model: torch.nn.Module) -> list[torch.Tensor]:
    """Parameters and persistent buffers: what the checkpoint holds (not computed buffers like rotary frequencies)."""
    tensors: list[torch.Tensor] = [parameter for _, parameter in model.named_parameters()]
    for module in model.modules():
        tensors += [
            buffer
            for name, buffer in module.named_buffers(recurse=False)
            if buffer is not None and name not in module._non_persistent_buffers_set
        ]
    return tensors


def execution(model: torch.nn.Module, device_map: dict) -> dict:
    """Where each module of the device map runs, as accelerate's hooks will run it: {"main_device": where inputs go,
    "execution_devices": {module: device}, "offloaded": [modules whose weights are copied in for every forward]}.
    Without hooks (one device) every module runs where its weights are."""
    runs, offloaded = {}, []
    for name, where in device_map.items():
        module = model.get_submodule(name) if name else model
        hooked = _hook_device(module)
        runs[name] = hooked if hooked is not None else _label(where)
        if any(p.device.type == "meta" for p in module.parameters()):
            offloaded.append(name)
    return {"main_device": str(input_device(model)), "execution_devices": runs, "offloaded": offloaded}


def _label(device) -> str:
    return f"cuda:{device}" if isinstance(device, int) else str(device)


def _hook_device(module: torch.nn.Module) -> str | None:
    """The execution device of accelerate's AlignDevicesHook on `module` (None when it has none)."""
    hook = getattr(module, "_hf_hook", None)
    for one in getattr(hook, "hooks", None) or ([hook] if hook is not None else []):  # SequentialHook holds several
        device = getattr(one, "execution_device", None)
        if device is not None:
            return _label(device if not isinstance(device, torch.device) else str(device))
    return None


def input_device(model: torch.nn.Module) -> torch.device:
    """Where a forward's inputs go: the execution device of accelerate's top hook when the model was dispatched
    (its first parameter may be an offloaded meta tensor), else the device of its first parameter not on meta (of
    its first parameter, for a model wholly on meta)."""
    hooked = _hook_device(model)
    if hooked is not None:
        return torch.device(hooked)
    devices = [p.device for p in model.parameters()]
    return next((d for d in devices if d.type != "meta"), devices[0] if devices else torch.device("cpu"))


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on `device` (CUDA returns from a call before its kernels ran), so that a clock
    read after it measures the work itself. Nothing to wait for on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _layer_devices(model: torch.nn.Module) -> dict:
    """Top-level modules and each decoder layer -> its device, the view a reader wants."""
    out = {}
    for name, module in model.named_modules():
        depth = name.count(".")
        params = list(module.parameters(recurse=False))
        if params and depth <= 3:
            out[name] = str(params[0].device)
        elif name.split(".")[-1].isdigit() and depth <= 2:
            first = next(module.parameters(), None)
            if first is not None:
                out[name] = str(first.device)
    return out


def _tie(model: torch.nn.Module, target: str, source: str) -> None:
    target_module, _, target_name = target.rpartition(".")
    source_module, _, source_name = source.rpartition(".")
    setattr(model.get_submodule(target_module), target_name, getattr(model.get_submodule(source_module), source_name))


def run(loading: Loading, trace: Trace) -> None:
    """The placement stage: the model on its device or devices (placement/place); the loading stages' temporaries
    (parsed metadata, converted tensors) freed, not kept; a quantized load's facts (weights/quantize)."""
    assert loading.state is not None, "the weights stage runs before the placement stage"
    loading.module = place(
        loading.module,
        loading.state,
        loading.torch_dtype,
        trace,
        device=loading.device,
        device_map=loading.device_map,
        max_memory=loading.max_memory,
        tied=loading.tied,
    )
    loading.state = None
    release_freed_memory()
    if loading.quantizer is not None:
        load = trace.last("weights", "load")
        assert load is not None, "the weights stage emitted weights/load"
        parameters = load.data["parameters"]
        loading.quantized = loading.quantizer.emit(loading.module, trace, parameters)
