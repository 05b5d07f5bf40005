"""The decoding strategies' views, each an anywidget ES module over two traits, `data` (explain.features.trees
builds it) and `caption`:

    SamplingTree(pipe)            several sampled sequences as a prefix tree (also a step-through's forced branches)
    BeamTree(pipe)                beam search: kept, finished and pruned hypotheses per step, and the final ranking
    DraftView(pipe)               assisted decoding: drafted against accepted tokens, and the acceptance rate

Each takes a pipeline (live: it follows the pipeline's newest call of its strategy, or `run=`), a Trace (replay: a
saved trace, `run=` or the newest run), or a run object (a Generation, or a strategy's run from pipe.start). Live
views fold the run's events as they arrive through a ThrottledSink, about ten times a second.

One registration point: PANELS lists the three (name, element class, ES module, what it draws from a run's
events). `panel_values(name, events)` gives an element's traits for one run's events, with "shown" (whether the
run has anything for it): what a dashboard view's draw() returns. The dashboard of this branch shows the panel of
the run's strategy (widgets/dashboard.py); `dashboard_views(views)` makes View classes for the views registry of
explain/widgets/views.py, where one exists.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import traitlets

from ..features.trees import beam_tree, draft_rounds, sampling_tree
from ..trace import Event, Trace
from .base import HERE, ViewWidget
from .safe import esc
from .sink import ThrottledSink
from .static import StaticFallback

PROMPT_TAIL = 80  # characters of the prompt the views show


def prompt_of(events: list[Event]) -> str:
    """The run's prompt text (its tokenization/encode event), cut to its last PROMPT_TAIL characters."""
    encode = next((e.data for e in events if e.stage == "tokenization" and e.kind == "encode"), None)
    if encode is None:
        return ""
    text = encode["text"]
    return text if len(text) <= PROMPT_TAIL else "\u2026" + text[-PROMPT_TAIL:]


def _has(events: list[Event], kind: str) -> bool:
    return any(e.stage == "generation" and e.kind == kind for e in events)


# -- what each panel draws, from one run's events --------------------------------------------------------------
def _sampling_caption(data: dict, run) -> str:
    if not data.get("count"):
        return "no sequence yet: call the pipeline (num_return_sequences=5, do_sample=True)"
    splits = sum(1 for s in data["segments"] if s["split"])
    what = {"samples": "sampled sequences", "branches": "branches"}.get(data["kind"], "sequence")
    return f"call {run}: {data['count']} {what}, {splits} branch point{'s' if splits != 1 else ''}"


def _beam_caption(data: dict, run) -> str:
    steps = len(data.get("levels", [])) - 1
    if steps <= 0:
        return "no beam search yet: call the pipeline with num_beams=4"
    done = f"; {data['done']}" if data.get("done") else "; running"
    return f"call {run}: {steps} steps{done}"


def _draft_caption(data: dict, run) -> str:
    if not data.get("rounds"):
        return "no assisted decoding yet: call the pipeline with assistant_model= or prompt_lookup_num_tokens="
    rate = data["rate"]
    return (
        f"call {run}: {data['accepted']}/{data['drafted']} drafted tokens accepted"
        f"{f' ({rate:.0%})' if rate is not None else ''}; {data['tokens']} tokens in {data['forwards']} "
        "forward passes of the model"
    )


@dataclass(frozen=True)
class Panel:
    name: str
    title: str  # the section title a dashboard shows above it
    hint: str
    module: str  # the ES module next to this file
    wanted: Callable[[list[Event]], bool]  # whether a run's events have anything for it
    build: Callable[[list[Event], str], dict]  # (events, prompt) -> data
    caption: Callable[[dict, int | None], str]  # (data, run) -> caption
    css: str = "strategy_views.css"


PANELS: dict[str, Panel] = {
    panel.name: panel
    for panel in (
        Panel(
            "sampling_tree",
            "Sampling tree",
            "the sequences as a prefix tree, and the distribution at each branch point",
            "sampling_tree.js",
            lambda events: any(
                e.stage == "generation" and ((e.kind == "step" and e.data.get("sequence", 0)) or e.kind == "force")
                for e in events
            ),
            sampling_tree,
            _sampling_caption,
        ),
        Panel(
            "beam_tree",
            "Beam tree",
            "every beam's candidates per step: kept, finished or pruned, and the ranking",
            "beam_tree.js",
            lambda events: _has(events, "beams"),
            beam_tree,
            _beam_caption,
        ),
        Panel(
            "drafts",
            "Drafted vs accepted",
            "assisted decoding: what the draft proposed and what the model kept",
            "drafts.js",
            lambda events: _has(events, "draft"),
            lambda events, prompt: {**draft_rounds(events), "prompt": prompt},
            _draft_caption,
        ),
    )
}
STRATEGY_PANELS = {"samples": "sampling_tree", "beam_search": "beam_tree", "assisted": "drafts"}  # strategy -> panel


def panel_values(name: str, events: list[Event], run: int | None = None) -> dict:
    """A panel's element traits for one run's events: {"data", "caption", "shown"}."""
    panel = PANELS[name]
    data = panel.build(events, prompt_of(events))
    return {"data": data, "caption": panel.caption(data, run), "shown": panel.wanted(events)}


