"""The dashboard: the stage timeline, the prompt's tokens, the text as it grows, and the step view.

    explain.show(pipe)                   # then call pipe(...): the dashboard fills in while the cell runs
    explain.show(explain.Trace.load(p))  # a saved trace, no model needed

The dashboard subscribes a ThrottledSink to the trace: events are folded into a DashboardState and the views
are redrawn about ten times a second. Where there is no widget front end (nbconvert, a GitHub preview) its
text/html representation is a static summary of the same state, refreshed when each run ends.
"""

from __future__ import annotations

import time
import weakref
from html import escape

import ipywidgets as widgets

from ..events import LOADING_STAGES
from ..trace import Event, Trace
from ..units import size_text
from .sink import ThrottledSink
from .code_link import code_html
from .state import DashboardState, visible
from .static import summary_html
from .step_figure import StepFigure
from .strategy_views import strategy_view
from .views import GeneratedText, StageTimeline, TokenChips

FIGURE_BUDGET = 0.02  # the step figure may use at most ~2% of the run's time; it redraws less often if costly
CLAIMED: "weakref.WeakKeyDictionary[Trace, set[int]]" = weakref.WeakKeyDictionary()  # runs a step-through owns


def claim(trace: Trace, run: int) -> None:
    """Mark a call as a step-through's own: other dashboards of the trace leave it out."""
    CLAIMED.setdefault(trace, set()).add(run)


class StaticFallback:
    """A widget whose display also carries a static text/html summary, refreshed through its display id."""

    def _static_html(self) -> str:
        raise NotImplementedError

    def _repr_mimebundle_(self, include=None, exclude=None, **kwargs):
        bundle = {"text/plain": repr(self), "text/html": self._static_html()}
        if getattr(self, "_view_name", None) is not None:
            bundle["application/vnd.jupyter.widget-view+json"] = {
                "version_major": 2, "version_minor": 0, "model_id": self.model_id}
        return bundle

    def _ipython_display_(self, **kwargs):
        from IPython.display import display
        handle = display(self._repr_mimebundle_(), raw=True, display_id=True)
        self._display_handles = [h for h in getattr(self, "_display_handles", []) if h is not None] + [handle]

    def _refresh_displays(self) -> None:
        """Re-send the bundle to every place this widget was displayed, so the static HTML is up to date."""
        handles = [h for h in getattr(self, "_display_handles", []) if h is not None]
        if handles:
            bundle = self._repr_mimebundle_()
            for handle in handles:
                handle.update(bundle, raw=True)


def _section(title: str, hint: str = "") -> widgets.HTML:
    hint_html = f" <span class='explain-muted'>{escape(hint)}</span>" if hint else ""
    return widgets.HTML(f"<div class='explain-w explain-caption' style='margin-top: 6px'>{escape(title)}"
                        f"{hint_html}</div>")


