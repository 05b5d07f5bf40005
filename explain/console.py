"""The console view: a sink that prints the trace as a readable timeline, and streams generated tokens."""

from __future__ import annotations

import os
import sys

from .events import describe as describe_event
from .trace import Event, Trace

# Control characters a terminal obeys: C0 (ESC starts cursor moves, colours, OSC 52 clipboard writes, title changes),
# DEL, C1 (U+009B is a one-character CSI), the line and paragraph separators, and the bidirectional overrides that
# reorder what is shown. Text from a trace file or a model reaches the terminal only through `printable`.
_CONTROLS = [
    *range(0x00, 0x20),
    0x7F,
    *range(0x80, 0xA0),
    0x2028,
    0x2029,
    *range(0x202A, 0x202F),
    *range(0x2066, 0x206A),
]
_ESCAPES = {code: f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" for code in _CONTROLS}
_ESCAPES_KEEPING_LINES = {code: text for code, text in _ESCAPES.items() if code not in (0x09, 0x0A)}


def printable(text, keep_lines: bool = False) -> str:
    """`text` with every control character written as an escape (ESC as \\x1b), so a file or a model cannot move
    the cursor, recolour, retitle or write to the clipboard of the terminal showing it. keep_lines keeps newlines
    and tabs (generated text); otherwise a line stays one line."""
    return str(text).translate(_ESCAPES_KEEPING_LINES if keep_lines else _ESCAPES)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f} ms"


# shown another way on the console: steps stream as text (TokenStream), progress is only for live views
NOT_IN_TIMELINE = {("generation", "step"), ("weights", "progress")}


def describe(event: Event) -> str | None:
    """The timeline's line for an event (explain.events.describe), or None for one the console shows otherwise."""
    if (event.stage, event.kind) in NOT_IN_TIMELINE:
        return None
    line = describe_event(event)
    if event.stage == "tokenization" and event.data.get("chat_template_skipped"):
        line += " (command line: --chat)"
    return line


def print_timeline(trace: Trace, run: int | None = 0, file=None) -> None:
    file = file or sys.stdout
    events = [e for e in trace.events if run is None or e.run == run]
    if not events:
        return
    origin = events[0].start
    for event in events:
        line = describe(event)
        if line is not None:
            print(
                f"{event.start - origin:7.2f}s {_ms(event.duration)}  {printable(event.stage):<12} {printable(line)}",
                file=file,
            )


class TokenStream:
    """A sink that prints each generated token as it arrives, coloured by its probability on a terminal."""

    def __init__(self, file=None, color: bool | None = None):
        self.file = file or sys.stdout
        self.color = color if color is not None else (self.file.isatty() and not os.environ.get("NO_COLOR"))

    def __call__(self, event: Event) -> None:
        if event.stage != "generation" or event.kind != "step" or event.data.get("sequence", 0):
            return  # several sequences: the first streams, the others are printed at the end
        text, p = printable(event.data["text"] or "", keep_lines=True), event.data["prob"]
        if self.color:
            code = 32 if p >= 0.6 else 33 if p >= 0.2 else 31  # green, yellow, red
            text = f"\x1b[{code}m{text}\x1b[0m"
        self.file.write(text)
        self.file.flush()


def print_steps(trace: Trace, run: int, file=None, alternatives: int = 3) -> None:
    """A table: each generated token, its probability and rank, and the runners-up."""
    file = file or sys.stdout
    print(f"{'step':>4}  {'token':<16} {'prob':>6} {'rank':>4}  runners-up", file=file)
    for event in trace.filter("generation", "step", run):
        d = event.data
        if d.get("sequence", 0):
            continue
        texts = d["token_texts"]
        others = [
            (i, v) for i, v in zip(d["probs_top"]["ids"], d["probs_top"]["values"], strict=True) if i != d["token_id"]
        ]
        runners = "  ".join(f"{texts.get(str(i), '?')!r} {v:.2f}" for i, v in others[:alternatives])
        print(printable(f"{d['step']:>4}  {d['token']!r:<16} {d['prob']:6.3f} {d['rank']:>4}  {runners}"), file=file)


def print_summary(trace: Trace, run: int, file=None) -> None:
    file = file or sys.stdout
    loading = sum(e.duration for e in trace.events if e.run == 0 and e.kind != "progress" and e.stage != "registry")
    end = trace.last("generation", "end", run)
    prefill = trace.filter("generation", "prefill", run)
    print(f"load {loading:.2f} s", end="", file=file)
    if prefill:
        print(
            f" | prefill {prefill[0].duration * 1000:.0f} ms ({prefill[0].data['prompt_tokens']} tokens)",
            end="",
            file=file,
        )
    if end is not None:
        rate = end.data["decode_tokens_per_s"]
        print(
            f" | decode {end.data['new_tokens']} tokens{f' at {rate:.1f} tokens/s' if rate else ''}"
            f" | stopped by {printable(end.data['stop_reason'])}",
            end="",
            file=file,
        )
    print(file=file)