# -- the elements (no state of their own) and the views that follow a trace ------------------------------------
class StrategyElement(ViewWidget):
    """A panel's widget: its ES module (with prelude.js and tree.js, base.module_source) over `data` and `caption`."""

    _css = HERE / "strategy_views.css"
    data = traitlets.Dict().tag(sync=True)
    caption = traitlets.Unicode("").tag(sync=True)
    selected = traitlets.Dict().tag(sync=True)  # {sequence, step} on screen in a dashboard: the tree marks it
    clicked = traitlets.Dict().tag(sync=True)  # {sequence, step, n}: a token a reader clicked (the page writes it)


class SamplingTreeElement(StrategyElement):
    module = PANELS["sampling_tree"].module


class BeamTreeElement(StrategyElement):
    module = PANELS["beam_tree"].module


class DraftsElement(StrategyElement):
    module = PANELS["drafts"].module


ELEMENTS = {"sampling_tree": SamplingTreeElement, "beam_tree": BeamTreeElement, "drafts": DraftsElement}


class RunView(StaticFallback):
    """What the three views share: which trace and run they show, and following it live."""

    panel = ""

    def __init__(self, source, run: int | None = None, follow: bool = False, **kwargs):
        """`run`: the call to show. Without it, the newest call that has something to show (a view made before its
        call waits for it, then draws it live); that call stays on screen unless `follow=True` (then each newer
        call replaces it, as on the dashboard)."""
        super().__init__(**kwargs)
        trace = source if isinstance(source, Trace) else getattr(source, "trace", None)
        if not isinstance(trace, Trace):
            raise TypeError(
                f"{type(self).__name__} needs a pipeline, an explain.Trace or a run from pipe.start(), "
                f"got {type(source).__name__}"
            )
        run = run if run is not None else getattr(source, "run_id", None)
        self.trace, self.run, self.follow = trace, run, follow and run is None
        self.sink = ThrottledSink(lambda events: self.refresh(), interval=0.1)
        self._unsubscribe = trace.subscribe(self.sink)
        self.refresh()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(run {self.run}, {self.caption!r})"

    def _static_html(self) -> str:  # where the view cannot draw (a reopened notebook): its title and caption
        return f"<div class='explain-static'><b>{esc(PANELS[self.panel].title)}</b>: {esc(self.caption)}</div>"

    def refresh(self) -> None:
        """Rebuild `data` from the run's events (the newest run that has something to draw, when following)."""
        if self.follow or self.run is None:
            for run in reversed([r for r in self.trace.runs() if r > 0]):
                if PANELS[self.panel].wanted(self.trace.filter(run=run)):
                    self.run = run
                    break
        events = self.trace.filter(run=self.run) if self.run is not None else []
        values = panel_values(self.panel, events, self.run)
        self.data, self.caption = values["data"], values["caption"]

    def close(self):
        if hasattr(self, "_unsubscribe"):
            self._unsubscribe()
        super().close()


class SamplingTree(RunView, SamplingTreeElement):
    """Sequences of one call as a prefix tree: shared tokens once, a branch point where they differ, with the
    distribution the differing tokens were drawn from. Several samples, or a step-through's forced branches."""

    panel = "sampling_tree"


class BeamTree(RunView, BeamTreeElement):
    """Beam search step by step: every running beam, the candidates that finished (with the length penalty) or
    were pruned, and the final ranking with the returned sequences' paths marked."""

    panel = "beam_tree"


class DraftView(RunView, DraftsElement):
    """Assisted decoding: each round's drafted tokens, the ones the model accepted, the one it put instead and why."""

    panel = "drafts"


VIEWS_BY_PANEL = {"sampling_tree": SamplingTree, "beam_tree": BeamTree, "drafts": DraftView}


def strategy_view(trace: Trace, run: int, strategy: str) -> RunView | None:
    """The view that draws a run of this decoding strategy (None for one sequence: the dashboard shows it)."""
    panel = STRATEGY_PANELS.get(strategy)
    return VIEWS_BY_PANEL[panel](trace, run=run) if panel is not None else None


def dashboard_views(views) -> list:
    """The three panels as View instances of a views registry module (explain/widgets/views.py: View, RUN, STEPS),
    to register with `for view in dashboard_views(views): views.register(view, before="chart")`. Each draws from
    `scene.state.run_events` (the current run's events, kept by DashboardState) and hides itself when the run has
    nothing for it."""
    made = []
    for panel in PANELS.values():

        def draw(self, scene, panel=panel):
            return panel_values(panel.name, scene.state.run_events, scene.state.run)

        def create(self, panel=panel):
            return ELEMENTS[panel.name]()

        cls = type(
            f"{ELEMENTS[panel.name].__name__[: -len('Element')]}View",
            (views.View,),
            {
                "name": panel.name,
                "reads": frozenset({views.RUN, views.STEPS}),
                "module": panel.module,
                "css": panel.css,
                "section": (panel.title, panel.hint),
                "create": create,
                "draw": draw,
                "__doc__": f"{panel.title}: {panel.hint}",
            },
        )
        made.append(cls())
    return made
