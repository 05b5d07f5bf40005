"""explain: the Hugging Face text-generation pipeline, run for real, every stage traced and shown.

    import explain
    pipe = explain.pipeline("text-generation")        # the embedded SmolLM2-135M-Instruct, offline
    pipe("Write a story about a cat", max_new_tokens=40)
    for e in pipe.trace.events: print(e.stage, e.kind, e.data)

backend="transformers" traces the real transformers.pipeline() in the same events (any model transformers runs);
explain.attach(tpipe) traces a transformers pipeline built outside explain.

In Jupyter: explain.show(pipe) shows a live dashboard, explain.step_through(pipe, prompt) a step-by-step
controller, explain.show(explain.Trace.load(path)) replays a saved trace, explain.export(pipe, "run.html") writes
a page anyone can open (pip install "explain[notebook]").
"""

__version__ = "0.1.0"

import functools
import inspect

from .errors import ExplainError
from .features.compare import Comparison, compare
from .features.embedded import provision
from .pipeline import pipeline as _pipeline
from .progress import loading_progress
from .trace import STAGES, Event, Trace


def presentation(on: bool = True) -> None:
    """Presentation mode for every explain view on the page: text, charts and trees 1.5 times larger, legible on a
    1280x720 projector from the back of a room (body text 19.5 px), in both themes. explain.presentation(False)
    turns it off; the dashboard's "presentation" button flips it too."""
    from .widgets.base import set_presentation

    set_presentation(on)


_switch_presentation = presentation  # the pipeline wrapper's argument of the same name hides the function


@functools.wraps(_pipeline)
def pipeline(*args, trace: Trace | None = None, presentation: bool | None = None, **kwargs):
    # presentation=True / False: explain.presentation(True / False) for every view on the page (None: as it is)
    if presentation is not None and not isinstance(presentation, bool):
        raise ExplainError(
            f"presentation= is on or off: pass True or False, not {type(presentation).__name__} {presentation!r} "
            "(or leave it out to keep the mode as it is)"
        )
    # the loading stages show as they run: live in a notebook, a progress bar in a terminal (explain/progress.py)
    trace = trace if trace is not None else Trace()
    with loading_progress(trace):
        kwargs["trace"] = trace
        pipe = _pipeline(*args, **kwargs)
    if presentation is not None:  # once the pipeline is built: a load that fails changes nothing on the page
        _switch_presentation(presentation)
    return pipe


def _with_presentation(signature: inspect.Signature) -> inspect.Signature:
    """The core's signature with the wrapper's presentation= (keyword only, before **kwargs)."""
    params = list(signature.parameters.values())
    where = next((i for i, p in enumerate(params) if p.kind is p.VAR_KEYWORD), len(params))
    params.insert(where, inspect.Parameter("presentation", inspect.Parameter.KEYWORD_ONLY, default=None))
    return signature.replace(parameters=params)


pipeline.__signature__ = _with_presentation(inspect.signature(_pipeline))  # type: ignore[attr-defined]
pipeline.__doc__ = (_pipeline.__doc__ or "") + (
    "\n\n    presentation=True switches presentation mode on for every explain view on the page, as\n"
    "    explain.presentation(True) does (False: off; left out: as it is)."
)


def attach(tpipe, trace: Trace | None = None):
    """Trace the calls of a pipeline built with transformers.pipeline(...) from now on: returns a traced pipeline over
    the same model and tokenizer (no loading events: it was built outside explain). Needs transformers."""
    from .backends import transformers_backend  # transformers is imported only here

    return transformers_backend().attach(tpipe, trace=trace)


def show(source, **kwargs) -> None:
    """Display a dashboard of a pipeline (it fills in live as the pipeline runs) or of a saved Trace, or the view
    of an explain.compare(...) result."""
    from .widgets import show as show_widgets  # ipywidgets and anywidget load only here

    return show_widgets(source, **kwargs)


def step_through(pipe, prompt, **generate_kwargs):
    """A controller widget that advances a paused generation token by token (Next token, Run N, knobs, ...)."""
    if not callable(getattr(pipe, "start", None)):  # a saved Trace replays in explain.show, it cannot generate
        hint = (
            (
                "a saved trace has no model to step: show it with explain.show(trace), or step a pipeline: "
                "explain.step_through(explain.pipeline(...), prompt)"
            )
            if isinstance(pipe, Trace)
            else "pass a pipeline from explain.pipeline(...)"
        )
        raise ExplainError(f"step_through needs a pipeline, got {type(pipe).__name__}; {hint}")
    from .widgets import step_through as step_through_widget

    return step_through_widget(pipe, prompt, **generate_kwargs)


def export(source, path, **kwargs) -> str:
    """Write a run's dashboard as one self-contained HTML page (click a token, see its step; no kernel, network or
    CDN): `source` is a pipeline, an explain.Trace or a saved trace's path. Returns the path."""
    from .widgets.export import export as export_page  # ipywidgets, anywidget and plotly.js load only here

    return export_page(source, path, **kwargs)


def plan_device_map(model, **kwargs):
    """Where device_map="auto" puts each layer of `model` on some hardware (explain.device_plan.plan_device_map)."""
    from .device_plan import plan_device_map as plan  # loads the planner only when asked

    return plan(model, **kwargs)


__all__ = [
    "presentation",
    "pipeline",
    "attach",
    "compare",
    "Comparison",
    "show",
    "step_through",
    "export",
    "provision",
    "Trace",
    "Event",
    "STAGES",
    "ExplainError",
    "plan_device_map",
    "__version__",
]
