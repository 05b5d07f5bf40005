"""The placement that really happened (the `placement/place` event of a pipeline's trace), as a Plan.

The event is what explain.stages.placement emitted while loading: the device map it used, the max_memory accelerate saw,
and the bytes that landed on each device. A saved trace (device keys turned into strings by JSON) works too.
"""

from __future__ import annotations

import torch
from accelerate.utils import compute_module_sizes

from ..errors import ExplainError
from ..utils.devices import parse_device
from ..utils.dtypes import RUNNABLE
from ..utils.units import size_text
from .pieces import kv_cache, no_split_classes, units, verdict
from .source import config_of, module_dtype


def device(value):
    """ "0" / "cuda:0" / 0 -> 0; "cpu" stays "cpu": accelerate's spelling of a device (explain.utils.devices)."""
    return parse_device(value, "the placement event's device")


def from_event(
    plan_class: type,
    event,
    model: torch.nn.Module | None = None,
    name: str | None = None,
    context: int | None = None,
    batch: int = 1,
):
    """The Plan (of `plan_class`: Plan.from_event passes its class, so this module needs nothing of plan.py) of the
    placement a pipeline really got, from its `placement/place` event."""
    data = event.data if hasattr(event, "data") else dict(event)
    if "device_map" not in data:
        raise ExplainError(
            "this is not a placement event: Plan.from_event wants the `placement/place` event of a "
            'trace, pipe.trace.last("placement", "place")'
        )
    device_map = {key: device(value) for key, value in data["device_map"].items()}
    memory = {device(k): v for k, v in (data.get("max_memory") or {}).items()}
    device_bytes = {device(k): int(v) for k, v in (data.get("bytes_per_device") or {}).items()}
    if model is not None:
        no_split = no_split_classes(model)
        sizes = dict(compute_module_sizes(model))
        rows = units(model, device_map, sizes, no_split)
        config = config_of(model)
        parameters = sum(p.numel() for p in model.parameters())
        dtype = module_dtype(model)
    else:  # a saved trace with no model: the layer table the event itself carries, sizes unknown
        no_split, sizes, config, parameters = list(data.get("no_split_module_classes") or []), {}, {}, None
        layers = data.get("layers") or {}  # top-level modules, each decoder layer, and the layers' own parts
        inside = {n for n in layers for other in layers if other.split(".")[-1].isdigit() and n.startswith(other + ".")}
        rows = [
            {
                "name": n,
                "device": device(d),
                "bytes": None,
                "parameters": None,
                "layer": n.split(".")[-1].isdigit(),
                "tied_to": None,
            }
            for n, d in layers.items()
            if n not in inside
        ]
        dtype = data.get("dtype") or "float32"
    if not memory:  # one device, no max_memory: its budget is unknown (None)
        memory = dict.fromkeys(device_bytes)
    kv = kv_cache(config, rows, dtype if dtype in RUNNABLE else "float32", context, batch)
    status, reasons = verdict(memory, device_bytes, kv, rows)
    notes = [data.get("reason") or ""]
    if data.get("tied"):
        notes.append("tied: " + ", ".join(f"{k} = {v}" for k, v in data["tied"].items()))
    asked = data.get("asked") or {}
    title = name or (config.get("_name_or_path") if config else None) or "the loaded model"
    total = sum(device_bytes.values())
    return plan_class(
        name=title,
        where=f"the pipeline's placement/place event ({size_text(total)} placed)",
        architecture=(
            config.get("architectures") or [type(model).__name__ if model is not None else "architecture not recorded"]
        )[0],
        parameters=parameters,
        dtype=dtype,
        hardware="actual placement",
        hardware_description=f"what explain.stages.placement did when loading (device={asked.get('device')!r}, "
        f"device_map={asked.get('device_map')!r})",
        strategy=str(data.get("strategy")),
        memory=memory,
        max_memory=dict(memory),
        no_split_module_classes=no_split,
        device_map=device_map,
        module_sizes=sizes,
        units=rows,
        device_bytes=device_bytes,
        kv_cache=kv,
        status=status,
        reasons=reasons,
        notes=[n for n in notes if n],
    )
