"""Step-through: a paused generation a teacher advances one token at a time, changing knobs as they go.

    explain.step_through(pipe, "Write a story about a cat", max_new_tokens=40)

The buttons work because generation is resumable (pipe.start returns a Generation that keeps its KV cache
and every step's raw logits), not because a cell is running. Knobs change the next steps
(Generation.set_settings); "What if?" re-applies the processors with the knobs to a recorded step
(Generation.what_if); "Force" takes another candidate at a step and continues from there in a new branch
(Generation.force), the original run kept beside it.
"""

from __future__ import annotations

from html import escape

import ipywidgets as widgets

from ..errors import ExplainError, interrupted
from ..generation import KNOBS as ALL_KNOBS
from ..generation import Slider, Toggle
from .dashboard import Dashboard, StaticFallback
from .state import visible
from .views import stop_text

# the knobs with a widget, from the registry: the main row first (do_sample, the sampling knobs, the others)
WIDGET_KNOBS = {name: knob for name, knob in ALL_KNOBS.items() if knob.widget is not None}
KNOBS = tuple(
    sorted(
        (n for n, k in WIDGET_KNOBS.items() if k.widget.main),
        key=lambda n: (not isinstance(WIDGET_KNOBS[n].widget, Toggle), not WIDGET_KNOBS[n].sampling_only),
    )
)
MORE_KNOBS = tuple(n for n, k in WIDGET_KNOBS.items() if not k.widget.main)


def knob_widget(knob) -> widgets.Widget:
    """A checkbox or a slider for a knob, from its declaration (generation/knobs.py, the processors' classes)."""
    spec = knob.widget
    if isinstance(spec, Toggle):
        # its width from its label (a fixed width cut "sample (do_sample)" off)
        widget = widgets.Checkbox(
            description=spec.label, indent=False, layout=widgets.Layout(width="auto", margin="0 16px 0 0")
        )
    else:
        kind = widgets.IntSlider if knob.kind == "int" else widgets.FloatSlider
        extra = {} if knob.kind == "int" else {"readout_format": spec.format}
        widget = kind(
            value=spec.off if spec.off is not None else knob.default,
            min=spec.minimum,
            max=spec.maximum,
            step=spec.step,
            description=spec.label,
            style={"description_width": "initial"},
            continuous_update=False,
            **extra,
        )
    tooltip = "tooltip" if "tooltip" in widget.trait_names() else "description_tooltip"  # ipywidgets 8 / 7
    setattr(widget, tooltip, f"{knob.name}: {knob.help}")
    return widget


def _prompt_text(prompt) -> str:
    if isinstance(prompt, str):
        return prompt
    return " | ".join(f"{m.get('role')}: {m.get('content')}" for m in prompt)


