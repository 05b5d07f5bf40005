"""The plan: accelerate's own device map for a model on some hardware, with the bytes that explain it.

Every number comes from accelerate: module sizes from accelerate.utils.compute_module_sizes, the map from
accelerate.utils.infer_auto_device_map (fed the max_memory transformers would feed it, see memory.py). explain
adds what accelerate leaves out: which layers went where, the KV cache each device holds during generation,
whether that fits, and, when it does not, the smallest change that does, found by planning again.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field

import torch
from accelerate.utils import compute_module_sizes, get_max_memory, infer_auto_device_map
from accelerate.utils.modeling import get_max_layer_size

from ..errors import ExplainError
from ..utils.units import size_text
from .memory import DTYPES, NON_ACCELERATORS, SMALLER, accelerators, device_label, dtype_name, headroom, order, profile
from .pieces import kv_cache, no_split_classes, quantised_weights, quiet_accelerate, units, verdict
from .source import Source, build


@dataclass
class Plan:
    name: str  # the model
    where: str  # where its config came from
    architecture: str
    parameters: int | None  # tied weights counted once; None when a replayed trace does not say
    dtype: str
    hardware: str  # a profile name, "max_memory", "this machine" or "actual placement"
    hardware_description: str
    strategy: str  # the device_map string: "auto", "balanced", "balanced_low_0", "sequential"
    memory: dict  # device -> the memory it has (bytes), before any headroom
    max_memory: dict  # device -> the budget infer_auto_device_map was given
    no_split_module_classes: list
    device_map: dict  # exactly what accelerate returned
    module_sizes: dict  # accelerate's compute_module_sizes: module or tensor name -> bytes
    units: list  # [{"name", "device", "bytes", "parameters", "layer", "tied_to"}], in model order
    device_bytes: dict  # device -> bytes of weights placed there
    kv_cache: dict | None  # {"context", "batch", "bytes_per_token", "bytes", "per_device", ...}
    status: str  # "fits", "fits with cpu offload", "does not fit"
    reasons: list = field(default_factory=list)
    notes: list = field(default_factory=list)  # the headroom steps and other facts worth knowing
    suggestions: list = field(default_factory=list)  # [{"change", "arguments", "status", "summary"}], smallest first

    @property
    def fits(self) -> bool:
        """True when nothing goes to disk and the KV cache fits (CPU offload still counts as fitting)."""
        return self.status != "does not fit"

    @property
    def devices(self) -> list:
        """Every device with a budget or with weights, in accelerate's order (GPUs, mps, cpu, disk)."""
        used = [d for d in self.device_bytes if self.device_bytes[d]] + [u["device"] for u in self.units]
        known = dict.fromkeys(list(self.memory) + [d for d in used if not str(d).startswith("split:")])
        return list(order(known))

    def to_dict(self) -> dict:
        """Plain JSON-able values (device keys become strings, as in a saved trace)."""
        from ..trace import plain

        return plain({**asdict(self), "fits": self.fits})

    def __str__(self) -> str:
        from .view import text

        return text(self)

    def __repr__(self) -> str:
        return self.__str__()

    def _repr_html_(self) -> str:
        from .view import html

        return html(self)

    @classmethod
    def from_event(
        cls,
        event,
        model: torch.nn.Module | None = None,
        name: str | None = None,
        context: int | None = None,
        batch: int = 1,
    ) -> Plan:
        from .actual import from_event  # actual.py builds a Plan of `cls`, and so imports nothing of this module

        return from_event(cls, event, model=model, name=name, context=context, batch=batch)


# -- the planner -------------------------------------------------------------------------------------------------------
@dataclass
class Request:
    """Everything a plan depends on, so that a suggestion is the same request with one thing changed."""

    source: Source
    dtype: str
    hardware: str | None = None
    max_memory: dict | None = None
    strategy: str = "auto"
    context: int | None = None
    batch: int = 1


def budget(request: Request) -> tuple[dict, bool, str, str]:
    """(memory, set by the user?, hardware name, description)."""
    if request.max_memory is not None:
        return order(dict(request.max_memory)), True, "max_memory", "the max_memory you gave"
    if request.hardware is not None:
        entry = profile(request.hardware)
        return dict(entry["memory"]), False, request.hardware, f"{entry['description']} ({entry['assumes']})"
    with quiet_accelerate():
        memory = get_max_memory()
    return order(memory), False, "this machine", "as accelerate.utils.get_max_memory() sees it now"


