"""What the dashboard shows, folded from trace events one at a time. Plain Python: no display library.

`DashboardState.apply(event)` does O(1) work (it keeps references to the events' data); the views read the
state when the sink flushes. The same state builds the live widgets, a replayed trace and the static HTML.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from ..events import LOADING_STAGES, STAGES, describe
from ..trace import Event, Trace
from ..utils.config_names import common_config
from ..utils.units import size_text

ROLE_NAMES = ("system", "user", "assistant", "generation prompt", "tool")


def seconds_text(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def visible(text: str) -> str:
    """A token's text with its whitespace made visible (a leading space is part of a BPE token)."""
    return text.replace(" ", "\u2423").replace("\n", "\u21b5").replace("\t", "\u21e5") if text else "\u2205"


class DashboardState:
    """The loading facts (run 0) and one run of the pipeline: its prompt, settings and steps per branch."""

    def __init__(self):
        self.loading: dict[str, list[Event]] = {stage: [] for stage in LOADING_STAGES}
        self.progress: dict | None = None  # the latest weights/progress
        self.runs: list[int] = []
        self.events = 0
        self._reset_run(None)

    def _reset_run(self, run: int | None) -> None:
        self.run = run
        self.encode: Event | None = None
        self.settings: Event | None = None
        self.prefill: Event | None = None
        self.end: Event | None = None
        self.end_branch = 0
        self.decode: Event | None = None
        self.branches: dict[int, list[dict]] = {0: []}
        self.latest: dict[tuple[str, str], Event] = {}  # (stage, kind) -> the run's newest such event
        self.folds: dict[tuple[str, str], object] = {}  # what a registered handler (handles) folded for its kind
        self.run_events: list[
            Event
        ] = []  # the run's events in order (the strategy panels fold them: explain.features.trees)
        self.sequences: dict[int, list[dict]] = {}  # several sequences (samples, batch rows, returned beams): steps
        self.sequence = 0  # the sequence on screen (the sequence picker)
        self.ranking: dict | None = None  # beam search: the generation/ranking data
        self.beams: list[dict] = []  # beam search: each step's generation/beams data
        self.drafts: list[dict] = []  # assisted decoding: each round's generation/draft data
        self.forks: dict[int, dict] = {}  # branch -> its generation/force data
        self.branch = 0  # the branch that moved last
        self.inspected: dict[tuple[int, int], dict] = {}  # (branch, step) -> its generation/inspect data, merged
        self.step_seconds = 0.0

    @classmethod
    def from_trace(cls, trace: Trace, run: int | None = None) -> DashboardState:
        state = cls()
        for event in trace.events:
            if run is None or event.run in (0, run):
                state.apply(event)
        return state

    # -- folding events in ------------------------------------------------------------------------------
    def apply(self, event: Event) -> None:
        self.events += 1
        if event.run == 0:
            if event.stage == "weights" and event.kind == "progress":
                self.progress = event.data
            elif event.stage in self.loading:
                self.loading[event.stage].append(event)
            return
        if event.run != self.run:
            self._reset_run(event.run)
            self.runs.append(event.run)
        self.run_events.append(event)
        self.latest[(event.stage, event.kind)] = event
        handler = HANDLERS.get((event.stage, event.kind))
        if handler is not None:
            handler(self, event)

    def latest_event(self, stage: str, kind: str) -> Event | None:
        """The run's newest (stage, kind) event: what a view of a kind without a handler of its own reads."""
        return self.latest.get((stage, kind))

    def _fork(self, data: dict) -> None:
        """A forced token: the new branch is the old one up to the step, then the forced token there."""
        parent = self.branches.get(data.get("from_branch", 0), [])
        step = data["step"]
        if step >= len(parent):
            return
        forced = dict(
            parent[step],
            token_id=data["token_id"],
            token=data["token"],
            forced=True,
            branch=data["branch"],
            text=data["token"],
            stop_reason=None,
            prob=self.prob_of(parent[step], data["token_id"]),
        )
        self.branches[data["branch"]] = parent[:step] + [forced]
        self.forks[data["branch"]] = data
        self.branch = data["branch"]

    def _step(self, event: Event) -> None:
        if "sequence" in event.data:  # several sequences: each kept; sequence 0 is also the original branch
            self.sequences.setdefault(event.data["sequence"], []).append(event.data)
            if event.data["sequence"]:
                return
        branch = event.data.get("branch", 0)
        self.branches.setdefault(branch, []).append(event.data)
        self.branch = branch
        self.step_seconds += event.duration

    def _inspect(self, event: Event) -> None:  # lens and attention from one inspection, attribution from another
        where = (event.data.get("branch", 0), event.data.get("step"))
        self.inspected[where] = {**self.inspected.get(where, {}), **event.data}

    def _end(self, event: Event) -> None:
        self.end, self.end_branch = event, self.branch

    def _beams(self, event: Event) -> None:
        """A beam search step: while the search runs, the text and the step view follow the best running beam
        (slot 0, traced back through its parents); the ranking replaces it with the returned ones."""
        self.beams.append(event.data)
        self.step_seconds += event.duration
        if self.ranking is None:
            best = best_running(self.beams)
            if best is not None:
                self.sequences[0] = beam_steps(self.beams, best, 0)

    def _ranking(self, event: Event) -> None:
        """Beam search ended: each hypothesis the call returns becomes a sequence, its steps taken from the beams
        events along its path (the step view shows what its beam scored at each step)."""
        self.ranking = event.data
        returned = [h for h in event.data.get("hypotheses", []) if h.get("returned")]
        for number, hypothesis in enumerate(returned):
            self.sequences[number] = beam_steps(self.beams, hypothesis, number)

    # -- sequences --------------------------------------------------------------------------------------
    @property
    def several(self) -> bool:
        """Whether the run has several sequences to pick from (samples, batch rows, returned beams)."""
        return len(self.sequences) > 1 or (bool(self.beams) and bool(self.sequences))

    def sequence_label(self, number: int) -> str:
        """The picker's name of a sequence: `beam #0 (score -0.55)`, `prompt 1 · #0`, `#2`."""
        if self.ranking is not None:
            returned = [h for h in self.ranking.get("hypotheses", []) if h.get("returned")]
            if number < len(returned):
                return f"beam #{number} (score {returned[number].get('score', 0):.2f})"
        steps = self.sequences.get(number) or [{}]
        row = steps[0].get("batch_row")
        return f"prompt {row} \u00b7 #{number}" if row is not None and self._batch_rows() > 1 else f"#{number}"

    def _batch_rows(self) -> int:
        return len({(s[0].get("batch_row") if s else None) for s in self.sequences.values()})

    def pick_sequence(self, number: int) -> bool:
        """Show sequence `number` (the original branch); False when the run has no such sequence."""
        if number not in self.sequences:
            return False
        self.sequence, self.branch = number, 0
        return True

    # -- reading ----------------------------------------------------------------------------------------
    def steps(self, branch: int | None = None) -> list[dict]:
        branch = self.branch if branch is None else branch
        if branch == 0 and self.sequences and (self.sequence or self.beams):
            return self.sequences.get(self.sequence, [])
        return self.branches.get(branch, [])

    @staticmethod
    def prob_of(step: dict, token_id: int) -> float | None:
        """The final probability a step gave `token_id`, when it is among the recorded top candidates."""
        top = step.get("probs_top") or {}
        for i, value in zip(top.get("ids", []), top.get("values", []), strict=False):
            if i == token_id:
                return value
        return None

    @property
    def max_new_tokens(self) -> int | None:
        if self.settings is None:
            return None
        return self.settings.data.get("settings", {}).get("max_new_tokens_effective")

    @property
    def finished(self) -> bool:
        return self.stop_reason is not None

    @property
    def stop_reason(self) -> str | None:
        """Why the shown branch stopped (eos, max_length, interrupted, ...), None while it can go on."""
        steps = self.steps()
        if steps and steps[-1].get("stop_reason"):
            return steps[-1]["stop_reason"]
        if self.beams and self.end is None and self.ranking is not None:
            return self.ranking.get("reason") or "ended"
        if self.end is not None and self.end_branch == self.branch:
            return self.end.data.get("stop_reason") or "ended"
        return None

    def model_name(self) -> str | None:
        lookup = self.loading["registry"]
        return lookup[-1].data.get("model_used") if lookup else None

    def prompt_tokens(self) -> list[list]:
        """[text, id, start, end, special, role] for each prompt token; text is the prompt's own characters."""
        if self.encode is None:
            return []
        d = self.encode.data
        text, segments = d.get("text") or "", d.get("segments") or []
        rows = []
        for i, token_id in enumerate(d.get("ids", [])):
            start, end = (d.get("offsets") or [[0, 0]] * (i + 1))[i]
            piece = text[start:end] if end > start else (d.get("tokens") or [""] * (i + 1))[i]
            role = next((s["role"] for s in segments if s["start"] <= start < s["end"]), None)
            rows.append([piece, token_id, start, end, bool((d.get("special") or [False] * (i + 1))[i]), role])
        return rows

    def prompt_caption(self) -> str:
        """One line under the prompt's tokens (the event's own description): how many, from what; a plain string
        that skipped the model's chat template says so, and how to use it."""
        return describe(self.encode) if self.encode is not None else "no call yet"

    def generated_tokens(self, branch: int | None = None) -> list[list]:
        """[text, prob, forced] for each generated token of a branch."""
        return [[s.get("token", ""), s.get("prob"), bool(s.get("forced"))] for s in self.steps(branch)]

    def text(self, branch: int | None = None) -> str:
        if self.decode is not None and (branch is None or branch == self.branch):
            sequences = self.decode.data.get("sequences") or []
            if (branch or self.branch) == 0 and self.sequence and self.sequence < len(sequences):
                return sequences[self.sequence].get("text", "")
            return self.decode.data.get("text", "")
        return "".join(s.get("text") or s.get("token", "") for s in self.steps(branch))

    # -- the stage timeline ----------------------------------------------------------------------------
    def stage_rows(self) -> list[dict]:
        """One row per stage: seconds, short facts, and whether it is done, running or still to come."""
        rows = []
        for stage in STAGES:
            seconds, facts, status = self._stage(stage)
            rows.append(
                {
                    "stage": stage,
                    "seconds": seconds,
                    "time": seconds_text(seconds) if seconds is not None else "",
                    "facts": facts,
                    "status": status,
                }
            )
        return rows

    def _stage(self, stage: str) -> tuple[float | None, list[str], str]:
        if stage in LOADING_STAGES:
            events = self.loading[stage]
            if not events:
                if stage == "weights" and self.progress:
                    return None, [f"tensors {self.progress['done']}/{self.progress['total']}"], "running"
                return None, [], "waiting"
            return sum(e.duration for e in events), loading_facts(stage, events), "done"
        if stage == "tokenization":
            if self.encode is None:
                return None, [], "waiting"
            d = self.encode.data
            facts = [
                f"{d.get('count', len(d.get('ids', [])))} tokens",
                "chat template"
                if d.get("kind_of_input") == "chat"
                else "plain text, chat template skipped"
                if d.get("chat_template_skipped")
                else "plain text",
            ]
            return self.encode.duration, facts, "done"
        if stage == "generation":
            if self.settings is None:
                return None, [], "waiting"
            settings = self.settings.data.get("settings", {})
            steps = self.steps()
            strategy = self.settings.data.get("strategy", {})
            facts = [
                f"{len(self.beams)}/{self.max_new_tokens} beam steps"
                if self.beams
                else f"{len(steps)}/{self.max_new_tokens} tokens",
                strategy.get("label") or ("sampling" if settings.get("do_sample") else "greedy"),
            ]
            if self.drafts:
                drafted = sum(len(d["drafted"]) for d in self.drafts)
                accepted = sum(d["accepted"] for d in self.drafts)
                facts.append(f"{accepted}/{drafted} drafted tokens accepted")
            if self.prefill is not None:
                facts.append(
                    f"prefill {self.prefill.data.get('prompt_tokens')} tokens in {seconds_text(self.prefill.duration)}"
                )
            decode = [s["forward_time"] for s in steps if s.get("forward") == "decode"]
            if decode and sum(decode) > 0:
                facts.append(f"{len(decode) / sum(decode):.1f} tokens/s")
            if self.stop_reason:
                facts.append(f"stopped: {self.stop_reason}")
            if self.end is not None:
                return self.end.duration, facts, "done"
            return self.step_seconds, facts, "done" if self.finished else "running"
        if self.decode is None:  # decoding
            return None, [], "waiting"
        d = self.decode.data
        facts = [f"{len(d.get('ids', []))} ids \u2192 {len(d.get('text', ''))} characters"]
        if d.get("skip_special_tokens"):
            facts.append("special tokens skipped")
        return self.decode.duration, facts, "done"


