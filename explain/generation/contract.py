"""The Generation interface: what every run offers, whoever produced it.

Three kinds of object run one call: the explain backend's Generation (generation/loop.py, one sequence), each
decoding strategy's run (generation/strategies/, several samples, beams, drafts) and the transformers backend's
TransformersGeneration. The pipeline, the step-through controller, the views, explain.inside and the end-of-run
emitter (generation/ending.py) read them only through `GenerationInterface`; tests/test_generation_contract.py
proves each implementation has it.

`RunState` is the state they share, set up in one place: the run's ids in the trace, its RunOptions, the steps
recorded, whether and why it finished, whether its end was emitted, and the loop that steps it.
"""

from __future__ import annotations

import time
from typing import Any, Protocol, runtime_checkable

import torch

from ..errors import ExplainError
from ..utils.step_index import step_number, token_number, whole_number
from .options import RunOptions
from .rows import KeptLogits, float32_list


@runtime_checkable
class GenerationInterface(Protocol):
    """One run of one prompt, advanced a step at a time (a step: one token, one token of every sequence or beam,
    or one round of draft and check). Every event it emits carries `run_id`; a forced branch has its own `branch`."""

    model: Any
    tokenizer: Any
    trace: Any  # explain.trace.Trace
    run_id: int
    branch: int  # 0, or the branch id force() reserved
    run_options: RunOptions  # trace_top, keep_logits, capture
    trace_top: int | str
    keep_logits: bool | int
    capture: str | None
    settings: dict  # the generation settings it runs with (generation/settings event)
    processors: Any  # the logits processors of the next step, in order
    prompt_length: int
    steps: list[dict]  # each step's generation/step data
    raw_logits: KeptLogits | None  # each step's raw logits when keep_logits, for what_if and force
    printed: Any  # the generated text printed so far, never half a UTF-8 character (one str per row of samples)
    finished: bool
    stop_reason: str | None  # "eos", "max_length", "stop_string", "context_window", "interrupted", ...
    ended: bool  # True once its generation/end and decoding/decode are emitted (it ends once)
    output_text: str | None  # the decoded text, once ended
    options: dict  # the call's pipeline options (return_full_text, ...), for its postprocess
    warnings: list[str]  # what the settings event tells the reader about this run

    @property
    def generated_ids(self) -> list[int]: ...  # the first sequence's new tokens

    @property
    def text(self) -> str: ...  # generated_ids decoded, special tokens kept

    @property
    def sequences(self) -> list[list[int]]: ...  # what the call returns, prompt included

    def token_text(self, token_id: int) -> str: ...

    def step(self) -> dict: ...

    def run(self, max_steps: int | None = None) -> Any: ...

    def set_settings(self, **knobs) -> None: ...

    def what_if(self, step: int, **knobs) -> dict: ...

    def force(self, step: int, token_id: int) -> Any: ...

    def inspect(self, step: int, what=("lens", "attention"), **options) -> dict: ...


def no_prompt_tokens() -> ExplainError:
    return ExplainError(
        "the prompt has no tokens: this model has no BOS token to start from, so give it some text "
        "(or a chat message list)"
    )


def index_argument(value, what: str) -> int:
    """A step number or token id: an integer (a Python, numpy or 0-d torch integer), never a float, a bool or a
    string (the one check of explain/utils/step_index.py)."""
    return whole_number(value, what)


