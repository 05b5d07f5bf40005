"""The pieces a plan is made of, read from a module and accelerate's device map: which classes must stay whole,
which weights are quantised, each top-level unit's device and bytes, the KV cache per device, and the verdict.
plan.py (a planned map) and actual.py (the map a pipeline really got) both build their Plan from these."""

from __future__ import annotations

import logging
from contextlib import contextmanager

import torch

from ..models import common_config
from ..utils.units import size_text
from .memory import DTYPES, NON_ACCELERATORS, device_label

DEFAULT_CONTEXT = 4096
QUANTISED_CLASSES = ("Linear", "Conv1D")  # what bitsandbytes replaces (GPT-2's projections are Conv1D)


# -- pieces ----------------------------------------------------------------------------------------------------------
@contextmanager
def quiet_accelerate():
    """accelerate warns "Device 0 is not available" when planning for hardware this machine lacks: that is the point."""
    logger = logging.getLogger("accelerate.utils.modeling")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def no_split_classes(module: torch.nn.Module) -> list:
    """The decoder-layer class accelerate must keep whole (transformers' _no_split_modules)."""
    declared = getattr(module, "_no_split_modules", None)
    if declared:
        return sorted(set(declared))
    return sorted({type(m).__name__ for m in module.modules() if type(m).__name__.endswith(("DecoderLayer", "Block"))})


def quantised_weights(module: torch.nn.Module, quantised_dtype) -> dict:
    """special_dtypes for int8 / 4-bit: the weight of every Linear (and GPT-2 Conv1D) becomes `quantised_dtype`,
    except the modules transformers keeps in 16 bit (get_keys_to_not_convert: the LM head, tied weights, the module
    of the last parameter). Biases, embeddings and norms stay in the compute dtype."""
    seen: dict[int, str] = {}
    tied: set[str] = set()
    for name, parameter in module.named_parameters(remove_duplicate=False):
        owner = name.rpartition(".")[0]
        if id(parameter) in seen:
            tied.update({owner, seen[id(parameter)]})
        seen.setdefault(id(parameter), owner)
    names = [n for n, _ in module.named_parameters()]
    keep = tied | {"lm_head"} | ({names[-1].rpartition(".")[0]} if names else set())
    return {
        f"{name}.weight": quantised_dtype
        for name, m in module.named_modules()
        if type(m).__name__ in QUANTISED_CLASSES and name not in keep and getattr(m, "weight", None) is not None
    }


def owner(name: str, device_map: dict):
    """The device_map entry that places `name`: the longest key that is `name` or a prefix of it."""
    best = None
    for key in device_map:
        if key == "" or name == key or name.startswith(key + "."):
            if best is None or len(key) > len(best):
                best = key
    return best


def units(module: torch.nn.Module, device_map: dict, sizes: dict, no_split: list) -> list:
    """The model cut where accelerate may cut it: each decoder layer whole, the other modules down to their leaves."""
    rows: list[dict] = []
    seen: dict[int, str] = {}

    def add(name, tensors, layer):
        parameters, tied_to = 0, None
        for _, tensor in tensors:
            if id(tensor) in seen and isinstance(tensor, torch.nn.Parameter):
                tied_to = tied_to or seen[id(tensor)]
                continue
            seen[id(tensor)] = name
            parameters += tensor.numel() if isinstance(tensor, torch.nn.Parameter) else 0
        key = owner(name, device_map)  # the entry that places it, and any entries inside it (a split module)
        devices = sorted(
            {device_map[k] for k in device_map if k.startswith(name + ".")}
            | ({device_map[key]} if key is not None else set()),
            key=str,
        )
        where = devices[0] if len(devices) == 1 else "split:" + ",".join(map(str, devices))
        rows.append(
            {
                "name": name,
                "device": where,
                "bytes": int(sizes.get(name, 0)),
                "parameters": parameters,
                "layer": layer,
                "tied_to": tied_to,
            }
        )

    def walk(prefix, parent):
        for name, tensor in list(parent.named_parameters(recurse=False)) + list(parent.named_buffers(recurse=False)):
            add(prefix + name, [(name, tensor)], False)
        for name, child in parent.named_children():
            full = prefix + name
            layer = type(child).__name__ in no_split
            if layer or not any(True for _ in child.children()):
                tensors = list(child.named_parameters(remove_duplicate=False)) + list(child.named_buffers())
                if tensors:
                    add(full, tensors, layer)
            else:
                walk(full + ".", child)

    walk("", module)
    return rows