class Dashboard(StaticFallback, widgets.VBox):
    """Live (or replayed) views of one trace. `source` is a pipeline or an explain.Trace."""

    def __init__(self, source, step_tools: widgets.Widget | None = None, interval: float = 0.1,
                 runs: set[int] | None = None, **kwargs):
        trace = source if isinstance(source, Trace) else getattr(source, "trace", None)
        if not isinstance(trace, Trace):
            raise TypeError(f"explain.show needs a pipeline from explain.pipeline(...) or an explain.Trace, got "
                            f"{type(source).__name__}; for a saved trace use explain.Trace.load(path)")
        self.trace, self.runs = trace, runs  # runs: only these calls are shown (the step-through's own)
        self.state = DashboardState()
        self.header = widgets.HTML()
        self.timeline = StageTimeline()
        self.prompt = TokenChips()
        self.text = GeneratedText()
        self.run_picker = widgets.Dropdown(description="call", layout=widgets.Layout(width="140px",
                                                                                     display="none"))
        self.branch_picker = widgets.ToggleButtons(options=[("original", 0)], value=0, style={"button_width": "auto"},
                                                   layout=widgets.Layout(display="none"))
        self.branches = widgets.HTML(layout=widgets.Layout(display="none"))
        self.strategy = widgets.VBox(layout=widgets.Layout(display="none"))  # the decoding strategy's own view
        self._strategy_settings = None
        self.step_caption = widgets.HTML()
        self.figure = StepFigure()
        self.step_tools = step_tools if step_tools is not None else widgets.Box(layout=widgets.Layout(display="none"))
        super().__init__(children=[
            self.header, self.timeline,
            _section("Tokenization", "the prompt as the model reads it: one chip per token, with its id"),
            self.prompt,
            widgets.HBox([_section("Generation", "each token shaded by the probability it was picked with"),
                          self.run_picker], layout=widgets.Layout(justify_content="space-between")),
            self.text, self.branch_picker, self.branches, self.strategy,
            _section("Step view", "what the model proposed at one step, and how each logits processor changed it"),
            self.step_caption, self.step_tools, self.figure.widget], **kwargs)
        self.add_class("explain-dashboard")
        self._shown_key = None  # (run, branch) the text view shows
        self._prompt_event = None
        self._figure_time, self._figure_cost = -float("inf"), 0.0
        self.what_if: dict | None = None
        self.detached = None
        self._quiet = False  # True while the pickers are set from code, so their observers stay still
        self.sink = ThrottledSink(self._on_events, interval=interval)
        for event in trace.events:
            if self._wanted(event):
                self.state.apply(event)
        self._render(final=True)
        self._unsubscribe = trace.subscribe(self.sink)
        self.text.observe(self._on_select, "selected")
        self.branch_picker.observe(self._on_branch, "value")
        self.run_picker.observe(self._on_run, "value")

    def __repr__(self) -> str:
        steps = len(self.state.steps())
        return (f"explain.Dashboard(call {self.state.run}, {steps} steps"
                f"{', detached' if self.detached else ''}; {len(self.trace)} trace events)")

    # -- events in -------------------------------------------------------------------------------------
    def _wanted(self, event: Event) -> bool:
        if event.run == 0:
            return True
        if self.runs is not None:
            return event.run in self.runs
        return event.run not in CLAIMED.get(self.trace, ())

    def _on_events(self, events: list[Event]) -> None:
        final = False
        for event in events:
            if self._wanted(event):
                self.state.apply(event)
                final = final or event.stage == "decoding"
        self._render(final=final)
        if final:
            self._refresh_displays()

    def flush(self) -> None:
        """Draw what has arrived now, figure included (the step-through calls this after each button)."""
        self.sink.flush()
        self._render(final=True)

    def detach(self, reason: str = "detached") -> None:
        """Stop following the trace (the views keep what they show)."""
        self._unsubscribe()
        self.detached = reason
        self._render_header()

    def close(self):
        if not hasattr(self, "_unsubscribe"):  # __init__ refused its source: nothing was built or subscribed
            return
        self._unsubscribe()
        for child in (self.header, self.timeline, self.prompt, self.text, self.run_picker, self.branch_picker,
                      self.branches, *self.strategy.children, self.strategy, self.step_caption, self.figure.widget):
            child.close()
        super().close()

    # -- drawing ---------------------------------------------------------------------------------------
    def _render(self, final: bool = False) -> None:
        state = self.state
        with self.hold_sync():
            self._render_header()
            rows = state.stage_rows()
            for row in rows:
                row["group"] = "loading (once per pipeline)" if row["stage"] in LOADING_STAGES else \
                    f"call {state.run}" if state.run else "each call"
            self.timeline.rows = rows
            if state.encode is not self._prompt_event:
                self._prompt_event = state.encode
                self.prompt.tokens = state.prompt_tokens()
                self.prompt.caption = state.prompt_caption()
            moved = self._render_text()
            self._render_strategy()
        now = time.perf_counter()
        if final or moved or now - self._figure_time >= max(self.sink.interval, self._figure_cost / FIGURE_BUDGET):
            self._render_step()
            self._figure_time = time.perf_counter()
            self._figure_cost = self._figure_time - now

    def _render_header(self) -> None:
        state = self.state
        model = state.model_name() or self.trace.meta.get("model") or "no model loaded (replay)"
        steps = state.steps()
        if state.run is None:
            status = "loaded; call the pipeline to see it work" if state.model_name() else "waiting for events"
        elif state.finished:
            status = f"done: {len(steps)} tokens, stopped by {state.stop_reason}"
        else:
            status = f"generating: {len(steps)}/{state.max_new_tokens} tokens"
        color = "#2da44e" if state.finished else "#bf8700" if state.run else "#57606a"
        detached = f" <span class='explain-muted'>({escape(self.detached)})</span>" if self.detached else ""
        call = f"call {state.run} \u00b7 " if state.run else ""
        self.header.value = (
            f"<div class='explain-w' style='display: flex; gap: 10px; align-items: baseline; flex-wrap: wrap'>"
            f"<span style='font-size: 16px; font-weight: 700'>explain</span>"
            f"<span>{escape(model)}</span>{code_html(self.trace.meta)}"
            f"<span class='explain-status' data-steps='{len(steps)}' style='color: {color}; font-weight: 600'>"
            f"{escape(call)}{escape(status)}</span>"
            f"{detached}</div>")

    def _render_text(self) -> bool:
        """Update the text view; True when it switched to another run or branch."""
        state = self.state
        key = (state.run, state.branch)
        tokens = state.generated_tokens()
        moved = key != self._shown_key
        if moved:
            self._shown_key = key
            self.what_if = None
            self.text.key = f"{state.run}:{state.branch}"
            self.text.selected = -1
            encode = state.encode.data if state.encode is not None else {}
            self.text.prefix = encode.get("text", "") if encode.get("kind_of_input") == "text" else ""
            self._render_pickers()
        elif len(state.branches) != len(self.branch_picker.options):
            self._render_pickers()
        if len(tokens) != len(self.text.tokens):
            self.text.tokens = tokens
        running = state.settings is not None and not state.finished
        rate = ""
        decode = [s["forward_time"] for s in state.steps()[-20:] if s.get("forward") == "decode"]
        if decode and sum(decode) > 0:
            rate = f" \u00b7 {len(decode) / sum(decode):.1f} tokens/s"
        if state.settings is None:
            self.text.status = "tokens of the next call appear here as they are generated"
        elif state.finished:
            self.text.status = f"tokens \u00b7 done, stopped by {state.stop_reason}{rate}"
        else:
            self.text.status = f"/ {state.max_new_tokens} tokens \u00b7 generating\u2026{rate}"
        self.text.running = running
        return moved

    def _render_strategy(self) -> None:
        """Several samples, beam search or assisted decoding: their view (a sampling tree, a beam tree, drafts)."""
        settings = self.state.settings
        if settings is self._strategy_settings:
            return
        self._strategy_settings = settings
        for view in self.strategy.children:
            view.close()
        name = settings.data.get("strategy", {}).get("name") if settings is not None else None
        view = strategy_view(self.trace, self.state.run, name) if name else None
        self.strategy.children = [view] if view is not None else []
        self.strategy.layout.display = "flex" if view is not None else "none"

    def _render_pickers(self) -> None:
        self._quiet = True
        try:
            self._set_pickers()
        finally:
            self._quiet = False

    def _set_pickers(self) -> None:
        state = self.state
        branches = sorted(state.branches)
        options = [("original", 0)] + [(f"branch {b}: forced {visible(state.forks[b]['token'])} at step "
                                        f"{state.forks[b]['step']}", b) for b in branches if b in state.forks]
        if [o[1] for o in options] != [o[1] for o in self.branch_picker.options]:
            self.branch_picker.options = options
        if self.branch_picker.value != state.branch and state.branch in dict((v, k) for k, v in options):
            self.branch_picker.value = state.branch
        many = len(options) > 1
        self.branch_picker.layout.display = "flex" if many else "none"
        self.branches.layout.display = "block" if many else "none"
        if many:
            self.branches.value = self._branches_html(options)
        runs = [r for r in dict.fromkeys(e.run for e in self.trace.events if e.run > 0 and self._wanted(e))]
        if runs != list(self.run_picker.options):
            self.run_picker.options = runs
        if state.run in runs and self.run_picker.value != state.run:
            self.run_picker.value = state.run
        self.run_picker.layout.display = "flex" if len(runs) > 1 else "none"

    def _branches_html(self, options) -> str:
        lines = ["<div class='explain-w' style='font-size: 13px'>"]
        for name, branch in options:
            steps = self.state.steps(branch)
            fork = self.state.forks.get(branch, {}).get("step")
            pieces = []
            for i, s in enumerate(steps):
                piece = escape(s.get("token", ""))
                if i == fork:
                    piece = f"<b style='color: #bc4c00; text-decoration: underline wavy'>{piece}</b>"
                pieces.append(piece)
            lines.append(f"<div style='margin: 2px 0'><span class='explain-muted'>{escape(name)}:</span> "
                         f"<span style='white-space: pre-wrap'>{''.join(pieces)}</span></div>")
        return "".join(lines) + "</div>"

    def _render_step(self) -> None:
        steps = self.state.steps()
        selected = self.text.selected if 0 <= self.text.selected < len(steps) else len(steps) - 1
        step = steps[selected] if steps else None
        what_if = self.what_if if self.what_if and step and self.what_if.get("step") == selected else None
        self.figure.show_step(step, what_if)
        self.figure.show_curves(steps, selected if steps else None)
        self.step_caption.value = self._caption(step)

    def _caption(self, step: dict | None) -> str:
        if step is None:
            return ("<div class='explain-w explain-muted'>No step yet. Each step runs the model once, turns its "
                    "logits into probabilities and picks one token.</div>")
        texts = step.get("token_texts", {})
        chosen = f"<code>{escape(visible(step.get('token', '')))}</code> (id {step.get('token_id')})"
        parts = [f"<b>Step {step.get('step')}</b> at position {step.get('position')}: "]
        if step.get("forced"):
            original = escape(visible(texts.get(str(step.get("token_id")), step.get("token", ""))))
            parts.append(f"forced {chosen} by hand <span class='explain-muted'>({original})</span>")
        else:
            how = "sampled" if step.get("method") == "sample" else "picked the most likely token"
            prob = step.get("prob")
            parts.append(f"{how}: {chosen} with p = {prob:.3f}" if prob is not None else f"{how}: {chosen}")
            if step.get("raw_prob") is not None and step.get("processors"):
                parts.append(f" (the model alone gave it {step['raw_prob']:.3f})")
            parts.append(f", rank {step.get('rank')} of the model's logits")
        kv = step.get("kv_cache") or {}
        parts.append(f"<br><span class='explain-muted'>entropy {step.get('entropy_bits', 0):.2f} bits \u00b7 "
                     f"{step.get('forward', 'forward')} pass {1000 * (step.get('forward_time') or 0):.0f} ms \u00b7 "
                     f"KV cache {kv.get('length', '?')} positions ({size_text(kv.get('bytes'))})")
        if step.get("stop_reason"):
            parts.append(f" \u00b7 generation stopped here: {escape(str(step['stop_reason']))}")
        for warning in step.get("warnings") or []:  # the context window passed (or reached) at this step
            parts.append(f"<br>\u26a0 {escape(str(warning))}")
        parts.append("</span>")
        return f"<div class='explain-w'>{''.join(parts)}</div>"

    # -- interaction -----------------------------------------------------------------------------------
    def selected_step(self) -> int | None:
        steps = self.state.steps()
        if not steps:
            return None
        return self.text.selected if 0 <= self.text.selected < len(steps) else len(steps) - 1

    def select(self, step: int) -> None:
        self.text.selected = step

    def show_what_if(self, result: dict | None) -> None:
        self.what_if = result
        self._render_step()

    def _on_select(self, change) -> None:
        self._render_step()

    def _on_branch(self, change) -> None:
        if not self._quiet and change["new"] is not None and change["new"] in self.state.branches and change["new"] != self.state.branch:
            self.state.branch = change["new"]
            self._render(final=True)

    def _on_run(self, change) -> None:
        if not self._quiet and change["new"] is not None and change["new"] != self.state.run:
            self.state = DashboardState.from_trace(self.trace, run=change["new"])
            self._render(final=True)

    # -- static HTML -----------------------------------------------------------------------------------
    def _static_html(self) -> str:
        return summary_html(self.state)
