"""One generation of a traced transformers pipeline, with the interface of explain's Generation.

A pipeline call runs transformers' generate() once; `observing` (hooks.py) reports every step to this object,
which writes explain's events. A step-through (`pipe.start(...)`) runs the real generate() once per token: each
call gets the ids so far and the model's own Cache object from the previous call, and a PauseAfterOneToken
criterion ends it after one token. Every step therefore runs transformers' own forward, processors, token choice
and stopping criteria; under one seed a step-through draws the same tokens as a call.

After the first step the lengths are passed as totals: generate() counts max_new_tokens / min_new_tokens from
the ids it is given, which grow by one each step, so they become max_length / min_length (the same limits;
generate itself turns them into totals, GenerationMixin._prepare_generated_length). From then on transformers
builds a MinLengthLogitsProcessor where the first step had a MinNewTokensLengthLogitsProcessor (both when it had
both); they suppress EOS for exactly the same steps.
"""

from __future__ import annotations

import copy
import math
import time
import warnings

import torch
from transformers.generation.logits_process import LogitsProcessorList
from transformers.generation.stopping_criteria import StoppingCriteriaList

from ...errors import ArgumentError, ExplainError
from ...generation.contract import RunState, index_argument
from ...generation.options import DEFAULT_TRACE_TOP, RunOptions
from ...generation.rows import all_rows_warning, encode_row, float32_list
from ...generation.settings import KNOBS as ALL_KNOBS
from ...generation.settings import LIVE_SETTINGS, transformers_lacks, unknown_argument, validate
from .beams import BEAM_MODES, BeamWatch, DraftWatch
from .cache import cropped
from .hooks import PauseAfterOneToken, generation_mode, observing
from .records import cache_record, processor_effect, processor_records, settings_record, stop_reason, top

# the knobs that are generate() arguments rather than GenerationConfig fields
GENERATE_ARGUMENTS = (
    "logits_processor",
    "prefix_allowed_tokens_fn",
    "negative_prompt_ids",
    "negative_prompt_attention_mask",
)
TRACED_MODES = ("greedy_search", "sample")


class SettingsResolved(Exception):
    """Raised from inside generate() once it has resolved its settings, to stop it there (prepare)."""


