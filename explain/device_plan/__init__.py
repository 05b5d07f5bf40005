"""device_map="auto" made visible: where each layer of a model would go on some hardware, and why.

    plan = explain.plan_device_map("meta-llama/Llama-3.1-8B-Instruct", hardware="colab-t4", dtype="bfloat16")
    plan = explain.plan_device_map(pipe.model, max_memory={0: "8GiB", 1: "8GiB", "cpu": "30GiB"})
    plan = explain.plan_device_map(pipe)      # the placement this pipeline really got
    plan.device_map                           # the dict accelerate returns
    plan                                      # in a notebook: per-device bars and the layer table

The map is accelerate's: explain builds the model on the meta device, sizes it with compute_module_sizes and
asks infer_auto_device_map, after giving it the max_memory transformers' from_pretrained would give it (memory.py).
"""

from __future__ import annotations

from ..errors import ExplainError
from .memory import DTYPES, HardwareError, parse_max_memory, profiles
from .plan import Plan, Request
from .source import ModelSourceError, resolve, shipped
from .suggest import planned_with_suggestions

STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")

__all__ = [
    "plan_device_map",
    "Plan",
    "profiles",
    "shipped",
    "parse_max_memory",
    "HardwareError",
    "ModelSourceError",
    "DTYPES",
    "STRATEGIES",
]


def plan_device_map(
    model,
    hardware: str | None = None,
    max_memory=None,
    dtype=None,
    strategy: str = "auto",
    context: int | None = None,
    batch: int = 1,
    revision: str | None = None,
) -> Plan:
    """Plan where `model` goes with from_pretrained(device_map=strategy), without loading any weight.

    model       a Hub repo id or short name ("gpt2"), a folder or config.json path, a config dict, an explain
                pipeline, or an nn.Module. Names are read from a folder, the Hugging Face cache (offline) or the
                configs shipped with explain, in that order.
    hardware    a profile name (see explain.device_plan.profiles()): "colab-t4", "a100-80gb", "cpu-16gb", ...
    max_memory  instead of hardware: {0: "8GiB", "cpu": "30GiB"} or "0=8GiB,cpu=30GiB"; ints are bytes.
                Neither: this machine, as accelerate.utils.get_max_memory() sees it.
    dtype       "float32", "bfloat16", "float16", "int8" or "4bit" (bitsandbytes: Linear weights 1 or 0.5 byte,
                the rest bfloat16). Default: the config's dtype, as from_pretrained(dtype="auto"); a module's own.
    strategy    the device_map string: "auto" (= "balanced"), "balanced_low_0" or "sequential".
    context, batch  the KV cache to count: tokens per sequence (default min(4096, the model's maximum)), sequences.

    A hardware profile is planned as from_pretrained would run on that machine with no max_memory (transformers
    then keeps some memory free); an explicit max_memory is taken as given, as transformers takes it.
    A pipeline with no other argument gives the placement it really got (its `placement/place` event).
    """
    if strategy not in STRATEGIES:
        raise ExplainError(f"strategy {strategy!r} is not a device_map strategy; use one of {', '.join(STRATEGIES)}")
    if hardware is not None and max_memory is not None:
        raise ExplainError("pass hardware= or max_memory=, not both (a profile is a max_memory with a name)")
    if context is not None and (not isinstance(context, int) or context < 1):
        raise ExplainError(f"context must be a positive number of tokens, not {context!r}")
    if not isinstance(batch, int) or batch < 1:
        raise ExplainError(f"batch must be a positive number of sequences, not {batch!r}")
    trace = getattr(model, "trace", None)
    if trace is not None and hardware is None and max_memory is None and dtype is None:
        event = trace.last("placement", "place")
        if event is not None:
            return Plan.from_event(
                event, model=model.model, name=getattr(model, "name_or_path", None), context=context, batch=batch
            )
    if hardware is not None:
        from .memory import profile

        profile(hardware)  # an unknown name fails here, before the model is built
    memory = parse_max_memory(max_memory) if max_memory is not None else None
    source = resolve(model, revision=revision)
    chosen = dtype if dtype is not None else (source.default_dtype or "float32")
    request = Request(
        source=source,
        dtype=chosen,
        hardware=hardware,
        max_memory=memory,
        strategy=strategy,
        context=context,
        batch=batch,
    )
    return planned_with_suggestions(request)
