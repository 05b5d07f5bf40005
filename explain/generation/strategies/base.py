"""What every decoding strategy is: a declaration the registry reads, and a run the pipeline advances.

A strategy class declares
    name         the registry's key for it ("one_sequence", "samples", "beam_search", "assisted", ...)
    title        a few words for the console and the views ("beam search")
    description  one line: what it does
    source       where transformers runs it (file and function), for the settings event and the lessons
    order        choose() asks the strategies in this order; the first that applies() runs the call
    knobs        the generate() arguments it reads (num_beams, ...), declared once (generation/knobs.py's Knob)
    in_transformers  False for a strategy only explain has: backend="transformers" refuses its knobs with
                 explain's message (settings.transformers_lacks) and the step-through shows no widget for them
and implements
    applies(settings)            True when these settings select it (transformers' get_generation_mode)
    settings_problem(settings)   a combination transformers refuses, or one explain cannot run (the message
                                 says what to use instead), or None
    warnings(settings, sources)  what transformers warns about (arguments it ignores in this mode)
    label(settings)              one line for the console: "beam search: 4 beams, length_penalty 1.0"
    mode(settings)               transformers' GenerationMode value ("greedy_search", "beam_sample", ...)
    run_class()                  the class of its runs: every one is built with the same arguments,
                                 run_class()(model, tokenizer, prompt_ids, settings, trace, run, run_options,
                                 prompt=..., options=...), and has the Generation interface
                                 (generation/contract.py's GenerationInterface)

`Run` below is what the strategies' runs add to the state every run shares (contract.RunState); the default,
greedy or sampling of one sequence, is generation/loop.py's Generation.
"""

from __future__ import annotations

import time
from typing import ClassVar

import torch

from ...errors import ExplainError
from ...models.cache import KVCache
from ...stages.placement import input_device, synchronize
from ..contract import RunState, no_prompt_tokens
from ..knobs import Knob
from ..options import RunOptions
from ..processors import build_processors
from ..processors.base import eos_ids
from ..rows import float32_list
from ..stopping import StopStrings


class DecodingStrategy:
    name: ClassVar[str] = "strategy"
    title: ClassVar[str] = "strategy"
    description: ClassVar[str] = ""
    source: ClassVar[str] = ""
    order: ClassVar[int] = 0
    knobs: ClassVar[tuple[Knob, ...]] = ()
    in_transformers: ClassVar[bool] = True

    @classmethod
    def applies(cls, settings: dict) -> bool:
        raise NotImplementedError

    @classmethod
    def settings_problem(cls, settings: dict) -> str | None:
        return None

    @classmethod
    def warnings(cls, settings: dict, sources: dict) -> list[str]:
        return []

    @classmethod
    def label(cls, settings: dict) -> str:
        return cls.title

    @classmethod
    def mode(cls, settings: dict) -> str:
        """transformers' GenerationMode value for these settings (what generate() dispatches on)."""
        return cls.name

    @classmethod
    def run_class(cls) -> type:
        raise NotImplementedError

    @classmethod
    def record(cls, settings: dict) -> dict:
        """What the settings event says about the strategy."""
        return {
            "name": cls.name,
            "mode": cls.mode(settings),
            "title": cls.title,
            "label": cls.label(settings),
            "description": cls.description,
            "source": cls.source,
        }


def set_by_call(settings: dict, sources: dict, name: str) -> bool:
    return sources.get(name) == "call" and settings.get(name) is not None


