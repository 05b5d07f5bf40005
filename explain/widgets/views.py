"""The custom views: small anywidget ES modules (timeline.js, tokens.js, text.js) over plain traitlets.

The state lives in the traitlets below; the JavaScript only draws it, and writes nothing but `selected`
(the token a learner clicked). All text reaches the page through textContent, never innerHTML.
"""

from __future__ import annotations

import pathlib

import anywidget
import traitlets

HERE = pathlib.Path(__file__).parent


class StageTimeline(anywidget.AnyWidget):
    """The eight stages of the pipeline: how long each took and its key facts."""
    _esm = HERE / "timeline.js"
    _css = HERE / "widgets.css"
    rows = traitlets.List().tag(sync=True)  # [{stage, group, seconds, time, facts, status}]
    caption = traitlets.Unicode("").tag(sync=True)


class TokenChips(anywidget.AnyWidget):
    """The prompt as the model sees it: one chip per token, its id, its characters, its chat role."""
    _esm = HERE / "tokens.js"
    _css = HERE / "widgets.css"
    tokens = traitlets.List().tag(sync=True)  # [[text, id, start, end, special, role]]
    caption = traitlets.Unicode("").tag(sync=True)


class GeneratedText(anywidget.AnyWidget):
    """The generated text, token by token, each shaded by the probability it was chosen with."""
    _esm = HERE / "text.js"
    _css = HERE / "widgets.css"
    tokens = traitlets.List().tag(sync=True)  # [[text, prob, forced]]
    key = traitlets.Unicode("").tag(sync=True)  # run:branch; a new key redraws, the same key appends
    prefix = traitlets.Unicode("").tag(sync=True)  # the prompt, shown dimmed before a plain-text continuation
    status = traitlets.Unicode("").tag(sync=True)
    running = traitlets.Bool(False).tag(sync=True)
    selected = traitlets.Int(-1).tag(sync=True)  # the step shown in the step view; -1 follows the newest

    def __repr__(self) -> str:
        return f"GeneratedText({len(self.tokens)} tokens, selected={self.selected})"
