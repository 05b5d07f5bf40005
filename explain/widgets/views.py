"""The dashboard's views, and the registry that lists them.

A view is one part of the dashboard: a widget (an anywidget ES module, or a block of HTML) and a `draw(scene)`
that turns the scene (the DashboardState plus what the user picked: the step, a what-if) into the widget's
values. A view also says which parts of the scene it `reads`, so the live dashboard redraws only the views whose
inputs changed. The live dashboard and the exported page (export.py) both loop over `VIEWS`: the same draw
functions give the widget traits in the notebook and the data of the standalone page, and the same ES modules
draw them.

Adding a view: a View subclass (and, for a drawn one, its ES module next to this file), then `register(MyView())`.

The ES modules write text through textContent, never innerHTML; the HTML views build their markup here, with
every value from the trace passed through safe.esc / safe.fmt (a trace is a file people share).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import ipywidgets as widgets

from ..events import LOADING_STAGES
from ..utils.units import size_text
from .code_link import code_html
from .elements import GeneratedText, InsideElement, StageTimeline, StepChart, TokenChips
from .safe import esc, fmt, integer, number, text
from .state import DashboardState, visible
from .step_chart import chart_curves, chart_step

# what a view may read; the dashboard says which of these changed when it redraws
LOADING, RUN, STEPS, SELECTION, STATUS = "loading", "run", "steps", "selection", "status"

STOP_REASONS = {
    "eos": "the model produced its end-of-sequence token",
    "max_length": "the token limit (max_new_tokens / max_length) was reached",
    "context_window": "the model's context window is full",
    "stop_string": "a stop string appeared in the text",
    "interrupted": "interrupted (Kernel > Interrupt or Ctrl-C)",
}


def stop_text(reason) -> str:
    """Why a run stopped, in words."""
    return STOP_REASONS.get(reason, f"stopped: {text(reason)}") if reason else ""


def strategy_note(state: DashboardState) -> str:
    """What a reader would not expect of the run's strategy, said where they look (the header and the text):
    num_beams with sampling switched on (by the pipeline's or the model's defaults) is beam *sampling*."""
    if state.settings is None:
        return ""
    data = state.settings.data
    settings, sources = data.get("settings") or {}, data.get("sources") or {}
    if (settings.get("num_beams") or 1) > 1 and settings.get("do_sample"):
        source = text(sources.get("do_sample"), "the call")
        return (
            f"beam sampling, not beam search: do_sample=True comes from {source}; each beam's next tokens are "
            "drawn at random. Pass do_sample=False for deterministic beam search."
        )
    return ""


def key_of(state: DashboardState) -> str:
    """What the text and the chart show: run, branch and sequence. A new key is redrawn at once and whole."""
    return f"{state.run}:{state.branch}:{state.sequence}"


@dataclass
class Scene:
    """What the views draw: the folded trace and what the user picked."""

    state: DashboardState
    selected: int | None = None  # the step on screen; None follows the newest
    what_if: dict | None = None  # a what-if result for the selected step
    paused: bool = False  # a step-through between two clicks (not generating)
    detached: str | None = None  # why this dashboard stopped following its trace
    meta: dict = field(default_factory=dict)  # the trace's meta: the backend and the model code that ran
    forkable: bool = False  # a step-through: a click on another token's bar forces it

    @property
    def step_index(self) -> int | None:
        steps = self.state.steps()
        if not steps:
            return None
        return self.selected if self.selected is not None and 0 <= self.selected < len(steps) else len(steps) - 1

    @property
    def step(self) -> dict | None:
        index = self.step_index
        return None if index is None else self.state.steps()[index]


# -- the registry -----------------------------------------------------------------------------------------------
class View:
    """One part of the dashboard. `module` views are anywidgets; `html` views are a block of markup."""

    name = ""
    reads: frozenset = frozenset()
    section: tuple[str, str] | None = None  # (title, hint) shown above the view
    module: str | None = None  # the ES module (file name next to this one) that draws it; None: an HTML view
    css: str | None = None  # a style sheet of its own (file name next to this one), beside widgets.css

    def create(self) -> widgets.Widget:
        return widgets.HTML()

    def draw(self, scene: Scene) -> dict:
        """The widget's values for this scene (for an HTML view: {"value": markup}). An optional "shown": False
        hides the view and its section title; an HTML view with empty markup is hidden (not its section title)."""
        raise NotImplementedError


def shown(view: View, values: dict) -> bool:
    """Whether a view's drawn values are to be shown (see View.draw)."""
    return bool(values.get("shown", True) and (view.module is not None or values.get("value")))