def loading_facts(stage: str, events: list[Event]) -> list[str]:
    """The key facts of a loading stage: where files came from, the model's shape, dtype, bytes, devices."""
    d = events[-1].data
    if stage == "registry":
        facts = [f"{d.get('task')} \u2192 {d.get('pipeline_class')}", f"model {d.get('model_used')}"]
        if d.get("default_model") and d.get("model_used") != d.get("default_model") and d.get("gguf_file_used"):
            facts.append(f"embedded instead of {d.get('default_model')}")
        return facts
    if stage == "config":
        files = [e.data for e in events if e.kind == "file" and not e.data.get("absent")]
        facts = []
        if files:
            caches = {}
            for f in files:
                caches[f.get("cache")] = caches.get(f.get("cache"), 0) + 1
            how = ", ".join(f"cache {c}" if n == len(files) else f"{n} cache {c}" for c, n in caches.items())
            facts.append(f"{len(files)} file{'s' if len(files) != 1 else ''} ({how})")
            commits = {f.get("commit") for f in files if f.get("commit")}
            if len(commits) == 1:
                facts.append(f"commit {next(iter(commits))[:7]}")
            facts.append(size_text(sum(f.get("size") or 0 for f in files)))
        config = [e.data for e in events if e.kind == "config"]
        if config:
            common = common_config(config[-1].get("hyperparameters", {}))
            facts.append(
                f"{config[-1].get('architecture')}, {common['num_hidden_layers']} layers, vocab {common['vocab_size']}"
            )
        return facts
    if stage == "tokenizer":
        facts = [str(d.get("model")), f"{d.get('vocab_size')} tokens"]
        if d.get("has_chat_template"):
            facts.append("chat template")
        return facts
    if stage == "weights":
        load = next((e.data for e in reversed(events) if e.kind == "load"), d)
        facts = [str(load.get("format")), f"{load.get('tensors')} tensors"]
        if load.get("parameters"):
            facts.append(f"{load['parameters'] / 1e6:.1f} M parameters")
        facts += [f"dtype {load.get('dtype')}", size_text(load.get("bytes"))]
        return facts
    if stage == "placement":
        devices = ", ".join(d.get("devices", []))
        per = d.get("bytes_per_device") or {}
        return [str(d.get("strategy")), f"devices {devices}", size_text(sum(per.values())) if per else ""]
    return []