class TransformersGeneration(RunState):
    """The state of one run (the Generation interface, explain/generation/contract.py): ids, the model's Cache,
    the steps recorded, whether and why it stopped."""

    def __init__(
        self,
        pipeline,
        input_ids: torch.Tensor,
        generate_kwargs: dict,
        run: int,
        run_options: RunOptions | None = None,
        branch: int = 0,
        sources: dict | None = None,
    ):
        self.start_state(pipeline.trace, run, run_options, branch)
        self.pipeline, self.model, self.tokenizer = pipeline, pipeline.model, pipeline.tokenizer
        self.input_ids = input_ids  # (1, T), grows by one each step
        self.prompt_length = input_ids.shape[1]
        self.generate_kwargs = dict(generate_kwargs)  # what the pipeline passes to generate()
        self.sources = dict(sources or {})
        self.generation_config = None  # the GenerationConfig generate() prepared (first step)
        self.settings: dict = {}
        self.processors = LogitsProcessorList()  # the list the last step ran
        self.criteria: list = []
        self.cache = None  # transformers' Cache object, kept between the steps of a step-through
        self.traces_steps = False
        self.mode = None
        self.prompt_text = None
        self._totals: dict = {}  # max_length / min_length as totals, for the steps after the first
        self._pending: dict | None = None
        self._forward: dict = {}
        self._settings_only = False
        self._records: dict[int, dict] = {}  # id(processor) -> its record (records.processor_records)
        # a batch of prompts (batch_size > 1): each row's prompt index in the call's list, its own prompt length (the
        # attention mask's ones), whether it still runs, and its printed text; None / empty for one sequence
        self.batch_rows: list[int] | None = None
        self.row_lengths: list[int] = []
        self.running: list[bool] = []
        self.row_printed: list[str] = []
        self.batch_note: dict | None = None  # the settings event's "batch"
        # beam search / beam sampling of one prompt: its watch (beams.py), and the sequences generate() returned
        self.beam_watch: BeamWatch | None = None
        self.beam_sequences: list[list[int]] | None = None
        # greedy assisted decoding of one prompt (prompt lookup or an assistant model): its watch (beams.py), which
        # writes generation/draft and the steps; the assistant model and tokenizer generate() is given (the call's,
        # else the pipeline's), set by the pipeline
        self.draft_watch: DraftWatch | None = None
        self.assistant_model = None
        self.assistant_tokenizer = None

    @property
    def steps_traced(self) -> bool:
        """Whether this call's steps are traced: one sequence's (or a batch's), a beam search, assisted decoding."""
        return self.traces_steps or self.beam_watch is not None or self.draft_watch is not None

    @property
    def criteria_names(self) -> list[str]:
        """The stopping criteria generate() checked after each token, by class."""
        return [type(c).__name__ for c in self.criteria]

    def __repr__(self) -> str:
        state = f"finished: {self.stop_reason}" if self.finished else "running"
        return f"TransformersGeneration({len(self.steps)} steps, branch {self.branch}, {state})"

    # -- state ---------------------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.pipeline.device

    @property
    def generated_ids(self) -> list[int]:
        return self.input_ids[0, self.prompt_length :].tolist()

    @property
    def text(self) -> str:
        return self.pipeline.decode_ids(self.generated_ids, skip_special_tokens=False)

    @property
    def sequences(self) -> list[list[int]]:
        """The sequences the call returns, prompt included: beam search's first num_return_sequences finished ones
        (cut to the longest of them, as generate() returns them), else the one sequence traced."""
        if self.beam_sequences is not None:
            return self.beam_sequences
        return [self.input_ids[0].tolist()]

    def token_text(self, token_id: int) -> str:
        return self.pipeline.token_text(token_id)

    # -- what the hooks report (hooks.observing) -------------------------------------------------------------
    def on_settings(self, config, processors, arguments: dict) -> bool:
        """generate() built its processors for `config` (`arguments`: what it passed the builder); returns whether
        its steps are traced."""
        self.processors, self.mode = processors, generation_mode(config, self.assistant_model)
        batch_of_one_each = self.batched and (config.num_return_sequences or 1) == 1
        self.traces_steps = self.mode in TRACED_MODES and (self.input_ids.shape[0] == 1 or batch_of_one_each)
        if self.mode in BEAM_MODES and self.input_ids.shape[0] == 1 and self.generation_config is None:
            self.beam_watch = BeamWatch(self, config)  # one prompt's beams: traced into generation/beams
        if self.mode == "assisted_generation" and self.input_ids.shape[0] == 1 and self.generation_config is None:
            if self._drafts_untraced(config) is None:  # greedy assisted decoding: traced into generation/draft
                self.draft_watch = DraftWatch(self, config)
        records = processor_records(config, processors, arguments, self.model.config.get_text_config().vocab_size)
        self._records = {id(p): r for p, r in zip(processors, records, strict=True)}
        if self.generation_config is not None:  # a later step of a step-through
            return self.traces_steps
        self.generation_config = copy.deepcopy(config)
        self.settings = settings_record(config, self.prompt_length)
        self._totals = {"max_length": config.max_length, "max_new_tokens": None}
        if config.min_new_tokens is not None:
            self._totals.update(min_length=config.min_length, min_new_tokens=None)
        data = {
            "settings": self.settings,
            "sources": self.sources,
            "processors": records,
            "prompt_tokens": self.prompt_length,
            "dtype": str(self.model.dtype).replace("torch.", ""),
            "device": str(self.device),
            "generation_mode": self.mode,
            "steps_traced": self.steps_traced,
        }
        if self.batch_note is not None:
            data["batch"] = self.batch_note
        if self.beam_watch is not None:
            data["strategy"] = self.beam_watch.strategy()
        if self.trace_top == "all":
            steps = max((config.max_length or 0) - self.prompt_length, 0)
            warning = all_rows_warning(len(processors), self.model.config.get_text_config().vocab_size, steps)
            data["warnings"] = [warning]
            warnings.warn(
                warning + f"; pass trace_top={DEFAULT_TRACE_TOP} (the default) to keep only the top entries",
                stacklevel=2,
            )
        if not data["steps_traced"]:
            data["why_not_traced"] = (
                f"{self.mode} of this call is not traced: explain traces one sequence (greedy search or sampling, "
                "batch of one), a batch of prompts with one sequence each, beam search, and greedy assisted "
                "decoding of one prompt (prompt lookup, or an assistant model of the same tokenizer)"
            )
            if self.mode == "assisted_generation" and self._drafts_untraced(config):
                data["why_not_traced"] += f"; this call: {self._drafts_untraced(config)}"
        self.trace.emit("generation", "settings", data, run=self.run_id)
        if self._settings_only:
            raise SettingsResolved()
        return self.traces_steps

    def _drafts_untraced(self, config) -> str | None:
        """Why this call's assisted decoding is not traced (None: it is). Traced: greedy, drafted by prompt lookup or
        by an assistant model through transformers' AssistedCandidateGenerator (same tokenizer, a model other than
        the target: the assistant's own generate() must not run through the target's hooks)."""
        if config.do_sample:
            return (
                "sampling with a draft (speculative sampling's uniform draws happen inside transformers' "
                '_speculative_sampling, out of sight); backend="explain" traces it'
            )
        if getattr(config, "assistant_early_exit", None) is not None:
            return "assistant_early_exit drafts with the model's own first layers"
        if getattr(config, "assistant_ensemble_weight", None) is not None:
            return "assistant_ensemble_weight checks the draft against a blend of the two models"
        if config.prompt_lookup_num_tokens is not None:
            return None
        assistant = self.assistant_model
        if assistant is None or getattr(config, "use_mtp", False) or getattr(config, "speculation_type", None):
            return "this candidate generator (multi-token prediction or DFlash) is not traced"
        if self.assistant_tokenizer is not None:
            return "the assistant has its own tokenizer (universal assisted decoding re-encodes every draft)"
        if assistant is self.model:
            return (
                "the assistant is the model itself (its drafts would run through the target's hooks); pass a "
                "separate copy of the model, or another model of the same tokenizer"
            )
        if type(assistant).__name__.startswith(("Gemma4Assistant", "Gemma4UnifiedAssistant")):
            return "a Gemma 4 assistant drafts from the target's shared key/value states"
        return None

    def on_forward_start(self, input_ids, cache, clock: float) -> None:
        past = cache.get_seq_length() if cache is not None else 0
        tokens = input_ids.shape[1] if input_ids is not None else None
        if self.beam_watch is not None and input_ids is not None:  # every beam's copy of the prompt, as explain counts
            tokens = input_ids.numel()
        self._forward = {"start": time.time(), "clock": clock, "past": past, "tokens": tokens}

    def on_forward_end(self, cache, clock: float) -> None:
        if self.finished or "clock" not in self._forward:
            return
        duration = clock - self._forward.pop("clock")
        kind = "decode" if self._forward["past"] > 0 else "prefill"
        self.cache = cache
        self._forward.update(forward=kind, forward_time=duration, kv_cache=cache_record(cache))
        if kind == "prefill":
            tokens = self._forward["tokens"] or self.input_ids.shape[1]
            self.trace.emit(
                "generation",
                "prefill",
                {
                    "prompt_tokens": tokens,
                    "tokens_per_s": tokens / max(duration, 1e-9),
                    "kv_cache": self._forward["kv_cache"],
                    "branch": self.branch,
                },
                run=self.run_id,
                start=self._forward["start"],
                duration=duration,
            )

    def on_logits(self, input_ids, raw: torch.Tensor) -> None:
        if self.finished:
            return
        self._pending = {
            "raw": raw.clone() if len(self.processors) else raw,
            "processors": [],
            "token_texts": {},
            "start": self._forward.get("start", time.time()),
            "clock": time.perf_counter(),
        }
        if self.draft_watch is not None:  # one of a round's positions: the round's watch keeps them all
            self.draft_watch.pendings.append(self._pending)
        if self.batched:  # each row's processors and token texts; whole rows and kept logits are one sequence's
            self._pending.update(
                row_processors={row: [] for row in self.live_rows()}, row_texts={row: {} for row in self.live_rows()}
            )
            return
        if self.trace_top == "all":  # whole rows, as the explain backend keeps them (explain.generation.rows)
            self._pending["rows"] = {"logits": encode_row(raw[0])}
        if self.raw_logits is not None:
            self.raw_logits.append(raw[0])

    def on_processor(self, processor, input_ids, before, after) -> None:
        if self._pending is not None and self.batched:
            record = self._records[id(processor)]
            for row, effects in self._pending["row_processors"].items():
                texts = self._pending["row_texts"][row]
                effects.append(
                    processor_effect(
                        record,
                        before[row : row + 1],
                        after[row : row + 1],
                        self.trace_top,
                        lambda token_id, texts=texts: texts.setdefault(token_id, None),
                    )
                )
        elif self._pending is not None:
            record = self._records[id(processor)]
            self._pending["processors"].append(
                processor_effect(record, before, after, self.trace_top, self._remember(self._pending))
            )
            if "rows" in self._pending:
                self._pending["rows"][record["name"]] = encode_row(after[0])

    def on_scores(self, scores: torch.Tensor) -> None:
        if self._pending is not None:
            self._pending["scores"] = scores

    def on_criteria(self, criteria) -> None:
        self.criteria = [c for c in criteria if not isinstance(c, PauseAfterOneToken)]

    def on_token(self, input_ids: torch.LongTensor, fired: list, per_row: list | None = None) -> None:
        """The stopping criteria ran on the ids with the new token: the step is complete; emit it. `per_row`: in a
        batch, the criteria that fired for each row."""
        if self.draft_watch is not None:  # a round of prompt lookup ends: its draft and its tokens
            self._pending = None
            self.draft_watch.on_round_end(input_ids, fired)
            return
        pending, self._pending = self._pending, None
        if pending is None or self.finished:
            return
        if self.batched and per_row is not None:
            self._on_batch_token(pending, input_ids, per_row)
            return
        self.input_ids = input_ids[:1].detach().to("cpu")
        if not self.steps and self.branch == 0:  # generate() may have started from BOS (an empty prompt)
            self.prompt_length = self.input_ids.shape[1] - 1
        fired = [c for c in fired if not isinstance(c, PauseAfterOneToken)]
        record = self._record(
            pending, int(self.input_ids[0, -1]), "sample" if self.generation_config.do_sample else "greedy"
        )
        reason = stop_reason(fired)
        if reason is not None:
            record["stopped_by"] = [type(c).__name__ for c in fired]
            self._finish(reason, record)
        self.steps.append(record)
        duration = self._forward.get("forward_time", 0.0) + time.perf_counter() - pending["clock"]
        self.trace.emit("generation", "step", record, run=self.run_id, start=pending["start"], duration=duration)
        if self.capture == "inside":
            self.inspect(record["step"])

    # -- a batch of prompts ----------------------------------------------------------------------------------------
    @property
    def batched(self) -> bool:
        return self.batch_rows is not None and len(self.batch_rows) > 1

    def live_rows(self) -> list[int]:
        return [row for row, going in enumerate(self.running) if going]

    def start_batch(self, batch_rows: list[int], attention_mask: torch.Tensor | None) -> None:
        """This run is a batch: row i is prompt batch_rows[i] of the call's list, padded as `attention_mask` says."""
        self.batch_rows = list(batch_rows)
        self.row_lengths = (
            attention_mask.sum(-1).tolist() if attention_mask is not None else [self.prompt_length] * len(batch_rows)
        )
        self.running = [True] * len(batch_rows)
        self.row_printed = [""] * len(batch_rows)

    def _on_batch_token(self, pending: dict, input_ids: torch.LongTensor, per_row: list) -> None:
        """One step of a batch: a generation/step per row still running (`sequence` its row, `batch_row` its
        prompt), as the explain backend records a batch; a row ends when a criterion fires for it."""
        self.input_ids = input_ids.detach().to("cpu")
        tokens = self.input_ids[:, -1].tolist()
        method = "sample" if self.generation_config.do_sample else "greedy"
        index, records = len(self.steps), []
        for row in pending["row_processors"]:
            mine = dict(
                pending,
                raw=pending["raw"][row : row + 1],
                processors=pending["row_processors"][row],
                token_texts=pending["row_texts"][row],
            )
            if "scores" in pending:
                mine["scores"] = pending["scores"][row : row + 1]
            record = self._record(mine, tokens[row], method, row=row)
            fired = [c for c in per_row[row] if not isinstance(c, PauseAfterOneToken)]
            reason = stop_reason(fired)
            if reason is not None:
                record["stopped_by"] = [type(c).__name__ for c in fired]
                record["stop_reason"] = reason
                self.running[row] = False
            records.append(record)
        self.steps.append(
            {
                "step": index,
                "forward": self._forward.get("forward"),
                "forward_time": self._forward.get("forward_time"),
                "tokens": tokens,
                "running": list(self.running),
            }
        )
        if not any(self.running):
            reasons = sorted({r["stop_reason"] for r in records if r.get("stop_reason")})
            self._finish(", ".join(reasons) if reasons else "max_length")
        duration = (self._forward.get("forward_time", 0.0) + time.perf_counter() - pending["clock"]) / len(records)
        for record in records:
            self.trace.emit("generation", "step", record, run=self.run_id, start=pending["start"], duration=duration)

    # -- looking inside ------------------------------------------------------------------------------------------
    def inspect(self, step: int, what=("lens", "attention"), **options) -> dict:
        """The logit lens, attention weights and/or input attribution of step `step` (explain.inside), computed by
        replaying the step on transformers' model from this run's Cache; what=("lens", "attention", "attribution")."""
        from ...inside import inspect_step

        return inspect_step(self, step, what=what, **options)

    def replay_step(self, step: int, attentions: bool = True):
        """explain.inside's replay of one step, on transformers' forward (backends/transformers/inside.py)."""
        from .inside import replay

        return replay(self, step, attentions=attentions)

    @staticmethod
    def _remember(pending):
        texts = pending["token_texts"]
        return lambda token_id: texts.setdefault(token_id, None)

    def _record(self, pending: dict, token: int, method: str, row: int | None = None) -> dict:
        """The step's record; `row`: the row of a batch it is for (pending then holds that row's values)."""
        raw, scores = pending["raw"], pending.get("scores", pending["raw"])
        texts = pending["token_texts"]
        remember = self._remember(pending)
        position = self.input_ids.shape[1] - 1 if row is None else self.row_lengths[row] + len(self.steps)
        record = {
            "step": len(self.steps),
            "position": position,
            "branch": self.branch,
            "logits_top": top(raw, self.trace_top, remember),
            "processors": pending["processors"],
        }
        if row is not None:  # the row's own position (pads not counted), its row and its prompt
            record.update(sequence=row, batch_row=self.batch_rows[row])
        probs = torch.softmax(scores, dim=-1)  # (1, vocab): the distribution generate() drew from (or took the max of)
        raw_probs = probs if scores is raw else torch.softmax(raw, dim=-1)
        p = probs[0]
        entropy = _entropy_bits(scores[0], p, any(r["removed"] for r in pending["processors"]))
        # the 10 most likely tokens are the first 10 of the scores' own top (softmax keeps the order): the record of
        # the last processor that changed the scores, or the raw logits' when none did
        ranked = next((r["top"] for r in reversed(pending["processors"]) if r["top"] is not None), record["logits_top"])
        if len(ranked["ids"]) >= 10:
            top_ids = torch.tensor(ranked["ids"][:10])
            top_probs = p[top_ids]
        else:
            top_probs, top_ids = torch.topk(p, min(10, p.numel()))
        for token_id in top_ids.tolist():
            remember(token_id)
        self.pipeline.remember_texts([*texts, token])  # every id the record names, decoded in one batch
        if row is None:
            full = self.text
            piece = ""
            if not full.endswith("\ufffd"):  # wait for the rest of a multi-byte character before printing
                piece, self.printed = full[len(self.printed) :], full
        else:
            full = self.pipeline.decode_ids(self.input_ids[row, self.prompt_length :].tolist())
            piece = ""
            if not full.endswith("\ufffd"):
                piece, self.row_printed[row] = full[len(self.row_printed[row]) :], full
        record.update(
            token_id=token,
            token=self.token_text(token),
            text=piece,
            method=method,
            prob=float(p[token]),
            raw_prob=float(raw_probs[0, token]),
            logit=float(raw[0, token]),
            rank=_rank(raw, token, record["logits_top"]),
            entropy_bits=entropy,
            probs_top={"ids": top_ids.tolist(), "values": float32_list(top_probs)},
            kv_cache=self._forward.get("kv_cache", cache_record(self.cache)),
            forward=self._forward.get("forward"),
            forward_time=self._forward.get("forward_time"),
            token_texts={str(k): self.token_text(k) for k in texts},
        )  # str keys: as JSON has them
        if "rows" in pending:
            record["rows"] = {**pending["rows"], "probs": encode_row(p)}
        return record

    # -- running: a pipeline call, or one token of a step-through ------------------------------------------------
    def watching(self):
        """The hooks that report one generate() call of the pipeline's model to this object."""
        return observing(self.model, self)

    def prepare(self) -> None:
        """Resolve the settings as generate() does, without generating: generate() runs up to building its
        processors (validation, special tokens, lengths), the settings event is emitted, and it is stopped there."""
        self._settings_only = True
        try:
            self.generate()
        except SettingsResolved:
            pass
        finally:
            self._settings_only = False

    def generate(self, **overrides):
        """One real generate() call on the ids so far, watched; returns what generate() returns."""
        kwargs = {**self.generate_kwargs, **overrides}
        ids = self.input_ids.to(self.device)
        with self.watching(), torch.inference_mode():
            return self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kwargs)

    def step(self) -> dict:
        """Generate one token with the real generate(); emits and returns the step's generation/step data."""
        self.refuse_if_finished()
        if self.mode is not None and self.mode not in TRACED_MODES:
            raise ExplainError(
                f'{self.mode} cannot be stepped through on backend="transformers": it steps through greedy search '
                "and sampling (num_beams=1, no assistant model); a call traces beam search whole, and "
                'backend="explain" steps through it'
            )
        count = len(self.steps)
        criteria = StoppingCriteriaList([*(self.generate_kwargs.get("stopping_criteria") or []), PauseAfterOneToken()])
        overrides = {"stopping_criteria": criteria}
        if self.cache is not None:
            overrides["cache"] = self.cache
        if self.steps:
            overrides.update(self._totals)
        self.generate(**overrides)
        if not self.traces_steps:
            raise ExplainError(
                f"{self.mode} cannot be stepped through: explain steps through greedy search and "
                "sampling (num_beams=1, no assistant model)"
            )
        if len(self.steps) != count + 1:
            raise RuntimeError(f"generate() made {len(self.steps) - count} steps where one was asked")
        return self.steps[-1]

    # -- knobs, what-if, forcing ---------------------------------------------------------------------------------
    def _changed(self, knobs: dict, what: str) -> dict:
        """The knobs whose value differs from the run's, checked as the explain backend checks them: a knob of the
        processor registry that may change between steps (LIVE_SETTINGS), a value its own check accepts."""
        for name in knobs:
            if transformers_lacks(name):  # a knob of a processor or a strategy only explain has
                raise ArgumentError(transformers_lacks(name))
            if name not in ALL_KNOBS:
                raise unknown_argument(name, LIVE_SETTINGS, f"knob for {what}")
            if name not in LIVE_SETTINGS:
                raise ExplainError(
                    f"{name} cannot change {what}: it is fixed when the run starts; start a new run "
                    f"with it (pipe.start(prompt, {name}=...)). Knobs that can change: "
                    f"{', '.join(LIVE_SETTINGS)}"
                )
        changed = {}
        for name, value in knobs.items():
            try:
                same = bool(value == self.settings.get(name))
            except (TypeError, ValueError, RuntimeError):  # tensors, objects: take the value as given
                same = False
            if not same:
                changed[name] = value
        validate({**self.settings, **changed}, self.model.config.get_text_config().vocab_size)
        return changed

    def set_settings(self, **knobs) -> None:
        """Change knobs (any processor's of the registry that may change mid-run) for the next steps: generate()
        builds its processors from them."""
        changed = self._changed(knobs, "mid-run")
        self.settings.update(changed)
        if "min_new_tokens" in changed:  # a total, as the steps after the first pass it (see the module docstring)
            minimum = changed.pop("min_new_tokens")
            self._totals.update(min_new_tokens=None, min_length=self.prompt_length + (minimum or 0))
        self.generate_kwargs.update(changed)

    def _processors_for(self, overrides: dict) -> LogitsProcessorList:
        """The processor list generate() builds with these knobs changed (its own builder, GenerationMixin)."""
        config = copy.deepcopy(self.generation_config)
        arguments = {name: overrides.get(name, self.generate_kwargs.get(name)) for name in GENERATE_ARGUMENTS}
        config.update(
            **{
                k: v
                for k, v in overrides.items()
                if k not in GENERATE_ARGUMENTS and hasattr(config, k) and k != "min_new_tokens"
            }
        )
        prompt = self.input_ids[:, : self.prompt_length].to(self.device)
        return self.model._get_logits_processor(
            generation_config=config,
            input_ids_seq_length=self.prompt_length,
            encoder_input_ids=prompt,
            prefix_allowed_tokens_fn=arguments["prefix_allowed_tokens_fn"],
            logits_processor=LogitsProcessorList(arguments["logits_processor"] or []),
            device=self.device,
            model_kwargs={},
            negative_prompt_ids=arguments["negative_prompt_ids"],
            negative_prompt_attention_mask=arguments["negative_prompt_attention_mask"],
        )

    def what_if(self, step: int, **knobs) -> dict:
        """Run the processors transformers builds for other knobs on step `step`'s recorded raw logits."""
        step = index_argument(step, "step")
        scores = self.kept_logits(step)[None].to(self.device)
        changed = self._changed(knobs, "in a what-if")
        settings = {**self.settings, **changed}
        live = {k: v for k, v in self.generate_kwargs.items() if k in LIVE_SETTINGS}  # set_settings' changes too
        ids = self.input_ids[:, : self.steps[step]["position"]].to(self.device)
        with torch.inference_mode():
            scores = self._processors_for({**live, **changed})(ids, scores)
        return self.what_if_answer(step, settings, changed, scores)

    def force(self, step: int, token_id: int) -> TransformersGeneration:
        """A new run that is this one up to `step`, then takes `token_id` there; this run is left as it was."""
        step, token_id = self.force_arguments(step, token_id, self.model.config.get_text_config().vocab_size)
        position = self.steps[step]["position"]
        other = TransformersGeneration.branch_of(self, step, token_id)
        self.trace.emit(
            "generation",
            "force",
            {
                "step": step,
                "position": position,
                "token_id": token_id,
                "token": other.steps[-1]["token"],
                "from_branch": self.branch,
                "branch": other.branch,
                "replaced": self.steps[step]["token_id"],
            },
            run=self.run_id,
        )
        return other

    @classmethod
    def branch_of(cls, parent: TransformersGeneration, step: int, token_id: int) -> TransformersGeneration:
        """The parent's run up to `step`, `token_id` taken there: its ids, settings, steps and a cropped copy of its
        Cache (or none, when the cache cannot be cropped back: the next step then prefills the whole prefix)."""
        position = parent.steps[step]["position"]
        ids = torch.cat([parent.input_ids[:, :position], torch.tensor([[token_id]])], dim=1)
        other = cls(
            parent.pipeline,
            parent.input_ids[:, : parent.prompt_length],
            parent.generate_kwargs,
            run=parent.run_id,
            run_options=parent.run_options,
            branch=parent.trace.new_branch(parent.run_id),
            sources=parent.sources,
        )
        other.input_ids = ids
        other.generation_config, other.settings = copy.deepcopy(parent.generation_config), dict(parent.settings)
        other.traces_steps, other.mode, other._totals = parent.traces_steps, parent.mode, dict(parent._totals)
        other.prompt_text, other.options = parent.prompt_text, dict(parent.options)
        other.cache = cropped(parent.cache, position)
        other.steps = [dict(s, branch=other.branch) for s in parent.steps[:step]]
        other.raw_logits = parent.raw_logits.upto(step) if parent.raw_logits is not None else None
        forced = dict(
            parent.steps[step],
            token_id=token_id,
            token=other.token_text(token_id),
            forced=True,
            branch=other.branch,
            text=None,
        )
        forced.pop("stop_reason", None)
        forced.pop("stopped_by", None)
        other.steps.append(forced)
        other.printed = other.text if not other.text.endswith("\ufffd") else ""
        eos = other.generation_config._eos_token_tensor if other.generation_config is not None else None
        if eos is not None and token_id in eos.reshape(-1).tolist():
            other._finish("eos", forced)
        elif ids.shape[1] >= (other.generation_config.max_length or math.inf):
            other._finish("max_length", forced)
        return other