def traits(values: dict) -> dict:
    """A view's drawn values without "shown": what its widget's traits get."""
    return {k: v for k, v in values.items() if k != "shown"}


VIEWS: list[View] = []


def register(view: View, before: str | None = None) -> View:
    """Add a view to the dashboard (at the end, or before the view named `before`)."""
    if any(v.name == view.name for v in VIEWS):
        raise ValueError(f"a view named {view.name!r} is registered already")
    names = [v.name for v in VIEWS]
    VIEWS.insert(names.index(before) if before in names else len(VIEWS), view)
    return view


class HeaderView(View):
    name, reads = "header", frozenset({LOADING, RUN, STEPS, STATUS})

    def draw(self, scene: Scene) -> dict:
        state = scene.state
        model = state.model_name() or text(scene.meta.get("model")) or "no model loaded (replay)"
        steps = state.steps()
        total = state.max_new_tokens
        color = "var(--jp-ui-font-color2, #59636e)"
        if state.run is None:
            status = "loaded; call the pipeline to see it work" if state.model_name() else "waiting for events"
        elif state.finished:
            reason = state.stop_reason
            if reason == "interrupted":
                status = f"interrupted at step {len(steps)}: {len(steps)} tokens kept"
                color = "#bf8700"
            else:
                status = f"done: {len(steps)} tokens \u00b7 {stop_text(reason)}"
                color = "#2da44e"
        elif scene.paused and not steps:
            status = f"ready: press Next token to generate the first of {total} tokens"
        elif scene.paused:
            status = f"paused at {len(steps)}/{total} tokens"
        else:
            status = f"generating: {len(steps)}/{total} tokens"
            color = "#bf8700"
        detached = f" <span class='explain-muted'>({esc(scene.detached)})</span>" if scene.detached else ""
        call = f"call {fmt(state.run)} \u00b7 " if state.run else ""
        if state.several:
            call += f"{esc(state.sequence_label(state.sequence))} of {len(state.sequences)} \u00b7 "
        note = strategy_note(state)
        if note:
            detached += f"<div class='explain-note explain-strategy-note'>\u26a0 {esc(note)}</div>"
        return {
            "value": (
                f"<div class='explain-w explain-header'>"
                f"<span style='font-size: calc(16px * var(--explain-scale, 1)); font-weight: 700'>explain</span>"
                f"<span>{esc(model)}</span>{code_html(scene.meta)}"
                f"<span class='explain-status' data-steps='{len(steps)}' style='color: {color}; font-weight: 600'>"
                f"{call}{esc(status)}</span>{detached}</div>"
            )
        }


class TimelineView(View):
    name, reads, module = "timeline", frozenset({LOADING, RUN, STEPS, STATUS}), "timeline.js"

    def create(self) -> widgets.Widget:
        return StageTimeline()

    def draw(self, scene: Scene) -> dict:
        state = scene.state
        rows = state.stage_rows()
        group = f"call {state.run}" if state.run else "each call"
        for row in rows:
            row["group"] = "loading (once per pipeline)" if row["stage"] in LOADING_STAGES else group
            row["facts"] = [text(f) for f in row["facts"]]
            if row["stage"] == "generation" and state.stop_reason == "interrupted":
                row["facts"] = [f for f in row["facts"] if not f.startswith("stopped")] + [
                    f"interrupted at step {len(state.steps())}"
                ]
        return {"rows": rows}


class PromptView(View):
    name, reads, module = "prompt", frozenset({RUN}), "tokens.js"
    section = ("Tokenization", "the prompt as the model reads it: one chip per token, with its id")

    def create(self) -> widgets.Widget:
        return TokenChips()

    def draw(self, scene: Scene) -> dict:
        state = scene.state
        if state.encode is None:
            return {"tokens": [], "caption": "no call yet"}
        tokens = [
            [text(t), integer(i), integer(s), integer(e), bool(sp), text(r) if r else None]
            for t, i, s, e, sp, r in state.prompt_tokens()
        ]
        return {"tokens": tokens, "caption": text(state.prompt_caption())}  # the encode event's own description


