"""The decoding strategies' views, each an anywidget ES module over one trait, `data` (explain.trees builds it):

    SamplingTree(pipe)            several sampled sequences as a prefix tree (also a step-through's forced branches)
    BeamTree(pipe)                beam search: kept, finished and pruned hypotheses per step, and the final ranking
    DraftView(pipe)               assisted decoding: drafted against accepted tokens, and the acceptance rate

Each takes a pipeline (live: it follows the pipeline's newest call, or `run=`), a Trace (replay: a saved trace,
`run=` or the newest run), or a run object (a Generation, or a strategy's run from pipe.start). Live views fold the
run's events as they arrive through a ThrottledSink, about ten times a second.
"""

from __future__ import annotations

import pathlib

import anywidget
import traitlets

from ..trace import Trace
from ..trees import beam_tree, draft_rounds, sampling_tree
from .sink import ThrottledSink

HERE = pathlib.Path(__file__).parent
PROMPT_TAIL = 80  # characters of the prompt the views show


class RunView(anywidget.AnyWidget):
    """What the three views share: which trace and run they show, and following it live."""
    _css = HERE / "strategy_views.css"
    data = traitlets.Dict().tag(sync=True)
    caption = traitlets.Unicode("").tag(sync=True)

    def __init__(self, source, run: int | None = None, **kwargs):
        super().__init__(**kwargs)
        trace = source if isinstance(source, Trace) else getattr(source, "trace", None)
        if not isinstance(trace, Trace):
            raise TypeError(f"{type(self).__name__} needs a pipeline, an explain.Trace or a run from pipe.start(), "
                            f"got {type(source).__name__}")
        run = run if run is not None else getattr(source, "run_id", None)
        self.trace, self.run, self.follow = trace, run, run is None
        self.sink = ThrottledSink(lambda events: self.refresh(), interval=0.1)
        self._unsubscribe = trace.subscribe(self.sink)
        self.refresh()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(run {self.run}, {self.caption!r})"

    def wanted(self, run: int) -> bool:
        """Whether a run has what this view draws (a followed view moves to the newest such run)."""
        return any(e.stage == "generation" and e.kind == "step" for e in self.trace.filter(run=run))

    def refresh(self) -> None:
        """Rebuild `data` from the run's events (the newest wanted run when following)."""
        if self.follow:
            runs = [r for r in self.trace.runs() if r > 0]
            for run in reversed(runs):
                if self.wanted(run):
                    self.run = run
                    break
        events = self.trace.filter(run=self.run) if self.run is not None else []
        self.data = self.build(events, self.prompt(events))
        self.caption = self.describe()

    @staticmethod
    def prompt(events) -> str:
        encode = next((e.data for e in events if e.stage == "tokenization" and e.kind == "encode"), None)
        if encode is None:
            return ""
        text = encode["text"]
        return text if len(text) <= PROMPT_TAIL else "\u2026" + text[-PROMPT_TAIL:]

    def build(self, events, prompt: str) -> dict:
        raise NotImplementedError

    def describe(self) -> str:
        return ""

    def close(self):
        if hasattr(self, "_unsubscribe"):
            self._unsubscribe()
        super().close()


class SamplingTree(RunView):
    """Sequences of one call as a prefix tree: shared tokens once, a branch point where they differ, with the
    distribution the differing tokens were drawn from. Several samples, or a step-through's forced branches."""
    _esm = HERE / "sampling_tree.js"

    def build(self, events, prompt):
        return sampling_tree(events, prompt)

    def describe(self) -> str:
        data = self.data
        if not data.get("count"):
            return "no sequence yet: call the pipeline (num_return_sequences=5, do_sample=True)"
        splits = sum(1 for s in data["segments"] if s["split"])
        what = {"samples": "sampled sequences", "branches": "branches"}.get(data["kind"], "sequence")
        return f"call {self.run}: {data['count']} {what}, {splits} branch point{'s' if splits != 1 else ''}"


class BeamTree(RunView):
    """Beam search step by step: every running beam, the candidates that finished (with the length penalty) or
    were pruned, and the final ranking with the returned sequences' paths marked."""
    _esm = HERE / "beam_tree.js"

    def wanted(self, run):
        return any(e.stage == "generation" and e.kind == "beams" for e in self.trace.filter(run=run))

    def build(self, events, prompt):
        return beam_tree(events, prompt)

    def describe(self) -> str:
        data = self.data
        steps = len(data.get("levels", [])) - 1
        if steps <= 0:
            return "no beam search yet: call the pipeline with num_beams=4"
        done = f"; {data['done']}" if data.get("done") else "; running"
        return f"call {self.run}: {steps} steps{done}"


class DraftView(RunView):
    """Assisted decoding: each round's drafted tokens, the ones the model accepted, the one it put instead and why."""
    _esm = HERE / "drafts.js"

    def wanted(self, run):
        return any(e.stage == "generation" and e.kind == "draft" for e in self.trace.filter(run=run))

    def build(self, events, prompt):
        return {**draft_rounds(events), "prompt": prompt}

    def describe(self) -> str:
        data = self.data
        if not data.get("rounds"):
            return "no assisted decoding yet: call the pipeline with assistant_model= or prompt_lookup_num_tokens="
        rate = data["rate"]
        return (f"call {self.run}: {data['accepted']}/{data['drafted']} drafted tokens accepted"
                f"{f' ({rate:.0%})' if rate is not None else ''}; {data['tokens']} tokens in {data['forwards']} "
                "forward passes of the model")


VIEWS = {"samples": SamplingTree, "beam_search": BeamTree, "assisted": DraftView}  # strategy name -> its view


def strategy_view(trace: Trace, run: int, strategy: str) -> RunView | None:
    """The view that draws a run of this decoding strategy (None for one sequence: the dashboard shows it)."""
    view = VIEWS.get(strategy)
    return view(trace, run=run) if view is not None else None
