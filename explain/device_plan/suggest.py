"""When a plan does not fit (or offloads), the smallest change that fits, each found by planning again."""

from __future__ import annotations

from dataclasses import replace

from ..utils.units import size_text
from .memory import NON_ACCELERATORS, device_label, profiles
from .plan import compute, smaller_dtypes

RANK = {"fits": 0, "fits with cpu offload": 1, "does not fit": 2}


def brief(plan) -> str:
    """ "cuda:0 8.6 GiB + cpu 1.0 GiB" for the weights, and the KV cache."""
    weights = " + ".join(f"{device_label(d)} {size_text(b)}" for d, b in plan.device_bytes.items() if b)
    kv = f", KV cache {size_text(plan.kv_cache['bytes'])}" if plan.kv_cache else ""
    return f"{plan.status}: weights on {weights}{kv}"


def _entry(change: str, arguments: dict, plan, why: str = "") -> dict:
    return {
        "change": change,
        "arguments": arguments,
        "status": plan.status,
        "fits": plan.fits,
        "summary": brief(plan) + (f" ({why})" if why else ""),
    }


def _total(memory: dict) -> int:
    return sum(v for k, v in memory.items() if k != "disk")


def suggestions(request, plan) -> list:
    def again(**changes):
        return compute(replace(request, **changes))

    found = []
    kv_only = plan.status == "does not fit" and not plan.device_bytes.get("disk")
    # 1. the KV cache is what overflows: a shorter context, a smaller batch
    if kv_only and plan.kv_cache:
        context = plan.kv_cache["context"] // 2
        while context >= 64:
            other = again(context=context)
            if other.fits:
                found.append(
                    _entry(f"context={context}", {"context": context}, other, "the KV cache shrinks with the context")
                )
                break
            context //= 2
        batch = plan.kv_cache["batch"] // 2
        while batch >= 1 and plan.kv_cache["batch"] > 1:
            other = again(batch=batch)
            if other.fits:
                found.append(_entry(f"batch={batch}", {"batch": batch}, other))
                break
            batch //= 2
    # 2. a smaller dtype: the first that fits entirely, else the first that does better
    better = None
    for dtype in smaller_dtypes(plan.dtype):
        other = again(dtype=dtype)
        if other.status == "fits":
            better = _entry(f"dtype={dtype!r}", {"dtype": dtype}, other)
            break
        if better is None and RANK[other.status] < RANK[plan.status]:
            better = _entry(f"dtype={dtype!r}", {"dtype": dtype}, other)
    if better:
        found.append(better)
    # 3. an explicit max_memory with too little CPU RAM: offload to CPU instead of disk
    disk = plan.device_bytes.get("disk", 0)
    if disk and plan.hardware == "max_memory":
        biggest = max((u["bytes"] for u in plan.units), default=0)
        cpu = plan.memory.get("cpu", 0) + disk + biggest  # accelerate keeps room for the biggest layer on cpu
        cpu = -(-cpu // 2**30) * 2**30  # whole GiB
        other = again(max_memory={**plan.memory, "cpu": cpu})
        if other.fits:
            found.append(
                _entry(
                    f"max_memory cpu={cpu // 2**30}GiB",
                    {"max_memory": {**plan.memory, "cpu": cpu}},
                    other,
                    "offload to CPU RAM instead of disk",
                )
            )
    # 4. other hardware: the smallest profile with more memory where it fits entirely
    current = _total(plan.memory)
    for name, entry in sorted(profiles().items(), key=lambda item: _total(item[1]["memory"])):
        if name == plan.hardware or _total(entry["memory"]) <= current:
            continue
        other = again(hardware=name, max_memory=None)
        if other.status == "fits":
            found.append(_entry(f"hardware={name!r}", {"hardware": name}, other, entry["description"]))
            break
    # 5. accept the offload: it runs, slowly
    if disk:
        found.append(
            {
                "change": "offload to disk",
                "arguments": {},
                "status": "runs from disk",
                "fits": False,
                "summary": f'from_pretrained(device_map="auto") loads this plan as it is and reads '
                f"{size_text(disk)} from disk on every forward pass (offload_folder= is needed "
                "when the weights are not safetensors); explain's own pipeline runs fully loaded "
                "models only",
            }
        )
    elif plan.status == "fits with cpu offload":
        gpus = [device_label(d) for d in plan.memory if d not in NON_ACCELERATORS]
        found.append(
            {
                "change": "keep the cpu offload",
                "arguments": {},
                "status": plan.status,
                "fits": True,
                "summary": f"it runs as planned: the offloaded weights cross to {', '.join(gpus) or 'the GPU'} "
                "on every forward pass",
            }
        )
    return found


def planned_with_suggestions(request):
    """accelerate's plan for `request` and, when it does not fit, the smallest changes that do, each planned again."""
    plan = compute(request)
    if plan.status != "fits":
        plan.suggestions = suggestions(request, plan)
    return plan