def attention_shape(config: dict) -> dict | None:
    common = common_config(config)
    layers, heads, hidden = common["num_hidden_layers"], common["num_attention_heads"], common["hidden_size"]
    if not (layers and heads and hidden):
        return None
    kv_heads = config.get("num_key_value_heads") or heads
    head_dim = config.get("head_dim") or hidden // heads
    window = config.get("sliding_window")
    if config.get("layer_types"):
        sliding = [kind == "sliding_attention" for kind in config["layer_types"]]
    else:  # Mistral slides on every layer; Qwen2 only with use_sliding_window (off in the released models)
        slides = window and (config.get("model_type") == "mistral" or config.get("use_sliding_window"))
        sliding = [bool(slides)] * layers
    return {
        "layers": layers,
        "kv_heads": kv_heads,
        "head_dim": head_dim,
        "sliding": sliding,
        "window": window,
        "max_positions": common["max_position_embeddings"],
    }


def kv_cache(config: dict, units_: list, dtype: str, context: int | None, batch: int) -> dict | None:
    """2 (K and V) x kv_heads x head_dim x bytes x tokens x batch per layer, on the device that runs the layer.
    A layer offloaded to cpu or disk runs on the main device (accelerate's hooks bring its weights there), so its
    cache lives there too."""
    shape = attention_shape(config)
    if shape is None:
        return None
    limit = shape["max_positions"]
    tokens = context if context is not None else min(DEFAULT_CONTEXT, limit or DEFAULT_CONTEXT)
    element = torch.finfo(DTYPES[dtype][0]).bits // 8  # int8 / 4-bit models compute, and cache, in bfloat16
    per_token = 2 * shape["kv_heads"] * shape["head_dim"] * element  # one layer, one token, K and V
    layer_devices = [u["device"] for u in units_ if u["layer"]]
    if len(layer_devices) != shape["layers"]:
        layer_devices = [None] * shape["layers"]
    computing = [d for d in layer_devices if d is not None and d not in NON_ACCELERATORS]
    main = computing[0] if computing else "cpu"
    per_device: dict[str | int, int] = {}  # accelerate names a GPU by its index
    total = 0
    for index, device in enumerate(layer_devices):
        kept = min(tokens, shape["window"]) if shape["sliding"][index] and shape["window"] else tokens
        size = per_token * kept * batch
        device = main if device is None or device in NON_ACCELERATORS or str(device).startswith("split") else device
        per_device[device] = per_device.get(device, 0) + size
        total += size
    return {
        "context": tokens,
        "batch": batch,
        "bytes_per_token": per_token * shape["layers"],
        "bytes": total,
        "per_device": per_device,
        "layers": shape["layers"],
        "kv_heads": shape["kv_heads"],
        "head_dim": shape["head_dim"],
        "element_bytes": element,
        "window": shape["window"] if any(shape["sliding"]) else None,
        "beyond_max_positions": bool(limit and tokens > limit),
        "max_positions": limit,
    }


def verdict(memory: dict, device_bytes: dict, kv: dict | None, units_: list) -> tuple[str, list]:
    """("fits" / "fits with cpu offload" / "does not fit", the reasons). A budget of None is unknown: not checked."""
    computing = [d for d in memory if d not in NON_ACCELERATORS and (memory[d] is None or memory[d] > 0)] or ["cpu"]
    reasons, status = [], "fits"
    on_disk = [u for u in units_ if u["device"] == "disk"]
    if device_bytes.get("disk"):
        layers = sum(u["layer"] for u in on_disk)
        status = "does not fit"
        reasons.append(
            f"{size_text(device_bytes['disk'])} of weights ({layers} decoder layers"
            f"{' and ' + str(len(on_disk) - layers) + ' other modules' if len(on_disk) > layers else ''}) "
            "find no room in memory and go to disk: every forward pass reads them back from disk"
        )
    offloaded = {d: b for d, b in device_bytes.items() if d not in computing and d != "disk" and b}
    if offloaded and status == "fits":
        status = "fits with cpu offload"
        reasons.append(
            f"{size_text(sum(offloaded.values()))} of weights live in CPU RAM and are copied to "
            f"{device_label(computing[0])} for every forward pass (slow, but it runs)"
        )
    for device, size in (kv or {}).get("per_device", {}).items():
        assert kv is not None  # a device to loop over came from it
        need = device_bytes.get(device, 0) + size
        if memory.get(device) is not None and need > memory[device]:
            status = "does not fit"
            reasons.append(
                f"on {device_label(device)} the weights ({size_text(device_bytes.get(device, 0))}) and "
                f"the KV cache for {kv['context']} tokens x batch {kv['batch']} ({size_text(size)}) need "
                f"{size_text(need)}, more than its {size_text(memory[device])}"
            )
    unknown = [d for d in computing if memory.get(d, 0) is None]
    if status == "fits" and unknown:
        reasons.append(
            f"the weights are in memory on {', '.join(map(device_label, unknown))}; how much room is left "
            "for the KV cache was not recorded (no max_memory)"
        )
    elif status == "fits":
        reasons.append(f"all weights and the KV cache fit on {', '.join(map(device_label, computing))}")
    return status, reasons