class Run(RunState):
    """The state a strategy's run keeps: the model, the settings, the processors, stopping, and the trace.
    A run of `rows` sequences in a batch (beams, or samples of one prompt); `run_id` is its call's id."""

    def __init__(
        self,
        model,
        tokenizer,
        prompt_ids: list[int],
        settings: dict,
        trace,
        run: int,
        run_options: RunOptions | None = None,
        prompt=None,
        options: dict | None = None,
        *,
        rows: int = 1,
        min_tokens_to_keep: int = 1,
    ):
        if not prompt_ids:
            raise no_prompt_tokens()
        run_options = run_options if run_options is not None else RunOptions()
        if run_options.trace_top == "all":  # a valid value (RunOptions checked it) that this strategy cannot keep
            raise ExplainError(
                f'trace_top="all" keeps whole rows of one sequence; {self.strategy_title()} runs '
                "several: use it with greedy decoding or sampling of one sequence, or pass a number"
            )
        if run_options.capture not in (None, "default"):
            raise ExplainError(
                f"capture={run_options.capture!r} records inside the model for one sequence; "
                f"{self.strategy_title()} runs several (or drafts): leave capture out, or run one "
                "sequence (num_return_sequences=1, num_beams=1, no assistant)"
            )
        self.start_state(trace, run, run_options)
        self.raw_logits = None  # the rows of several sequences are not kept: what_if and force refuse them
        self.model, self.tokenizer = model, tokenizer
        self.device = input_device(model)  # where inputs go (with offload, the first parameter may be meta)
        self.settings = dict(settings)
        self.prompt_ids = torch.tensor([prompt_ids], dtype=torch.long, device=self.device)  # (1, T)
        self.prompt_length = len(prompt_ids)
        self.rows, self.min_tokens_to_keep = rows, min_tokens_to_keep
        self.processors = self.build_processors(self.settings)
        self.eos = eos_ids(self.settings)
        self.stop_strings = StopStrings(tokenizer, self.settings.get("stop_strings"))
        self.context = model.config.max_position_embeddings  # every model file's config answers this name
        self.learned_positions = model.learned_positions  # True: no position past the window has an embedding
        self.prompt, self.options = prompt, dict(options or {})
        self.cache = KVCache()
        self.criteria = list(self.options.get("criteria") or [])  # the call's stopping_criteria, after explain's
        self.clock_start = time.time()  # max_time counts from here (generate() starts MaxTimeCriteria's clock)
        self._criteria_at, self._criteria_done = -1, []  # the criteria's answers for the sequences of one length

    @classmethod
    def strategy_title(cls) -> str:
        return getattr(cls, "title", "this strategy")

    # -- the pieces every strategy uses -------------------------------------------------------------
    def build_processors(self, settings: dict) -> list:
        return build_processors(
            settings,
            self.prompt_length,
            prompt_ids=self.prompt_ids,
            model=self.model,
            vocab_size=self.model.config.vocab_size,
            device=self.device,
            num_beams=self.rows,
            min_tokens_to_keep=self.min_tokens_to_keep,
        )

    def top(self, row: torch.Tensor, k: int, texts: dict) -> dict:
        """The k highest finite entries of a row over the vocabulary, their texts added to `texts`."""
        values, ids = torch.topk(row, min(k, row.numel()))
        keep = torch.isfinite(values)
        ids = ids[keep].tolist()
        for token_id in ids:
            texts[token_id] = self.token_text(token_id)
        return {"ids": ids, "values": float32_list(values[keep])}

    @torch.inference_mode()
    def forward(self, ids: torch.Tensor, keep: int = 1) -> torch.Tensor:
        """The model on new tokens `ids` (B, t) through the run's cache: float32 logits (B, keep, vocab)."""
        out = self.model(ids, cache=self.cache, logits_to_keep=keep)
        # float32 beside input_ids (the head may be on another GPU); the time is the forward's, not its queueing
        logits = out.logits[:, -keep:, :].to(device=self.device, dtype=torch.float32)
        synchronize(logits.device)
        return logits

    def stop_reason_of(self, ids: list[int], row: int | None = None) -> str | None:
        """Why a sequence (prompt included) stops after its last token, checked as Generation checks it: EOS, the
        length, the context window, a stop string, and for row `row` of the run max_time and the call's
        stopping_criteria; None if it goes on."""
        if ids[-1] in self.eos:
            return "eos"
        if len(ids) >= self.settings["max_length"]:
            return "max_length"
        if self.learned_positions and len(ids) >= self.context:  # rotary positions go on, as in transformers
            return "context_window"
        if self.stop_strings.completes(ids):
            return "stop_string"
        return self.further_stop(row) if row is not None else None

    def further_stop(self, row: int) -> str | None:
        """max_time, then the call's stopping_criteria, for row `row` of self.input_ids (the criteria called once a
        step on all rows, as generate() calls them)."""
        if self._criteria_at != self.input_ids.shape[1]:
            self._criteria_done = self.criteria_stops(self.input_ids)
            self._criteria_at = self.input_ids.shape[1]
        return self._criteria_done[row]

    def end_rows_step(self, index, forward, forward_time, tokens, records, start, t0) -> dict:
        """The end of one step of several rows (several samples, a batch): the step's record, the run's end once no
        row runs (its reasons joined when the rows stopped differently), and each running row's generation/step
        event, the step's time shared among them."""
        batch = {
            "step": index,
            "forward": forward,
            "forward_time": forward_time,
            "tokens": tokens.tolist(),
            "running": list(self.running),
        }
        self.steps.append(batch)
        if not any(self.running):
            reasons = sorted({r for r in self.stop_reasons if r})
            self._finish(reasons[0] if len(reasons) == 1 else ", ".join(reasons))
        duration = (time.perf_counter() - t0) / max(len(records), 1)
        for record in records:
            self.trace.emit("generation", "step", record, run=self.run_id, start=start, duration=duration)
        return batch

    def emit_prefill(self, start: float, duration: float, tokens: int) -> None:
        self.trace.emit(
            "generation",
            "prefill",
            {
                "prompt_tokens": tokens,
                "tokens_per_s": tokens / max(duration, 1e-9),
                "kv_cache": {"length": len(self.cache), "bytes": self.cache.nbytes},
                "branch": self.branch,
            },
            run=self.run_id,
            start=start,
            duration=duration,
        )

    # -- the run's API (the Generation interface) -----------------------------------------------------
    @property
    def sequences(self) -> list[list[int]]:
        """The sequences the call returns, prompt included, as generate() returns them (padded to one length)."""
        raise NotImplementedError

    @property
    def generated_ids(self) -> list[int]:
        return self.sequences[0][self.prompt_length :]

    @property
    def text(self) -> str:
        return self.tokenizer.decode(self.generated_ids, skip_special_tokens=False)

    def set_settings(self, **knobs) -> None:
        """Change knobs for the next steps (the processors are rebuilt), as Generation.set_settings does."""
        from ..settings import LIVE_SETTINGS, unknown_argument, validate  # the settings module imports this one

        for name in knobs:
            if name not in LIVE_SETTINGS:
                raise unknown_argument(name, LIVE_SETTINGS, "knob that can change mid-run")
        settings = validate({**self.settings, **knobs}, self.model.config.vocab_size)
        if settings.get("do_sample") != self.settings.get("do_sample"):
            raise ExplainError(
                f"do_sample cannot change in the middle of {self.strategy_title()}: the strategy "
                "was chosen from it; press Reset (or start a new call) with the new value"
            )
        self.processors = self.build_processors(settings)
        self.settings = settings

    def what_if(self, step: int, **knobs) -> dict:
        raise ExplainError(
            f"what-if replays one sequence's recorded logits; {self.strategy_title()} runs several: "
            "try it on a run of one sequence (num_return_sequences=1, num_beams=1, no assistant)"
        )

    def force(self, step: int, token_id: int):
        raise ExplainError(
            f"forcing a token branches one sequence; {self.strategy_title()} runs several: try it on "
            "a run of one sequence (num_return_sequences=1, num_beams=1, no assistant)"
        )

    def inspect(self, step: int, *args, **kwargs):
        raise ExplainError(
            f"looking inside replays one sequence; {self.strategy_title()} runs several: try it on "
            "a run of one sequence (num_return_sequences=1, num_beams=1, no assistant)"
        )


def timed() -> tuple[float, float]:
    """(wall clock, perf counter) at the start of something timed."""
    return time.time(), time.perf_counter()
