"""A trace sink that coalesces events, so a live view redraws about ten times a second, not once per event.

Each event costs O(1) here (an append and a clock read); the view's own work happens in `flush`, which runs
when `interval` has passed since the last flush, at once for the events that end a stage (a generation's end,
decoding) or that are rare and worth seeing at once (loading, tokenization, settings, prefill, force), and
whenever the owner asks (the step-through buttons flush after each click). The interval stretches when
flushes turn out costly, so the view takes about `budget` of the model's time, but never past `max_wait`: a live
view that stood still for seconds would say the run had stopped. One slow flush (a garbage collection, the
process paused on a loaded machine) does not stretch it: the cost is the smaller of the last two flushes'.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..trace import Event

# events that arrive one at a time or once per run: shown at once, they cost nothing in total
IMMEDIATE = {
    ("generation", "end"),
    ("decoding", "decode"),
    ("tokenization", "encode"),
    ("generation", "settings"),
    ("generation", "prefill"),
    ("generation", "force"),
    ("registry", "lookup"),
    ("config", "config"),
    ("tokenizer", "load"),
    ("weights", "load"),
    ("placement", "place"),
}


class ThrottledSink:
    """Collects events; calls `on_flush(events)` with everything collected, at most every `interval` seconds."""

    def __init__(
        self,
        on_flush: Callable[[list[Event]], None],
        interval: float = 0.1,
        budget: float = 0.02,
        max_wait: float = 1.0,
        clock: Callable[[], float] = time.perf_counter,
    ):
        self.on_flush, self.interval, self.budget, self.clock = on_flush, interval, budget, clock
        self.max_wait = max_wait
        self.pending: list[Event] = []
        self.flushes = 0
        self.wait = interval  # the current gap between flushes: interval, or longer after costly flushes
        self._cost = 0.0  # the last flush's cost
        self._last = -float("inf")

    def __call__(self, event: Event) -> None:
        self.pending.append(event)
        if (event.stage, event.kind) in IMMEDIATE or self.clock() - self._last >= self.wait:
            self.flush()

    def flush(self) -> None:
        """Hand everything pending to the view now (also what the owner calls when the events stop coming)."""
        if not self.pending:
            return
        events, self.pending = self.pending, []
        started = self.clock()
        try:
            self.on_flush(events)
        finally:
            self._last = self.clock()
            self.flushes += 1
            took = self._last - started
            cost = min(took, self._cost)  # the smaller of the last two: one slow flush stretches nothing
            self._cost = took
            stretched = cost / self.budget if self.budget else 0.0
            self.wait = max(self.interval, min(self.max_wait, stretched))
