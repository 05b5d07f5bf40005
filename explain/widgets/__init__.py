"""Jupyter views of the pipeline: a live dashboard, step-through, replay of a saved trace.

Importing this package imports ipywidgets and anywidget (plotly.js is read from the plotly package, whose Python
side is never imported); `import explain` does not (explain.show and explain.step_through import it when first
called).
"""

from __future__ import annotations

import weakref

from .controller import StepThrough
from .dashboard import Dashboard
from .inside import InsideView
from .sink import ThrottledSink
from .state import DashboardState
from .static import summary_html
from .strategy_views import BeamTree, DraftView, SamplingTree
from .weights_views import AdapterView, CompareView, QuantizationView

_shown: dict[int, weakref.ref] = {}  # id(trace) -> the dashboard explain.show last displayed for it


def show(source, **kwargs) -> None:
    """Display a dashboard for a pipeline (live: call the pipeline and watch it fill in) or a Trace (replay).

    Showing a new dashboard for the same pipeline detaches the previous one (it keeps what it shows and stops
    following), so re-running a cell does not make every call pay for old, hidden views. Returns None, as
    plotly's fig.show() does; to keep the object use `explain.widgets.Dashboard(source)`.
    """
    from IPython.display import display

    if hasattr(source, "to_dict") and hasattr(source, "first_divergence"):  # an explain.Comparison
        display(CompareView(source))
        return
    dashboard = Dashboard(source, **kwargs)
    previous = _shown.get(id(dashboard.trace))
    if previous is not None and previous() is not None and previous() is not dashboard:
        previous().detach("a newer dashboard for this pipeline was shown; this one stopped following it")
    _shown[id(dashboard.trace)] = weakref.ref(dashboard)
    display(dashboard)


def step_through(pipe, prompt, **generate_kwargs) -> StepThrough:
    """A paused generation with Next token / Run N / Run to end / Reset, knobs, what-if and force."""
    return StepThrough(pipe, prompt, **generate_kwargs)


__all__ = [
    "show",
    "step_through",
    "Dashboard",
    "InsideView",
    "StepThrough",
    "DashboardState",
    "ThrottledSink",
    "summary_html",
    "CompareView",
    "QuantizationView",
    "AdapterView",
    "SamplingTree",
    "BeamTree",
    "DraftView",
]
