"""The dashboard: the stage timeline, the prompt's tokens, the text as it grows, and the step view.

    explain.show(pipe)                   # then call pipe(...): the dashboard fills in while the cell runs
    explain.show(explain.Trace.load(p))  # a saved trace, no model needed

The dashboard subscribes a ThrottledSink to the trace: events are folded into a DashboardState and the views
(views.VIEWS, a registry) are redrawn about ten times a second, each only when what it reads changed. Where there
is no widget front end (nbconvert, a GitHub preview) its text/html representation is a static summary of the
same state, refreshed when each run ends.

A dashboard shows the runs it was made for: `runs=None` follows the pipeline's calls (except the runs a
step-through claimed), a set of run ids shows only those (a step-through's own). Runs are told apart by the run
id every event carries, so nothing another cell does on the same pipeline changes a step-through's display.
"""

from __future__ import annotations

import contextlib
import weakref
from html import escape

import ipywidgets as widgets

from ..trace import Event, Trace
from .base import presentation, presentation_button, set_presentation
from .sink import ThrottledSink
from .state import DashboardState, visible
from .static import StaticFallback, summary_html
from .views import LOADING, RUN, SELECTION, STATUS, STEPS, VIEWS, Scene, shown, traits

CLAIMED: weakref.WeakKeyDictionary[Trace, set[int]] = weakref.WeakKeyDictionary()  # runs a step-through owns
EVERYTHING = frozenset({LOADING, RUN, STEPS, SELECTION, STATUS})


def claim(trace: Trace, run: int) -> None:
    """Mark a call as a step-through's own: other dashboards of the trace leave it out."""
    CLAIMED.setdefault(trace, set()).add(run)


def release(trace: Trace, run: int) -> None:
    CLAIMED.get(trace, set()).discard(run)


def _section(title: str, hint: str = "") -> widgets.HTML:
    hint_html = f" <span class='explain-muted'>{escape(hint)}</span>" if hint else ""
    return widgets.HTML(f"<div class='explain-w explain-caption explain-section'>{escape(title)}{hint_html}</div>")


