"""The event schema: the stages, every (stage, kind) with its fields and types, one description per kind.

    from explain.events import KINDS, STAGES, check_event, describe
    check_event("generation", "step", data)     # SchemaError naming the field that is wrong, or None
    describe(event)                             # one line, as the console, the dashboard and the HTML show it

Both producers (the readable models and the traced transformers pipeline) emit exactly these records, so every
view, the console, save and replay work with either. A new kind is one TypedDict, one describe function and one
entry in KINDS (explain/events/kinds.py).
"""

from __future__ import annotations

from .check import SchemaError, check_record
from .kinds import KINDS, ErrorInfo, GenerationStep, Kind, Top
from .stages import CALL_STAGES, LOADING_STAGES, STAGE_INFO, STAGE_LIST, STAGES, Stage


def check_event(stage: str, kind: str, data: dict) -> None:
    """Raise SchemaError unless `data` is what a (stage, kind) event holds. An event of a stage that failed
    carries "error" ({type, message}) and whatever facts it had gathered by then."""
    if stage not in STAGE_INFO:
        raise SchemaError("stage", f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")
    declared = KINDS.get((stage, kind))
    if declared is None:
        known = ", ".join(k for s, k in KINDS if s == stage)
        raise SchemaError("kind", f"unknown kind {kind!r} of stage {stage!r}; its kinds are {known}")
    if not isinstance(data, dict):
        raise SchemaError("data", f"expected an object, got {type(data).__name__}")
    failed = "error" in data
    if failed:
        check_record(data["error"], ErrorInfo, "data.error")
    check_record(data, declared.fields, "data", partial=failed)


def describe(event) -> str:
    """One line for any event: what happened (or, for a stage that failed, the error)."""
    data = event.data
    if "error" in data:
        return f"failed: {data['error']['type']}: {data['error']['message']}"
    return KINDS[(event.stage, event.kind)].describe(data)


__all__ = [
    "STAGES",
    "STAGE_LIST",
    "STAGE_INFO",
    "LOADING_STAGES",
    "CALL_STAGES",
    "Stage",
    "KINDS",
    "Kind",
    "SchemaError",
    "check_event",
    "describe",
    "GenerationStep",
    "Top",
]