class StepThrough(StaticFallback, widgets.VBox):
    """Buttons (Next token, Run N, Run to end, Reset), knob sliders, what-if and force, over a Dashboard."""

    def __init__(self, pipe, prompt, **generate_kwargs):
        self.pipe, self.prompt = pipe, prompt
        self.generate_kwargs = {**generate_kwargs, "keep_logits": True}
        wide = {"description_width": "initial"}
        self.next_button = widgets.Button(
            description="Next token",
            icon="step-forward",
            button_style="primary",
            tooltip="Run the model once and add one token",
        )
        self.count = widgets.BoundedIntText(value=5, min=1, max=1000, layout=widgets.Layout(width="64px"))
        self.run_button = widgets.Button(description="Run N", icon="forward", tooltip="Add N tokens")
        self.end_button = widgets.Button(
            description="Run to end", icon="fast-forward", tooltip="Generate until a stop condition"
        )
        self.reset_button = widgets.Button(
            description="Reset", icon="undo", tooltip="Start again from the prompt, with the knobs as they are now"
        )
        self.message = widgets.HTML()
        self.knob_note = widgets.HTML()  # which knobs the next tokens use, when they differ from the run's start
        # a backend without some processors (transformers lacks explain's own) gets no widget for their knobs
        lacking = set(getattr(pipe, "knobs_unavailable", ()))
        shown, more = [n for n in KNOBS if n not in lacking], [n for n in MORE_KNOBS if n not in lacking]
        self.knob_widgets = {name: knob_widget(WIDGET_KNOBS[name]) for name in shown + more}
        for name, widget in self.knob_widgets.items():  # st.temperature, st.top_k, ...: each knob's widget
            setattr(self, name, widget)
        self.what_if_button = widgets.Button(
            description="What if? (knobs at this step)",
            icon="question",
            layout=widgets.Layout(width="auto"),
            tooltip="Re-apply the processors with the knobs above to this step's recorded logits; nothing is generated",
        )
        self.force_choice = widgets.Dropdown(
            description="another token", style=wide, layout=widgets.Layout(width="300px")
        )
        self.force_button = widgets.Button(
            description="Force it and continue",
            icon="code-branch",
            layout=widgets.Layout(width="auto"),
            tooltip="A new branch: this run up to the step, then this token",
        )
        tools = widgets.HBox(
            [self.what_if_button, self.force_choice, self.force_button],
            layout=widgets.Layout(flex_flow="row wrap", align_items="center"),
        )
        self.dashboard = Dashboard(pipe, step_tools=tools, runs=set())
        self.dashboard.forkable = True  # a click on another token's bar in the step chart forces it
        self.dashboard.on_fork = lambda step, token_id: self.force(step, token_id)
        title = widgets.HTML(
            f"<div class='explain-w'><b style='font-size: 15px'>Step through</b> "
            f"<span class='explain-muted'>prompt:</span> <code>{escape(_prompt_text(prompt))}"
            f"</code></div>"
        )
        buttons = widgets.HBox(
            [self.next_button, self.count, self.run_button, self.end_button, self.reset_button, self.message],
            layout=widgets.Layout(align_items="center", flex_flow="row wrap"),
        )
        knobs = widgets.HBox(
            [self.knob_widgets[name] for name in shown],
            layout=widgets.Layout(flex_flow="row wrap", align_items="center"),
        )
        self.more_knobs = widgets.Accordion(
            children=[
                widgets.HBox(
                    [self.knob_widgets[name] for name in more],
                    layout=widgets.Layout(flex_flow="row wrap", align_items="center"),
                )
            ],
            selected_index=None,
        )
        self.more_knobs.set_title(0, "more knobs: " + ", ".join(WIDGET_KNOBS[n].widget.label for n in more))
        hint = widgets.HTML(
            "<div class='explain-w explain-muted'>Knobs change the next tokens (What if? only looks at a recorded "
            "step). Temperature, top-k and top-p act only when sampling; greedy decoding always takes the most "
            "likely token.</div>"
        )
        super().__init__(children=[title, buttons, knobs, self.more_knobs, hint, self.knob_note, self.dashboard])
        self.add_class("explain-step-through")
        self.generations: dict = {}
        self._tooltips = [(b, b.tooltip) for b in (self.next_button, self.run_button, self.end_button)]
        self._quiet = False
        self.next_button.on_click(lambda _: self.next())
        self.run_button.on_click(lambda _: self.run(self.count.value))
        self.end_button.on_click(lambda _: self.run())
        self.reset_button.on_click(lambda _: self.reset())
        self.what_if_button.on_click(lambda _: self.what_if())
        self.force_button.on_click(lambda _: self.force())
        for widget in self.knob_widgets.values():
            widget.observe(self._on_knob, "value")
        self.dashboard.text.observe(lambda _: self._update_force_choices(), "selected")
        self._start(dict(self.generate_kwargs))

    def __repr__(self) -> str:
        generation = self.generation
        return f"explain.StepThrough({len(generation.steps) if generation else 0} steps, {self.dashboard!r})"

    # -- the generation shown --------------------------------------------------------------------------
    @property
    def generation(self):
        """The Generation of the branch on screen (the original, or a forced branch)."""
        return self.generations.get(self.dashboard.state.branch) or self.generations.get(0)

    def _start(self, kwargs) -> None:
        run = self.pipe.trace.new_run()  # reserved before its first event: this display follows this run id only,
        self.dashboard.follow(run)  # and other dashboards leave it out, whatever other cells do meanwhile
        generation = self.pipe.start(self.prompt, run=run, **kwargs)
        strategy = getattr(type(generation), "title", None)  # several samples, beam search, assisted decoding
        self._next_label = "Next step" if strategy else "Next token"
        self.next_button.description = self._next_label
        self.next_button.tooltip = (
            f"Run the model once ({strategy}: every sequence or beam gains a token; assisted "
            "decoding: one draft-and-check round)"
            if strategy
            else "Run the model once and add one token"
        )
        self.generations = {generation.branch: generation}
        self._finished = set()
        self.knob_changes: list[tuple[int, dict]] = []  # (the step they apply from, {knob: value}) per change
        self._set_knobs(generation.settings)
        self._started_with = self.knobs()  # what the run started with, as the knob widgets read it
        self._after()

    def _set_knobs(self, settings: dict) -> None:
        self._quiet = True
        try:
            for name, widget in self.knob_widgets.items():
                knob, value = WIDGET_KNOBS[name], settings.get(name)
                if isinstance(knob.widget, Toggle):
                    widget.value = bool(value)
                    continue
                if value is None:
                    value = knob.widget.off if knob.widget.off is not None else knob.default
                widget.max, widget.min = max(widget.max, value), min(widget.min, value)  # shown, not clamped
                widget.value = value
        finally:
            self._quiet = False
        self._enable_knobs()

    def knobs(self) -> dict:
        """The knobs as the widgets set them; a slider at its "off" position gives the knob's default."""
        values = {}
        for name, widget in self.knob_widgets.items():
            knob, value = WIDGET_KNOBS[name], widget.value
            if isinstance(knob.widget, Slider):
                if knob.widget.off is not None and value == knob.widget.off:
                    value = knob.default
                elif knob.kind == "float":
                    value = round(value, 6)
            values[name] = value
        return values

    # -- buttons ---------------------------------------------------------------------------------------
    def next(self) -> dict | None:
        """Generate exactly one token."""
        return self._advance(1)

    def run(self, count: int | None = None) -> None:
        """Generate `count` tokens, or until the generation stops."""
        self._advance(count)

    def _advance(self, count: int | None):
        generation = self.generation
        if generation.finished:
            self._say(f"This run has finished ({generation.stop_reason}). Press Reset to start again.")
            return None
        record = None
        self.dashboard.set_paused(False)
        try:
            for _ in range(count if count is not None else 10**9):
                if generation.finished:
                    break
                record = generation.step()
        except ExplainError as error:
            self._say(str(error), error=True)
        except KeyboardInterrupt:  # Kernel > Interrupt during Run N / Run to end: the run pauses, it can go on
            self._after()
            steps = len(generation.steps)
            self._say(f"Interrupted after step {steps - 1 if steps else 0}: paused; Next token goes on from here.")
            raise interrupted(
                f"step-through interrupted after {steps} tokens: paused, and Next token goes on from there"
            ) from None
        self._after()
        return record

    def reset(self) -> None:
        """Start again from the prompt (a new call of the pipeline), with the knobs as they are now."""
        self._start({**self.generate_kwargs, **self.knobs()})
        self._say("Started again from the prompt.")

    def what_if(self, step: int | None = None, **knobs) -> dict | None:
        """Re-apply the processors with these knobs (default: the sliders) to a recorded step; shows the result."""
        step = self.dashboard.selected_step() if step is None else step
        if step is None:
            self._say("Generate a token first: what-if looks at a recorded step.")
            return None
        try:
            result = self.generation.what_if(step, **(knobs or self.knobs()))
        except ExplainError as error:
            self._say(str(error), error=True)
            return None
        self.dashboard.select(step)
        self.dashboard.show_what_if(result)
        recorded = visible(self.generation.token_text(result["recorded_token"]))
        self._say(
            f"What if at step {step}: the recorded token {recorded} would have p = "
            f"{result['recorded_token_prob']:.3f}; {result['kept']} tokens keep a chance."
        )
        return result

    def force(self, step: int | None = None, token_id: int | None = None, go_on: bool = True):
        """Take `token_id` at `step` instead and continue from there, in a new branch, to the end or the run's
        limit (go_on=False: stop after the forced token); the original stays."""
        step = self.dashboard.selected_step() if step is None else step
        token_id = self.force_choice.value if token_id is None else token_id
        if step is None or token_id is None:
            self._say("Pick a step (click a token) and another candidate first.")
            return None
        try:
            branch = self.generation.force(step, token_id)
        except ExplainError as error:
            self._say(str(error), error=True)
            return None
        self.generations[branch.branch] = branch
        self.dashboard.flush()  # the branch is on screen before it goes on
        forced = f"Branch {branch.branch}: forced \u201c{visible(branch.token_text(token_id))}\u201d at step {step}"
        if go_on and not branch.finished:
            self._advance(None)
            if not branch.finished:  # an error or an interrupt stopped it: _advance said why
                return branch
            self._say(
                f"{forced}, then went on to the end ({len(branch.steps)} tokens: {stop_text(branch.stop_reason)}). "
                "The original is kept: the picker under the text switches between them."
            )
            return branch
        self._after()
        self._say(f"{forced}. Next token continues the new branch; the original is kept below the text.")
        return branch

    # -- keeping the screen in step ----------------------------------------------------------------------
    def _after(self) -> None:
        generation = self.generation
        if generation.finished and id(generation) not in self._finished:
            self._finished.add(id(generation))
            self.pipe.finish(generation)  # emits generation/end and decoding/decode, as a call does
        self.dashboard.flush()
        done = generation.finished
        self.dashboard.set_paused(not done)
        for button, tooltip in self._tooltips:
            button.disabled = done
            button.tooltip = (
                "The run has ended: Reset starts again; Force branches from an earlier step" if done else tooltip
            )
        # a finished run's Next looks off, not merely disabled: no colour, its label says the run is over
        self.next_button.button_style = "" if done else "primary"
        self.next_button.description = "Finished" if done else self._next_label
        self.next_button.icon = "check" if done else "step-forward"
        self._show_knob_note()
        self._update_force_choices()
        if done:
            self._say(
                f"Finished after {len(generation.steps)} tokens: {stop_text(generation.stop_reason)}. "
                "Next token and Run are off because this run has ended; Reset starts again, or click a "
                "token and Force another to branch from there."
            )
            self._refresh_displays()

    def _update_force_choices(self) -> None:
        state = self.dashboard.state
        step_index = self.dashboard.selected_step()
        if step_index is None:
            self.force_choice.options = []
            return
        step = state.steps()[step_index]
        texts = step.get("token_texts", {})
        options, seen = [], {step.get("token_id")}
        probs = dict(zip(step["probs_top"]["ids"], step["probs_top"]["values"], strict=False))
        for token_id in step["probs_top"]["ids"] + step["logits_top"]["ids"]:
            if token_id in seen:
                continue
            seen.add(token_id)
            p = probs.get(token_id)
            text = visible(texts.get(str(token_id), texts.get(token_id, f"#{token_id}")))
            options.append((f"{text}  (p {p:.3f})" if p else f"{text}  (filtered out, p 0)", token_id))
        self.force_choice.options = options
        self.force_choice.value = options[0][1] if options else None  # ipywidgets 8 leaves it None
        self.force_button.description = f"Force it at step {step_index} and continue"
        self.what_if_button.description = f"What if? (knobs at step {step_index})"

    def _on_knob(self, change) -> None:
        self._enable_knobs()
        if self._quiet:
            return
        try:
            self.generation.set_settings(**self.knobs())
        except ExplainError as error:
            self._say(str(error), error=True)
            return
        changed = {n: v for n, v in self.knobs().items() if v != self._started_with.get(n)}
        self.knob_changes.append((len(self.generation.steps), changed))
        self._show_knob_note()
        self._say(f"Knobs set: they apply from the next token (step {len(self.generation.steps)}) on.")
        if self.dashboard.what_if is not None:
            self.what_if()

    def _show_knob_note(self) -> None:
        """A line that stays while the knobs differ from the run's start: which ones, and from which step they
        apply (a knob moved for a what-if also changes every later token; this says so where it is seen)."""
        generation = self.generation
        changed = {n: v for n, v in self.knobs().items() if v != self._started_with.get(n)}
        if not changed:
            self.knob_note.value = ""
            return
        since = next((step for step, _ in self.knob_changes), len(generation.steps))
        knobs = ", ".join(f"{n}={v!r}" for n, v in changed.items())
        verb = "applied" if generation.finished else "apply"
        self.knob_note.value = (
            f"<div class='explain-w explain-knob-note'>\u26a0 Knobs changed: {escape(knobs)} {verb} to every "
            f"token from step {since} on (the steps before used the knobs the run started with)."
            "</div>"
        )

    def _enable_knobs(self) -> None:
        sampling = self.knob_widgets["do_sample"].value
        for name, widget in self.knob_widgets.items():
            if WIDGET_KNOBS[name].sampling_only:
                widget.disabled = not sampling

    def _say(self, text: str, error: bool = False) -> None:
        color = "#cf222e" if error else "var(--jp-ui-font-color2, #59636e)"
        self.message.value = f"<span class='explain-w' style='color: {color}'>{escape(text)}</span>"

    def _static_html(self) -> str:
        return self.dashboard._static_html()

    def close(self):
        self.dashboard.close()  # it stops following the trace
        super().close()
