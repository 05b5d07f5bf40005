"""The dashboard's widgets: anywidgets whose state is plain traitlets and whose ES modules draw it.

The state lives in the traitlets below; the JavaScript only draws it, and writes nothing but `selected` (the token
a learner clicked). All text reaches the page through textContent, never innerHTML. What each widget shows is
computed by its view (views.py).
"""

from __future__ import annotations

import importlib.util
import pathlib

import anywidget
import traitlets

from .base import HERE, ViewWidget, module_source
from .inside import InsideView

__all__ = ["ViewWidget", "module_source", "HERE"]  # the base lives in base.py; re-exported for older imports


class StageTimeline(ViewWidget):
    """The eight stages of the pipeline: how long each took and its key facts."""

    module = "timeline.js"
    rows = traitlets.List().tag(sync=True)  # [{stage, group, seconds, time, facts, status}]
    caption = traitlets.Unicode("").tag(sync=True)


class TokenChips(ViewWidget):
    """The prompt as the model sees it: one chip per token, its id, its characters, its chat role."""

    module = "tokens.js"
    tokens = traitlets.List().tag(sync=True)  # [[text, id, start, end, special, role]]
    caption = traitlets.Unicode("").tag(sync=True)


class GeneratedText(ViewWidget):
    """The generated text, token by token, each shaded by the probability it was chosen with."""

    module = "text.js"
    tokens = traitlets.List().tag(sync=True)  # [[text, prob, forced]]
    key = traitlets.Unicode("").tag(sync=True)  # run:branch; a new key redraws, the same key appends
    prefix = traitlets.Unicode("").tag(sync=True)  # the prompt, shown dimmed before a plain-text continuation
    status = traitlets.Unicode("").tag(sync=True)
    running = traitlets.Bool(False).tag(sync=True)
    selected = traitlets.Int(-1).tag(sync=True)  # the step shown in the step view; -1 follows the newest

    def __repr__(self) -> str:
        return f"GeneratedText({len(self.tokens)} tokens, selected={self.selected})"


class StepChart(ViewWidget):
    """The step view's bars and curves (chart.js draws them with plotly.js)."""

    module = "chart.js"
    step = traitlets.Dict().tag(sync=True)  # step_chart.chart_step
    curves = traitlets.Dict().tag(sync=True)  # step_chart.chart_curves
    selected = traitlets.Int(-1).tag(sync=True)  # the step ringed on the curves
    message = traitlets.Unicode("").tag(sync=True)  # shown instead of the chart when there is no step
    library = traitlets.Unicode("").tag(sync=True)  # "IPY_MODEL_<id>" of the PlotlyLibrary
    key = traitlets.Unicode("").tag(sync=True)  # run:branch:sequence; a new key is drawn at once, not spaced
    forkable = traitlets.Bool(False).tag(sync=True)  # a step-through: clicking another token's bar forces it
    clicked = traitlets.Dict().tag(sync=True)  # {step, token_id, n}: the bar a reader clicked (the page writes it)

    def __init__(self, **kwargs):
        super().__init__(library=f"IPY_MODEL_{plotly_library().model_id}", **kwargs)


def plotly_js_path() -> pathlib.Path:
    """plotly.js as the plotly package ships it (found without importing plotly's Python side)."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the step chart needs plotly.js from the plotly package: pip install plotly")
    return pathlib.Path(list(spec.submodule_search_locations)[0]) / "package_data" / "plotly.min.js"


def plotly_basic_js_path() -> pathlib.Path:
    """plotly.js's basic bundle (bars, lines, pies: what the step chart draws), a quarter of the full bundle's size,
    shipped with explain (explain/data/plotly/README.md): what an exported page inlines, so that it opens fast."""
    return pathlib.Path(__file__).resolve().parent.parent / "data" / "plotly" / "plotly-basic.min.js"


class PlotlyLibrary(anywidget.AnyWidget):
    """plotly.js for every step chart of the kernel, sent to the page once (not once per chart, as a plotly
    FigureWidget sends its 5 MB bundle). Never displayed. Its source is a plain trait, not the module: anywidget
    gives a model's module 2 s to load before it gives up on the model (and then drops every message to it), and
    plotly.js can take longer than that to evaluate on a busy machine. chart.js evaluates it once the chart is up."""

    _esm = "export default {};"
    _css = ""
    source = traitlets.Unicode("").tag(sync=True)


_library: PlotlyLibrary | None = None


def plotly_library() -> PlotlyLibrary:
    global _library
    if _library is None or getattr(_library, "comm", None) is None:
        _library = PlotlyLibrary(source=plotly_js_path().read_text(encoding="utf-8"))
    return _library


class InsideElement(InsideView):
    """The inside-the-model view (inside.py) as a dashboard part: it draws the generation/inspect events the run
    recorded for the selected step (capture="inside", or generation.inspect(step) while the run is traced)."""