class RunState:
    """The state every run keeps, and the loop that steps it; each producer adds its model, ids and settings."""

    tokenizer: Any  # set by each producer: explain's Tokenizer or transformers' tokenizer
    settings: dict  # the run's generation settings, every knob resolved
    criteria: list  # the explain backend's runs: the call's stopping_criteria
    clock_start: float | None  # and when max_time started counting (None: not yet)

    def start_state(self, trace, run: int, run_options: RunOptions | None, branch: int = 0) -> None:
        run_options = run_options if run_options is not None else RunOptions()
        self.trace, self.run_id, self.branch = trace, run, branch
        self.run_options = run_options
        self.trace_top, self.keep_logits, self.capture = (
            run_options.trace_top,
            run_options.keep_logits,
            run_options.capture,
        )
        self.steps: list[dict] = []
        self.raw_logits = KeptLogits.from_option(run_options.keep_logits)  # whole rows for what-if and force
        # the decoded text of the generated tokens that is complete (no half UTF-8 sequence); a list of them, one a
        # row, for several sequences
        self.printed: Any = ""
        self.finished: bool = False
        self.stop_reason: str | None = None
        self.ended = False  # True once the pipeline has emitted this run's end and decode events
        self.output_text: str | None = None
        self.options: dict = {}
        self.warnings: list[str] = []
        self._token_text: dict[int, str] = {}

    def token_text(self, token_id: int) -> str:
        """One token's text, special tokens kept (decoded once per run)."""
        if token_id not in self._token_text:
            self._token_text[token_id] = self.tokenizer.decode([token_id], skip_special_tokens=False)
        return self._token_text[token_id]

    def refuse_if_finished(self) -> None:
        if self.finished:
            raise ExplainError(f"this generation has finished ({self.stop_reason}); start a new call or reset")

    def kept_logits(self, step) -> torch.Tensor:
        """Step `step`'s raw logits, kept for what-if and force (refuses a step not generated, or no longer kept)."""
        if self.raw_logits is None:
            raise ExplainError(
                "what-if needs the raw logits of each step: create the run with keep_logits=True "
                "(the step-through controller does)"
            )
        return self.raw_logits[step_number(step, len(self.steps))]  # refuses a negative step, as force does

    def criteria_stops(self, sequences: torch.Tensor, scores=None) -> list[str | None]:
        """The stopping criteria after explain's own, as generate() lists them, for each row of `sequences` (prompt
        included): "max_time" once the run has taken longer (MaxTimeCriteria), else the class name of the first of
        the call's stopping_criteria that says the row is done, else None. Each criterion is called once on all
        rows, as generate()'s StoppingCriteriaList is, with `scores` (None unless return_dict_in_generate and
        output_scores): on one sequence, a batch's rows, and in beam search every candidate of the step
        (transformers' `_beam_search`, step d)."""
        rows = sequences.shape[0]
        max_time = self.settings.get("max_time")
        if max_time is not None and self.clock_start is not None and time.time() - self.clock_start > max_time:
            return ["max_time"] * rows
        reasons: list[str | None] = [None] * rows
        for criterion in self.criteria:
            done = torch.as_tensor(criterion(sequences, scores)).reshape(-1).tolist()
            for row in range(rows):
                if reasons[row] is None and (done[row] if rows > 1 and len(done) > 1 else all(done)):
                    reasons[row] = type(criterion).__name__
        return reasons

    def what_if_answer(self, step: int, settings: dict, knobs, scores: torch.Tensor) -> dict:
        """A what-if's answer (both producers' what_if), from `scores`: step `step`'s raw logits after the processors
        the other knobs build. The ten likeliest tokens, how many stay possible, and the probability and rank the
        token the run took would have had; `settings` the knobs in force, shown with the sampling ones."""
        probs = torch.softmax(scores, dim=-1)[0]
        top_probs, top_ids = torch.topk(probs, min(10, probs.numel()))
        recorded = self.steps[step]["token_id"]
        shown = ("do_sample", "temperature", "top_k", "top_p", "min_p", "repetition_penalty", *knobs)
        return {
            "step": step,
            "settings": {k: settings.get(k) for k in dict.fromkeys(shown)},
            "ids": top_ids.tolist(),
            "probs": float32_list(top_probs),
            "tokens": [self.token_text(i) for i in top_ids.tolist()],
            "kept": int((probs > 0).sum()),
            "recorded_token": recorded,
            "recorded_token_prob": float(probs[recorded]),
            "recorded_token_rank": int((probs > probs[recorded]).sum()) + 1,
        }

    def force_arguments(self, step, token_id, vocab_size: int) -> tuple[int, int]:
        """force()'s step and token id, checked: a step generated, a token of the vocabulary."""
        return step_number(step, len(self.steps)), token_number(token_id, vocab_size)

    def step(self) -> dict:
        raise NotImplementedError

    def run(self, max_steps: int | None = None):
        """Step until finished (or max_steps more steps)."""
        count = 0
        while not self.finished and (max_steps is None or count < max_steps):
            self.step()
            count += 1
        return self

    def _finish(self, reason: str, record: dict | None = None) -> None:
        self.finished, self.stop_reason = True, reason
        if record is not None:
            record["stop_reason"] = reason
