"""The contenders, each timed token by token on the same prompt ids.

explain's three share one pipeline (one copy of the weights) and differ only in what watches the run:
  explain traced      the trace at its default capture (trace.enabled=True, trace_top=20), no sinks
  explain untraced    trace.enabled=False and no sinks: nothing kept, nothing delivered
  explain live widget the trace plus explain.widgets' live view subscribed as a sink, with no front end
transformers runs its own `generate` on the same GGUF, dtype and threads.

Every run is greedy with EOS disabled (eos_token_id=None for both), so each makes exactly `new_tokens` tokens.
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass
from itertools import pairwise

import torch

# What explain.widgets may offer for a live view, tried in order. Each is called with the pipeline (then, if that
# raises TypeError, with its trace). It may subscribe itself to the trace, or return a sink (a callable, or an
# object with .sink / .on_event) for the benchmark to subscribe.
WIDGET_ENTRY_POINTS = ("live_sink", "LiveSink", "Dashboard", "dashboard", "Live", "live")


class Unavailable(Exception):
    """A contender that cannot run here; the message says why, and goes into the results."""


@dataclass
class Timing:
    ids: list  # the new tokens
    first_token_s: float  # prompt (text) in -> first new token out: time to first token
    prefill_s: float  # the prompt's forward and the first token's pick
    decode_s: float  # first new token out -> last new token out
    step_s: list  # the time each decoded token took (decode_tokens of them, summing to decode_s)
    forward_s: float | None = None  # explain only: the model's forward time within decode_s
    trace_run: int | None = None  # explain only: the trace's run number for this generation

    @property
    def decode_tokens(self) -> int:
        return len(self.ids) - 1  # the first token comes from the prefill


class ExplainContender:
    """explain's generation loop, stepped exactly as pipe(...) steps it (Generation.run is a loop over .step)."""

    def __init__(self, name: str, pipe, traced: bool = True, widget: bool = False):
        self.name, self.pipe, self.traced, self.widget = name, pipe, traced, widget
        self.sinks: list = []
        self.view = None
        self.widget_entry = None
        if widget:
            self.view, self.sinks, self.widget_entry = attach_widget(pipe)
            for sink in self.sinks:  # attached for the runs only
                pipe.trace.unsubscribe(sink)

    def generate(self, text: str, ids: list[int], new_tokens: int) -> Timing:
        trace = self.pipe.trace
        trace.enabled = self.traced
        for sink in self.sinks:
            trace.subscribe(sink)
        if not self.widget and trace._sinks:
            raise RuntimeError(f"{self.name}: the trace has sinks attached that are not this contender's")
        try:
            t0 = time.perf_counter()
            generation = self.pipe.start(text, max_new_tokens=new_tokens, do_sample=False, eos_token_id=None)
            ts = time.perf_counter()
            generation.step()
            stamps = [time.perf_counter()]  # after each token
            while not generation.finished:
                generation.step()
                stamps.append(time.perf_counter())
            t1, t2 = stamps[0], stamps[-1]
            # what pipe(...) does after the last token (generation/end and decoding events, which a live view
            # draws its final state on); outside the timed window, as it is once per call, not per token
            self.pipe._end(generation, time.time() - (t2 - t0), t2 - t0, False)
        finally:
            for sink in self.sinks:
                trace.unsubscribe(sink)
            trace.enabled = True
        if generation.input_ids[0, : generation.prompt_length].tolist() != list(ids):
            raise RuntimeError(f"{self.name}: explain tokenized the prompt differently from the ids given")
        steps = generation.steps
        return Timing(
            ids=generation.generated_ids,
            first_token_s=t1 - t0,
            prefill_s=t1 - ts,
            decode_s=t2 - t1,
            step_s=_gaps(stamps),
            forward_s=sum(s["forward_time"] for s in steps[1:]),
            trace_run=trace.run,
        )


class TransformersContender:
    """transformers' own generate; a streamer stamps the time of the prompt and of every new token."""

    def __init__(self, name: str, model, tokenizer):
        self.name, self.model, self.tokenizer = name, model, tokenizer
        self.same_ids = True  # does transformers' tokenizer give explain's ids for every prompt?

    def generate(self, text: str, ids: list[int], new_tokens: int) -> Timing:
        clock = Clock()
        t0 = time.perf_counter()
        own = self.tokenizer(text, add_special_tokens=True)["input_ids"]
        if own != list(ids):
            self.same_ids = False  # keep the comparison on the same ids: use explain's
        input_ids = torch.tensor([list(ids)], device=self.model.device)  # (1, T), where generate wants it
        with torch.inference_mode():
            out = self.model.generate(
                input_ids,
                attention_mask=torch.ones_like(input_ids),
                max_new_tokens=new_tokens,
                min_new_tokens=None,
                do_sample=False,
                eos_token_id=None,
                pad_token_id=self.tokenizer.pad_token_id,
                streamer=clock,
            )
        new = out[0, input_ids.shape[1] :].tolist()
        if len(new) != new_tokens or len(clock.times) != new_tokens + 1:
            raise RuntimeError(f"{self.name}: generated {len(new)} tokens, expected {new_tokens}")
        return Timing(
            ids=new,
            first_token_s=clock.times[1] - t0,
            prefill_s=clock.times[1] - clock.times[0],
            decode_s=clock.times[-1] - clock.times[1],
            step_s=_gaps(clock.times[1:]),
        )


def _gaps(stamps: list[float]) -> list[float]:
    return [b - a for a, b in pairwise(stamps)]


class Clock:
    """A transformers streamer that only notes the time: put() gets the prompt once, then each new token."""

    def __init__(self):
        self.times: list[float] = []

    def put(self, value) -> None:
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


def attach_widget(pipe):
    """explain.widgets' live view on pipe.trace, built with no front end. Returns (view, sinks, entry point name)."""
    try:
        widgets = importlib.import_module("explain.widgets")
    except ImportError as error:
        raise Unavailable(f"explain.widgets is not importable here ({error})") from None
    for name in WIDGET_ENTRY_POINTS:
        factory = getattr(widgets, name, None)
        if factory is None:
            continue
        before = list(pipe.trace._sinks)
        try:
            view = factory(pipe)
        except TypeError:
            view = factory(pipe.trace)
        sinks = [s for s in pipe.trace._sinks if s not in before]  # it subscribed itself
        if not sinks:
            sink = view if callable(view) else getattr(view, "sink", None) or getattr(view, "on_event", None)
            if sink is None:
                raise Unavailable(
                    f"explain.widgets.{name}(pipe) returned {type(view).__name__}, which neither "
                    "subscribed itself to the trace nor is a sink"
                )
            pipe.trace.subscribe(sink)
            sinks = [sink]
        return view, sinks, f"explain.widgets.{name}"
    raise Unavailable(f"explain.widgets has no live view entry point (looked for {', '.join(WIDGET_ENTRY_POINTS)})")
