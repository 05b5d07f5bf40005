"""TextGenerationPipeline: transformers' text-generation pipeline, with the tokenization, generation and
decoding stages traced. Inputs and outputs are those of transformers.TextGenerationPipeline:

    pipe("Once upon a time")                      -> [{"generated_text": "Once upon a time..."}]
    pipe([{"role": "user", "content": "Hi"}])     -> [{"generated_text": [..messages.., {"role": "assistant", ...}]}]
    pipe(["a", "b"])                              -> [[{...}], [{...}]]
    pipe("a", num_return_sequences=3)             -> [{...}, {...}, {...}]   (also num_beams=3, num_return_sequences=3)

The decoding strategy (greedy or sampling of one sequence, several samples, beam search, assisted decoding) is
chosen from the settings as generate() chooses it (explain/generation/strategies/). A list of prompts goes through
what transformers' pipeline does with it (Pipeline.get_iterator): its DataLoader draws one number from torch's
random generator, then with batch_size=1 (the default) the prompts run one after another; with batch_size=b every
b of them are left-padded into one batch and generated together, one forward per step for the batch
(explain/generation/batch.py).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import tempfile
import time
import types
import warnings

import torch

from .errors import ArgumentError, ExplainError
from .errors import interrupted as interrupted_error
from .generation import SETTINGS, Generation, resolve
from .generation.arguments import (
    GENERATE_KWARGS,
    RECORD_OUTPUTS,
    TOKENIZER_OPTIONS,
    check_streamer,
    check_tokenizer_kwargs,
    criteria_list,
    decode_options,
    generation_config_values,
    is_stream,
    one_sequence_only,
    stream,
    tokenizer_options,
    truncate,
    truncation_length,
    unknown_tokenizer_option,
)
from .generation.batch import BatchedSequences
from .generation.ending import emit_decode, emit_end, finish_by_hand, role_segments
from .generation.options import (
    LONG_PROMPT,
    ModelSize,
    RunOptions,
    check_fit,
    check_limits,
    check_prompt_ids,
    rows_of,
)
from .generation.settings import context_window_warnings, warnings_for
from .generation.strategies import choose
from .generation.strategies.registry import plain_settings
from .inputs import check_batch_size, check_inputs, check_prompt
from .stages.chat_template import TemplateLimitError
from .stages.placement import input_device
from .trace import Trace
from .utils.files import cannot_write, publish

CALL_OPTIONS = (
    "return_full_text",
    "return_text",
    "return_tensors",
    "clean_up_tokenization_spaces",
    "prefix",
    "handle_long_generation",
    "add_special_tokens",
    "continue_final_message",
    "skip_special_tokens",
    "stop_sequence",
    "tokenizer",
    "trace_top",
    "keep_logits",
    "capture",
    "batch_size",
    "truncation",
    "padding",
    "tokenizer_encode_kwargs",
    "streamer",
    "stopping_criteria",
    "generation_config",
    "return_dict_in_generate",
    "output_scores",
    "output_logits",
    "tools",
    "documents",
)
# what generate() returns besides the sequences when return_dict_in_generate=True, and the pipeline puts in each
# record (TextGenerationPipeline._forward keeps the tensors of generate()'s output): the call option -> the key
OUTPUT_KEYS = {"output_scores": "scores", "output_logits": "logits"}
BOOLEAN_OPTIONS = (
    "return_full_text",
    "return_text",
    "return_tensors",
    "clean_up_tokenization_spaces",
    "add_special_tokens",
    "continue_final_message",
    "skip_special_tokens",
    "return_dict_in_generate",
    "output_scores",
    "output_logits",
)
GENERATE_ARGUMENTS = tuple(SETTINGS) + CALL_OPTIONS  # SETTINGS: every knob of the processor registry

# transformers' words (pipelines/base.py, pad_collate_fn), with explain's way of setting the pad token
NO_PAD_TOKEN = (
    "Pipeline with tokenizer without pad_token cannot do batching (transformers' message): this tokenizer "
    "has no pad token to fill the shorter prompts of a batch with. Pass batch_size=1 (the prompts run one "
    "after another), or give the tokenizer one, as transformers suggests "
    "(`pipe.tokenizer.pad_token_id = model.config.eos_token_id`): pipe.tokenizer.pad_token = "
    "pipe.tokenizer.eos_token"
)


def batch_problem(strategy, settings: dict, batch_size: int) -> str | None:
    """Why explain cannot run these settings as a batch of several prompts, or None."""
    if strategy.name not in ("one_sequence", "samples"):
        return (
            f"batch_size={batch_size} with {strategy.title}: explain batches greedy decoding and sampling (one or "
            "several sequences per prompt); pass batch_size=1 (the prompts one after another, the same greedy "
            'texts) or run it with backend="transformers"'
        )
    one_row_only = {
        "guidance_scale": settings.get("guidance_scale") not in (None, 1),
        "encoder_no_repeat_ngram_size": (settings.get("encoder_no_repeat_ngram_size") or 0) > 0,
        "watermarking_config": settings.get("watermarking_config") is not None,
    }
    named = [name for name, given in one_row_only.items() if given]
    if named:
        return (
            f"batch_size={batch_size} with {', '.join(named)}: explain runs this processor on one prompt's row; "
            'pass batch_size=1 (the prompts one after another) or backend="transformers"'
        )
    return None


def past_learned_positions(length: int, context: int, limit: int) -> str:
    """Why a prompt that handle_long_generation="hole" kept is still too long for a model with learned positions."""
    return (
        f'the prompt is {length} tokens after handle_long_generation="hole", which keeps what fits the tokenizer\'s '
        f"model_max_length ({limit}) as transformers does, but the model has only {context} learned positions "
        "(transformers' generate fails with an IndexError here); shorten the prompt, or set "
        f"pipe.tokenizer.model_max_length = {context} so that the hole keeps what fits the model"
    )


def draw_dataloader_seed() -> None:
    """The one number transformers' pipeline draws from torch's (CPU) random generator for a list of prompts: its
    DataLoader's iterator seeds its workers with it (torch.utils.data _BaseDataLoaderIter._base_seed), workers or
    not. Drawn here too, so that a seeded run samples what transformers samples after it."""
    torch.empty((), dtype=torch.int64).random_()


class TextGenerationPipeline:
    def __init__(
        self,
        task,
        model,
        tokenizer,
        config,
        generation_config,
        generation_config_source,
        trace: Trace,
        name_or_path,
        dtype,
        generate_defaults=None,
        quantization: dict | None = None,
        adapter=None,
    ):
        self.task, self.model, self.tokenizer, self.config = task, model, tokenizer, config
        self.quantization = quantization  # the weights/quantize event's data, or None (explain.quantization)
        self.adapter = adapter  # the applied LoRA adapter (explain.adapters.Adapter), or None
        self.generation_config, self.generation_config_source = generation_config, generation_config_source
        self.trace, self.name_or_path, self.dtype = trace, name_or_path, dtype
        self.generate_defaults = dict(generate_defaults or {})
        self.device = input_device(model)  # where inputs go (with offload, the first parameter may be meta)
        self.last_generation: Generation | None = None

    def __repr__(self):
        extra = (
            f", quantization={self.quantization['method']} ({self.quantization['form']})" if self.quantization else ""
        )
        extra += f", adapter={self.adapter.name!r}" if self.adapter is not None else ""
        return (
            f"explain.TextGenerationPipeline({self.name_or_path!r}, {self.config['architectures'][0]}, "
            f"dtype={self.dtype}{extra}, device={self.device}, {len(self.trace)} trace events)"
        )

    # -- call ------------------------------------------------------------------------------------------
    def __call__(self, text_inputs, **kwargs):
        if "generate_kwargs" in kwargs:  # transformers' pipeline hands it to generate() as it is, which refuses it
            raise ArgumentError(GENERATE_KWARGS)
        batch_size = check_batch_size({**self.generate_defaults, **kwargs}.get("batch_size"))
        if is_stream(text_inputs):  # a generator or a Dataset: an iterator of results, consumed on demand
            return self._stream(text_inputs, batch_size, kwargs)
        if not check_inputs(text_inputs):  # one prompt: transformers' run_single, batch_size plays no part
            return self._one(text_inputs, kwargs)
        # a list: every prompt is checked first, then it goes through transformers' get_iterator
        size = len(text_inputs)
        if batch_size > 1 and self.tokenizer.pad_token_id is None:  # pad_collate_fn refuses before anything runs
            raise ExplainError(NO_PAD_TOKEN)
        draw_dataloader_seed()
        if batch_size == 1:
            return [self._one(item, kwargs, batch=(i, size)) for i, item in enumerate(text_inputs)]
        results = []
        for first in range(0, size, batch_size):
            results += self._many(list(text_inputs[first : first + batch_size]), first, size, batch_size, kwargs)
        return results

    def _stream(self, inputs, batch_size: int, kwargs):
        """The results of a generator's or a Dataset's prompts, one list per prompt, as transformers' get_iterator
        yields them: its DataLoader draws its seed when iteration starts, prompts run one by one or in batches."""
        size = len(inputs) if hasattr(inputs, "__len__") else None
        if isinstance(inputs, types.GeneratorType):  # transformers peeks at the first item: one message is a chat
            first = next(inputs, None)
            if first is None:  # an empty generator: transformers runs an empty list
                return []
            if isinstance(first, dict):  # messages: one chat, run as one prompt (run_single)
                return self._one([first, *inputs], kwargs)
            inputs = itertools.chain([first], inputs)
        if batch_size > 1 and self.tokenizer.pad_token_id is None:
            raise ExplainError(NO_PAD_TOKEN)

        def results():
            draw_dataloader_seed()
            chunk: list = []
            index = 0
            for item in inputs:
                check_prompt(item, f"text_inputs[{index}]")
                index += 1
                if batch_size == 1:
                    yield self._one(item, kwargs, batch=(index - 1, size))
                    continue
                chunk.append(item)
                if len(chunk) == batch_size:
                    yield from self._many(chunk, index - len(chunk), size, batch_size, kwargs)
                    chunk = []
            if chunk:
                yield from self._many(chunk, index - len(chunk), size, batch_size, kwargs)

        return results()

    def start(self, text_inputs, *, run: int | None = None, **kwargs) -> Generation:
        """Tokenize and set up a generation without running it: advance it with .step() / .run().

        `run` is a run id reserved beforehand with pipe.trace.new_run() (a view that wants to know its run's
        id before the first event); by default the call reserves a new one. The run is the decoding strategy's:
        a Generation for one sequence; for several samples, beam search or assisted decoding an object with the
        same step() / run() / finished / steps / sequences (a step advances every sequence, every beam, or one
        round of draft and check)."""
        check_prompt(text_inputs)
        options, settings_call = self._split(kwargs)
        return self._prepare(text_inputs, options, settings_call, run)

    def finish(self, generation: Generation) -> str:
        """Close a run advanced by hand (start + step/run): emit generation/end and decoding/decode as a call
        does, with the steps' own time as its duration (not the pauses between them); returns the text.
        A run ends once: finishing it again returns the same text and emits nothing."""
        return finish_by_hand(generation, lambda start, duration: self._end(generation, start, duration, False))

    def _split(self, kwargs):
        """(pipeline options, generation settings), checked as transformers' _sanitize_parameters checks them."""
        if "generate_kwargs" in kwargs:
            raise ArgumentError(GENERATE_KWARGS)
        defaults = self.generate_defaults
        if kwargs.get("generation_config") is not None:  # it replaces the construction's settings (transformers)
            defaults = {k: v for k, v in defaults.items() if k not in SETTINGS}
        kwargs = {**defaults, **kwargs}
        options = {k: kwargs.pop(k) for k in list(kwargs) if k in CALL_OPTIONS}
        given = [k for k in ("return_full_text", "return_text", "return_tensors") if options.get(k) is not None]
        if "return_full_text" in given and len(given) > 1 or given == ["return_text", "return_tensors"]:
            raise ExplainError(f"{given[0]} and {given[1]} are mutually exclusive (as in transformers); pass only one")
        for name in BOOLEAN_OPTIONS:
            value = options.get(name)
            if name in options and value is None:
                del options[name]  # None is "not given", as transformers' _sanitize_parameters reads it
            elif value is not None and not isinstance(value, (bool, int)):  # transformers takes 0 and 1 too
                raise ArgumentError(f"{name}={value!r:.60} is not a boolean; pass True or False")
        if options.get("handle_long_generation") not in (None, "hole"):
            raise ExplainError(
                f"handle_long_generation={options['handle_long_generation']!r} is not a strategy; "
                'use None (the default) or "hole" (keep only the prompt\'s last tokens)'
            )
        if "max_length" in kwargs and kwargs["max_length"] is None:
            del kwargs["max_length"]  # None is "not given" (_sanitize_parameters)
        stop = options.pop("stop_sequence", None)
        if stop is not None:  # the pipeline's name for generate()'s stop_strings
            kwargs["stop_strings"] = [stop] if isinstance(stop, str) else list(stop)
        options.pop("tokenizer", None)  # generate() needs it for stop strings; explain always has its own
        user_config = generation_config_values(options.get("generation_config"))
        options["user_config"] = {k: v for k, v in user_config.items() if k in SETTINGS}
        for name in RECORD_OUTPUTS:  # a GenerationConfig may ask for generate()'s extra outputs too
            if options.get(name) is None and user_config.get(name) is not None:
                options[name] = user_config[name]
        check_streamer(options.get("streamer"))
        options["criteria"] = criteria_list(options.pop("stopping_criteria", None))
        options["tokenizer_kwargs"] = tokenizer_options(options, kwargs.get("max_length"))
        check_tokenizer_kwargs(options["tokenizer_kwargs"])
        prefix = options.get("prefix")
        if prefix is None:  # transformers' pipeline takes the model config's prefix as its default (Pipeline.prefix)
            prefix = options["prefix"] = self.config.get("prefix") or None
        if prefix and not isinstance(prefix, str):
            raise ArgumentError(f"prefix={prefix!r:.60} is not a string; pass the text to put before each prompt")
        add_special = bool(options.get("add_special_tokens", False))  # as _sanitize_parameters tokenizes it
        options["prefix_length"] = len(self.tokenizer.encode(prefix, add_special_tokens=add_special)) if prefix else 0
        options["run_options"] = RunOptions.from_call(options)  # trace_top, keep_logits, capture: checked once
        check_limits({**kwargs, **options})
        return options, kwargs

    def _resolve(self, settings_call, options, prompt_length: int):
        """resolve() with this pipeline's model generation config, and the call's generation_config and prefix."""
        return resolve(
            settings_call,
            self.generation_config,
            self.generation_config_source,
            prompt_length,
            self.model.config.max_position_embeddings,
            self.tokenizer.pad_token_id,
            self.config.get("vocab_size"),
            user_config=options["user_config"],
            prefix_length=options["prefix_length"],
        )

    def _prepare(self, prompt, options, settings_call, run: int | None = None, batch=None) -> Generation:
        run = self.trace.new_run() if run is None else run
        ids = self._tokenize(prompt, options, run)
        handle = options.get("handle_long_generation")
        context, learned = self.model.config.max_position_embeddings, self.model.learned_positions
        if learned and handle is None and len(ids) > context:  # rotary positions go on past it, learned ones do not
            raise ExplainError(
                f"the prompt is {len(ids)} tokens but the model's context window is {context} "
                "tokens, one learned position embedding each (transformers' generate fails with an "
                'IndexError here); shorten the prompt, or pass handle_long_generation="hole" to '
                "keep only its last tokens"
            )
        with self.trace.span("generation", "settings", run=run) as data:
            settings, sources = self._resolve(settings_call, options, len(ids))
            limit = self.tokenizer.model_max_length  # transformers' "hole" measures against the tokenizer's limit
            new_tokens = settings["max_length"] - len(ids)  # max_new_tokens, or what max_length leaves
            if handle == "hole" and len(ids) + new_tokens > limit:
                keep = limit - new_tokens  # transformers' "hole": drop the prompt's start to leave room
                if keep <= 0:
                    raise ExplainError(
                        f"{new_tokens} new tokens do not fit the tokenizer's model_max_length of {limit} "
                        "even with an empty prompt (transformers raises a ValueError); ask for fewer new tokens"
                    )
                data["hole"] = {"prompt_tokens": len(ids), "kept": keep, "dropped": len(ids) - keep}
                ids = ids[-keep:]
                settings, sources = self._resolve(settings_call, options, len(ids))
            if learned and len(ids) > context:  # "hole" kept more than the learned positions hold
                raise ExplainError(past_learned_positions(len(ids), context, limit))
            self._check_fit(settings, len(ids), options)  # rows, prompt and new tokens against free memory
            if len(ids):
                largest = max(ids)
                check_prompt_ids(
                    largest, self.config.get("vocab_size"), self.tokenizer.convert_ids_to_tokens([largest])[0]
                )
            strategy = choose(settings)  # greedy/sampling, several samples, beam search, assisted decoding
            problem = one_sequence_only(strategy, options)
            if problem:
                raise ExplainError(problem)
            data["strategy"] = strategy.record(settings)
            generation = strategy.run_class()(
                self.model,
                self.tokenizer,
                ids,
                settings,
                self.trace,
                run,
                run_options=options["run_options"],
                prompt=prompt,
                options=options,
            )
            if batch is not None:
                data["batch"] = self._batch_note(batch, options)
            for message in warnings_for(settings, sources):  # what transformers warns about these settings
                generation.warnings.append(message)
                warnings.warn(message, stacklevel=4)
            data.update(
                settings=plain_settings(settings),
                sources=sources,
                processors=[
                    {"name": p.name, "class": type(p).__name__, "title": p.title, "args": p.args()}
                    for p in generation.processors
                ],
                prompt_tokens=len(ids),
                dtype=self.dtype,
                device=str(self.device),
                warnings=generation.warnings,
                context_window=context,
            )
        self.last_generation = generation
        return generation

    @staticmethod
    def _batch_note(batch, options) -> dict:
        """What the trace says about a prompt of a list run on its own (batch_size=1, or a last batch of one)."""
        index, size = batch
        asked = options.get("batch_size") or 1
        note = (
            "prompts run one after another, as transformers' pipeline runs them with its default batch_size=1"
            if asked == 1
            else f"batch_size={asked}: this prompt is the last batch of the list, alone, so nothing is padded (as "
            "transformers' pad_collate_fn pads nothing for one prompt)"
        )
        return {"index": index, "size": size, "batch_size": asked, "note": note}

    def _prepare_batch(
        self, prompts: list, first: int, size: int, batch_size: int, options, settings_call
    ) -> BatchedSequences:
        """Tokenize each prompt (transformers' preprocess), pad them on the left into one batch (pad_collate_fn)
        and set up their generation; prompts[i] is prompt first + i of a list of `size`."""
        run = self.trace.new_run()
        rows = [self._tokenize(prompt, options, run, batch_row=first + i) for i, prompt in enumerate(prompts)]
        handle = options.get("handle_long_generation")
        context, learned = self.model.config.max_position_embeddings, self.model.learned_positions
        longest = max(range(len(rows)), key=lambda i: len(rows[i]))
        if learned and handle is None and len(rows[longest]) > context:
            raise ExplainError(
                f"prompt {first + longest} of the list is {len(rows[longest])} tokens but the model's "
                f"context window is {context} tokens, one learned position embedding each "
                "(transformers' generate fails on the whole batch with an IndexError here); shorten "
                'it, or pass handle_long_generation="hole" to keep only its last tokens'
            )
        with self.trace.span("generation", "settings", run=run) as data:

            def settings_for(width):
                return self._resolve(settings_call, options, width)

            settings, sources = settings_for(max(map(len, rows)))
            new_tokens = settings["max_length"] - max(map(len, rows))
            limit = self.tokenizer.model_max_length
            if handle == "hole" and any(len(row) + new_tokens > limit for row in rows):
                keep = limit - new_tokens  # transformers' "hole", prompt by prompt (its preprocess)
                if keep <= 0:
                    raise ExplainError(
                        f"{new_tokens} new tokens do not fit the tokenizer's model_max_length of {limit} "
                        "even with an empty prompt (transformers raises a ValueError); ask for fewer new tokens"
                    )
                data["hole"] = {
                    "prompt_tokens": max(map(len, rows)),
                    "kept": keep,
                    "dropped": max(map(len, rows)) - keep,
                }
                rows = [row[-keep:] if len(row) + new_tokens > limit else row for row in rows]
                settings, sources = settings_for(max(map(len, rows)))
            if learned and max(map(len, rows)) > context:
                raise ExplainError(past_learned_positions(max(map(len, rows)), context, limit))
            self._check_fit(settings, max(map(len, rows)), options, batch=len(rows))
            largest = max(max(row) for row in rows if row)
            check_prompt_ids(largest, self.config.get("vocab_size"), self.tokenizer.convert_ids_to_tokens([largest])[0])
            strategy = choose(settings)
            problem = batch_problem(strategy, settings, batch_size)
            problem = problem or one_sequence_only(strategy, options, batch=True)
            if problem:
                raise ExplainError(problem)
            data["strategy"] = strategy.record(settings)
            generation = BatchedSequences(
                self.model,
                self.tokenizer,
                rows,
                settings,
                self.trace,
                run,
                pad_token_id=self.tokenizer.pad_token_id,
                batch_rows=[first + i for i in range(len(rows))],
                run_options=options["run_options"],
                prompt=prompts,
                options=options,
            )
            width = generation.prompt_length
            for message in context_window_warnings(width, settings["max_length"], context, learned):
                generation.warnings.append(message)  # the window, for the batch's longest row
                warnings.warn(message, UserWarning, stacklevel=4)
            data["batch"] = {
                "index": first,
                "size": size,
                "batch_size": batch_size,
                "rows": [first + i for i in range(len(rows))],
                "padding_side": "left",
                "pad_token_id": self.tokenizer.pad_token_id,
                "width": width,
                "prompt_lengths": generation.prompt_lengths,
                "note": f"batch_size={batch_size}: prompts {first}..{first + len(rows) - 1} of the list "
                f"left-padded to {width} tokens and generated together, one forward per step "
                "(transformers' pad_collate_fn, then generate on the batch)",
            }
            for message in warnings_for(settings, sources):
                generation.warnings.append(message)
                warnings.warn(message, stacklevel=4)
            data.update(
                settings=plain_settings(settings),
                sources=sources,
                processors=[
                    {"name": p.name, "class": type(p).__name__, "title": p.title, "args": p.args()}
                    for p in generation.processors
                ],
                prompt_tokens=width,
                dtype=self.dtype,
                device=str(self.device),
                warnings=generation.warnings,
                context_window=context,
            )
        self._emit_padding(generation, run)
        self.last_generation = generation
        return generation

    def _emit_padding(self, generation: BatchedSequences, run: int) -> None:
        """The collation, as its own event: each row padded on the left, and the attention mask that says which
        tokens are real (transformers' pad_collate_fn and _pad, pipelines/base.py)."""
        ids = generation.prompt_ids.tolist()
        width = generation.prompt_length
        pad = self.tokenizer.pad_token_id
        self.trace.emit(
            "tokenization",
            "pad",
            {
                "side": "left",
                "pad_token_id": pad,
                "pad_token": self.tokenizer.pad_token,
                "width": width,
                "rows": [
                    {
                        "batch_row": generation.batch_rows[i * generation.count],
                        "ids": row,
                        "pads": width - length,
                        "attention_mask": [0] * (width - length) + [1] * length,
                    }
                    for i, (row, length) in enumerate(zip(ids, generation.prompt_lengths, strict=False))
                ],
                "source": "transformers/pipelines/base.py: pad_collate_fn, _pad (the DataLoader's collate_fn); the "
                'text-generation pipeline sets the tokenizer\'s padding_side to "left" (decoder-only '
                "models continue from the last position, so every row's last token must be real)",
            },
            run=run,
        )

    def _many(self, prompts: list, first: int, size: int, batch_size: int, kwargs) -> list:
        """One batch of a list: prompts first .. first + len(prompts) - 1, generated together; one result list per
        prompt, in order."""
        if len(prompts) == 1:  # pad_collate_fn pads nothing for one prompt: the unbatched run is that run
            return [self._one(prompts[0], kwargs, batch=(first, size))]
        options, settings_call = self._split(kwargs)
        generation = self._prepare_batch(prompts, first, size, batch_size, options, settings_call)
        self._run(generation)
        rows = generation.sequences
        count = generation.count
        return [
            [self._record(generation, row, options, prompt) for row in rows[i * count : (i + 1) * count]]
            for i, prompt in enumerate(prompts)
        ]

    def _one(self, prompt, kwargs, batch=None):
        options, settings_call = self._split(kwargs)
        generation = self._prepare(prompt, options, settings_call, batch=batch)
        self._run(generation)
        return self._postprocess(generation, options)

    def _run(self, generation) -> None:
        """Run a prepared generation to its end, then emit its end and decode events (also when interrupted)."""
        start, t0 = time.time(), time.perf_counter()
        interrupted = False
        streamer = generation.options.get("streamer")
        try:
            if streamer is None:
                generation.run()
            else:
                stream(generation, streamer)
        except KeyboardInterrupt:  # Ctrl-C, Kernel > Interrupt: end the run cleanly (its trace stays whole), then stop
            interrupted = True
            generation._finish("interrupted")
            steps = len(generation.steps)
            raise interrupted_error(
                f"interrupted at step {steps} of call {generation.run_id}: the {steps} tokens "
                "generated so far are kept (pipe.last_generation, pipe.trace)"
            ) from None
        finally:
            self._end(generation, start, time.perf_counter() - t0, interrupted)

    # -- stages ----------------------------------------------------------------------------------------
    def _tokenize(self, prompt, options, run: int, batch_row: int | None = None) -> list[int]:
        with self.trace.span("tokenization", "encode", run=run) as data:
            if batch_row is not None:  # one prompt of a batch: its index in the call's list
                data["batch_row"] = batch_row
            prefix = options.get("prefix") or ""
            tokenizer_kwargs = dict(options["tokenizer_kwargs"])
            if isinstance(prompt, str):
                text = prefix + prompt
                add_special = tokenizer_kwargs.pop("add_special_tokens", True)
                for name in tokenizer_kwargs:
                    if name not in TOKENIZER_OPTIONS:
                        raise unknown_tokenizer_option(name)
                # transformers tokenizes a string as it is (pipelines/text_generation.py:350): a model with a chat
                # template then continues the text instead of answering it; the views say so in one line
                data.update(
                    kind_of_input="text",
                    chat_template_text=None,
                    segments=None,
                    chat_template_skipped=self.tokenizer.chat_template is not None,
                )
            else:
                messages = [dict(m) for m in prompt]
                continue_final = options.get("continue_final_message")
                if continue_final is None:
                    continue_final = messages[-1]["role"] == "assistant"
                tokenizer_kwargs.pop("add_special_tokens", None)  # ignored on chats, as transformers ignores it
                tokenizer_kwargs.setdefault("truncation", False)  # apply_chat_template: max_length alone cuts nothing
                variables = {k: v for k, v in tokenizer_kwargs.items() if k not in TOKENIZER_OPTIONS}
                for name in ("tools", "documents"):
                    if options.get(name) is not None:
                        variables[name] = options[name]
                text = self.tokenizer.apply_chat_template(
                    messages,
                    add_generation_prompt=not continue_final,
                    continue_final_message=bool(continue_final),  # cut after the last message, as transformers does
                    tokenize=False,
                    **variables,
                )
                add_special = False  # the template writes its own special tokens
                data.update(
                    kind_of_input="chat",
                    chat_template_text=text,
                    messages=messages,
                    chat_template_skipped=False,
                    segments=self._role_segments(messages, text),
                    add_generation_prompt=not continue_final,
                )
            if len(text) > LONG_PROMPT:  # count first: a long prompt that cannot fit is refused in a second
                count = len(self.tokenizer.encode(text, add_special_tokens=add_special))
                self._check_fit({}, count, options, prompt="the chat" if data["kind_of_input"] == "chat" else None)
            details = self.tokenizer.encode_with_details(text, add_special_tokens=add_special)
            keep = truncation_length(tokenizer_kwargs, self.tokenizer.model_max_length)
            if keep is not None and len(details["ids"]) > keep:  # transformers' tokenizer truncates the prompt
                content = self.tokenizer.encode(text, add_special_tokens=False)
                side = getattr(self.tokenizer, "truncation_side", "right")
                data["truncated"] = {"prompt_tokens": len(details["ids"]), "kept": keep, "side": side}
                details = truncate(details, content, keep, side)
            data.update(
                text=text,
                ids=details["ids"],
                tokens=details["tokens"],
                offsets=details["offsets"],
                special=details["special"],
                count=len(details["ids"]),
                add_special_tokens=add_special,
            )
        if not details["ids"] and self.tokenizer.bos_token_id is None:
            raise ExplainError("the prompt is empty and this model has no BOS token to start from; give it some text")
        return details["ids"] or [self.tokenizer.bos_token_id]

    def _check_fit(self, settings: dict, prompt_tokens: int, options, batch: int = 1, prompt=None) -> None:
        """Refuse a run that cannot fit the free memory (generation/options.check_fit), before any work."""
        size = ModelSize.of(self.config, getattr(torch, self.dtype, torch.float32).itemsize, self.device)
        new_tokens = settings["max_length"] - prompt_tokens if "max_length" in settings else 1
        top = options["run_options"].top_count
        beam_sample = bool(settings.get("do_sample")) and (settings.get("num_beams") or 1) > 1
        rows = rows_of(settings, batch)
        check_fit(size, rows, prompt_tokens, max(1, new_tokens), top, prompt or "the prompt", beam_sample)

    def _role_segments(self, messages, text):
        """Character ranges of each message in the rendered template (the template is rendered per prefix)."""
        # a template over its limits on a prefix ran within them on the whole chat: say so (TemplateLimitError)
        return role_segments(
            lambda prefix: self.tokenizer.apply_chat_template(prefix, add_generation_prompt=False, tokenize=False),
            messages,
            text,
            passes=(TemplateLimitError,),
        )

    def _end(self, generation: Generation, start, duration, interrupted):
        if emit_end(generation, start, duration, interrupted, sequences=len(generation.sequences)):  # a run ends once
            skip, clean_up = decode_options(generation.options)

            def decode(ids, skip_special):  # the call's options shape the text; the one with specials is plain
                clean = clean_up if skip_special == skip else None
                return self.tokenizer.decode(ids, skip_special_tokens=skip_special, clean_up_tokenization_spaces=clean)

            emit_decode(self.trace, generation, decode, skip_special_tokens=skip, interrupted=interrupted)

    def _postprocess(self, generation: Generation, options):
        """One record per returned sequence, as transformers' TextGenerationPipeline.postprocess builds them."""
        return [self._record(generation, row, options) for row in generation.sequences]

    def _record(self, generation: Generation, sequence: list[int], options, prompt=None) -> dict:
        """One result record; `prompt` is the row's own prompt in a batch (else the run's)."""
        if options.get("return_tensors"):  # a batch's rows keep their padding, as generate() returns them
            return {"generated_token_ids": sequence}
        skip, clean_up = decode_options(options)
        text = self.tokenizer.decode(
            sequence[generation.prompt_length :], skip_special_tokens=skip, clean_up_tokenization_spaces=clean_up
        )
        return {**self._text_record(generation, text, options, prompt), **self._outputs(generation)}

    @staticmethod
    def _outputs(generation) -> dict:
        """What return_dict_in_generate with output_scores / output_logits adds to a record: each step's row as a
        list (TextGenerationPipeline keeps generate()'s extra tensors and splits them by sequence)."""
        outputs = getattr(generation, "outputs", None) or {}
        return {key: [row.tolist() for row in rows] for key, rows in outputs.items() if rows}

    @staticmethod
    def _text_record(generation, text: str, options, prompt) -> dict:
        full = options.get("return_full_text", True) is not False  # return_text only selects text over tensors
        prompt = generation.prompt if prompt is None else prompt
        if not full:
            return {"generated_text": text}
        if isinstance(prompt, str):
            return {"generated_text": prompt + text}
        messages = [dict(m) for m in prompt]
        continue_final = options.get("continue_final_message")
        if continue_final is None:
            continue_final = messages[-1]["role"] == "assistant"
        if continue_final:
            messages[-1] = {**messages[-1], "content": messages[-1]["content"] + text}
            return {"generated_text": messages}
        return {"generated_text": messages + [{"role": "assistant", "content": text}]}

    # -- saving ----------------------------------------------------------------------------------------
    def save_pretrained(self, folder: str) -> str:
        """Write a plain Hugging Face folder: config.json, model.safetensors, tokenizer files, generation_config.json.

        Files are written to a temporary folder beside the target and moved in at the end, so a failure leaves
        no half-written model behind.
        """
        from safetensors.torch import save_model

        if self.quantization is not None or self.adapter is not None:
            what = "quantized weights" if self.quantization is not None else "a LoRA adapter"
            raise ExplainError(
                f"this pipeline runs {what}, which a plain Hugging Face folder cannot hold as they are; "
                "save the pipeline loaded without quantization= / adapter= (the adapter's own folder "
                "already holds it)"
            )
        folder = os.path.abspath(folder)
        parent = os.path.dirname(folder)
        if os.path.exists(folder) and os.listdir(folder):
            existing = set(os.listdir(folder)) - {
                "config.json",
                "model.safetensors",
                "tokenizer.json",
                "tokenizer_config.json",
                "special_tokens_map.json",
                "generation_config.json",
                "chat_template.jinja",
            }
            if existing:
                raise ExplainError(
                    f"{folder} already holds other files ({sorted(existing)[:3]}); save into an empty or new folder"
                )
        try:
            os.makedirs(parent, exist_ok=True)
            staging = tempfile.mkdtemp(prefix=".explain-save-", dir=parent)
        except OSError as error:
            raise cannot_write(parent, error) from None
        try:
            config = {k: v for k, v in self.config.items() if not k.startswith("_")}
            config["torch_dtype"] = config["dtype"] = self.dtype
            with open(os.path.join(staging, "config.json"), "w") as f:
                json.dump(config, f, indent=2)
            generation = {
                k: v
                for k, v in self.generation_config.items()
                if v is not None and self.generation_config_source.get(k) != "transformers default"
            }
            with open(os.path.join(staging, "generation_config.json"), "w") as f:
                json.dump(generation, f, indent=2)
            save_model(self.model, os.path.join(staging, "model.safetensors"), metadata={"format": "pt"})
            self.tokenizer.save(staging)
            os.makedirs(folder, exist_ok=True)
            for name in os.listdir(staging):  # with the mode a new file there gets (safetensors writes 0600)
                publish(os.path.join(staging, name), os.path.join(folder, name))
        except OSError as error:
            raise cannot_write(folder, error) from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return folder
