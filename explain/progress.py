"""The loading stages, shown while `explain.pipeline(...)` loads: live in a notebook, a progress bar in a terminal.

In a Jupyter kernel an HTML output appears as the call starts (before the first file is read) and is updated in
place as each stage's events arrive: done stages with their time and facts, the running one, the weights read so
far. In a terminal a tqdm bar over the five stages, shown only when loading takes more than a second (tqdm's delay), as
transformers and huggingface_hub show theirs; HF_HUB_DISABLE_PROGRESS_BARS=1 turns it off, as it does theirs.

It needs no widget library (IPython's display, or tqdm) and imports nothing of explain.widgets, so it costs
nothing before the first paint. explain/__init__.py's `pipeline` wraps the core's with `loading_progress`.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from html import escape

from .events import LOADING_STAGES
from .trace import Event, Trace

TRUE = {"1", "ON", "YES", "TRUE"}
UPDATE_EVERY = 0.1  # seconds between two repaints of the notebook output while a stage reports progress


def in_kernel() -> bool:
    """Whether this runs in a Jupyter kernel (an IPython shell with a kernel: its displays reach a front end)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    return shell is not None and getattr(shell, "kernel", None) is not None


def bars_disabled() -> bool:
    return os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS", "").upper() in TRUE


def _seconds(value: float) -> str:
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


class Stages:
    """The loading stages as their events arrive: which are done (a stage's own event, not a progress report), how
    long each took, the running one and its progress."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.done: set[str] = set()
        self.progress: dict | None = None
        self.failed = False
        self.started = time.perf_counter()

    def apply(self, event: Event) -> bool:
        """Fold one event in; True if it was a loading stage's."""
        if event.stage not in LOADING_STAGES:
            return False
        if event.kind == "progress":
            self.progress = event.data if isinstance(event.data, dict) else None
            return True
        self.seconds[event.stage] = self.seconds.get(event.stage, 0.0) + float(event.duration or 0.0)
        self.done.add(event.stage)
        self.progress = None
        return True

    @property
    def running(self) -> str | None:
        return next((s for s in LOADING_STAGES if s not in self.done), None)

    def rows(self) -> list[tuple[str, str, str]]:
        """(stage, status, words): status "done", "running", "failed" or "waiting"."""
        rows, running = [], self.running
        for stage in LOADING_STAGES:
            if stage in self.done:
                rows.append((stage, "done", _seconds(self.seconds.get(stage, 0.0))))
            elif stage == running:
                words = "failed" if self.failed else "running\u2026"
                if self.progress and not self.failed and self.progress.get("total"):
                    words += f" {self.progress.get('done')}/{self.progress.get('total')} tensors"
                rows.append((stage, "failed" if self.failed else "running", words))
            else:
                rows.append((stage, "waiting", ""))
        return rows


COLORS = {"done": "#2da44e", "running": "#bf8700", "failed": "#cf222e", "waiting": "grey"}
MARKS = {"done": "\u2713", "running": "\u25cf", "failed": "\u2717", "waiting": "\u25cb"}


def loading_html(stages: Stages, finished: bool = False) -> str:
    total = time.perf_counter() - stages.started
    head = "loading failed" if stages.failed else f"loaded in {_seconds(total)}" if finished else "loading the pipeline"
    items = " ".join(  # spaces between the stages: a narrow output wraps there
        f"<span class='explain-loading-stage' data-status='{status}' style='margin-right: 14px; "
        f"white-space: nowrap'><span style='color: {COLORS[status]}'>{MARKS[status]}</span> <b>{escape(stage)}</b>"
        f" <span style='opacity: 0.75'>{escape(words)}</span></span>"
        for stage, status, words in stages.rows()
    )
    return (
        f"<div class='explain-loading' data-finished='{str(finished).lower()}' style='font-family: system-ui, "
        f"sans-serif; font-size: 13px; line-height: 1.6'><b>explain</b>: {escape(head)} \u00b7 {items}</div>"
    )


class NotebookLoading:
    """An HTML output of the loading stages, painted at once and updated in place (IPython's display id)."""

    def __init__(self, trace: Trace):
        from IPython.display import HTML, display

        self.html, self.stages, self.last = HTML, Stages(), 0.0
        self.handle = display(HTML(loading_html(self.stages)), display_id=True)
        self.unsubscribe = trace.subscribe(self)

    def __call__(self, event: Event) -> None:
        if not self.stages.apply(event) or self.handle is None:
            return
        now = time.perf_counter()
        if event.kind != "progress" or now - self.last >= UPDATE_EVERY:
            self.last = now
            self.handle.update(self.html(loading_html(self.stages)))

    def close(self, ok: bool) -> None:
        self.unsubscribe()
        self.stages.failed = not ok
        if self.handle is not None:
            self.handle.update(self.html(loading_html(self.stages, finished=ok)))


class TerminalLoading:
    """A tqdm bar over the loading stages, shown once loading has taken a second."""

    def __init__(self, trace: Trace):
        from tqdm.auto import tqdm

        self.stages = Stages()
        self.bar = tqdm(total=len(LOADING_STAGES), desc="explain: loading", unit="stage", delay=1.0, leave=False)
        self.unsubscribe = trace.subscribe(self)

    def __call__(self, event: Event) -> None:
        if not self.stages.apply(event):
            return
        self.bar.n = len(self.stages.done)
        running = self.stages.running
        progress = self.stages.progress
        detail = f" {progress.get('done')}/{progress.get('total')} tensors" if progress else ""
        self.bar.set_postfix_str(f"{running}{detail}" if running else "done", refresh=False)
        self.bar.refresh()

    def close(self, ok: bool) -> None:
        self.unsubscribe()
        self.bar.close()


@contextlib.contextmanager
def loading_progress(trace: Trace) -> Iterator[None]:
    """Show the loading stages of `trace` while the block runs (see the module docstring)."""
    shown: NotebookLoading | TerminalLoading | None = None
    try:
        if in_kernel():
            shown = NotebookLoading(trace)
        elif not bars_disabled() and hasattr(sys.stderr, "isatty") and sys.stderr.isatty():
            shown = TerminalLoading(trace)  # a terminal; not a log file or a captured stream
    except ImportError:  # no tqdm: loading shows nothing, as before
        shown = None
    ok = False
    try:
        yield
        ok = True
    finally:
        if shown is not None:
            shown.close(ok)