class Dashboard(StaticFallback, widgets.VBox):
    """Live (or replayed) views of one trace. `source` is a pipeline or an explain.Trace."""

    def __init__(
        self,
        source,
        step_tools: widgets.Widget | None = None,
        interval: float = 0.1,
        runs: set[int] | None = None,
        **kwargs,
    ):
        trace = source if isinstance(source, Trace) else getattr(source, "trace", None)
        if not isinstance(trace, Trace):
            raise TypeError(
                f"explain.show needs a pipeline from explain.pipeline(...) or an explain.Trace, got "
                f"{type(source).__name__}; for a saved trace use explain.Trace.load(path)"
            )
        self.trace, self.runs = trace, runs  # runs: only these calls are shown (the step-through's own)
        self.state = DashboardState()
        self.views = list(VIEWS)
        self.parts = {view.name: view.create() for view in self.views}
        self.run_picker = widgets.Dropdown(description="call", layout=widgets.Layout(width="140px", display="none"))
        self.branch_picker = widgets.ToggleButtons(
            options=[("original", 0)], value=0, style={"button_width": "auto"}, layout=widgets.Layout(display="none")
        )
        self.branch_picker.add_class("explain-branch-picker")
        self.sequence_picker = widgets.ToggleButtons(
            options=[("#0", 0)],
            value=0,
            style={"button_width": "auto"},
            tooltip="the sequence the text, the step view and the trees show",
            layout=widgets.Layout(display="none"),
        )
        self.sequence_picker.add_class("explain-sequence-picker")
        self.forkable = False  # a step-through sets it: a click on another token's bar in the step chart forces it
        self.on_fork = None  # the step-through's force(step, token_id)
        self.present_button = widgets.ToggleButton(
            value=presentation(),
            description="presentation",
            icon="television",
            tooltip="presentation mode: every view legible on a projector (explain.presentation(True))",
            layout=widgets.Layout(width="auto", align_self="flex-start"),
        )
        self.present_button.add_class("explain-present-button")
        self.present_button.observe(lambda change: set_presentation(bool(change["new"])), "value")
        presentation_button(self.present_button)
        self.step_tools = step_tools if step_tools is not None else widgets.Box(layout=widgets.Layout(display="none"))
        super().__init__(children=self._layout(), **kwargs)
        self.add_class("explain-dashboard")
        self._shown_key = None  # (run, branch) the text view shows
        self.what_if: dict | None = None
        self.paused = False  # a step-through sets it between clicks
        self.detached = None
        self._quiet = False  # True while the pickers are set from code, so their observers stay still
        self.sink = ThrottledSink(self._on_events, interval=interval)
        for event in trace.events:
            if self._wanted(event):
                self.state.apply(event)
        self._render(EVERYTHING)
        self._unsubscribe = trace.subscribe(self.sink)
        self.text.observe(self._on_select, "selected")
        self.branch_picker.observe(self._on_branch, "value")
        self.sequence_picker.observe(self._on_sequence, "value")
        self.run_picker.observe(self._on_run, "value")
        self.chart.observe(self._on_chart_click, "clicked")
        for name in ("sampling_tree", "beam_tree"):
            if name in self.parts:
                self.parts[name].observe(self._on_tree_click, "clicked")

    def _layout(self) -> list[widgets.Widget]:
        """The views in registry order, each under its section title; the pickers and tools where they belong."""
        children = []
        self.sections = {}  # view name -> its section title (hidden with the view)
        for view in self.views:
            if view.section:
                title = self.sections[view.name] = _section(*view.section)
                children.append(
                    widgets.HBox(
                        [title, self.run_picker],
                        layout=widgets.Layout(justify_content="space-between", flex_flow="row wrap"),
                    )
                    if view.name == "text"
                    else title
                )
            children.append(self.parts[view.name])
            if view.name == "header":
                children.append(self.present_button)
            if view.name == "text":
                children.append(self.branch_picker)
            if view.name == "header":
                children.append(self.sequence_picker)
            if view.name == "caption":
                children.append(self.step_tools)
        return children

    # the parts by name, as the step-through and the tests use them
    header = property(lambda self: self.parts["header"])
    timeline = property(lambda self: self.parts["timeline"])
    prompt = property(lambda self: self.parts["prompt"])
    text = property(lambda self: self.parts["text"])
    branches = property(lambda self: self.parts["branches"])
    step_caption = property(lambda self: self.parts["caption"])
    chart = property(lambda self: self.parts["chart"])
    inside = property(lambda self: self.parts["inside"])

    def __repr__(self) -> str:
        steps = len(self.state.steps())
        return (
            f"explain.Dashboard(call {self.state.run}, {steps} steps"
            f"{', detached' if self.detached else ''}; {len(self.trace)} trace events)"
        )

    # -- events in -------------------------------------------------------------------------------------
    def _wanted(self, event: Event) -> bool:
        if event.run == 0:
            return True
        if self.runs is not None:
            return event.run in self.runs
        return event.run not in CLAIMED.get(self.trace, ())

    def follow(self, run: int) -> None:
        """Show this run (a step-through's new run): claimed, so that other dashboards leave it out."""
        if self.runs is None:
            self.runs = set()
        self.runs.add(run)
        claim(self.trace, run)

    def _on_events(self, events: list[Event]) -> None:
        changes = set()
        final = False
        for event in events:
            if not self._wanted(event):
                continue
            if event.run and self.state.run is not None and event.run < self.state.run:
                continue  # an older run, stepped again after a newer one: it stays in the call picker
            if event.run == 0:
                changes.add(LOADING)
            else:
                changes |= {STEPS, STATUS}
                if event.run != self.state.run or event.kind in ("encode", "settings", "force"):
                    changes.add(RUN)
                final = final or event.stage == "decoding"
            self.state.apply(event)
        if changes:
            self._render(changes)
        if final:
            self._refresh_displays()

    def flush(self) -> None:
        """Draw what has arrived now (the step-through calls this after each button)."""
        self.sink.flush()
        self._render({STATUS})

    def set_paused(self, paused: bool) -> None:
        if paused != self.paused:
            self.paused = paused
            self._render({STATUS, STEPS})

    def detach(self, reason: str = "detached") -> None:
        """Stop following the trace (the views keep what they show)."""
        self._unsubscribe()
        self.detached = reason
        self._render({STATUS})

    def close(self):
        if not hasattr(self, "_unsubscribe"):  # __init__ refused its source: nothing was built or subscribed
            return
        self._unsubscribe()
        for child in list(self.parts.values()) + [self.run_picker, self.branch_picker, self.sequence_picker]:
            child.close()
        super().close()

    # -- drawing ---------------------------------------------------------------------------------------
    def scene(self) -> Scene:
        selected = self.text.selected
        return Scene(
            self.state,
            selected=selected if selected >= 0 else None,
            what_if=self.what_if,
            paused=self.paused,
            detached=self.detached,
            meta=self.trace.meta,
            forkable=self.forkable,
        )

    def _render(self, changes) -> None:
        state = self.state
        key = (state.run, state.branch, state.sequence)
        if key != self._shown_key:  # another run, branch or sequence: the selection and what-if were about the old one
            self._shown_key = key
            self.what_if = None
            self.text.selected = -1  # (its observer redraws the step view; harmless here)
            changes = set(changes) | {RUN, STEPS, SELECTION}
        scene = self.scene()
        with contextlib.ExitStack() as stack:
            for view in self.views:
                if not view.reads & changes:
                    continue
                part = self.parts[view.name]
                values = view.draw(scene)
                stack.enter_context(part.hold_sync())
                for name, value in traits(values).items():
                    if getattr(part, name) != value:
                        setattr(part, name, value)
                # a view takes no room when it has nothing to say; its section title goes with it when it says so
                section = self.sections.get(view.name)
                for widget, display in ((part, shown(view, values)), (section, values.get("shown", True))):
                    display = "" if display else "none"
                    if widget is not None and widget.layout.display != display:
                        widget.layout.display = display
        if RUN in changes or STEPS in changes:
            self._render_pickers()
        if changes & {RUN, STEPS, SELECTION}:
            self._mark_trees()

    def _mark_trees(self) -> None:
        """Tell the trees which sequence and step are on screen, so they mark it."""
        step = self.scene().step_index
        marked = {"sequence": self.state.sequence, "branch": self.state.branch, "step": -1 if step is None else step}
        for name in ("sampling_tree", "beam_tree"):
            part = self.parts.get(name)
            if part is not None and part.selected != marked:
                part.selected = marked

    def _render_pickers(self) -> None:
        self._quiet = True
        try:
            self._set_pickers()
        finally:
            self._quiet = False

    def _set_pickers(self) -> None:
        state = self.state
        branches = sorted(b for b in state.branches if b in state.forks)
        options = [("original", 0)] + [
            (
                f"branch {b}: forced \u201c{visible(str(state.forks[b].get('token', '')))}"
                f"\u201d at step {state.forks[b].get('step')}",
                b,
            )
            for b in branches
        ]
        if [o[1] for o in options] != [o[1] for o in self.branch_picker.options]:
            self.branch_picker.options = options
        if self.branch_picker.value != state.branch and state.branch in [v for _, v in options]:
            self.branch_picker.value = state.branch
        self.branch_picker.layout.display = "flex" if len(options) > 1 else "none"
        runs = list(dict.fromkeys(e.run for e in self.trace.events if e.run > 0 and self._wanted(e)))
        if runs != list(self.run_picker.options):
            self.run_picker.options = runs
        if state.run in runs and self.run_picker.value != state.run:
            self.run_picker.value = state.run
        self.run_picker.layout.display = "flex" if len(runs) > 1 else "none"
        numbers = sorted(state.sequences)
        sequences = [(state.sequence_label(n), n) for n in numbers]
        if sequences != list(self.sequence_picker.options):
            self.sequence_picker.options = sequences or [("#0", 0)]
        if state.sequence in numbers and self.sequence_picker.value != state.sequence:
            self.sequence_picker.value = state.sequence
        self.sequence_picker.layout.display = "flex" if len(numbers) > 1 else "none"

    # -- interaction -----------------------------------------------------------------------------------
    def selected_step(self) -> int | None:
        return self.scene().step_index

    def select(self, step: int) -> None:
        self.text.selected = step

    def show_what_if(self, result: dict | None) -> None:
        self.what_if = result
        self._render({SELECTION})

    def _on_select(self, change) -> None:
        self._render({SELECTION})

    def _on_branch(self, change) -> None:
        branch = change["new"]
        if not self._quiet and branch is not None and branch in self.state.branches and branch != self.state.branch:
            self.state.branch = change["new"]
            self._render(EVERYTHING)

    def _on_run(self, change) -> None:
        if not self._quiet and change["new"] is not None and change["new"] != self.state.run:
            self.state = DashboardState.from_trace(self.trace, run=change["new"])
            self._render(EVERYTHING)

    def _on_sequence(self, change) -> None:
        if not self._quiet and change["new"] is not None and change["new"] != self.state.sequence:
            self.show_sequence(change["new"])

    def show_sequence(self, sequence: int, step: int | None = None) -> None:
        """Show sequence `sequence` of the run (a sample, a batch row, a returned beam), at `step` if given."""
        if self.state.pick_sequence(sequence):
            self._render(EVERYTHING)
            if step is not None:
                self.select(step)

    def _on_tree_click(self, change) -> None:
        """A token clicked in a tree: that step of that sequence (or forced branch) on screen."""
        clicked = change["new"] or {}
        step, sequence, branch = clicked.get("step"), clicked.get("sequence"), clicked.get("branch")
        if not isinstance(step, int):
            return
        if isinstance(branch, int) and branch in self.state.branches:
            if branch != self.state.branch:
                self.state.branch = branch
                self._render(EVERYTHING)
            self.select(step)
        elif isinstance(sequence, int):
            if sequence != self.state.sequence:
                self.show_sequence(sequence, step)
            else:
                self.select(step)

    def _on_chart_click(self, change) -> None:
        """A bar clicked in the step chart of a step-through: force that token at that step (a new branch)."""
        clicked = change["new"] or {}
        if self.forkable and self.on_fork is not None and isinstance(clicked.get("token_id"), int):
            self.on_fork(clicked.get("step"), clicked["token_id"])

    # -- static HTML -----------------------------------------------------------------------------------
    def _static_html(self) -> str:
        return summary_html(self.state)