def compute(request: Request) -> Plan:
    """accelerate's plan for one request (without suggestions: suggest.planned_with_suggestions adds them)."""
    source, dtype = request.source, dtype_name(request.dtype)
    module = source.module
    base, quantised, _ = DTYPES[dtype]
    notes = []
    own = next((p.dtype for p in module.parameters() if p.is_floating_point()), torch.float32)
    if torch.finfo(base).bits > torch.finfo(own).bits:  # accelerate sizes a tensor at min(dtype, its own dtype)
        try:
            module = build(source.config)  # so start again from the config, in float32 on the meta device
            notes.append(
                f"the module is {str(own)[6:]}; planned from its config on the meta device to size it as {dtype}"
            )
        except ExplainError:
            notes.append(
                f"the module is {str(own)[6:]} and accelerate never sizes a tensor above its own dtype, so "
                f"this plan counts {str(own)[6:]}, not {dtype}"
            )
    no_split = no_split_classes(module)
    special = quantised_weights(module, quantised) if quantised is not None else None
    memory, user_set, hardware, description = budget(request)
    sizes = dict(compute_module_sizes(module, dtype=base, special_dtypes=special))
    max_memory, steps = headroom(memory, module, sizes, no_split, user_set, request.strategy, quantised is not None)
    with quiet_accelerate():
        device_map = dict(
            infer_auto_device_map(
                module,
                max_memory=dict(max_memory),
                no_split_module_classes=no_split,
                dtype=base,
                special_dtypes=special,
            )
        )
    rows = units(module, device_map, sizes, no_split)
    device_bytes: dict[str | int, int] = {}  # accelerate names a GPU by its index
    for key, device in device_map.items():
        device_bytes[device] = device_bytes.get(device, 0) + int(sizes.get(key, 0))
    kv = kv_cache(source.config, rows, dtype, request.context, request.batch)
    status, reasons = verdict(memory, device_bytes, kv, rows)
    notes = steps + notes
    offloaded = [d for d in ("cpu", "disk") if device_bytes.get(d)]
    main = next((d for d in device_map.values() if d not in NON_ACCELERATORS), "cpu")
    if offloaded and (main != "cpu" or "disk" in offloaded):
        top = list(module.named_parameters(recurse=False)) + list(module.named_children())
        biggest, names = get_max_layer_size(top, defaultdict(int, sizes), no_split)  # as accelerate's own dict
        notes.append(
            f"with offload, accelerate keeps {size_text(biggest)} free on {device_label(main)} (the biggest "
            f"piece it may have to bring in to run it, {names[0] if names else '?'}), so that device is "
            "not filled to its budget"
        )
    if quantised is not None:
        notes.append(
            f"{dtype}: {DTYPES[dtype][2]}, as transformers counts them (bitsandbytes also keeps one scale per "
            "block of weights, a few % more, which neither transformers nor accelerate counts)"
        )
        if "mps" in memory or not accelerators(memory):
            notes.append(
                "bitsandbytes is built for CUDA GPUs; check that your version supports "
                f"{'Apple silicon (mps)' if 'mps' in memory else 'the CPU'} before counting on this plan"
            )
        if any(d in ("cpu", "disk") for d in device_map.values()) and accelerators(memory):
            notes.append(
                "bitsandbytes refuses a quantised model spread over cpu or disk unless "
                "BitsAndBytesConfig(llm_int8_enable_fp32_cpu_offload=True) (and then the offloaded part "
                "stays in float32)"
            )
    if kv and kv["beyond_max_positions"]:
        notes.append(
            f"a context of {kv['context']} tokens is beyond the model's max_position_embeddings ({kv['max_positions']})"
        )
    if kv and kv["window"]:
        notes.append(f"sliding-window layers keep only the last {kv['window']} tokens in their cache")
    plan = Plan(
        name=source.name,
        where=source.where,
        architecture=(source.config.get("architectures") or [type(module).__name__])[0],
        parameters=sum(p.numel() for p in module.parameters()),
        dtype=dtype,
        hardware=hardware,
        hardware_description=description,
        strategy=request.strategy,
        memory=memory,
        max_memory=max_memory,
        no_split_module_classes=no_split,
        device_map=device_map,
        module_sizes=sizes,
        units=rows,
        device_bytes=device_bytes,
        kv_cache=kv,
        status=status,
        reasons=reasons,
        notes=notes,
    )
    return plan


def smaller_dtypes(dtype: str) -> list:
    order_ = list(SMALLER)
    start = order_.index(dtype) + 1 if dtype in order_ else 1  # float16 sits beside bfloat16
    return order_[start:]