class TextView(View):
    name, reads, module = "text", frozenset({RUN, STEPS, STATUS}), "text.js"
    section = ("Generation", "each token shaded by the probability it was picked with")

    def create(self) -> widgets.Widget:
        return GeneratedText()

    def draw(self, scene: Scene) -> dict:
        state = scene.state
        steps = state.steps()
        encode = state.encode.data if state.encode is not None else {}
        tokens = [[text(t), number(p), bool(f)] for t, p, f in state.generated_tokens()]
        decode = [number(s.get("forward_time")) for s in steps[-20:] if s.get("forward") == "decode"]
        decode = [d for d in decode if d is not None]
        rate = f" \u00b7 {len(decode) / sum(decode):.1f} tokens/s" if decode and sum(decode) > 0 else ""
        total = text(state.max_new_tokens, "?")
        if state.settings is None:
            status = "tokens of the next call appear here as they are generated"
        elif state.finished:
            status = (
                f"tokens \u00b7 interrupted at step {len(steps)}{rate}"
                if state.stop_reason == "interrupted"
                else f"tokens \u00b7 done: {stop_text(state.stop_reason)}{rate}"
            )
        elif scene.paused:
            status = f"/ {total} tokens \u00b7 paused: Next token adds one"
        else:
            status = f"/ {total} tokens \u00b7 generating\u2026{rate}"
        if state.beams and state.ranking is None and steps:
            status += " \u00b7 the best running beam so far"
        note = strategy_note(state)
        if note:
            status += f" \u00b7 {note}"
        return {
            "tokens": tokens,
            "key": key_of(state),
            "status": status,
            "prefix": text(encode.get("text")) if encode.get("kind_of_input") == "text" else "",
            "running": state.settings is not None and not state.finished and not scene.paused,
        }


class BranchesView(View):
    """The forced branches beside the original, each token of the fork underlined (shown when there are any)."""

    name, reads = "branches", frozenset({RUN, STEPS})

    def draw(self, scene: Scene) -> dict:
        state = scene.state
        branches = [0] + sorted(b for b in state.branches if b in state.forks)
        if len(branches) < 2:
            return {"value": ""}
        lines = ["<div class='explain-w explain-branches'>"]
        for branch in branches:
            fork = state.forks.get(branch, {})
            token = esc(visible(text(fork.get("token"))))
            name = (
                "original"
                if branch == 0
                else f"branch {fmt(branch)}: forced \u201c{token}\u201d at step {fmt(fork.get('step'))}"
            )
            pieces = []
            for i, s in enumerate(state.steps(branch)):
                piece = esc(s.get("token", ""))
                pieces.append(f"<b class='explain-fork'>{piece}</b>" if i == fork.get("step") else piece)
            lines.append(
                f"<div><span class='explain-muted'>{name}:</span> "
                f"<span style='white-space: pre-wrap'>{''.join(pieces)}</span></div>"
            )
        return {"value": "".join(lines) + "</div>"}


class CaptionView(View):
    """One step in words: the token picked, how, its probability and ranks, the entropy, the pass, the cache."""

    name, reads = "caption", frozenset({RUN, STEPS, SELECTION})
    section = ("Step view", "what the model proposed at one step, and how each logits processor changed it")

    def draw(self, scene: Scene) -> dict:
        step = scene.step
        if step is None:
            return {"value": ""}
        return {"value": step_caption(step)}


