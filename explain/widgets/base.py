"""The one base of every anywidget explain draws, and the source its ES module reaches the page with.

    class LensWidget(ViewWidget):
        module = "lens.js"                        # its ES module next to this file; the page gets prelude.js first
        rows = traitlets.List().tag(sync=True)    # one trait per value its view's draw() returns

`module_source(name)` is what the page runs: prelude.js (el, svg, visible, the number formats, heal: see there),
then each file the module names on a line `// needs: tree.js` (a part several modules share), then the module.
The live dashboard, the standalone views (SamplingTree, InsideView, ...) and the exported page all use it.
"""

from __future__ import annotations

import pathlib
import re
import uuid
import weakref

import anywidget
import traitlets

HERE = pathlib.Path(__file__).parent
PRELUDE = "prelude.js"
_NEEDS = re.compile(r"^// needs: (.+)$", re.MULTILINE)
_presenting = False  # presentation mode (set_presentation), for the views made from now on
_views: weakref.WeakSet = weakref.WeakSet()  # every ViewWidget made, so the switch reaches the ones on screen
_buttons: weakref.WeakSet = weakref.WeakSet()  # the dashboards' presentation buttons


def presentation() -> bool:
    """Whether presentation mode is on (see set_presentation)."""
    return _presenting


def set_presentation(on: bool = True) -> None:
    """Presentation mode: every explain view on the page legible from the back of a room on a 1280x720 projector
    (text 1.5 times larger, body text 19.5 px; the step chart and the trees scaled with it), in both themes. One
    switch for the page: the views shown already and the ones made later; the dashboard's button flips it too."""
    global _presenting
    if not isinstance(on, bool):
        raise TypeError(f"presentation mode is on or off: pass True or False, not {type(on).__name__} {on!r}")
    _presenting = on
    for view in list(_views):
        if getattr(view, "comm", None) is not None:
            view.presentation = on
    for button in list(_buttons):
        button.value = on


def presentation_button(button) -> None:
    """Keep a button (a dashboard's ToggleButton) in step with the switch."""
    _buttons.add(button)


def module_source(name: str) -> str:
    """A view's ES module as the page gets it: prelude.js, the shared parts it names (`// needs: a.js, b.js`), the
    module."""
    own = (HERE / name).read_text(encoding="utf-8")
    parts = [PRELUDE] + [p.strip() for found in _NEEDS.findall(own) for p in found.split(",") if p.strip()]
    return "".join((HERE / part).read_text(encoding="utf-8") for part in dict.fromkeys(parts)) + own


class ViewWidget(anywidget.AnyWidget):
    """An anywidget drawn by one of explain's ES modules. A subclass names its module (`module = "lens.js"`), and the
    page gets it after prelude.js; its model knows its own id (`ref`), so heal() can re-attach it when anywidget gave
    up on it during a long page task. `_css` is widgets.css unless the subclass names its own sheet."""

    module: str | None = None  # the ES module next to this file (a subclass may set `_esm` itself instead)
    _css = HERE / "widgets.css"
    ref = traitlets.Unicode("").tag(sync=True)
    presentation = traitlets.Bool(False).tag(sync=True)  # presentation mode (set_presentation); prelude.js applies it

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "module" in cls.__dict__ and cls.module:
            cls._esm = module_source(cls.module)

    def __init__(self, **kwargs):
        model_id = uuid.uuid4().hex  # the comm's id, chosen here so the first state can carry it
        super().__init__(model_id=model_id, ref=model_id, presentation=_presenting, **kwargs)
        _views.add(self)
