"""The inside-the-model view of one step: logit lens, attention (heatmap and head view), attribution.

    view = explain.widgets.InsideView(generation, step=3)     # a run in memory: computed on demand
    view = explain.widgets.InsideView(trace, step=3, run=2)   # a saved trace: what it captured

The drawing is an anywidget ES module (inside.js) over one trait, `look`: the data of a generation/inspect event,
so a live run and a replayed trace draw the same way. Attribution is computed when the learner asks for it.
"""

from __future__ import annotations

import traitlets

from ..errors import ExplainError
from ..trace import Trace
from .base import HERE, ViewWidget
from .safe import esc, fmt
from .static import StaticFallback


class InsideView(StaticFallback, ViewWidget):
    module = "inside.js"
    _css = HERE / "inside.css"
    look = traitlets.Dict().tag(sync=True)  # a generation/inspect event's data
    tab = traitlets.Unicode("lens").tag(sync=True)  # lens, attention or attribution
    layer = traitlets.Int(0).tag(sync=True)  # the layer whose head view is drawn
    head = traitlets.Int(-1).tag(sync=True)  # -1: heads averaged
    status = traitlets.Unicode("").tag(sync=True)
    request = traitlets.Unicode("").tag(sync=True)  # the page asks for attribution: "attribution:<method>:<nonce>"

    def __init__(self, source=None, step: int | None = None, run: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.generation = source if source is not None and hasattr(source, "inspect") else None
        self.trace = source if isinstance(source, Trace) else getattr(self.generation, "trace", None)
        self.run = run if run is not None else getattr(self.generation, "run_id", None)
        self.observe(self._on_request, "request")
        if step is not None:
            self.show(step)

    def __repr__(self) -> str:
        return f"InsideView(step {self.look.get('step')}, tab {self.tab!r})"

    def _static_html(self) -> str:  # where the view cannot draw (a reopened notebook)
        look = self.look
        if not look:
            return f"<div class='explain-static'>Inside the model: {esc(self.status or 'no step shown')}</div>"
        return (
            f"<div class='explain-static'>Inside the model at step {fmt(look.get('step'))}: how "
            f"<code>{esc(look.get('token', ''))}</code> came out (position {fmt(look.get('position'))})</div>"
        )

    def show(self, step: int, branch: int = 0) -> None:
        """Look inside at `step`: compute it from the run in memory, or take what the trace recorded."""
        if self.generation is not None:
            self.status = "computing the lens and attention..."
            try:
                self.look = self.generation.inspect(step)
                self.layer = min(self.layer, self.look["attention"]["layers"] - 1)
                self.status = ""
            except ExplainError as error:
                self.status = str(error)
            return
        recorded = (
            [
                e.data
                for e in self.trace.filter("generation", "inspect", self.run)
                if e.data["step"] == step and e.data["branch"] == branch
            ]
            if self.trace is not None
            else []
        )
        if recorded:
            merged: dict = {}
            for data in recorded:  # lens and attention from one inspection, attribution from another
                merged.update(data)
            self.look, self.status = merged, ""
        else:
            self.look = {}
            self.status = (
                f"This trace holds nothing from inside the model at step {step}: record it with "
                'capture="inside" or generation.inspect(step) before saving.'
            )

    def _on_request(self, change) -> None:
        if not change["new"].startswith("attribution:") or not self.look:
            return
        method = change["new"].split(":")[1]
        if self.generation is None:
            self.status = "attribution needs the model: this view replays a saved trace"
            return
        self.status = f"computing attribution ({method.replace('_', ' ')})..."
        try:
            found = self.generation.inspect(self.look["step"], what=("attribution",), attribution_method=method)
            self.look = {**self.look, "attribution": found["attribution"]}
            self.status = ""
        except ExplainError as error:
            self.status = str(error)