def step_caption(step: dict) -> str:
    texts = step.get("token_texts") if isinstance(step.get("token_texts"), dict) else {}
    chosen = f"<code>{esc(visible(text(step.get('token'))))}</code> (id {fmt(step.get('token_id'))})"
    parts = [f"<b>Step {fmt(step.get('step'))}</b> at position {fmt(step.get('position'))}: "]
    if step.get("method") == "beam":
        parts.append(
            f"beam {fmt(step.get('beam'))} (score {fmt(step.get('beam_score'), '.2f')}) went on with {chosen}, "
            f"log-probability {fmt(step.get('logit'), '.2f')} (p = {fmt(step.get('prob'), '.3f')})"
        )
        if step.get("rank") is not None:
            parts.append(f", rank {fmt(step.get('rank'))} of the beam's candidates")
        else:
            parts.append(", outside the beam's top candidates the trace kept")
    elif step.get("forced"):
        original = esc(visible(text(texts.get(str(step.get("token_id")), step.get("token", "")))))
        parts.append(f"forced {chosen} by hand <span class='explain-muted'>({original})</span>")
    else:
        how = "sampled" if step.get("method") == "sample" else "picked the most likely token"
        parts.append(f"{how}: {chosen} with p = {fmt(step.get('prob'), '.3f')}")
        processors = [p for p in step.get("processors") or [] if isinstance(p, dict)]
        if processors and number(step.get("raw_prob")) is not None:
            parts.append(f" (the model alone gave it {fmt(step.get('raw_prob'), '.3f')})")
        parts.append(f"; rank {fmt(step.get('rank'))} of the model's logits")
        final = processors[-1].get("token_rank") if processors else None
        if final is not None and final != step.get("rank"):
            parts.append(f", rank {fmt(final)} after the processors")
    kv = step.get("kv_cache") if isinstance(step.get("kv_cache"), dict) else {}
    seconds = number(step.get("forward_time"))
    entropy = number(step.get("entropy_bits"))  # none for a beam's step: the trace keeps its top log-probabilities
    parts.append(
        "<br><span class='explain-muted'>"
        + (f"entropy {fmt(entropy, '.2f')} bits \u00b7 " if entropy is not None else "")
        + f"{esc(step.get('forward', 'forward'))} pass {fmt(None if seconds is None else 1000 * seconds, '.0f')}"
        f" ms \u00b7 KV cache {fmt(kv.get('length'))} positions "
        f"({esc(size_text(number(kv.get('bytes'))))})"
    )
    if step.get("stop_reason"):
        parts.append(f" \u00b7 generation stopped here: {esc(stop_text(step['stop_reason']))}")
    for warning in step.get("warnings") if isinstance(step.get("warnings"), list) else []:
        parts.append(f"<br>\u26a0 {esc(text(warning))}")  # the context window passed (or reached) at this step
    parts.append("</span>")
    return f"<div class='explain-w explain-step-caption'>{''.join(parts)}</div>"


class ChartView(View):
    name, reads, module = "chart", frozenset({RUN, STEPS, SELECTION}), "chart.js"

    def create(self) -> widgets.Widget:
        return StepChart()

    def draw(self, scene: Scene) -> dict:
        index = scene.step_index
        step = scene.step
        what_if = scene.what_if if scene.what_if and step is not None and scene.what_if.get("step") == index else None
        message = (
            "The step view fills in with the first token: each step runs the model once, turns its logits "
            "into probabilities and picks one token."
            if step is None
            else ""
        )
        return {
            "step": chart_step(step, what_if),
            "curves": chart_curves(scene.state.steps()),
            "selected": -1 if index is None else index,
            "message": message,
            "key": key_of(scene.state),
            "forkable": scene.forkable,
        }


class InsideStepView(View):
    """Inside the model at the selected step (the logit lens, attention, attribution), from the run's
    generation/inspect events: shown for the steps that were inspected (capture="inside" records every step)."""

    name, reads, module, css = "inside", frozenset({RUN, STEPS, SELECTION}), "inside.js", "inside.css"
    section = ("Inside the model", "what each layer would predict, what the new token attended to")

    def create(self) -> widgets.Widget:
        return InsideElement()

    def draw(self, scene: Scene) -> dict:
        step = scene.step  # a branch's steps before its fork are its parent's, and carry the parent's branch
        look = {} if step is None else scene.state.inspected.get((step.get("branch", 0), step.get("step")), {})
        return {"look": look, "status": "", "shown": bool(look)}


for _view in (
    HeaderView(),
    TimelineView(),
    PromptView(),
    TextView(),
    BranchesView(),
    CaptionView(),
    ChartView(),
    InsideStepView(),
):
    register(_view)

# the decoding strategies' panels (a sampling tree, a beam tree, assisted decoding's drafts), before the step chart;
# each is hidden unless the run used its strategy
from . import strategy_views  # noqa: E402 (it does not import this module)

for _view in strategy_views.dashboard_views(sys.modules[__name__]):
    register(_view, before="chart")
