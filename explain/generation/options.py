"""What a run is started with besides its generation settings, validated once for both producers.

`RunOptions` holds explain's own call options (trace_top, keep_logits, capture): the explain backend's
TextGenerationPipeline, the transformers backend's and every decoding strategy's run read them from here, so each
has one default and each mistake one message (an ArgumentError naming the argument and the fix).

`LIMITS` is the one place for resource bounds on what a call may ask for (a number of beams, of new tokens, ...):
`check_limits` reads it, and both producers call it once per call, before any work.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ArgumentError

DEFAULT_TRACE_TOP = 20  # the top entries a step records of each row: enough for the views, small in the trace
TOP_WHEN_ALL = DEFAULT_TRACE_TOP  # trace_top="all": the usual top entries, and the whole rows in "rows"
CAPTURES = (None, "default", "inside")  # what each step records besides the default
RUN_OPTIONS = ("trace_top", "keep_logits", "capture")  # explain's own call options (never passed to generate())

# name -> (the largest value a call may ask for, why). Empty: explain asks no more of a call than transformers
# does. A bound added here is refused by both backends with one message (check_limits).
LIMITS: dict[str, tuple[int, str]] = {}


def trace_top_problem(value) -> str | None:
    if value == "all" and isinstance(value, str):
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return None
    return f'trace_top must be a positive integer or "all", got {value!r:.60}'


def keep_logits_problem(value) -> str | None:
    if value is None or isinstance(value, bool) or (isinstance(value, int) and value > 0):
        return None
    return f"keep_logits must be True, False or a positive number of steps, got {value!r:.60}"


def capture_problem(value) -> str | None:
    if isinstance(value, (str, type(None))) and value in CAPTURES:
        return None
    return (
        f"capture={value!r:.60} is not a capture mode; use None (the default: tokens, logits and processors) or "
        '"inside" (also each step\'s logit lens and attention weights, for replay with no model; about three '
        "forward passes a step)"
    )


@dataclass(frozen=True)
class RunOptions:
    """explain's own options of one run; invalid values are refused when it is made."""

    trace_top: int | str = DEFAULT_TRACE_TOP  # the top entries recorded per step and row, or "all" (whole rows)
    keep_logits: bool | int = False  # keep each step's raw logits (True: rows.KEEP_LOGITS of them) for what-if/force
    capture: str | None = None  # "inside": each step's logit lens and attention weights too

    def __post_init__(self):
        for problem in (
            trace_top_problem(self.trace_top),
            keep_logits_problem(self.keep_logits),
            capture_problem(self.capture),
        ):
            if problem:
                raise ArgumentError(problem)

    @classmethod
    def from_call(cls, options: dict) -> RunOptions:
        """The run options of a call's keyword arguments (others are ignored); None means "not given"."""
        given = {name: options[name] for name in RUN_OPTIONS if options.get(name) is not None}
        return cls(**given)

    @property
    def top_count(self) -> int:
        """How many top entries a step records of each row (trace_top="all" records the usual top too)."""
        return self.trace_top if isinstance(self.trace_top, int) else TOP_WHEN_ALL


def check_limits(values: dict) -> None:
    """Refuse a value past its bound in LIMITS (a generation setting or a call option), before any work."""
    for name, (largest, why) in LIMITS.items():
        value = values.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > largest:
            raise ArgumentError(f"{name}={value} is more than explain runs ({largest} at most: {why}); ask for less")