def best_running(beams: list[dict]) -> dict | None:
    """The best running beam (slot 0 of the newest step) as a hypothesis {ids, path}: its tokens and, per step,
    the slot it extended, traced back through each step's running beams. None once no beam runs."""
    running = beams[-1].get("running") or []
    if not running or running[0].get("score", 0) <= -1e8:
        return None
    ids: list[int] = []
    path: list[int] = []
    slot = 0
    for record in reversed(beams):
        beam = (record.get("running") or [{}])[slot] if slot < len(record.get("running") or []) else {}
        if "token_id" not in beam:
            return None
        ids.insert(0, beam["token_id"])
        path.insert(0, beam.get("parent", 0))
        slot = beam.get("parent", 0)
    return {"ids": ids, "path": path}


def beam_steps(beams: list[dict], hypothesis: dict, number: int) -> list[dict]:
    """A returned beam hypothesis as steps the step view draws: at step t, what the beam it extended (path[t])
    scored for the next token (its log-probabilities after the processors, the top the trace kept), and the token
    it took. `prob` is that token's probability under the beam's distribution, None when outside the kept top."""
    steps = []
    ids, path = hypothesis.get("ids") or [], hypothesis.get("path") or []
    for t, token_id in enumerate(ids):
        if t >= len(beams):
            break
        record = beams[t]
        beam = path[t] if t < len(path) else 0
        entry = next((b for b in record.get("beams", []) if b.get("beam") == beam), None) or {}
        top = entry.get("top") or {"ids": [], "values": []}
        texts = record.get("token_texts") or {}
        token = texts.get(str(token_id), texts.get(token_id, f"#{token_id}"))
        values = dict(zip(top.get("ids", []), top.get("values", []), strict=False))
        log_prob = values.get(token_id)
        rank = top["ids"].index(token_id) + 1 if token_id in top.get("ids", []) else None
        steps.append(
            {
                "step": t,
                "position": record.get("position"),
                "sequence": number,
                "beam": beam,
                "beam_score": entry.get("score"),
                "token_id": token_id,
                "token": token,
                "text": token,
                "method": "beam",
                "beam_method": record.get("method"),
                "logits_title": f"beam {beam}'s log-probabilities (after the processors)",
                "logits_top": top,
                "logit": log_prob,
                "probs_top": {"ids": list(top.get("ids", [])), "values": [math.exp(v) for v in top.get("values", [])]},
                "prob": None if log_prob is None else math.exp(log_prob),
                "rank": rank,
                "processors": [],
                "token_texts": texts,
                "forward": record.get("forward"),
                "forward_time": record.get("forward_time"),
                "kv_cache": record.get("kv_cache"),
            }
        )
    return steps