def _entropy_bits(scores: torch.Tensor, p: torch.Tensor, removed: bool) -> float:
    """-sum p log p in bits. With every score finite, as a dot product of p with log_softmax(scores): a third of the
    time of the elementwise torch.special.entr on a CPU, within 1e-5 bits of the float64 value. Where a processor
    removed tokens (-inf: p = 0, log p = -inf, the product NaN), as entr(p), which is 0 there (the explain backend's
    formula), rather than the dot product over the finite scores picked out, which takes three times longer."""
    if removed:
        return float(torch.special.entr(p).sum()) / math.log(2)
    entropy = -float(torch.dot(p, torch.log_softmax(scores, dim=-1)))
    if math.isnan(entropy):  # a -inf that no recorded processor made (the model's own masking)
        entropy = float(torch.special.entr(p).sum())
        return entropy / math.log(2)
    return entropy / math.log(2)


def _rank(raw: torch.Tensor, token: int, logits_top: dict) -> int:
    """1 + how many raw logits are above the token's. A token inside the recorded top has every higher logit before
    it in that list, so the list answers; otherwise count over the vocabulary."""
    ids, values = logits_top["ids"], logits_top["values"]
    if token in ids:  # the values are the float32 logits written exactly (shortest repr), so they compare as those
        mine = values[ids.index(token)]
        return 1 + sum(value > mine for value in values)
    return int((raw[0] > raw[0, token]).sum()) + 1
