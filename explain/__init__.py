"""explain: the Hugging Face text-generation pipeline, run for real, every stage traced and shown.

    import explain
    pipe = explain.pipeline("text-generation")        # the embedded SmolLM2-135M-Instruct, offline
    pipe("Write a story about a cat", max_new_tokens=40)
    for e in pipe.trace.events: print(e.stage, e.kind, e.data)
"""

__version__ = "0.1.0"

from .embedded import provision
from .errors import ExplainError
from .pipeline import pipeline
from .trace import STAGES, Event, Trace


def plan_device_map(model, **kwargs):
    """Where device_map="auto" puts each layer of `model` on some hardware (explain.device_plan.plan_device_map)."""
    from .device_plan import plan_device_map as plan  # loads the planner only when asked
    return plan(model, **kwargs)


__all__ = ["pipeline", "provision", "Trace", "Event", "STAGES", "ExplainError", "plan_device_map", "__version__"]