# -- what each kind of a run's event does to the state --------------------------------------------------------------
Handler = Callable[[DashboardState, Event], None]


def keep(attribute: str, data: bool = False, seconds: bool = False) -> Handler:
    """A handler that keeps the event (or with data=True its data) in `attribute`: a list appends, anything else is
    replaced; seconds=True adds the event's duration to the run's step time."""

    def handler(state: DashboardState, event: Event) -> None:
        value = event.data if data else event
        current = getattr(state, attribute)
        if isinstance(current, list):
            current.append(value)
        else:
            setattr(state, attribute, value)
        if seconds:
            state.step_seconds += event.duration

    return handler


HANDLERS: dict[tuple[str, str], Handler] = {  # (stage, kind) -> how the state folds it in; any other kind only
    ("tokenization", "encode"): keep("encode"),  # lands in run_events and latest
    ("generation", "settings"): keep("settings"),
    ("generation", "prefill"): keep("prefill"),
    ("generation", "step"): DashboardState._step,
    ("generation", "beams"): DashboardState._beams,
    ("generation", "draft"): keep("drafts", data=True, seconds=True),
    ("generation", "inspect"): DashboardState._inspect,
    ("generation", "force"): lambda state, event: state._fork(event.data),
    ("generation", "end"): DashboardState._end,
    ("generation", "ranking"): DashboardState._ranking,
    ("decoding", "decode"): keep("decode"),
}


def handles(stage: str, kind: str) -> Callable[[Handler], Handler]:
    """Register how the dashboard state folds a kind in, for a view that needs more than the newest event of its
    kind (state.latest_event): a sum, a list, one entry per step. The handler keeps what it folds in
    `state.folds[(stage, kind)]` (emptied with each new run). One handler per kind; `unhandle` takes it back."""

    def register(handler: Handler) -> Handler:
        if (stage, kind) in HANDLERS:
            raise ValueError(f"{stage}/{kind} has a handler already ({HANDLERS[(stage, kind)]}); fold it there")
        HANDLERS[(stage, kind)] = handler
        return handler

    return register


def unhandle(stage: str, kind: str) -> None:
    HANDLERS.pop((stage, kind), None)
